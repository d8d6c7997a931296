/**
 * Just enough of the classic pcap format to say what crossed a wire: a 24-byte global header
 * (magic a1b2c3d4 for microseconds or a1b23c4d for nanoseconds, in either byte order), then
 * records of a 16-byte header and the captured bytes. Link layers: Ethernet (with 802.1Q tags),
 * Linux cooked v1/v2, raw IP. Network: IPv4 (non-first fragments have no ports), IPv6 (the
 * first next-header only), ARP. Transport: UDP, TCP, ICMP. Used by `wgts demo` and
 * `wgts verify`; nothing here throws on an odd frame (only parsePcap on a file that is not pcap).
 */
import { formatIp } from './ip.ts';

export const LINKTYPE_ETHERNET = 1;
export const LINKTYPE_RAW = 101;
export const LINKTYPE_LINUX_SLL = 113;
export const LINKTYPE_LINUX_SLL2 = 276;

export interface PcapRecord {
  /** Seconds since the epoch (fractional). */
  readonly time: number;
  readonly originalLength: number;
  /** The captured bytes (a view into the file's buffer). */
  readonly data: Uint8Array;
}

export interface PcapFile {
  readonly linkType: number;
  readonly snapLength: number;
  readonly records: readonly PcapRecord[];
  /** The file ended inside a record (a capture cut short): that record is left out. */
  readonly truncated: boolean;
}

export function parsePcap(file: Uint8Array): PcapFile {
  if (file.length < 24) throw new Error(`not a pcap file: ${file.length} bytes, the header alone is 24`);
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const magicBig = view.getUint32(0, false);
  let little: boolean;
  let nanos: boolean;
  if (magicBig === 0xa1b2c3d4 || magicBig === 0xa1b23c4d) {
    little = false;
    nanos = magicBig === 0xa1b23c4d;
  } else {
    const magicLittle = view.getUint32(0, true);
    if (magicLittle !== 0xa1b2c3d4 && magicLittle !== 0xa1b23c4d) {
      throw new Error(`not a pcap file: magic ${magicBig.toString(16).padStart(8, '0')} (pcapng is not supported)`);
    }
    little = true;
    nanos = magicLittle === 0xa1b23c4d;
  }
  const snapLength = view.getUint32(16, little);
  const linkType = view.getUint32(20, little) & 0x0fffffff;
  const records: PcapRecord[] = [];
  let offset = 24;
  let truncated = false;
  while (offset < file.length) {
    if (offset + 16 > file.length) {
      truncated = true;
      break;
    }
    const seconds = view.getUint32(offset, little);
    const fraction = view.getUint32(offset + 4, little);
    const capturedLength = view.getUint32(offset + 8, little);
    const originalLength = view.getUint32(offset + 12, little);
    const start = offset + 16;
    if (start + capturedLength > file.length) {
      truncated = true;
      break;
    }
    records.push({
      time: seconds + fraction / (nanos ? 1e9 : 1e6),
      originalLength,
      data: file.subarray(start, start + capturedLength),
    });
    offset = start + capturedLength;
  }
  return { linkType, snapLength, records, truncated };
}

export interface PacketSummary {
  /** 'UDP' | 'TCP' | 'ICMP' | 'ICMPv6' | 'ARP' | 'IPv4 proto N' | 'IPv6 next N' | 'ethertype 0xNNNN' | 'unknown' */
  readonly protocol: string;
  readonly network: 'IPv4' | 'IPv6' | 'ARP' | 'other';
  /** Canonical text (IPv6 as RFC 5952). */
  readonly source?: string;
  readonly destination?: string;
  /** The same addresses as bytes (4 or 16; views into the frame). */
  readonly sourceBytes?: Uint8Array;
  readonly destinationBytes?: Uint8Array;
  readonly sourcePort?: number;
  readonly destinationPort?: number;
  /** The transport payload (UDP data, TCP segment data), when there is one. */
  readonly payload?: Uint8Array;
}

const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_ARP = 0x0806;
const ETHERTYPE_VLAN = 0x8100;
const ETHERTYPE_QINQ = 0x88a8;
const ETHERTYPE_IPV6 = 0x86dd;

