/**
 * The Internet checksum (RFC 1071) over packet bytes, without allocating: sums are kept unfolded
 * in a Number (exact up to 2^53, far beyond a 64 KiB packet) and folded once at the end.
 *
 * The fast path adds 32-bit words through a Uint32Array over the same buffer. Those words are in
 * host byte order; a ones'-complement sum is the same up to a byte swap whatever the order, so the
 * folded word sum is swapped back on little-endian hosts.
 */

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** A Uint32Array over all of bytes' buffer (whole words), for sum16's fast path. Make it once per buffer. */
export function wordsOf(bytes: Uint8Array): Uint32Array {
  return new Uint32Array(bytes.buffer, 0, bytes.buffer.byteLength >>> 2);
}

/** Folds a ones'-complement sum to 16 bits. */
export function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return sum;
}

/**
 * initial + bytes[start..end) as big-endian 16-bit words (an odd last byte padded with zero),
 * unfolded. words (from wordsOf(bytes)) speeds up longer ranges at any alignment.
 */
export function sum16(bytes: Uint8Array, start: number, end: number, initial: number, words?: Uint32Array): number {
  if (words === undefined || end - start < 16) return initial + sumBytes(bytes, start, end);
  if (((bytes.byteOffset + start) & 1) === 0) return initial + sumWords(bytes, start, end, words);
  // Pairs that start on an odd address are the even-aligned pairs of the rest, byte-swapped.
  return initial + (bytes[start]! << 8) + swap(fold(sumWords(bytes, start + 1, end, words)));
}

function swap(x: number): number {
  return ((x & 0xff) << 8) | (x >>> 8);
}

function sumBytes(bytes: Uint8Array, start: number, end: number): number {
  let sum = 0;
  let i = start;
  for (; i + 1 < end; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (i < end) sum += bytes[i]! << 8;
  return sum;
}

/** sum16 of a range starting at an even address: one 16-bit word to reach a 4-byte boundary, then words. */
function sumWords(bytes: Uint8Array, start: number, end: number, words: Uint32Array): number {
  let sum = 0;
  let i = start;
  if (((bytes.byteOffset + i) & 2) !== 0 && i + 1 < end) {
    sum += (bytes[i]! << 8) | bytes[i + 1]!;
    i += 2;
  }
  let w = (bytes.byteOffset + i) >>> 2;
  const wordEnd = w + ((end - i) >>> 2);
  let s = 0;
  for (; w < wordEnd; w++) s += words[w]!;
  s = fold(s);
  sum += LITTLE_ENDIAN ? swap(s) : s;
  i += (end - i) & ~3;
  return sum + sumBytes(bytes, i, end);
}

/** The checksum to store: the complement of the folded sum; 0 is sent as 0xffff (the same value, and UDP's "no checksum" avoided). */
export function finish(sum: number): number {
  const c = ~fold(sum) & 0xffff;
  return c === 0 ? 0xffff : c;
}

/** Sum of the TCP/UDP pseudo-header: source and destination addresses of the IP header at ip, protocol, length. */
export function pseudoHeaderSum(bytes: Uint8Array, ip: number, version: number, protocol: number, length: number): number {
  const sum = protocol + length;
  return version === 4 ? sum16(bytes, ip + 12, ip + 20, sum) : sum16(bytes, ip + 8, ip + 40, sum);
}

/** Recomputes the IPv4 header checksum of the header at ip (ihl bytes long). */
export function setIpv4HeaderChecksum(bytes: Uint8Array, ip: number, headerLength: number): void {
  bytes[ip + 10] = 0;
  bytes[ip + 11] = 0;
  const c = ~fold(sum16(bytes, ip, ip + headerLength, 0)) & 0xffff;
  bytes[ip + 10] = c >>> 8;
  bytes[ip + 11] = c & 0xff;
}

export function readU16(bytes: Uint8Array, at: number): number {
  return (bytes[at]! << 8) | bytes[at + 1]!;
}

export function writeU16(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = (value >>> 8) & 0xff;
  bytes[at + 1] = value & 0xff;
}

export function readU32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
}

export function writeU32(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value >>> 24;
  bytes[at + 1] = (value >>> 16) & 0xff;
  bytes[at + 2] = (value >>> 8) & 0xff;
  bytes[at + 3] = value & 0xff;
}
