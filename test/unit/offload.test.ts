/**
 * TUN offload in TypeScript: the TSO splitter (reads) and the TCP coalescer (writes), checked
 * against a naive Internet checksum written here, for IPv4 and IPv6, including the splitter
 * resuming when the slots fill mid super-packet, and malformed input (dropped and counted).
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { sum16, fold, wordsOf } from '../../src/tun/offload/checksum.ts';
import { MAX_SEGMENTS, TcpCoalescer } from '../../src/tun/offload/tcp-coalesce.ts';
import { RAW_SLOT_SIZE, rawAreaSize, TsoSplitter } from '../../src/tun/offload/tso-split.ts';
import { GSO_TCPV4, GSO_TCPV6, VNET_F_NEEDS_CSUM, VNET_HDR_LENGTH } from '../../src/tun/offload/virtio-net-hdr.ts';
import { ipv4, ipv6, udp } from '../helpers/packets.ts';

// ---- an independent reference ---------------------------------------------------------------

/** RFC 1071, the slow obvious way: 16-bit big-endian words, end-around carry each step. */
function naiveSum(bytes: ArrayLike<number>, initial = 0): number {
  let sum = initial;
  for (let i = 0; i < bytes.length; i += 2) {
    sum += (bytes[i]! << 8) | (i + 1 < bytes.length ? bytes[i + 1]! : 0);
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  return sum;
}

function be16(b: Uint8Array, at: number): number {
  return (b[at]! << 8) | b[at + 1]!;
}

function be32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}

function pseudo(packet: Uint8Array, protocol: number, l4Length: number): number {
  const v4 = packet[0]! >> 4 === 4;
  const addresses = v4 ? packet.subarray(12, 20) : packet.subarray(8, 40);
  return naiveSum([...addresses, 0, protocol, l4Length >> 8, l4Length & 0xff]);
}

/** Whether a whole IP packet's TCP/UDP checksum verifies (sum over pseudo-header and segment is 0xffff). */
function l4ChecksumOk(packet: Uint8Array, protocol = 6): boolean {
  const ipLength = packet[0]! >> 4 === 4 ? (packet[0]! & 15) * 4 : 40;
  const l4 = packet.subarray(ipLength);
  return naiveSum(l4, pseudo(packet, protocol, l4.length)) === 0xffff;
}

function ipv4HeaderOk(packet: Uint8Array): boolean {
  return naiveSum(packet.subarray(0, (packet[0]! & 15) * 4)) === 0xffff;
}

// ---- packet builders --------------------------------------------------------------------------

const SRC4 = [100, 64, 0, 1];
const DST4 = [100, 64, 0, 2];
const SRC6 = [0xfd, 0, ...new Array<number>(13).fill(0), 1];
const DST6 = [0xfd, 0, ...new Array<number>(13).fill(0), 2];
const ACK = 0x10;
const PSH = 0x08;
const FIN = 0x01;
const SYN = 0x02;
const CWR = 0x80;

interface TcpSpec {
  version?: 4 | 6;
  seq?: number;
  ack?: number;
  flags?: number;
  window?: number;
  /** TCP options (a multiple of 4 bytes); default a 12-byte timestamp option. */
  options?: number[];
  payload: Uint8Array;
  id?: number;
  ttl?: number;
  sport?: number;
  dport?: number;
}

const TIMESTAMPS = [1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9];

/** Fills in an IPv4 header's checksum (test/helpers/packets.ts leaves it 0). */
function withIpv4Checksum(p: Uint8Array): Uint8Array {
  const c = ~naiveSum(p.subarray(0, 20)) & 0xffff;
  p[10] = c >> 8;
  p[11] = c & 0xff;
  return p;
}

