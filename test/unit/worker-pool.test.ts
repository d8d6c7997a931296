import { afterAll, describe, expect, it } from 'vitest';
import { CryptoBatch, InlineExecutor, OP_OPEN, OP_SEAL } from '../../src/device/crypto-batch.ts';
import { WorkerPool } from '../../src/device/worker-pool.ts';
import { createBackend } from '../../src/noise/crypto/index.ts';

const backend = createBackend('sodium');
const pools: WorkerPool[] = [];
afterAll(() => pools.forEach((p) => p.close()));

function fill(slab: Uint8Array, batch: CryptoBatch, n: number, slot: number, op: number, lengths: number[]): void {
  batch.reset();
  for (let i = 0; i < n; i++) {
    const key = new Uint8Array(32).fill((i % 7) + 1);
    batch.add(op, i * slot + 16, lengths[i]!, key, 1_000_000 + i * 3);
  }
}

describe('WorkerPool', () => {
  it('seals and opens a batch to exactly the bytes the inline path gives, in place, for every entry', async () => {
    const pool = new WorkerPool(backend, 2, 128, 1);
    pools.push(pool);
    const inline = new InlineExecutor(backend, 128);
    const slot = 2048;
    const n = 100;
    const lengths = Array.from({ length: n }, (_, i) => 16 * (1 + (i * 7) % 88));
    const shared = new Uint8Array(new SharedArrayBuffer(n * slot));
    const plain = new Uint8Array(n * slot);
    for (let i = 0; i < shared.length; i++) shared[i] = plain[i] = (i * 31) & 0xff;

    const pooled = pool.batchFor(shared);
    fill(shared, pooled, n, slot, OP_SEAL, lengths);
    const pending = pool.run(pooled, shared);
    expect(pending).toBeInstanceOf(Promise);
    await pending;
    const reference = inline.batchFor(plain);
    fill(plain, reference, n, slot, OP_SEAL, lengths);
    inline.run(reference, plain);
    expect(Buffer.from(shared).equals(Buffer.from(plain))).toBe(true);
    expect(Array.from(pooled.results.subarray(0, n))).toEqual(lengths.map((l) => l + 16));

    // Open what was sealed; corrupt one entry, which must fail alone.
    shared[5 * slot + 16 + 3]! ^= 1;
    fill(shared, pooled, n, slot, OP_OPEN, lengths.map((l) => l + 16));
    await pool.run(pooled, shared);
    const results = Array.from(pooled.results.subarray(0, n));
    expect(results[5]).toBe(-1);
    expect(results.filter((r, i) => i !== 5 && r !== lengths[i])).toEqual([]);
    for (let i = 0; i < n; i++) {
      if (i === 5) continue;
      const at = i * slot + 16;
      expect(Buffer.from(shared.subarray(at, at + lengths[i]!)).equals(Buffer.from(Uint8Array.from({ length: lengths[i]! }, (_, k) => ((at + k) * 31) & 0xff)))).toBe(true);
    }
  });

  it('runs small batches and non-shared slabs inline, synchronously', () => {
    const pool = new WorkerPool(backend, 1, 128, 16);
    pools.push(pool);
    const slab = new Uint8Array(new SharedArrayBuffer(64 * 8));
    const batch = pool.batchFor(slab);
    fill(slab, batch, 4, 64, OP_SEAL, [16, 16, 16, 16]);
    expect(pool.run(batch, slab)).toBeUndefined();
    const plain = new Uint8Array(64 * 40);
    const b2 = pool.batchFor(plain);
    fill(plain, b2, 30, 64, OP_SEAL, new Array(30).fill(16));
    expect(pool.run(b2, plain)).toBeUndefined();
    expect(b2.results[29]).toBe(32);
  });

  it('queues concurrent batches and completes each', async () => {
    const pool = new WorkerPool(backend, 2, 128, 1);
    pools.push(pool);
    const slabs = [0, 1, 2].map(() => new Uint8Array(new SharedArrayBuffer(64 * 2048)));
    const runs = slabs.map((slab) => {
      const b = pool.batchFor(slab);
      fill(slab, b, 64, 2048, OP_SEAL, new Array(64).fill(1024));
      return pool.run(b, slab);
    });
    await Promise.all(runs);
    for (const slab of slabs) expect(pool.batchFor(slab).results.subarray(0, 64).every((r) => r === 1040)).toBe(true);
  });
});
