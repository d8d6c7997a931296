/**
 * Two Devices joined by a synchronous in-memory wire that allocates nothing per datagram: a
 * send copies each datagram into the receiver's fixed slab (byte loop, no views) and hands the
 * batch over at once; each TUN only counts what it is given. What remains allocated while
 * packets flow is the data path's own, which test/unit/data-path-allocation.test.ts measures.
 */
import type { DatagramHandler, DatagramTransport, PacketTunnel, TransportFactory } from '../../src/device/device.ts';
import { Device } from '../../src/device/device.ts';
import { ENDPOINT_SIZE, writeEndpointRecord } from '../../src/device/endpoint.ts';
import type { CryptoExecutor } from '../../src/device/crypto-batch.ts';
import type { CryptoBackend } from '../../src/noise/crypto/backend.ts';
import { parseCidr } from '../../src/util/ip.ts';

const SLOT = 16 + 9216 + 64;
const BATCH = 128;

/** A TUN that counts packets and bytes, and keeps nothing. */
export class CountingTun implements PacketTunnel {
  readonly mtu: number;
  packets = 0;
  bytes = 0;
  constructor(mtu = 1420) {
    this.mtu = mtu;
  }
  write(_slab: Uint8Array, _offsets: Int32Array, lengths: Int32Array, count: number): number {
    for (let i = 0; i < count; i++) this.bytes += lengths[i]!;
    this.packets += count;
    return count;
  }
}

class WireEnd {
  handler: DatagramHandler | undefined;
  readonly slab = new Uint8Array(BATCH * SLOT);
  readonly offsets = Int32Array.from({ length: BATCH }, (_, i) => i * SLOT);
  readonly lengths = new Int32Array(BATCH);
  /** The peer's address, as the receiver sees every datagram's source. */
  readonly addrs = new Uint8Array(BATCH * ENDPOINT_SIZE);
  readonly host: string;
  constructor(host: string) {
    this.host = host;
  }
}

export interface WirePair {
  readonly a: Device;
  readonly b: Device;
  readonly tunA: CountingTun;
  readonly tunB: CountingTun;
  close(): void;
}

/** a = 198.18.0.1 / 100.64.0.1, b = 198.18.0.2 / 100.64.0.2, peers of each other. */
export async function wirePair(backend: CryptoBackend, crypto?: () => CryptoExecutor): Promise<WirePair> {
  const ends = { a: new WireEnd('198.18.0.1'), b: new WireEnd('198.18.0.2') };
  for (let i = 0; i < BATCH; i++) {
    writeEndpointRecord(ends.a.addrs, i * ENDPOINT_SIZE, { host: ends.b.host, port: 51820 });
    writeEndpointRecord(ends.b.addrs, i * ENDPOINT_SIZE, { host: ends.a.host, port: 51820 });
  }
  const factory = (self: WireEnd, other: WireEnd): TransportFactory => (port, _mark, handler): DatagramTransport => {
    self.handler = handler;
    return {
      port: port || 51820,
      setMark: () => {},
      close: () => (self.handler = undefined),
      send: (slab, offsets, lengths, _addrs, count) => {
        const n = Math.min(count, BATCH);
        for (let i = 0; i < n; i++) {
          const from = offsets[i]!;
          const to = other.offsets[i]!;
          const length = lengths[i]!;
          for (let k = 0; k < length; k++) other.slab[to + k] = slab[from + k]!;
          other.lengths[i] = length;
        }
        other.handler?.(other.slab, other.offsets, other.lengths, other.addrs, n);
        return n;
      },
    };
  };
  const tunA = new CountingTun();
  const tunB = new CountingTun();
  const a = new Device({ backend, tun: tunA, openTransport: factory(ends.a, ends.b), ...(crypto ? { crypto: crypto() } : {}) });
  const b = new Device({ backend, tun: tunB, openTransport: factory(ends.b, ends.a), ...(crypto ? { crypto: crypto() } : {}) });
  a.start(51820);
  b.start(51820);
  const key = (): Uint8Array => {
    const k = new Uint8Array(32);
    backend.randomBytes(k);
    return k;
  };
  await a.apply({ privateKey: key() });
  await b.apply({ privateKey: key() });
  await a.apply({ peers: [{ publicKey: b.identity!.publicKey, endpoint: { host: ends.b.host, port: 51820 }, addAllowedIps: [parseCidr('100.64.0.2/32')] }] });
  await b.apply({ peers: [{ publicKey: a.identity!.publicKey, endpoint: { host: ends.a.host, port: 51820 }, addAllowedIps: [parseCidr('100.64.0.1/32')] }] });
  return {
    a,
    b,
    tunA,
    tunB,
    close: () => {
      a.close();
      b.close();
    },
  };
}