/** An IPv4/IPv6 TCP packet with a correct TCP checksum (and IPv4 header checksum). */
function tcpPacket(spec: TcpSpec): Uint8Array {
  const version = spec.version ?? 4;
  const options = spec.options ?? TIMESTAMPS;
  const tcpLength = 20 + options.length;
  const segment = new Uint8Array(tcpLength + spec.payload.length);
  const view = new DataView(segment.buffer);
  view.setUint16(0, spec.sport ?? 40000);
  view.setUint16(2, spec.dport ?? 5201);
  view.setUint32(4, (spec.seq ?? 1000) >>> 0);
  view.setUint32(8, spec.ack ?? 777);
  segment[12] = (tcpLength / 4) << 4;
  segment[13] = spec.flags ?? ACK;
  view.setUint16(14, spec.window ?? 500);
  segment.set(options, 20);
  segment.set(spec.payload, tcpLength);
  let p: Uint8Array;
  if (version === 4) {
    p = ipv4(6, SRC4, DST4, segment);
    p[4] = (spec.id ?? 0x1234) >> 8;
    p[5] = (spec.id ?? 0x1234) & 0xff;
    p[6] = 0x40; // DF
    p[8] = spec.ttl ?? 64;
    withIpv4Checksum(p);
  } else {
    p = ipv6(6, SRC6, DST6, segment);
    p[7] = spec.ttl ?? 64;
  }
  const t = version === 4 ? 20 : 40;
  const c = ~naiveSum(p.subarray(t), pseudo(p, 6, p.length - t)) & 0xffff;
  new DataView(p.buffer).setUint16(t + 16, c === 0 ? 0xffff : c);
  return p;
}

function udpPacket(payload: Uint8Array): Uint8Array {
  return withIpv4Checksum(ipv4(17, SRC4, DST4, udp(5353, 53, payload)));
}

function vnetHeader(fields: { flags?: number; gsoType?: number; hdrLen?: number; gsoSize?: number; csumStart?: number; csumOffset?: number }): Uint8Array {
  const h = new Uint8Array(VNET_HDR_LENGTH);
  const view = new DataView(h.buffer);
  h[0] = fields.flags ?? 0;
  h[1] = fields.gsoType ?? 0;
  view.setUint16(2, fields.hdrLen ?? 0, true);
  view.setUint16(4, fields.gsoSize ?? 0, true);
  view.setUint16(6, fields.csumStart ?? 0, true);
  view.setUint16(8, fields.csumOffset ?? 0, true);
  return h;
}

/** A TSO read as the kernel hands it over: TCP checksum field holding the pseudo-header sum only. */
function superRead(spec: TcpSpec, gsoSize: number): Uint8Array {
  const packet = tcpPacket(spec);
  const ipLength = spec.version === 6 ? 40 : 20;
  const tcpLength = 20 + (spec.options ?? TIMESTAMPS).length;
  const partial = fold(pseudo(packet, 6, packet.length - ipLength));
  packet[ipLength + 16] = partial >> 8;
  packet[ipLength + 17] = partial & 0xff;
  const header = vnetHeader({
    flags: VNET_F_NEEDS_CSUM,
    gsoType: spec.version === 6 ? GSO_TCPV6 : GSO_TCPV4,
    hdrLen: ipLength + tcpLength,
    gsoSize,
    csumStart: ipLength,
    csumOffset: 16,
  });
  return concat(header, packet);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// ---- harnesses ---------------------------------------------------------------------------------

const SLOT = 16 + 9216 + 64;
const MAX_PACKET = 9216;

/** A splitter over `slots` packet slots and `raws` raw read slots, as TunPump lays them out. */
function splitterBed(slots: number, raws = 4) {
  const rawStart = 16 + slots * SLOT;
  const buffer = new Uint8Array(new SharedArrayBuffer(rawStart + rawAreaSize(raws)));
  const slotStarts = Int32Array.from({ length: slots }, (_, i) => 16 + i * SLOT);
  const splitter = new TsoSplitter(buffer, slotStarts, rawStart, raws, MAX_PACKET);
  const offsets = new Int32Array(slots);
  const lengths = new Int32Array(slots);
  /** Stages reads (a number: a read of that length reported, e.g. -1 truncated). */
  const load = (reads: ReadonlyArray<Uint8Array | number>): void => {
    reads.forEach((r, k) => {
      if (typeof r === 'number') {
        splitter.rawLengths[k] = r;
      } else {
        splitter.rawView.set(r, k * RAW_SLOT_SIZE);
        splitter.rawLengths[k] = r.length;
      }
    });
    splitter.loaded(reads.length);
  };
  const packets = (count: number, from = 0): Uint8Array[] =>
    Array.from({ length: count - from }, (_, j) => buffer.slice(offsets[from + j]!, offsets[from + j]! + lengths[from + j]!));
  return { buffer, splitter, slotStarts, offsets, lengths, load, packets };
}

/** Packets in a slab at 16-byte-headroom slots, as the receive path hands them to the TUN. */
function writeBed(packets: readonly Uint8Array[]) {
  const slab = new Uint8Array(packets.length * 2048 + 65536 * 2);
  const offsets = new Int32Array(packets.length);
  const lengths = new Int32Array(packets.length);
  let at = 16;
  packets.forEach((p, i) => {
    offsets[i] = at;
    lengths[i] = p.length;
    slab.fill(0xee, at - 16, at); // stale transport header bytes
    slab.set(p, at);
    at += p.length + 16 + 32 + ((4 - (p.length % 4)) % 4);
  });
  const coalescer = new TcpCoalescer(Math.max(packets.length, 1));
  const build = (): Uint8Array[] => {
    const writes = coalescer.build(slab, offsets, lengths, packets.length);
    const out: Uint8Array[] = [];
    let range = 0;
    for (let w = 0; w < writes; w++) {
      const parts: Uint8Array[] = [];
      for (let k = 0; k < coalescer.iovCounts[w]!; k++, range++) {
        parts.push(slab.slice(coalescer.iovOffsets[range]!, coalescer.iovOffsets[range]! + coalescer.iovLengths[range]!));
      }
      out.push(concat(...parts));
    }
    return out;
  };
  return { coalescer, build };
}

function header(write: Uint8Array) {
  const view = new DataView(write.buffer, write.byteOffset);
  return {
    flags: write[0],
    gsoType: write[1],
    hdrLen: view.getUint16(2, true),
    gsoSize: view.getUint16(4, true),
    csumStart: view.getUint16(6, true),
    csumOffset: view.getUint16(8, true),
  };
}

function segmentsOf(payload: Uint8Array, size: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < payload.length; at += size) out.push(payload.subarray(at, Math.min(at + size, payload.length)));
  return out;
}

