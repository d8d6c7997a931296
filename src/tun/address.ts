/**
 * The 40-byte address record that recvBatch fills and sendBatch reads, one per datagram slot:
 *
 *   [0..16)  remote IP, IPv6 bytes (IPv4 as ::ffff:a.b.c.d)
 *   [16..18) remote port, big-endian
 *   [18]     family of the remote (4 or 6, after unmapping)
 *   [19]     0
 *   [20..36) local address the datagram arrived on (IP_PKTINFO / IPV6_PKTINFO), same encoding;
 *            all zero = unknown, let the kernel choose the source
 *   [36..40) interface index it arrived on, little-endian
 *
 * Writers that take bytes allocate nothing; string parsing and the readers allocate.
 */

export const ADDRESS_RECORD_SIZE = 40;
export const REMOTE_IP_OFFSET = 0;
export const REMOTE_PORT_OFFSET = 16;
export const FAMILY_OFFSET = 18;
export const LOCAL_IP_OFFSET = 20;
export const IFINDEX_OFFSET = 36;

export type IpFamily = 4 | 6;

export interface Endpoint {
  /** '1.2.3.4' or 'fd00::1' */
  address: string;
  port: number;
  family: IpFamily;
}

export interface LocalAddress {
  address: string;
  family: IpFamily;
  ifindex: number;
}

/** An IP address as text, or as 4 (IPv4) or 16 (IPv6, possibly ::ffff:-mapped) bytes. */
export type IpInput = string | Uint8Array;

function recordOffset(addrs: Uint8Array, slot: number): number {
  const offset = slot * ADDRESS_RECORD_SIZE;
  if (!Number.isInteger(slot) || slot < 0 || offset + ADDRESS_RECORD_SIZE > addrs.length) {
    throw new RangeError(`address record ${slot} lies outside a buffer of ${addrs.length} bytes`);
  }
  return offset;
}

function isMapped(bytes: Uint8Array, at: number): boolean {
  for (let i = 0; i < 10; i++) if (bytes[at + i] !== 0) return false;
  return bytes[at + 10] === 0xff && bytes[at + 11] === 0xff;
}

function isZero(bytes: Uint8Array, at: number, length: number): boolean {
  for (let i = 0; i < length; i++) if (bytes[at + i] !== 0) return false;
  return true;
}

// ---- parsing -------------------------------------------------------------------------------------

/** Parses dotted-quad text[start, end) into out[at..at+4); false if malformed. */
function parseIPv4(text: string, start: number, end: number, out: Uint8Array, at: number): boolean {
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = start; i <= end; i++) {
    const c = i < end ? text.charCodeAt(i) : 0x2e; // a virtual '.' ends the last part
    if (c >= 0x30 && c <= 0x39) {
      if (digits > 0 && value === 0) return false; // no leading zeros (ambiguous octal)
      value = value * 10 + (c - 0x30);
      if (value > 255 || ++digits > 3) return false;
    } else if (c === 0x2e) {
      if (digits === 0 || part > 3) return false;
      out[at + part++] = value;
      value = 0;
      digits = 0;
    } else {
      return false;
    }
  }
  return part === 4;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

/** Parses IPv6 text (with '::' and an optional trailing dotted quad) into out[at..at+16). */
function parseIPv6(text: string, out: Uint8Array, at: number): boolean {
  const groups = new Uint16Array(8);
  let count = 0;
  let gap = -1; // group index where '::' sits
  let i = 0;
  const end = text.length;
  if (text.startsWith('::')) {
    gap = 0;
    i = 2;
    if (i === end) {
      out.fill(0, at, at + 16);
      return true;
    }
  }
  while (i < end) {
    if (count === 8) return false;
    let value = 0;
    let digits = 0;
    let j = i;
    for (; j < end && digits <= 4; j++) {
      const v = hexValue(text.charCodeAt(j));
      if (v < 0) break;
      value = value * 16 + v;
      digits++;
    }
    if (j < end && text.charCodeAt(j) === 0x2e) {
      // Trailing IPv4 part: takes two groups.
      if (count > 6) return false;
      const v4 = new Uint8Array(4);
      if (!parseIPv4(text, i, end, v4, 0)) return false;
      groups[count++] = (v4[0]! << 8) | v4[1]!;
      groups[count++] = (v4[2]! << 8) | v4[3]!;
      i = end;
      break;
    }
    if (digits === 0 || digits > 4) return false;
    groups[count++] = value;
    i = j;
    if (i === end) break;
    if (text.charCodeAt(i) !== 0x3a) return false;
    i++;
    if (i < end && text.charCodeAt(i) === 0x3a) {
      if (gap >= 0) return false; // only one '::'
      gap = count;
      i++;
    } else if (i === end) {
      return false; // trailing single ':'
    }
  }
  if (gap < 0 ? count !== 8 : count > 7) return false;
  out.fill(0, at, at + 16);
  const tail = gap < 0 ? 0 : count - gap;
  const head = count - tail;
  for (let g = 0; g < head; g++) {
    out[at + 2 * g] = groups[g]! >> 8;
    out[at + 2 * g + 1] = groups[g]! & 0xff;
  }
  for (let g = 0; g < tail; g++) {
    const dst = 8 - tail + g;
    out[at + 2 * dst] = groups[head + g]! >> 8;
    out[at + 2 * dst + 1] = groups[head + g]! & 0xff;
  }
  return true;
}

