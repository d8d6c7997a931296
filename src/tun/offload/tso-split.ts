/**
 * The read side of TUN offload: each read is a virtio_net_hdr and a packet of up to 64 KiB. A TCP
 * super-packet (gso_type TCPV4/TCPV6) is cut into gso_size segments, each a complete IP packet
 * with its own lengths, IPv4 ID and header checksum, sequence number, flags and full TCP checksum
 * — what the kernel would have put on the wire. A plain packet with a partial checksum
 * (NEEDS_CSUM: local UDP/TCP) gets it completed. Everything lands in the caller's packet slots.
 *
 * Reads are staged in a raw area of the same buffer as the slots, so every move is a
 * copyWithin (no view per packet). On a SharedArrayBuffer that copy is ten times slower unless
 * source and target have the same address mod 8, so each packet is placed up to 7 bytes into
 * its slot to match (the slots need that much spare). A super-packet that does not fit the slots
 * left is resumed on the next call. Anything malformed is dropped and counted, never thrown.
 */
import { finish, pseudoHeaderSum, readU16, readU32, setIpv4HeaderChecksum, sum16, wordsOf, writeU16, writeU32 } from './checksum.ts';
import {
  GSO_ECN,
  GSO_NONE,
  GSO_TCPV4,
  GSO_TCPV6,
  OffloadCounters,
  readU16le,
  VNET_CSUM_OFFSET,
  VNET_CSUM_START,
  VNET_F_NEEDS_CSUM,
  VNET_FLAGS,
  VNET_GSO_SIZE,
  VNET_GSO_TYPE,
  VNET_HDR_LENGTH,
} from './virtio-net-hdr.ts';

/**
 * A raw read slot: the header, the largest IP packet, a little spare (a longer read is truncated:
 * -1), rounded to 8 bytes so every slot's packet has the same alignment.
 */
export const RAW_SLOT_SIZE = 65552;

/** Bytes of raw area for n raw slots (the slots start 6 bytes in, so their packets are 8-aligned). */
export function rawAreaSize(n: number): number {
  return 8 + n * RAW_SLOT_SIZE;
}

const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;

/** Where a super-packet's headers are, worked out once and reused for each of its segments. */
interface Layout {
  version: number;
  ipLength: number; // IP header (and IPv6 extension headers) = where TCP starts
  hdrLength: number; // IP + TCP headers
  gsoSize: number;
  payload: number; // bytes after the headers
}

export class TsoSplitter {
  /** The reads go here (readBatch(rawView, RAW_SLOT_SIZE, rawLengths, ≤ rawSlots)). */
  readonly rawView: Uint8Array;
  readonly rawLengths: Int32Array;
  readonly rawSlots: number;
  readonly counters: OffloadCounters;
  readonly #buffer: Uint8Array;
  readonly #words: Uint32Array;
  readonly #rawStart: number;
  readonly #slots: Int32Array;
  readonly #maxPacket: number;
  #loaded = 0;
  #next = 0;
  /** Next segment of read #next when it is a super-packet cut short by full slots; else 0. */
  #segment = 0;
  readonly #layout: Layout = { version: 0, ipLength: 0, hdrLength: 0, gsoSize: 0, payload: 0 };

