/**
 * The write side of TUN offload: a batch of decrypted IP packets becomes as few TUN writes as
 * possible. Consecutive TCP segments of one flow (in batch order, other flows interleaved) that
 * the kernel could have produced by segmenting one packet are written as that packet: the first
 * segment's headers with the total length, a virtio_net_hdr asking for TCP segmentation
 * (gso_size = the first segment's payload) and a partial checksum (NEEDS_CSUM, the pseudo-header
 * sum in the TCP checksum field, as the kernel keeps CHECKSUM_PARTIAL packets), followed by the
 * other segments' payloads — gathered from where they lie, nothing is copied.
 *
 * Segments join a packet when: same addresses and ports; IPv4 without options or fragmentation,
 * same TOS, TTL and DF (IPv6: same first word and hop limit, no extension headers); same TCP
 * header length, ack, window and options; flags exactly ACK (ACK|PSH allowed on the last);
 * contiguous sequence numbers; a payload no bigger than the first segment's (a shorter one ends
 * the packet); at most 64 KiB in all and MAX_SEGMENTS segments. Everything else is written alone
 * with an all-zero virtio_net_hdr, in the headroom in front of the packet (the batch contract
 * guarantees 16 bytes there).
 */
import { fold, pseudoHeaderSum, readU16, readU32, setIpv4HeaderChecksum, writeU16 } from './checksum.ts';
import { GSO_TCPV4, GSO_TCPV6, OffloadCounters, VNET_HDR_LENGTH, writePlainHeader, writeTcpGsoHeader } from './virtio-net-hdr.ts';

/** Segments in one coalesced packet at most. */
export const MAX_SEGMENTS = 64;
/** Flows with a packet still open for more segments at once; the oldest is closed to make room. */
const OPEN_FLOWS = 8;
const MAX_IP_LENGTH = 65535;

const TCP_ACK = 0x10;
const NOT_TCP = 0;
const OTHER_TCP = 1;
const CANDIDATE = 2;
const TCP_PSH = 0x08;

export class TcpCoalescer {
  /** What build() produced: write i = the next iovCounts[i] ranges of (iovOffsets, iovLengths). */
  readonly iovOffsets: Int32Array;
  readonly iovLengths: Int32Array;
  readonly iovCounts: Int32Array;
  /** For writevBatch: per write, 0 or -errno. */
  readonly errors: Int32Array;
  readonly counters: OffloadCounters;
  readonly capacity: number;
  // Per input packet (valid for candidates; #ipLength also for other TCP).
  readonly #hdrLength: Int32Array;
  readonly #ipLength: Int32Array;
  readonly #payload: Int32Array;
  /** Next packet of the same coalesced write, -1 at its end. */
  readonly #next: Int32Array;
  // Per write, in order of their first packet.
  readonly #head: Int32Array;
  readonly #tail: Int32Array;
  readonly #segments: Int32Array;
  readonly #bytes: Int32Array;
  /** Writes still open to more segments (indices into #head), oldest first. */
  readonly #open: Int32Array;
  #openCount = 0;

  constructor(capacity: number, counters = new OffloadCounters()) {
    this.capacity = capacity;
    this.counters = counters;
    this.iovOffsets = new Int32Array(capacity);
    this.iovLengths = new Int32Array(capacity);
    this.iovCounts = new Int32Array(capacity);
    this.errors = new Int32Array(capacity);
    this.#hdrLength = new Int32Array(capacity);
    this.#ipLength = new Int32Array(capacity);
    this.#payload = new Int32Array(capacity);
    this.#next = new Int32Array(capacity);
    this.#head = new Int32Array(capacity);
    this.#tail = new Int32Array(capacity);
    this.#segments = new Int32Array(capacity);
    this.#bytes = new Int32Array(capacity);
    this.#open = new Int32Array(OPEN_FLOWS);
  }