/** A flow's consecutive segments as TCP would send them. */
function flow(payload: Uint8Array, size: number, spec: Omit<TcpSpec, 'payload'> = {}, lastFlags = ACK | PSH): Uint8Array[] {
  const parts = segmentsOf(payload, size);
  let seq = spec.seq ?? 1000;
  return parts.map((part, k) => {
    const p = tcpPacket({ ...spec, seq, payload: part, flags: k === parts.length - 1 ? lastFlags : (spec.flags ?? ACK) });
    seq += part.length;
    return p;
  });
}

// ---- tests ----------------------------------------------------------------------------------------

describe('checksum', () => {
  it('sum16 (word fast path at any alignment, odd lengths) equals the naive sum', () => {
    const bytes = new Uint8Array(new SharedArrayBuffer(4096));
    bytes.set(randomBytes(4096));
    const words = wordsOf(bytes);
    for (const start of [0, 1, 2, 3, 4, 17, 20, 40]) {
      for (const length of [0, 1, 15, 16, 17, 63, 1400, 1401, 4000]) {
        if (start + length > bytes.length) continue;
        const naive = naiveSum(bytes.subarray(start, start + length));
        expect(fold(sum16(bytes, start, start + length, 0, words)), `start ${start} length ${length}`).toBe(fold(naive));
        expect(fold(sum16(bytes, start, start + length, 0))).toBe(fold(naive));
      }
    }
  });
});

