/**
 * Endpoints as the fixed 40-byte records the UDP layer reads and writes (src/tun/README.md):
 * [0..16) remote IP as IPv6 (IPv4 mapped), [16..18) remote port big-endian, [18] family,
 * [20..36) local source address (sticky source), [36..40) interface index. The data path copies
 * records between typed arrays; nothing is parsed per packet.
 */
import type { EndpointAddress } from './config.ts';
import { formatIp, parseIp } from '../util/ip.ts';

export const ENDPOINT_SIZE = 40;
const REMOTE_SIZE = 19;
const LOCAL_OFFSET = 20;

export function writeEndpointRecord(record: Uint8Array, offset: number, endpoint: EndpointAddress): void {
  const ip = parseIp(endpoint.host);
  record.fill(0, offset, offset + ENDPOINT_SIZE);
  if (ip.family === 4) {
    record[offset + 10] = 0xff;
    record[offset + 11] = 0xff;
    record.set(ip.bytes, offset + 12);
  } else {
    record.set(ip.bytes, offset);
  }
  record[offset + 16] = endpoint.port >>> 8;
  record[offset + 17] = endpoint.port & 0xff;
  record[offset + 18] = ip.family;
}

export function readEndpointRecord(record: Uint8Array, offset: number): EndpointAddress {
  const family = record[offset + 18];
  const port = (record[offset + 16]! << 8) | record[offset + 17]!;
  const host = family === 4 ? formatIp(record.subarray(offset + 12, offset + 16)) : formatIp(record.subarray(offset, offset + 16));
  return { host, port };
}

/** Same remote address and port (the local source part is not compared). */
export function sameRemote(a: Uint8Array, aOffset: number, b: Uint8Array, bOffset: number): boolean {
  for (let i = 0; i < REMOTE_SIZE; i++) if (a[aOffset + i] !== b[bOffset + i]) return false;
  return true;
}

export function sameRecord(a: Uint8Array, aOffset: number, b: Uint8Array, bOffset: number): boolean {
  for (let i = 0; i < ENDPOINT_SIZE; i++) if (a[aOffset + i] !== b[bOffset + i]) return false;
  return true;
}

export function copyRecord(dst: Uint8Array, dstOffset: number, src: Uint8Array, srcOffset: number): void {
  dst.set(src.subarray(srcOffset, srcOffset + ENDPOINT_SIZE), dstOffset);
}

/** Forget the sticky local source address (it may have gone away). */
export function clearSource(record: Uint8Array, offset: number): void {
  record.fill(0, offset + LOCAL_OFFSET, offset + ENDPOINT_SIZE);
}

/** The remote IP (4 or 16 bytes) of a record, as a view. */
export function remoteIp(record: Uint8Array, offset: number): Uint8Array {
  return record[offset + 18] === 4 ? record.subarray(offset + 12, offset + 16) : record.subarray(offset, offset + 16);
}

export function remotePort(record: Uint8Array, offset: number): number {
  return (record[offset + 16]! << 8) | record[offset + 17]!;
}
