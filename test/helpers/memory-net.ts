/**
 * An in-memory underlay for Device tests: transports bound at (host, port) deliver datagrams to
 * each other on the next turn of the event loop, and a recording TUN. Datagrams can be dropped,
 * duplicated or rewritten by a tap to simulate an attacker or a bad link.
 */
import type { DatagramHandler, DatagramTransport, PacketTunnel } from '../../src/device/device.ts';
import { ENDPOINT_SIZE, readEndpointRecord, writeEndpointRecord } from '../../src/device/endpoint.ts';

export type Tap = (datagram: Uint8Array, from: string, to: string) => Uint8Array[] | undefined;

export class MemoryNet {
  private readonly bound = new Map<string, { handler: DatagramHandler; host: string; port: number }>();
  private nextPort = 40000;
  tap: Tap | undefined;
  /** Every datagram that crossed, as sent. */
  readonly log: { from: string; to: string; bytes: Uint8Array }[] = [];

  factory(host: string) {
    return (port: number, _fwmark: number, handler: DatagramHandler): DatagramTransport => {
      const actual = port || this.nextPort++;
      const key = `${host}:${actual}`;
      if (this.bound.has(key)) throw Object.assign(new Error(`bind ${key}: Address already in use`), { code: 'EADDRINUSE' });
      this.bound.set(key, { handler, host, port: actual });
      return {
        port: actual,
        setMark: () => {},
        close: () => this.bound.delete(key),
        send: (slab, offsets, lengths, addrs, count) => {
          for (let i = 0; i < count; i++) {
            const dest = readEndpointRecord(addrs, i * ENDPOINT_SIZE);
            const bytes = slab.slice(offsets[i]!, offsets[i]! + lengths[i]!);
            this.deliver(bytes, key, `${dest.host}:${dest.port}`, host, actual);
          }
          return count;
        },
      };
    };
  }

  /** Sends raw bytes as if from (host, port): for replay and spoofing tests. */
  inject(bytes: Uint8Array, fromHost: string, fromPort: number, to: string): void {
    this.deliver(bytes, `${fromHost}:${fromPort}`, to, fromHost, fromPort);
  }

  private deliver(bytes: Uint8Array, from: string, to: string, fromHost: string, fromPort: number): void {
    this.log.push({ from, to, bytes });
    const copies = this.tap ? this.tap(bytes, from, to) ?? [bytes] : [bytes];
    for (const copy of copies) {
      setImmediate(() => {
        const target = this.bound.get(to);
        if (!target) return;
        const slab = new Uint8Array(copy.length + 64);
        slab.set(copy);
        const addrs = new Uint8Array(ENDPOINT_SIZE);
        writeEndpointRecord(addrs, 0, { host: fromHost, port: fromPort });
        target.handler(slab, Int32Array.of(0), Int32Array.of(copy.length), addrs, 1);
      });
    }
  }
}

export class RecordingTun implements PacketTunnel {
  readonly mtu: number;
  readonly packets: Uint8Array[] = [];
  constructor(mtu = 1420) {
    this.mtu = mtu;
  }
  write(slab: Uint8Array, offsets: Int32Array, lengths: Int32Array, count: number): number {
    for (let i = 0; i < count; i++) this.packets.push(slab.slice(offsets[i]!, offsets[i]! + lengths[i]!));
    return count;
  }
}

/** An IPv4 packet (UDP-ish payload) from src to dst with the given payload length. */
export function ipv4Packet(src: string, dst: string, payload: Uint8Array | number): Uint8Array {
  const body = typeof payload === 'number' ? new Uint8Array(payload).map((_, i) => i & 0xff) : payload;
  const p = new Uint8Array(20 + body.length);
  p[0] = 0x45;
  p[2] = p.length >> 8;
  p[3] = p.length & 0xff;
  p[8] = 64;
  p[9] = 17;
  p.set(src.split('.').map(Number), 12);
  p.set(dst.split('.').map(Number), 16);
  p.set(body, 20);
  return p;
}

/** Lays packets out with the headroom/tailroom the send path needs, and hands them to the device. */
export function tunBatch(packets: Uint8Array[], slot = 2048): { slab: Uint8Array; offsets: Int32Array; lengths: Int32Array; count: number } {
  const slab = new Uint8Array(slot * packets.length);
  const offsets = new Int32Array(packets.length);
  const lengths = new Int32Array(packets.length);
  packets.forEach((p, i) => {
    offsets[i] = i * slot + 16;
    lengths[i] = p.length;
    slab.set(p, offsets[i]);
  });
  return { slab, offsets, lengths, count: packets.length };
}

/** Polls until cond() is truthy or the deadline passes. */
export async function waitFor<T>(cond: () => T | undefined | false, timeoutMs = 5000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