describe('TsoSplitter (TUN reads)', () => {
  for (const version of [4, 6] as const) {
    it(`splits an IPv${version} TCP super-packet into gso_size segments with correct headers and checksums`, () => {
      const bed = splitterBed(128);
      const payload = new Uint8Array(randomBytes(4 * 1368 + 500));
      const seq = 0xfffff000; // wraps past 2^32 within the packet
      bed.load([superRead({ version, seq, payload, flags: ACK | PSH | CWR | FIN, id: 0xfffe }, 1368)]);
      const n = bed.splitter.split(bed.offsets, bed.lengths, 0, 128);
      expect(n).toBe(5);
      expect(bed.splitter.pending).toBe(false);
      for (let j = 0; j < n; j++) {
        const shift = bed.offsets[j]! - bed.slotStarts[j]!;
        expect(shift >= 0 && shift <= 7, `segment ${j} is 0–7 bytes into its slot (${shift})`).toBe(true);
      }
      const segments = bed.packets(n);
      const ipLength = version === 4 ? 20 : 40;
      const hdr = ipLength + 32;
      const received: Uint8Array[] = [];
      segments.forEach((s, k) => {
        const size = k < 4 ? 1368 : 500;
        expect(s.length).toBe(hdr + size);
        if (version === 4) {
          expect(be16(s, 2), 'IPv4 total length').toBe(s.length);
          expect(be16(s, 4), 'IPv4 ID, +1 per segment').toBe((0xfffe + k) & 0xffff);
          expect(ipv4HeaderOk(s), 'IPv4 header checksum').toBe(true);
        } else {
          expect(be16(s, 4), 'IPv6 payload length').toBe(s.length - 40);
        }
        expect(be32(s, ipLength + 4), 'sequence number').toBe((seq + k * 1368) >>> 0);
        const flags = s[ipLength + 13]!;
        expect(flags & (PSH | FIN), 'PSH/FIN only on the last').toBe(k === 4 ? PSH | FIN : 0);
        expect(flags & CWR, 'CWR only on the first').toBe(k === 0 ? CWR : 0);
        expect(flags & ACK).toBe(ACK);
        expect(l4ChecksumOk(s), `TCP checksum of segment ${k}`).toBe(true);
        received.push(s.subarray(hdr));
      });
      expect(Buffer.from(concat(...received)).equals(Buffer.from(payload)), 'payload, in order').toBe(true);
      expect(bed.splitter.counters.tsoPackets).toBe(1);
      expect(bed.splitter.counters.tsoSegments).toBe(5);
    });
  }

  it('resumes a super-packet cut short by full slots, then goes on with the next read', () => {
    const bed = splitterBed(3);
    const payload = new Uint8Array(randomBytes(7 * 1000));
    const plain = tcpPacket({ payload: new Uint8Array([1, 2, 3]), seq: 99 });
    bed.load([superRead({ payload, seq: 5 }, 1000), concat(vnetHeader({}), plain)]);
    const got: Uint8Array[] = [];
    const counts: number[] = [];
    for (let call = 0; call < 3; call++) {
      const n = bed.splitter.split(bed.offsets, bed.lengths, 0, 3);
      counts.push(n);
      got.push(...bed.packets(n));
    }
    expect(counts).toEqual([3, 3, 2]);
    expect(bed.splitter.pending).toBe(false);
    expect(got.slice(0, 7).map((s) => be32(s, 24))).toEqual([0, 1, 2, 3, 4, 5, 6].map((k) => 5 + k * 1000));
    expect(Buffer.from(concat(...got.slice(0, 7).map((s) => s.subarray(52)))).equals(Buffer.from(payload))).toBe(true);
    expect(got.every((s) => l4ChecksumOk(s))).toBe(true);
    expect(Buffer.from(got[7]!).equals(Buffer.from(plain)), 'the plain packet after it').toBe(true);
  });

  it('resumes at a slot offset: split into slots already partly used', () => {
    const bed = splitterBed(4);
    bed.load([superRead({ payload: new Uint8Array(3000) }, 1000)]);
    expect(bed.splitter.split(bed.offsets, bed.lengths, 2, 4)).toBe(4);
    expect(bed.splitter.pending).toBe(true);
    expect(bed.splitter.split(bed.offsets, bed.lengths, 0, 4)).toBe(1);
    expect(bed.splitter.pending).toBe(false);
  });

  it('completes a partial checksum (NEEDS_CSUM) of a plain UDP packet, and passes plain packets through', () => {
    const bed = splitterBed(8);
    const udp = udpPacket(new Uint8Array(randomBytes(333)));
    const partial = fold(pseudo(udp, 17, udp.length - 20));
    udp[26] = partial >> 8;
    udp[27] = partial & 0xff;
    const ping = udpPacket(new Uint8Array(10));
    bed.load([concat(vnetHeader({ flags: VNET_F_NEEDS_CSUM, csumStart: 20, csumOffset: 6 }), udp), concat(vnetHeader({}), ping)]);
    const n = bed.splitter.split(bed.offsets, bed.lengths, 0, 8);
    expect(n).toBe(2);
    const [out, second] = bed.packets(n);
    expect(l4ChecksumOk(out!, 17), 'UDP checksum completed').toBe(true);
    expect(Buffer.from(second!).equals(Buffer.from(ping))).toBe(true);
    expect(bed.splitter.counters.checksumsCompleted).toBe(1);
  });

  it('drops and counts malformed reads, never throws, and keeps going', () => {
    const good = tcpPacket({ payload: new Uint8Array(10) });
    const v4 = superRead({ payload: new Uint8Array(3000) }, 1000);
    const mangled = (edit: (r: Uint8Array) => void): Uint8Array => {
      const r = v4.slice();
      edit(r);
      return r;
    };
    const bad: Array<[string, Uint8Array | number]> = [
      ['truncated read', -1],
      ['shorter than the virtio_net_hdr', new Uint8Array(5)],
      ['gso_size 0', mangled((r) => ((r[4] = 0), (r[5] = 0)))],
      ['gso_size too big for a slot', mangled((r) => ((r[4] = 0xff), (r[5] = 0xff)))],
      ['TCPV6 on an IPv4 packet', mangled((r) => (r[1] = GSO_TCPV6))],
      ['UDP GSO (not asked for)', mangled((r) => (r[1] = 5))],
      ['csum_start not at the TCP header', mangled((r) => (r[6] = 24))],
      ['IPv4 total length disagrees', mangled((r) => (r[VNET_HDR_LENGTH + 3] = (r[VNET_HDR_LENGTH + 3]! + 1) & 0xff))],
      ['TCP data offset past the packet', (() => {
        const r = superRead({ payload: new Uint8Array(20) }, 1000);
        r[VNET_HDR_LENGTH + 20 + 12] = 0xf0;
        return r;
      })()],
      ['TCP data offset below 5', mangled((r) => (r[VNET_HDR_LENGTH + 20 + 12] = 0x30))],
      ['truncated headers', concat(vnetHeader({ flags: 1, gsoType: GSO_TCPV4, gsoSize: 1000, csumStart: 20, csumOffset: 16 }), good.subarray(0, 30))],
      ['checksum position past the packet', concat(vnetHeader({ flags: VNET_F_NEEDS_CSUM, csumStart: 60, csumOffset: 16 }), good)],
      ['empty packet', vnetHeader({})],
    ];
    for (const [what, read] of bad) {
      const one = splitterBed(16, 1);
      one.load([read]);
      expect(one.splitter.split(one.offsets, one.lengths, 0, 16), what).toBe(0);
      expect(one.splitter.counters.readDropped, what).toBe(1);
    }
    const bed = splitterBed(16, bad.length + 1);
    bed.load([...bad.map(([, r]) => r), concat(vnetHeader({}), good)]);
    let n = 0;
    expect(() => (n = bed.splitter.split(bed.offsets, bed.lengths, 0, 16))).not.toThrow();
    expect(n, 'only the good packet').toBe(1);
    expect(Buffer.from(bed.packets(1)[0]!).equals(Buffer.from(good))).toBe(true);
    expect(bed.splitter.counters.readDropped).toBe(bad.length);
  });
});