  /**
   * buffer holds the caller's packet slots, slot j at buffer[slots[j]] with room for maxPacket + 7
   * bytes, and from rawStart rawAreaSize(rawSlots) bytes of raw read area. Longer output packets
   * are dropped.
   */
  constructor(buffer: Uint8Array, slots: Int32Array, rawStart: number, rawSlots: number, maxPacket: number, counters = new OffloadCounters()) {
    if (rawStart + rawAreaSize(rawSlots) > buffer.length) throw new RangeError('TsoSplitter: the raw area does not fit the buffer');
    this.#buffer = buffer;
    this.#words = wordsOf(buffer);
    this.#slots = slots;
    // The packet of raw slot 0 (after its 10-byte header) at an 8-aligned address.
    this.#rawStart = rawStart + ((6 - (buffer.byteOffset + rawStart)) & 7);
    this.rawSlots = rawSlots;
    this.rawView = buffer.subarray(this.#rawStart, this.#rawStart + rawSlots * RAW_SLOT_SIZE);
    this.rawLengths = new Int32Array(rawSlots);
    this.#maxPacket = maxPacket;
    this.counters = counters;
  }

  /** Whether reads are staged that have not all been handed out yet. */
  get pending(): boolean {
    return this.#next < this.#loaded;
  }

  /** n reads were made into rawView/rawLengths (only call when nothing is pending). */
  loaded(n: number): void {
    this.#loaded = n;
    this.#next = 0;
    this.#segment = 0;
  }

  /**
   * Hands out staged packets into slots count, count + 1, … < capacity: packet j at
   * buffer[offsets[j]] (0–7 bytes past slots[j]), its length in lengths[j]. Returns the new
   * count; reads left over (slots full) stay pending for the next call.
   */
  split(offsets: Int32Array, lengths: Int32Array, count: number, capacity: number): number {
    const buf = this.#buffer;
    while (this.#next < this.#loaded && count < capacity) {
      const read = this.rawLengths[this.#next]!;
      const raw = this.#rawStart + this.#next * RAW_SLOT_SIZE;
      const gsoType = read >= VNET_HDR_LENGTH ? buf[raw + VNET_GSO_TYPE]! & ~GSO_ECN : -1;
      if (gsoType === GSO_TCPV4 || gsoType === GSO_TCPV6) {
        const layout = this.#segment === 0 ? this.#parseSuper(raw, read - VNET_HDR_LENGTH, gsoType) : this.#layout;
        if (layout !== undefined) {
          count = this.#cut(raw + VNET_HDR_LENGTH, layout, offsets, lengths, count, capacity);
          if (this.#segment !== 0) return count; // slots full mid super-packet
        } else {
          this.counters.readDropped++;
        }
      } else if (gsoType === GSO_NONE) {
        const to = this.#place(count, raw + VNET_HDR_LENGTH);
        if (this.#copyPlain(raw, read - VNET_HDR_LENGTH, to)) {
          offsets[count] = to;
          lengths[count] = read - VNET_HDR_LENGTH;
          count++;
        } else {
          this.counters.readDropped++;
        }
      } else {
        this.counters.readDropped++;
      }
      this.#next++;
    }
    return count;
  }

  /** Where in slot j to put bytes copied from `from`: the same address mod 8. */
  #place(j: number, from: number): number {
    const slot = this.#slots[j]!;
    return slot + ((from - slot) & 7);
  }

  /** Copies a plain packet to `to`, completing a partial checksum. False: malformed, dropped. */
  #copyPlain(raw: number, length: number, to: number): boolean {
    const buf = this.#buffer;
    if (length < 1 || length > this.#maxPacket) return false;
    buf.copyWithin(to, raw + VNET_HDR_LENGTH, raw + VNET_HDR_LENGTH + length);
    if ((buf[raw + VNET_FLAGS]! & VNET_F_NEEDS_CSUM) === 0) return true;
    const start = readU16le(buf, raw + VNET_CSUM_START);
    const at = start + readU16le(buf, raw + VNET_CSUM_OFFSET);
    if (at + 2 > length) return false;
    // The field holds the pseudo-header sum; the checksum covers it and everything from start.
    const sum = sum16(buf, to + start, to + length, 0, this.#words);
    writeU16(buf, to + at, finish(sum));
    this.counters.checksumsCompleted++;
    return true;
  }

  /** Checks a super-packet's headers against its virtio_net_hdr; undefined: drop it. */
  #parseSuper(raw: number, length: number, gsoType: number): Layout | undefined {
    const buf = this.#buffer;
    const ip = raw + VNET_HDR_LENGTH;
    if (length < 40) return undefined;
    const version = buf[ip]! >> 4;
    const tcp = readU16le(buf, raw + VNET_CSUM_START);
    if (gsoType === GSO_TCPV4) {
      if (version !== 4 || (buf[ip]! & 0x0f) * 4 !== tcp || tcp < 20 || buf[ip + 9] !== 6 || readU16(buf, ip + 2) !== length) return undefined;
    } else if (version !== 6 || tcp < 40 || 40 + readU16(buf, ip + 4) !== length) {
      return undefined;
    }
    if (tcp + 20 > length) return undefined;
    const tcpLength = (buf[ip + tcp + 12]! >> 4) * 4;
    const hdrLength = tcp + tcpLength;
    const gsoSize = readU16le(buf, raw + VNET_GSO_SIZE);
    // The kernel's hdr_len is only a hint; the headers are what the packet says they are.
    if (tcpLength < 20 || hdrLength >= length || gsoSize === 0 || hdrLength + gsoSize > this.#maxPacket) return undefined;
    const layout = this.#layout;
    layout.version = version;
    layout.ipLength = tcp;
    layout.hdrLength = hdrLength;
    layout.gsoSize = gsoSize;
    layout.payload = length - hdrLength;
    this.counters.tsoPackets++;
    return layout;
  }

  /** Writes the segments of the super-packet at ip from #segment on into free slots. */
  #cut(ip: number, layout: Layout, offsets: Int32Array, lengths: Int32Array, count: number, capacity: number): number {
    const buf = this.#buffer;
    const { version, ipLength, hdrLength, gsoSize, payload } = layout;
    const segments = Math.ceil(payload / gsoSize);
    const tcp = ip + ipLength;
    const firstSeq = readU32(buf, tcp + 4);
    const firstId = version === 4 ? readU16(buf, ip + 4) : 0;
    const flags = buf[tcp + 13]!;
    let k = this.#segment;
    for (; k < segments && count < capacity; k++) {
      const from = hdrLength + k * gsoSize;
      // The payload (the bulk of the copy) co-aligned with its source.
      const to = this.#place(count, ip + from - hdrLength);
      offsets[count] = to;
      const size = Math.min(gsoSize, payload - k * gsoSize);
      const total = hdrLength + size;
      buf.copyWithin(to, ip, ip + hdrLength);
      buf.copyWithin(to + hdrLength, ip + from, ip + from + size);
      if (version === 4) {
        writeU16(buf, to + 2, total);
        writeU16(buf, to + 4, (firstId + k) & 0xffff);
        setIpv4HeaderChecksum(buf, to, ipLength);
      } else {
        writeU16(buf, to + 4, total - 40);
      }
      const t = to + ipLength;
      writeU32(buf, t + 4, (firstSeq + k * gsoSize) >>> 0);
      let f = flags;
      if (k !== segments - 1) f &= ~(TCP_FIN | TCP_PSH);
      if (k !== 0) f &= ~TCP_CWR;
      buf[t + 13] = f;
      buf[t + 16] = 0;
      buf[t + 17] = 0;
      const sum = sum16(buf, t, to + total, pseudoHeaderSum(buf, to, version, 6, total - ipLength), this.#words);
      writeU16(buf, t + 16, finish(sum));
      lengths[count] = total;
      count++;
      this.counters.tsoSegments++;
    }
    this.#segment = k < segments ? k : 0;
    return count;
  }
}