  /**
   * Plans the writes for packets i < count (packet i at slab[offsets[i]], lengths[i] bytes, 16
   * writable bytes before it), writing virtio_net_hdrs into the headroom and fixing the headers
   * of coalesced packets in place. Returns how many writes; their ranges are in iovOffsets/
   * iovLengths/iovCounts, and iovCounts[w] is also how many packets write w carries.
   */
  build(slab: Uint8Array, offsets: Int32Array, lengths: Int32Array, count: number): number {
    if (count > this.capacity) throw new RangeError(`TcpCoalescer: ${count} packets, room for ${this.capacity}`);
    let writes = 0;
    this.#openCount = 0;
    for (let i = 0; i < count; i++) {
      this.#next[i] = -1;
      const kind = this.#classify(slab, offsets[i]!, lengths[i]!, i);
      if (kind === CANDIDATE && this.#append(slab, offsets, i)) continue;
      // Any other TCP packet of a flow ends its open write, so it is not overtaken by later data.
      if (kind === OTHER_TCP) this.#closeFlow(slab, offsets, i);
      const w = writes++;
      this.#head[w] = i;
      this.#tail[w] = i;
      this.#segments[w] = 1;
      this.#bytes[w] = lengths[i]!;
      if (kind === CANDIDATE && (slab[offsets[i]! + this.#ipLength[i]! + 13]! & TCP_PSH) === 0) this.#keepOpen(w);
    }
    let range = 0;
    for (let w = 0; w < writes; w++) range = this.#emit(slab, offsets, lengths, w, range);
    return writes;
  }

  /** Fills the per-packet fields: CANDIDATE can be coalesced, OTHER_TCP (ipLength set) cannot, NOT_TCP has no flow here. */
  #classify(slab: Uint8Array, at: number, length: number, i: number): number {
    const version = slab[at]! >> 4;
    let ipLength: number;
    let plain: boolean;
    if (version === 4) {
      if (length < 40 || slab[at] !== 0x45 || slab[at + 9] !== 6) return NOT_TCP;
      ipLength = 20;
      // Not a fragment (DF allowed), the length is the packet's.
      plain = (readU16(slab, at + 6) & 0x3fff) === 0 && readU16(slab, at + 2) === length;
    } else if (version === 6) {
      if (length < 60 || slab[at + 6] !== 6) return NOT_TCP;
      ipLength = 40;
      plain = 40 + readU16(slab, at + 4) === length;
    } else {
      return NOT_TCP;
    }
    this.#ipLength[i] = ipLength;
    const tcp = at + ipLength;
    const tcpLength = (slab[tcp + 12]! >> 4) * 4;
    if (!plain || tcpLength < 20 || ipLength + tcpLength >= length || (slab[tcp + 13]! & ~TCP_PSH) !== TCP_ACK) return OTHER_TCP;
    this.#hdrLength[i] = ipLength + tcpLength;
    this.#payload[i] = length - ipLength - tcpLength;
    return CANDIDATE;
  }

  #closeFlow(slab: Uint8Array, offsets: Int32Array, i: number): void {
    for (let o = 0; o < this.#openCount; o++) {
      const head = this.#head[this.#open[o]!]!;
      if (sameFlow(slab, offsets[head]!, offsets[i]!, this.#ipLength[head]!, this.#ipLength[i]!)) {
        this.#close(o);
        return;
      }
    }
  }

  /** Adds packet i to the open write of its flow if it continues it; a flow it does not continue is closed. */
  #append(slab: Uint8Array, offsets: Int32Array, i: number): boolean {
    const at = offsets[i]!;
    for (let o = 0; o < this.#openCount; o++) {
      const w = this.#open[o]!;
      const head = this.#head[w]!;
      const h = offsets[head]!;
      if (!sameFlow(slab, h, at, this.#ipLength[head]!, this.#ipLength[i]!)) continue;
      const tail = this.#tail[w]!;
      if (!this.#continues(slab, offsets, head, tail, i, w)) {
        this.#close(o);
        return false;
      }
      this.#next[tail] = i;
      this.#tail[w] = i;
      this.#segments[w] = this.#segments[w]! + 1;
      this.#bytes[w] = this.#bytes[w]! + this.#payload[i]!;
      if (this.#payload[i]! < this.#payload[head]! || (slab[at + this.#ipLength[i]! + 13]! & TCP_PSH) !== 0 || this.#segments[w] === MAX_SEGMENTS) this.#close(o);
      return true;
    }
    return false;
  }

  /** Whether packet i (same flow) can follow tail in write w, whose first packet is head. */
  #continues(slab: Uint8Array, offsets: Int32Array, head: number, tail: number, i: number, w: number): boolean {
    const hdrLength = this.#hdrLength[head]!;
    const payload = this.#payload[i]!;
    if (this.#hdrLength[i] !== hdrLength || payload > this.#payload[head]! || this.#bytes[w]! + payload > MAX_IP_LENGTH) return false;
    const h = offsets[head]!;
    const p = offsets[i]!;
    const ipLength = this.#ipLength[head]!;
    if (ipLength === 20) {
      // TOS, flags (DF), TTL.
      if (slab[h + 1] !== slab[p + 1] || slab[h + 6] !== slab[p + 6] || slab[h + 8] !== slab[p + 8]) return false;
    } else if (slab[h] !== slab[p] || slab[h + 1] !== slab[p + 1] || slab[h + 2] !== slab[p + 2] || slab[h + 3] !== slab[p + 3] || slab[h + 7] !== slab[p + 7]) {
      return false;
    }
    const t = offsets[tail]! + ipLength;
    if (readU32(slab, p + ipLength + 4) !== ((readU32(slab, t + 4) + this.#payload[tail]!) >>> 0)) return false;
    // ack, data offset/flags (equal up to PSH, checked in #classify), window, then the options.
    for (let k = ipLength + 8; k < ipLength + 12; k++) if (slab[h + k] !== slab[p + k]) return false;
    if (slab[h + ipLength + 14] !== slab[p + ipLength + 14] || slab[h + ipLength + 15] !== slab[p + ipLength + 15]) return false;
    for (let k = ipLength + 20; k < hdrLength; k++) if (slab[h + k] !== slab[p + k]) return false;
    return true;
  }

  #keepOpen(w: number): void {
    if (this.#openCount === OPEN_FLOWS) this.#close(0);
    this.#open[this.#openCount++] = w;
  }

  #close(o: number): void {
    this.#open.copyWithin(o, o + 1, this.#openCount);
    this.#openCount--;
  }

  /** Writes write w's virtio_net_hdr (and, when coalesced, its new headers) and ranges from `range`; returns the next range. */
  #emit(slab: Uint8Array, offsets: Int32Array, lengths: Int32Array, w: number, range: number): number {
    const head = this.#head[w]!;
    const h = offsets[head]!;
    const segments = this.#segments[w]!;
    this.iovCounts[w] = segments;
    this.iovOffsets[range] = h - VNET_HDR_LENGTH;
    this.iovLengths[range] = lengths[head]! + VNET_HDR_LENGTH;
    range++;
    if (segments === 1) {
      writePlainHeader(slab, h - VNET_HDR_LENGTH);
      return range;
    }
    const ipLength = this.#ipLength[head]!;
    const hdrLength = this.#hdrLength[head]!;
    const total = this.#bytes[w]!;
    const tcp = h + ipLength;
    if (ipLength === 20) {
      writeU16(slab, h + 2, total);
      setIpv4HeaderChecksum(slab, h, 20);
    } else {
      writeU16(slab, h + 4, total - 40);
    }
    const tail = this.#tail[w]!;
    slab[tcp + 13] = slab[tcp + 13]! | (slab[offsets[tail]! + ipLength + 13]! & TCP_PSH);
    writeU16(slab, tcp + 16, fold(pseudoHeaderSum(slab, h, ipLength === 20 ? 4 : 6, 6, total - ipLength)));
    writeTcpGsoHeader(slab, h - VNET_HDR_LENGTH, ipLength === 20 ? GSO_TCPV4 : GSO_TCPV6, hdrLength, this.#payload[head]!, ipLength);
    for (let p = this.#next[head]!; p !== -1; p = this.#next[p]!) {
      this.iovOffsets[range] = offsets[p]! + hdrLength;
      this.iovLengths[range] = this.#payload[p]!;
      range++;
    }
    this.counters.coalescedWrites++;
    this.counters.coalescedSegments += segments;
    return range;
  }
}

/** Same addresses and TCP ports (IPv4 header at a, IPv6 at b, or both the same family). */
function sameFlow(slab: Uint8Array, a: number, b: number, ipLengthA: number, ipLengthB: number): boolean {
  if (ipLengthA !== ipLengthB) return false;
  const from = ipLengthA === 20 ? 12 : 8;
  for (let k = from; k < ipLengthA + 4; k++) if (slab[a + k] !== slab[b + k]) return false;
  return true;
}
