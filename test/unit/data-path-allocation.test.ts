/**
 * The data path allocates nothing per packet in steady state (issue: hot path). Two Devices on
 * a wire that itself allocates nothing (test/helpers/wire-pair.ts), real sodium crypto; after a
 * warm-up (JIT, slab views, batches), the JS heap bytes allocated while 100,000+ packets cross
 * in each direction are measured with the daemon's own HeapMeter (V8 GC profiler), under two
 * loads with the same batches and eight times the packets, which separates what each packet
 * costs from what each batch does. Before this was made allocation-free it was ~500 bytes per
 * packet per direction; one boxed number per packet would be 16, one subarray ~100.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { HeapMeter } from '../../src/daemon/heap-meter.ts';
import { createBackend } from '../../src/noise/crypto/index.ts';
import { ipv4Packet, tunBatch } from '../helpers/memory-net.ts';
import type { WirePair } from '../helpers/wire-pair.ts';
import { wirePair } from '../helpers/wire-pair.ts';

const MAX_BYTES_PER_PACKET = 2;
/** A few boxed numbers (performance.now() returns one) and small records per batch. */
const MAX_BYTES_PER_BATCH = 512;
const ROUNDS = 2_000;
const SLOT = 16 + 9216 + 64;

const pairs: WirePair[] = [];
afterAll(() => pairs.forEach((p) => p.close()));

/** A batch of packets from src to dst that can be sent again and again (sealing is in place). */
function repeatableBatch(src: string, dst: string, sizes: readonly number[]) {
  const batch = tunBatch(sizes.map((n) => ipv4Packet(src, dst, n - 20)), SLOT);
  const pristine = batch.slab.slice();
  const lengths = batch.lengths.slice();
  return (send: (slab: Uint8Array, offsets: Int32Array, lengths: Int32Array, count: number) => void): void => {
    batch.slab.set(pristine);
    batch.lengths.set(lengths);
    send(batch.slab, batch.offsets, batch.lengths, batch.count);
  };
}

async function established(): Promise<WirePair> {
  const pair = await wirePair(createBackend('sodium'));
  pairs.push(pair);
  pair.a.handleTunPackets(...Object.values(tunBatch([ipv4Packet('100.64.0.1', '100.64.0.2', 10)], SLOT)) as [Uint8Array, Int32Array, Int32Array, number]);
  const deadline = Date.now() + 5_000;
  while (pair.tunB.packets < 1) {
    if (Date.now() > deadline) throw new Error('no session between the two devices within 5 s');
    await new Promise((r) => setTimeout(r, 5));
  }
  return pair;
}

describe('data path allocation (sodium, inline crypto)', () => {
  it(`allocates at most ${MAX_BYTES_PER_PACKET} bytes per packet and ${MAX_BYTES_PER_BATCH} per batch in steady state, both directions, mixed sizes`, async () => {
    const pair = await established();
    // Full-size segments one way (every eighth shorter), ACK-sized packets back, as a TCP
    // transfer makes; the same number of batches in both loads, eight times the packets in one.
    const load = (forwardCount: number, backwardCount: number) => {
      const forward = repeatableBatch('100.64.0.1', '100.64.0.2', Array.from({ length: forwardCount }, (_, i) => (i % 8 === 7 ? 600 : 1420)));
      const backward = repeatableBatch('100.64.0.2', '100.64.0.1', Array.from({ length: backwardCount }, () => 52));
      // Made once: a closure per round would be the test's own allocation, not the data path's.
      const sendFromA = (s: Uint8Array, o: Int32Array, l: Int32Array, n: number): void => void pair.a.handleTunPackets(s, o, l, n);
      const sendFromB = (s: Uint8Array, o: Int32Array, l: Int32Array, n: number): void => void pair.b.handleTunPackets(s, o, l, n);
      return (): void => {
        forward(sendFromA);
        backward(sendFromB);
      };
    };
    const loads = { large: load(64, 16), small: load(8, 2) };
    for (let i = 0; i < 2_000; i++) {
      loads.large();
      loads.small();
    }
    const meter = new HeapMeter();
    try {
      const measure = (round: () => void): { bytes: number; packets: number } => {
        const before = meter.read();
        const packets0 = pair.tunA.packets + pair.tunB.packets;
        for (let i = 0; i < ROUNDS; i++) round();
        const after = meter.read();
        return { bytes: after.heap_allocated_bytes - before.heap_allocated_bytes, packets: pair.tunA.packets + pair.tunB.packets - packets0 };
      };
      const large = measure(loads.large);
      const small = measure(loads.small);
      expect(large.packets).toBe(ROUNDS * (64 + 16));
      expect(small.packets).toBe(ROUNDS * (8 + 2));
      // Both loads make 4 batches a round (2 sealed and sent, 2 received and opened), so what
      // the packets add is the difference; what is left over is per batch.
      const perPacket = Math.max(0, large.bytes - small.bytes) / (large.packets - small.packets);
      const perBatch = (small.bytes - perPacket * small.packets) / (ROUNDS * 4);
      const figures = `${perPacket.toFixed(2)} B/packet, ${perBatch.toFixed(0)} B/batch (large load ${(large.bytes / large.packets).toFixed(2)} B/packet overall)`;
      process.stderr.write(`[allocation] ${figures}\n`);
      expect(perPacket, figures).toBeLessThanOrEqual(MAX_BYTES_PER_PACKET);
      expect(perBatch, figures).toBeLessThanOrEqual(MAX_BYTES_PER_BATCH);
      expect(pair.a.counters.drops.size + pair.b.counters.drops.size).toBe(0);
    } finally {
      meter.stop();
    }
  });

  it('the meter sees allocation when there is some (the bound above is not vacuous)', () => {
    const meter = new HeapMeter();
    try {
      const before = meter.read();
      const keep: Uint8Array[] = [];
      for (let i = 0; i < 10_000; i++) keep.push(new Uint8Array(100).subarray(1));
      const after = meter.read();
      expect(keep).toHaveLength(10_000);
      expect(after.heap_allocated_bytes - before.heap_allocated_bytes).toBeGreaterThan(10_000 * 100);
    } finally {
      meter.stop();
    }
  });
});