/**
 * Writes an IP address as 16 bytes (IPv4 mapped to ::ffff:a.b.c.d) at out[at..at+16) and returns
 * its family. Throws a TypeError for anything that is not an IPv4 or IPv6 address (zones unsupported).
 */
export function writeIp(out: Uint8Array, at: number, ip: IpInput): IpFamily {
  if (typeof ip !== 'string') {
    if (ip.length === 4) {
      out.fill(0, at, at + 10);
      out[at + 10] = 0xff;
      out[at + 11] = 0xff;
      out.set(ip, at + 12);
      return 4;
    }
    if (ip.length === 16) {
      out.set(ip, at);
      return isMapped(ip, 0) ? 4 : 6;
    }
    throw new TypeError(`an IP address has 4 or 16 bytes, not ${ip.length}`);
  }
  if (parseIPv4(ip, 0, ip.length, out, at + 12)) {
    out.fill(0, at, at + 10);
    out[at + 10] = 0xff;
    out[at + 11] = 0xff;
    return 4;
  }
  if (parseIPv6(ip, out, at)) return isMapped(out, at) ? 4 : 6;
  throw new TypeError(`not an IP address: ${JSON.stringify(ip)}`);
}

// ---- formatting ----------------------------------------------------------------------------------

/** Text form of the 16 bytes at bytes[at..]: dotted quad when ::ffff:-mapped, else RFC 5952. */
export function formatIp(bytes: Uint8Array, at = 0): string {
  if (isMapped(bytes, at)) return `${bytes[at + 12]}.${bytes[at + 13]}.${bytes[at + 14]}.${bytes[at + 15]}`;
  // RFC 5952: compress the longest run (>= 2) of zero groups, the first one on a tie; lowercase.
  let bestStart = -1;
  let bestLength = 1;
  for (let g = 0; g < 8; ) {
    if (bytes[at + 2 * g] === 0 && bytes[at + 2 * g + 1] === 0) {
      let e = g;
      while (e < 8 && bytes[at + 2 * e] === 0 && bytes[at + 2 * e + 1] === 0) e++;
      if (e - g > bestLength) {
        bestStart = g;
        bestLength = e - g;
      }
      g = e;
    } else {
      g++;
    }
  }
  let text = '';
  for (let g = 0; g < 8; g++) {
    if (g === bestStart) {
      text += '::';
      g += bestLength - 1;
      continue;
    }
    if (text !== '' && !text.endsWith(':')) text += ':';
    text += ((bytes[at + 2 * g]! << 8) | bytes[at + 2 * g + 1]!).toString(16);
  }
  return text;
}

/** '1.2.3.4:51820' or '[fd00::1]:51820', as `wg` prints endpoints. */
export function formatHostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

// ---- records -------------------------------------------------------------------------------------

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`not a port: ${port}`);
}

/** Sets the remote half of record `slot` (IP, port, family); the local half is left alone. */
export function writeEndpoint(addrs: Uint8Array, slot: number, ip: IpInput, port: number): void {
  const offset = recordOffset(addrs, slot);
  checkPort(port);
  const family = writeIp(addrs, offset + REMOTE_IP_OFFSET, ip);
  addrs[offset + REMOTE_PORT_OFFSET] = port >>> 8;
  addrs[offset + REMOTE_PORT_OFFSET + 1] = port & 0xff;
  addrs[offset + FAMILY_OFFSET] = family;
  addrs[offset + FAMILY_OFFSET + 1] = 0;
}

