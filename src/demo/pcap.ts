/**
 * Just enough of the classic pcap format to say what crossed a wire: a 24-byte global header
 * (magic a1b2c3d4 for microseconds or a1b23c4d for nanoseconds, in either byte order), then
 * records of a 16-byte header and the captured bytes. Link layers: Ethernet (with 802.1Q tags),
 * Linux cooked v1/v2, raw IP. Network: IPv4 (non-first fragments have no ports), IPv6 (the
 * first next-header only), ARP. Transport: UDP, TCP, ICMP.
 */

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
  readonly source?: string;
  readonly destination?: string;
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
  const source = `${packet[12]}.${packet[13]}.${packet[14]}.${packet[15]}`;
  const destination = `${packet[16]}.${packet[17]}.${packet[18]}.${packet[19]}`;
  const body = packet.subarray(headerLength, Math.max(headerLength, totalLength));
  return { network: 'IPv4', source, destination, ...transport(proto, body, fragmentOffset !== 0, 'ICMP', 'IPv4 proto') };
}

function ipv6(packet: Uint8Array): PacketSummary {
  if (packet.length < 40 || packet[0]! >> 4 !== 6) return { protocol: 'IPv6 (malformed)', network: 'IPv6' };
  const payloadLength = u16(packet, 4);
  const next = packet[6]!;
  const group = (at: number): string => u16(packet, at).toString(16);
  const address = (at: number): string => [0, 2, 4, 6, 8, 10, 12, 14].map((i) => group(at + i)).join(':');
  const body = packet.subarray(40, Math.min(packet.length, 40 + payloadLength));
  return { network: 'IPv6', source: address(8), destination: address(24), ...transport(next, body, false, 'ICMPv6', 'IPv6 next') };
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
      return payload.length >= 32 && payload.length % 16 === 0 ? 'data' : undefined;
    default:
      return undefined;
  }
}

export interface CaptureReport {
  readonly packets: number;
  readonly bytes: number;
  readonly truncated: boolean;
  /** Flow label (see flowLabel: "UDP 51820", "TCP 8080", "ARP", …) → packet count. */
  readonly flows: ReadonlyMap<string, number>;
  /** WireGuard message kind → count, over UDP packets that look like WireGuard. */
  readonly wireGuard: ReadonlyMap<string, number>;
  /** Secret name → number of packets whose captured bytes contain it. */
  readonly secretHits: ReadonlyMap<string, number>;
  /** Secret name → the first captured frame that contains it. */
  readonly secretFrames: ReadonlyMap<string, Uint8Array>;
  /** The largest transport payload seen (for a glimpse of what the wire carried). */
  readonly largestPayload: Uint8Array | undefined;
}

/**
 * Labels a packet by protocol and service port. The service port is the well-known side:
 * the one in `ports` when either end uses it, else the lower of the two.
 */
export function flowLabel(summary: PacketSummary, ports: readonly number[]): string {
  if (summary.sourcePort === undefined || summary.destinationPort === undefined) return summary.protocol;
  const known = ports.find((port) => port === summary.sourcePort || port === summary.destinationPort);
  return `${summary.protocol} ${known ?? Math.min(summary.sourcePort, summary.destinationPort)}`;
}

/** Reads a capture and reports what it carried and which secrets (exact bytes) appear in it. */
export function analyzeCapture(file: Uint8Array, secrets: Readonly<Record<string, Uint8Array>>, servicePorts: readonly number[] = []): CaptureReport {
  const pcap = parsePcap(file);
  const flows = new Map<string, number>();
  const wireGuard = new Map<string, number>();
  const secretHits = new Map<string, number>(Object.keys(secrets).map((name) => [name, 0]));
  const secretFrames = new Map<string, Uint8Array>();
  let bytes = 0;
  let largestPayload: Uint8Array | undefined;
  for (const record of pcap.records) {
    bytes += record.originalLength;
    const summary = summarize(record.data, pcap.linkType);
    const label = flowLabel(summary, servicePorts);
    flows.set(label, (flows.get(label) ?? 0) + 1);
    if (summary.protocol === 'UDP' && summary.payload) {
      const kind = wireGuardMessageType(summary.payload);
      if (kind) wireGuard.set(kind, (wireGuard.get(kind) ?? 0) + 1);
    }
    if (summary.payload && summary.payload.length > (largestPayload?.length ?? 0)) largestPayload = summary.payload;
    const haystack = Buffer.from(record.data.buffer, record.data.byteOffset, record.data.byteLength);
    for (const [name, needle] of Object.entries(secrets)) {
      if (needle.length === 0 || haystack.indexOf(needle) === -1) continue;
      secretHits.set(name, (secretHits.get(name) ?? 0) + 1);
      if (!secretFrames.has(name)) secretFrames.set(name, record.data);
    }
  }
  // Belt and braces: a secret anywhere in the file counts, even if no single record held it whole.
  const whole = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  for (const [name, needle] of Object.entries(secrets)) {
    if (secretHits.get(name) === 0 && needle.length > 0 && whole.indexOf(needle) !== -1) secretHits.set(name, 1);
  }
  return { packets: pcap.records.length, bytes, truncated: pcap.truncated, flows, wireGuard, secretHits, secretFrames, largestPayload };
}

/**
 * The readable text around needle in bytes: the run of printable ASCII containing it, cut at
 * line breaks and to at most maxLength characters. undefined when needle is not there.
 */
export function textAround(bytes: Uint8Array, needle: Uint8Array, maxLength = 100): string | undefined {
  const haystack = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const at = haystack.indexOf(needle);
  if (at === -1) return undefined;
  const printable = (b: number | undefined): boolean => b !== undefined && b >= 0x20 && b < 0x7f;
  let start = at;
  while (start > 0 && printable(haystack[start - 1]) && at + needle.length - (start - 1) <= maxLength) start--;
  let end = at + needle.length;
  while (end < haystack.length && printable(haystack[end]) && end + 1 - start <= maxLength) end++;
  return haystack.subarray(start, end).toString('latin1');
}
