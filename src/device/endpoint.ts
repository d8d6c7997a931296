/**
 * Endpoints as the device keeps them: the fixed 40-byte records of the UDP layer
 * (src/tun/address.ts owns the layout), addressed here by byte offset. The data path only
 * copies and compares records; nothing is parsed per packet.
 */
import type { EndpointAddress } from './config.ts';
import {
  ADDRESS_RECORD_SIZE,
  clearLocal,
  copyRecord as copySlot,
  FAMILY_OFFSET,
  readEndpoint,
  readPort,
  REMOTE_IP_OFFSET,
  writeEndpoint,
} from '../tun/address.ts';

export const ENDPOINT_SIZE = ADDRESS_RECORD_SIZE;

const slot = (offset: number): number => offset / ENDPOINT_SIZE;

/** Sets a record to endpoint, with no sticky source yet. */
export function writeEndpointRecord(record: Uint8Array, offset: number, endpoint: EndpointAddress): void {
  writeEndpoint(record, slot(offset), endpoint.host, endpoint.port);
  clearLocal(record, slot(offset));
}

export function readEndpointRecord(record: Uint8Array, offset: number): EndpointAddress {
  const e = readEndpoint(record, slot(offset));
  return { host: e.address, port: e.port };
}

/** Same remote and same local source: nothing to update on roaming. */
export function sameRecord(a: Uint8Array, aOffset: number, b: Uint8Array, bOffset: number): boolean {
  for (let i = 0; i < ENDPOINT_SIZE; i++) if (a[aOffset + i] !== b[bOffset + i]) return false;
  return true;
}

export function copyRecord(dst: Uint8Array, dstOffset: number, src: Uint8Array, srcOffset: number): void {
  copySlot(src, slot(srcOffset), dst, slot(dstOffset));
}

/** Forget the sticky local source address (it may have gone away). */
export function clearSource(record: Uint8Array, offset: number): void {
  clearLocal(record, slot(offset));
}

/** The remote IP (4 or 16 bytes) of a record, as a view: cookies are bound to it. */
export function remoteIp(record: Uint8Array, offset: number): Uint8Array {
  const at = offset + REMOTE_IP_OFFSET;
  return record[offset + FAMILY_OFFSET] === 4 ? record.subarray(at + 12, at + 16) : record.subarray(at, at + 16);
}

export function remotePort(record: Uint8Array, offset: number): number {
  return readPort(record, slot(offset));
}