describe('TcpCoalescer (TUN writes)', () => {
  for (const version of [4, 6] as const) {
    it(`coalesces an IPv${version} flow into one GSO write the kernel can segment`, () => {
      const payload = new Uint8Array(randomBytes(4 * 1368 + 400));
      const packets = flow(payload, 1368, { version, seq: 0xfffffc00 });
      const bed = writeBed(packets);
      const writes = bed.build();
      expect(writes.length).toBe(1);
      const w = writes[0]!;
      const ipLength = version === 4 ? 20 : 40;
      const hdr = ipLength + 32;
      expect(header(w)).toEqual({ flags: VNET_F_NEEDS_CSUM, gsoType: version === 4 ? GSO_TCPV4 : GSO_TCPV6, hdrLen: hdr, gsoSize: 1368, csumStart: ipLength, csumOffset: 16 });
      const packet = w.subarray(VNET_HDR_LENGTH);
      expect(packet.length).toBe(hdr + payload.length);
      if (version === 4) {
        expect(be16(packet, 2)).toBe(packet.length);
        expect(ipv4HeaderOk(packet)).toBe(true);
      } else {
        expect(be16(packet, 4)).toBe(packet.length - 40);
      }
      expect(be32(packet, ipLength + 4), 'the first segment’s seq').toBe(0xfffffc00);
      expect(packet[ipLength + 13], 'ACK, and PSH from the last segment').toBe(ACK | PSH);
      // The partial checksum the kernel expects: the pseudo-header sum over the whole TCP length, folded, not complemented.
      expect(be16(packet, ipLength + 16)).toBe(fold(pseudo(packet, 6, packet.length - ipLength)));
      // Completed as the kernel would, it verifies.
      const completed = packet.slice();
      completed[ipLength + 16] = 0;
      completed[ipLength + 17] = 0;
      const c = ~naiveSum(completed.subarray(ipLength), pseudo(completed, 6, completed.length - ipLength)) & 0xffff;
      completed[ipLength + 16] = c >> 8;
      completed[ipLength + 17] = c & 0xff;
      expect(l4ChecksumOk(completed)).toBe(true);
      expect(Buffer.from(packet.subarray(hdr)).equals(Buffer.from(payload))).toBe(true);
      expect(bed.coalescer.counters.coalescedWrites).toBe(1);
      expect(bed.coalescer.counters.coalescedSegments).toBe(5);
    });
  }

  it('writes everything else alone, with an all-zero virtio_net_hdr and unchanged bytes', () => {
    const packets = [udpPacket(new Uint8Array(100)), tcpPacket({ payload: new Uint8Array(0) }), tcpPacket({ flags: SYN, payload: new Uint8Array(0) })];
    const bed = writeBed(packets);
    const writes = bed.build();
    expect(writes.length).toBe(3);
    writes.forEach((w, i) => {
      expect([...w.subarray(0, VNET_HDR_LENGTH)]).toEqual(new Array(VNET_HDR_LENGTH).fill(0));
      expect(Buffer.from(w.subarray(VNET_HDR_LENGTH)).equals(Buffer.from(packets[i]!))).toBe(true);
    });
    expect(bed.coalescer.counters.coalescedWrites).toBe(0);
  });

  it('keeps interleaved flows apart and each flow in order', () => {
    const a = flow(new Uint8Array(randomBytes(3000)), 1000, { sport: 1, seq: 10 });
    const b = flow(new Uint8Array(randomBytes(3000)), 1000, { sport: 2, seq: 20 });
    const bed = writeBed([a[0]!, b[0]!, a[1]!, b[1]!, a[2]!, b[2]!]);
    const writes = bed.build();
    expect(writes.length).toBe(2);
    expect(writes.map((w) => be16(w, VNET_HDR_LENGTH + 20))).toEqual([1, 2]);
    expect(writes.map((w) => w.length - VNET_HDR_LENGTH)).toEqual([52 + 3000, 52 + 3000]);
  });

  const cases: Array<[string, () => Uint8Array[], number[]]> = [
    ['a sequence gap', () => [tcpPacket({ seq: 0, payload: new Uint8Array(100) }), tcpPacket({ seq: 101, payload: new Uint8Array(100) })], [1, 1]],
    ['a different ack', () => [tcpPacket({ seq: 0, payload: new Uint8Array(100) }), tcpPacket({ seq: 100, ack: 5, payload: new Uint8Array(100) })], [1, 1]],
    ['a different window', () => [tcpPacket({ seq: 0, payload: new Uint8Array(100) }), tcpPacket({ seq: 100, window: 9, payload: new Uint8Array(100) })], [1, 1]],
    ['different options', () => [tcpPacket({ seq: 0, payload: new Uint8Array(100) }), tcpPacket({ seq: 100, options: [1, 1, 8, 10, 0, 0, 0, 8, 0, 0, 0, 9], payload: new Uint8Array(100) })], [1, 1]],
    ['a different TTL', () => [tcpPacket({ seq: 0, payload: new Uint8Array(100) }), tcpPacket({ seq: 100, ttl: 3, payload: new Uint8Array(100) })], [1, 1]],
    ['a bigger segment after a smaller', () => [tcpPacket({ seq: 0, payload: new Uint8Array(100) }), tcpPacket({ seq: 100, payload: new Uint8Array(200) })], [1, 1]],
    ['a smaller segment ends the write', () => [...flow(new Uint8Array(250), 100, {}, ACK), tcpPacket({ seq: 1250, payload: new Uint8Array(100) })], [3, 1]],
    ['PSH ends the write', () => [...flow(new Uint8Array(200), 100, {}, ACK | PSH), tcpPacket({ seq: 1200, payload: new Uint8Array(100) })], [2, 1]],
    ['FIN is never coalesced', () => [tcpPacket({ seq: 0, payload: new Uint8Array(100) }), tcpPacket({ seq: 100, flags: ACK | FIN, payload: new Uint8Array(100) })], [1, 1]],
    ['a pure ACK of the flow ends it', () => [tcpPacket({ seq: 0, payload: new Uint8Array(100) }), tcpPacket({ seq: 100, payload: new Uint8Array(0) }), tcpPacket({ seq: 100, payload: new Uint8Array(100) })], [1, 1, 1]],
    ['IPv4 options', () => [tcpPacket({ seq: 0, payload: new Uint8Array(100) }), withIpv4Options(tcpPacket({ seq: 100, payload: new Uint8Array(100) }))], [1, 1]],
    ['an IPv4 fragment', () => [tcpPacket({ seq: 0, payload: new Uint8Array(100) }), moreFragments(tcpPacket({ seq: 100, payload: new Uint8Array(100) }))], [1, 1]],
    ['IPv4 then IPv6 of the same ports', () => [tcpPacket({ seq: 0, payload: new Uint8Array(100) }), tcpPacket({ version: 6, seq: 100, payload: new Uint8Array(100) })], [1, 1]],
  ];
  for (const [what, make, members] of cases) {
    it(`does not coalesce across ${what}`, () => {
      const bed = writeBed(make());
      const writes = bed.build();
      expect(Array.from(bed.coalescer.iovCounts.subarray(0, writes.length))).toEqual(members);
    });
  }

  it('stops at 64 KiB and at MAX_SEGMENTS', () => {
    const big = writeBed(flow(new Uint8Array(60 * 1368), 1368, {}, ACK));
    const writes = big.build();
    expect(writes.every((w) => w.length - VNET_HDR_LENGTH <= 65535)).toBe(true);
    expect(writes.length).toBe(2);
    const many = writeBed(flow(new Uint8Array(MAX_SEGMENTS * 10 + 30), 10, {}, ACK));
    expect(many.build().length).toBe(2);
    expect(many.coalescer.iovCounts[0]).toBe(MAX_SEGMENTS);
  });

  it('undoes the splitter: split a super-packet, coalesce the segments, get the same packet', () => {
    for (const version of [4, 6] as const) {
      const payload = new Uint8Array(randomBytes(10 * 1368 + 7));
      const read = superRead({ version, payload, flags: ACK | PSH }, 1368);
      const bed = splitterBed(16);
      bed.load([read]);
      const n = bed.splitter.split(bed.offsets, bed.lengths, 0, 16);
      const writes = writeBed(bed.packets(n)).build();
      expect(writes.length).toBe(1);
      const original = read.subarray(VNET_HDR_LENGTH);
      const again = writes[0]!.subarray(VNET_HDR_LENGTH);
      // Equal but for the IPv4 ID (the first segment's, as read) — byte for byte with the read.
      expect(Buffer.from(again).equals(Buffer.from(original)), `IPv${version}`).toBe(true);
    }
  });
});

function withIpv4Options(packet: Uint8Array): Uint8Array {
  const out = concat(packet.subarray(0, 20), new Uint8Array([1, 1, 1, 0]), packet.subarray(20));
  out[0] = 0x46;
  out[2] = out.length >> 8;
  out[3] = out.length & 0xff;
  return out;
}

function moreFragments(packet: Uint8Array): Uint8Array {
  const out = packet.slice();
  out[6] = 0x20;
  return out;
}