/** What one captured frame carries. Short or odd frames are described as far as they go, never thrown on. */
export function summarize(frame: Uint8Array, linkType: number): PacketSummary {
  let etherType: number;
  let offset: number;
  switch (linkType) {
    case LINKTYPE_ETHERNET:
      if (frame.length < 14) return { protocol: 'unknown', network: 'other' };
      etherType = u16(frame, 12);
      offset = 14;
      while ((etherType === ETHERTYPE_VLAN || etherType === ETHERTYPE_QINQ) && frame.length >= offset + 4) {
        etherType = u16(frame, offset + 2);
        offset += 4;
      }
      break;
    case LINKTYPE_LINUX_SLL:
      if (frame.length < 16) return { protocol: 'unknown', network: 'other' };
      etherType = u16(frame, 14);
      offset = 16;
      break;
    case LINKTYPE_LINUX_SLL2:
      if (frame.length < 20) return { protocol: 'unknown', network: 'other' };
      etherType = u16(frame, 0);
      offset = 20;
      break;
    case LINKTYPE_RAW: {
      const version = (frame[0] ?? 0) >> 4;
      etherType = version === 4 ? ETHERTYPE_IPV4 : version === 6 ? ETHERTYPE_IPV6 : 0;
      offset = 0;
      break;
    }
    default:
      return { protocol: `link type ${linkType}`, network: 'other' };
  }
  if (etherType === ETHERTYPE_ARP) return { protocol: 'ARP', network: 'ARP' };
  if (etherType === ETHERTYPE_IPV4) return ipv4(frame.subarray(offset));
  if (etherType === ETHERTYPE_IPV6) return ipv6(frame.subarray(offset));
  return { protocol: `ethertype 0x${etherType.toString(16).padStart(4, '0')}`, network: 'other' };
}

function ipv4(packet: Uint8Array): PacketSummary {
  if (packet.length < 20 || packet[0]! >> 4 !== 4) return { protocol: 'IPv4 (malformed)', network: 'IPv4' };
  const headerLength = (packet[0]! & 0x0f) * 4;
  const totalLength = Math.min(u16(packet, 2), packet.length);
  const fragmentOffset = u16(packet, 6) & 0x1fff;
  const proto = packet[9]!;
  const sourceBytes = packet.subarray(12, 16);
  const destinationBytes = packet.subarray(16, 20);
  const body = packet.subarray(headerLength, Math.max(headerLength, totalLength));
  return {
    network: 'IPv4',
    source: formatIp(sourceBytes),
    destination: formatIp(destinationBytes),
    sourceBytes,
    destinationBytes,
    ...transport(proto, body, fragmentOffset !== 0, 'ICMP', 'IPv4 proto'),
  };
}

function ipv6(packet: Uint8Array): PacketSummary {
  if (packet.length < 40 || packet[0]! >> 4 !== 6) return { protocol: 'IPv6 (malformed)', network: 'IPv6' };
  const payloadLength = u16(packet, 4);
  const next = packet[6]!;
  const sourceBytes = packet.subarray(8, 24);
  const destinationBytes = packet.subarray(24, 40);
  const body = packet.subarray(40, Math.min(packet.length, 40 + payloadLength));
  return {
    network: 'IPv6',
    source: formatIp(sourceBytes),
    destination: formatIp(destinationBytes),
    sourceBytes,
    destinationBytes,
    ...transport(next, body, false, 'ICMPv6', 'IPv6 next'),
  };
}

function transport(
  proto: number,
  body: Uint8Array,
  laterFragment: boolean,
  icmpName: string,
  otherName: string,
): Pick<PacketSummary, 'protocol' | 'sourcePort' | 'destinationPort' | 'payload'> {
  if (proto === 17) {
    if (laterFragment || body.length < 8) return { protocol: 'UDP' };
    return { protocol: 'UDP', sourcePort: u16(body, 0), destinationPort: u16(body, 2), payload: body.subarray(8) };
  }
  if (proto === 6) {
    if (laterFragment || body.length < 20) return { protocol: 'TCP' };
    const dataOffset = (body[12]! >> 4) * 4;
    return { protocol: 'TCP', sourcePort: u16(body, 0), destinationPort: u16(body, 2), payload: body.subarray(Math.min(dataOffset, body.length)) };
  }
  if (proto === 1 || proto === 58) return { protocol: icmpName };
  return { protocol: `${otherName} ${proto}` };
}

function u16(bytes: Uint8Array, at: number): number {
  return ((bytes[at] ?? 0) << 8) | (bytes[at + 1] ?? 0);
}

/** The four WireGuard message types as they look on the wire (type byte, three zero bytes, fixed sizes). */
export function wireGuardMessageType(payload: Uint8Array): 'initiation' | 'response' | 'cookie' | 'data' | undefined {
  if (payload.length < 4 || payload[1] !== 0 || payload[2] !== 0 || payload[3] !== 0) return undefined;
  switch (payload[0]) {
    case 1:
      return payload.length === 148 ? 'initiation' : undefined;
    case 2:
      return payload.length === 92 ? 'response' : undefined;
    case 3:
      return payload.length === 64 ? 'cookie' : undefined;
    case 4:
      // Header (16) + plaintext padded to a multiple of 16 *but never past the MTU* + tag (16):
      // a full-size packet is not a multiple of 16 unless the MTU is (1420 → 1452 bytes on the
      // wire). A capture on the sending host may also hold a UDP GSO run of several messages as
      // one datagram. Both are WireGuard data; only the minimum length is fixed.
      return payload.length >= 32 ? 'data' : undefined;
    default:
      return undefined;
  }
}