/** Parses '1.2.3.4:51820' or '[fd00::1]:51820' into the remote half of record `slot`. */
export function writeEndpointString(addrs: Uint8Array, slot: number, endpoint: string): void {
  const colon = endpoint.lastIndexOf(':');
  let host = colon > 0 ? endpoint.slice(0, colon) : '';
  const portText = endpoint.slice(colon + 1);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  else if (host.includes(':')) host = ''; // IPv6 must be bracketed
  if (host === '' || !/^\d{1,5}$/.test(portText)) throw new TypeError(`not an endpoint: ${JSON.stringify(endpoint)}`);
  writeEndpoint(addrs, slot, host, Number(portText));
}

export function readEndpoint(addrs: Uint8Array, slot: number): Endpoint {
  const offset = recordOffset(addrs, slot);
  return {
    address: formatIp(addrs, offset + REMOTE_IP_OFFSET),
    port: readPort(addrs, slot),
    family: isMapped(addrs, offset + REMOTE_IP_OFFSET) ? 4 : 6,
  };
}

export function readPort(addrs: Uint8Array, slot: number): number {
  const offset = recordOffset(addrs, slot);
  return (addrs[offset + REMOTE_PORT_OFFSET]! << 8) | addrs[offset + REMOTE_PORT_OFFSET + 1]!;
}

/** '1.2.3.4:51820' / '[fd00::1]:51820' for the remote half of record `slot`. */
export function formatEndpoint(addrs: Uint8Array, slot: number): string {
  const offset = recordOffset(addrs, slot);
  return formatHostPort(formatIp(addrs, offset + REMOTE_IP_OFFSET), readPort(addrs, slot));
}

/** Sets the local half: the source address (and interface) to send from. */
export function writeLocal(addrs: Uint8Array, slot: number, ip: IpInput, ifindex = 0): void {
  const offset = recordOffset(addrs, slot);
  writeIp(addrs, offset + LOCAL_IP_OFFSET, ip);
  const at = offset + IFINDEX_OFFSET;
  addrs[at] = ifindex & 0xff;
  addrs[at + 1] = (ifindex >>> 8) & 0xff;
  addrs[at + 2] = (ifindex >>> 16) & 0xff;
  addrs[at + 3] = (ifindex >>> 24) & 0xff;
}

/** Forgets the local half, so the kernel picks the source address. */
export function clearLocal(addrs: Uint8Array, slot: number): void {
  const offset = recordOffset(addrs, slot);
  addrs.fill(0, offset + LOCAL_IP_OFFSET, offset + ADDRESS_RECORD_SIZE);
}

/** The local address record `slot` arrived on (or will be sent from), or null when unknown. */
export function readLocal(addrs: Uint8Array, slot: number): LocalAddress | null {
  const offset = recordOffset(addrs, slot);
  if (isZero(addrs, offset + LOCAL_IP_OFFSET, 16)) return null;
  const at = offset + IFINDEX_OFFSET;
  return {
    address: formatIp(addrs, offset + LOCAL_IP_OFFSET),
    family: isMapped(addrs, offset + LOCAL_IP_OFFSET) ? 4 : 6,
    ifindex: (addrs[at]! | (addrs[at + 1]! << 8) | (addrs[at + 2]! << 16) | (addrs[at + 3]! << 24)) >>> 0,
  };
}

/** Copies a whole record (for example a received one into a peer's endpoint). */
export function copyRecord(src: Uint8Array, srcSlot: number, dst: Uint8Array, dstSlot: number): void {
  const from = recordOffset(src, srcSlot);
  const to = recordOffset(dst, dstSlot);
  for (let i = 0; i < ADDRESS_RECORD_SIZE; i++) dst[to + i] = src[from + i]!;
}

/** Whether two records name the same remote IP and port (roaming check without allocation). */
export function sameRemote(a: Uint8Array, aSlot: number, b: Uint8Array, bSlot: number): boolean {
  const x = recordOffset(a, aSlot);
  const y = recordOffset(b, bSlot);
  for (let i = 0; i < FAMILY_OFFSET; i++) if (a[x + i] !== b[y + i]) return false;
  return true;
}
