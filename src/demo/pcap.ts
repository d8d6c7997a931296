/**
 * What the demo reads from its capture: flows, WireGuard messages and secrets. The pcap reader
 * and the Ethernet/IP/UDP/TCP parsing are shared with `wgts verify` in src/util/pcap.ts.
 */
import type { PacketSummary } from '../util/pcap.ts';
import { parsePcap, summarize, wireGuardMessageType } from '../util/pcap.ts';

export type { PacketSummary, PcapFile, PcapRecord } from '../util/pcap.ts';
export { LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW, parsePcap, summarize, wireGuardMessageType } from '../util/pcap.ts';

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
