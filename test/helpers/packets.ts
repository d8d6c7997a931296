/** Hand-built frames and pcap files for the capture tests (demo, verify): no checksums, no options. */
import { LINKTYPE_ETHERNET } from '../../src/util/pcap.ts';

export function ipv4(proto: number, src: readonly number[], dst: readonly number[], l4: Uint8Array): Uint8Array {
  const ip = new Uint8Array(20 + l4.length);
  ip[0] = 0x45;
  ip[2] = ip.length >> 8;
  ip[3] = ip.length & 0xff;
  ip[8] = 64;
  ip[9] = proto;
  ip.set(src, 12);
  ip.set(dst, 16);
  ip.set(l4, 20);
  return ip;
}

export function ipv6(next: number, src: readonly number[], dst: readonly number[], l4: Uint8Array): Uint8Array {
  const ip = new Uint8Array(40 + l4.length);
  ip[0] = 0x60;
  ip[4] = l4.length >> 8;
  ip[5] = l4.length & 0xff;
  ip[6] = next;
  ip[7] = 64;
  ip.set(src, 8);
  ip.set(dst, 24);
  ip.set(l4, 40);
  return ip;
}

/** A UDP (headerLength 8, with its length field) or TCP (20, data offset 5) header in front of payload. */
function ports(headerLength: number, sport: number, dport: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(headerLength + payload.length);
  out[0] = sport >> 8;
  out[1] = sport & 0xff;
  out[2] = dport >> 8;
  out[3] = dport & 0xff;
  if (headerLength === 8) {
    out[4] = out.length >> 8;
    out[5] = out.length & 0xff;
  } else {
    out[12] = 5 << 4;
  }
  out.set(payload, headerLength);
  return out;
}

export const udp = (sport: number, dport: number, payload: Uint8Array = new Uint8Array(4)): Uint8Array => ports(8, sport, dport, payload);
export const tcp = (sport: number, dport: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array => ports(20, sport, dport, payload);
export const icmp = (): Uint8Array => Uint8Array.of(8, 0, 0, 0, 0, 1, 0, 1);

export function ethernet(etherType: number, body: Uint8Array): Uint8Array {
  const frame = new Uint8Array(14 + body.length);
  frame.fill(0x02, 0, 12);
  frame[12] = etherType >> 8;
  frame[13] = etherType & 0xff;
  frame.set(body, 14);
  return frame;
}

/** A pcap file of Ethernet frames, in either byte order, with micro- or nanosecond timestamps. */
export function pcap(frames: readonly Uint8Array[], options: { little?: boolean; nanos?: boolean } = {}): Uint8Array {
  const little = options.little ?? true;
  const nanos = options.nanos ?? false;
  const out = new Uint8Array(24 + frames.reduce((n, f) => n + 16 + f.length, 0));
  const view = new DataView(out.buffer);
  view.setUint32(0, nanos ? 0xa1b23c4d : 0xa1b2c3d4, little);
  view.setUint16(4, 2, little);
  view.setUint16(6, 4, little);
  view.setUint32(16, 262144, little);
  view.setUint32(20, LINKTYPE_ETHERNET, little);
  let at = 24;
  frames.forEach((frame, i) => {
    view.setUint32(at, 1_700_000_000 + i, little);
    view.setUint32(at + 4, 500, little);
    view.setUint32(at + 8, frame.length, little);
    view.setUint32(at + 12, frame.length, little);
    out.set(frame, at + 16);
    at += 16 + frame.length;
  });
  return out;
}
