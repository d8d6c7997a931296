/**
 * The four WireGuard messages: layouts, strict validation, and typed views over the caller's
 * buffer (subarrays, never copies). Indices and counters are little-endian on the wire.
 */
import type { ProtocolError, Result } from './errors.ts';
import { fail, ok } from './errors.ts';

export const MESSAGE_INITIATION = 1;
export const MESSAGE_RESPONSE = 2;
export const MESSAGE_COOKIE_REPLY = 3;
export const MESSAGE_TRANSPORT = 4;
export type MessageType = 1 | 2 | 3 | 4;

export const INITIATION_LENGTH = 148;
export const RESPONSE_LENGTH = 92;
export const COOKIE_REPLY_LENGTH = 64;
export const TRANSPORT_HEADER_LENGTH = 16;
export const TAG_LENGTH = 16;
export const TRANSPORT_MIN_LENGTH = TRANSPORT_HEADER_LENGTH + TAG_LENGTH;

/** Byte offsets of each field. */
export const Initiation = {
  sender: 4,
  ephemeral: 8,
  static: 40,
  timestamp: 88,
  mac1: 116,
  mac2: 132,
} as const;
export const Response = {
  sender: 4,
  receiver: 8,
  ephemeral: 12,
  empty: 44,
  mac1: 60,
  mac2: 76,
} as const;
export const CookieReply = {
  receiver: 4,
  nonce: 8,
  cookie: 32,
} as const;
export const Transport = {
  receiver: 4,
  counter: 8,
  payload: 16,
} as const;

export const ENCRYPTED_STATIC_LENGTH = 32 + TAG_LENGTH;
export const ENCRYPTED_TIMESTAMP_LENGTH = 12 + TAG_LENGTH;
export const ENCRYPTED_COOKIE_LENGTH = 16 + TAG_LENGTH;
export const COOKIE_NONCE_LENGTH = 24;

export interface InitiationView {
  readonly bytes: Uint8Array;
  readonly sender: number;
  readonly ephemeral: Uint8Array;
  readonly encryptedStatic: Uint8Array;
  readonly encryptedTimestamp: Uint8Array;
  readonly mac1: Uint8Array;
  readonly mac2: Uint8Array;
}

export interface ResponseView {
  readonly bytes: Uint8Array;
  readonly sender: number;
  readonly receiver: number;
  readonly ephemeral: Uint8Array;
  readonly encryptedEmpty: Uint8Array;
  readonly mac1: Uint8Array;
  readonly mac2: Uint8Array;
}

export interface CookieReplyView {
  readonly bytes: Uint8Array;
  readonly receiver: number;
  readonly nonce: Uint8Array;
  readonly encryptedCookie: Uint8Array;
}

export interface TransportView {
  readonly bytes: Uint8Array;
  readonly receiver: number;
  readonly counter: number;
  readonly encrypted: Uint8Array;
}

export function readU32(bytes: Uint8Array, offset: number): number {
  return (bytes[offset]! | (bytes[offset + 1]! << 8) | (bytes[offset + 2]! << 16) | (bytes[offset + 3]! << 24)) >>> 0;
}

/** The same 32 bits as readU32, as a signed int32: always a small integer to V8 (no heap number). */
export function readI32(bytes: Uint8Array, offset: number): number {
  return bytes[offset]! | (bytes[offset + 1]! << 8) | (bytes[offset + 2]! << 16) | (bytes[offset + 3]! << 24);
}

export function writeU32(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = value & 0xff;
  bytes[offset + 1] = (value >>> 8) & 0xff;
  bytes[offset + 2] = (value >>> 16) & 0xff;
  bytes[offset + 3] = (value >>> 24) & 0xff;
}

/** Largest counter we represent exactly; see REJECT_AFTER_MESSAGES in constants.ts. */
const MAX_COUNTER_HIGH_WORD = 0x1f_ffff;

/** The 64-bit little-endian counter at offset, or -1 when it does not fit in 53 bits. */
export function readCounter(bytes: Uint8Array, offset: number): number {
  const low = readU32(bytes, offset);
  const high = readU32(bytes, offset + 4);
  if (high === 0) return low;
  if (high > MAX_COUNTER_HIGH_WORD) return -1;
  return high * 0x1_0000_0000 + low;
}

export function writeCounter(bytes: Uint8Array, offset: number, counter: number): void {
  const high = Math.floor(counter / 0x1_0000_0000);
  writeU32(bytes, offset, counter >>> 0);
  writeU32(bytes, offset + 4, high);
}

/** Writes the type byte and zeroes the three reserved bytes. */
export function writeHeader(bytes: Uint8Array, type: MessageType, offset = 0): void {
  bytes[offset] = type;
  bytes[offset + 1] = 0;
  bytes[offset + 2] = 0;
  bytes[offset + 3] = 0;
}

/**
 * The message type of a datagram after the checks that need no key: a known type, zero
 * reserved bytes and the exact length of that type (at least 32 bytes for transport).
 * Returns the type, or the reason it is not a WireGuard message.
 */
export function classify(bytes: Uint8Array): MessageType | ProtocolError {
  if (bytes.length < 4) return 'short';
  const type = bytes[0]!;
  if (bytes[1] !== 0 || bytes[2] !== 0 || bytes[3] !== 0) return type >= 1 && type <= 4 ? 'reserved' : 'type';
  switch (type) {
    case MESSAGE_INITIATION:
      return bytes.length === INITIATION_LENGTH ? MESSAGE_INITIATION : 'length';
    case MESSAGE_RESPONSE:
      return bytes.length === RESPONSE_LENGTH ? MESSAGE_RESPONSE : 'length';
    case MESSAGE_COOKIE_REPLY:
      return bytes.length === COOKIE_REPLY_LENGTH ? MESSAGE_COOKIE_REPLY : 'length';
    case MESSAGE_TRANSPORT:
      return bytes.length >= TRANSPORT_MIN_LENGTH ? MESSAGE_TRANSPORT : 'short';
    default:
      return 'type';
  }
}

function expect(bytes: Uint8Array, type: MessageType): ProtocolError | undefined {
  const actual = classify(bytes);
  if (actual === type) return undefined;
  if (typeof actual === 'number') return 'type';
  return actual;
}

export function decodeInitiation(bytes: Uint8Array): Result<InitiationView> {
  const error = expect(bytes, MESSAGE_INITIATION);
  if (error) return fail(error);
  return ok({
    bytes,
    sender: readU32(bytes, Initiation.sender),
    ephemeral: bytes.subarray(Initiation.ephemeral, Initiation.static),
    encryptedStatic: bytes.subarray(Initiation.static, Initiation.timestamp),
    encryptedTimestamp: bytes.subarray(Initiation.timestamp, Initiation.mac1),
    mac1: bytes.subarray(Initiation.mac1, Initiation.mac2),
    mac2: bytes.subarray(Initiation.mac2, INITIATION_LENGTH),
  });
}

export function decodeResponse(bytes: Uint8Array): Result<ResponseView> {
  const error = expect(bytes, MESSAGE_RESPONSE);
  if (error) return fail(error);
  return ok({
    bytes,
    sender: readU32(bytes, Response.sender),
    receiver: readU32(bytes, Response.receiver),
    ephemeral: bytes.subarray(Response.ephemeral, Response.empty),
    encryptedEmpty: bytes.subarray(Response.empty, Response.mac1),
    mac1: bytes.subarray(Response.mac1, Response.mac2),
    mac2: bytes.subarray(Response.mac2, RESPONSE_LENGTH),
  });
}

export function decodeCookieReply(bytes: Uint8Array): Result<CookieReplyView> {
  const error = expect(bytes, MESSAGE_COOKIE_REPLY);
  if (error) return fail(error);
  return ok({
    bytes,
    receiver: readU32(bytes, CookieReply.receiver),
    nonce: bytes.subarray(CookieReply.nonce, CookieReply.cookie),
    encryptedCookie: bytes.subarray(CookieReply.cookie, COOKIE_REPLY_LENGTH),
  });
}

export function decodeTransport(bytes: Uint8Array): Result<TransportView> {
  const error = expect(bytes, MESSAGE_TRANSPORT);
  if (error) return fail(error);
  const counter = readCounter(bytes, Transport.counter);
  if (counter < 0) return fail('expired');
  return ok({
    bytes,
    receiver: readU32(bytes, Transport.receiver),
    counter,
    encrypted: bytes.subarray(Transport.payload),
  });
}

/** Byte offsets of the MAC-covered prefixes: mac1 covers everything before it, mac2 everything before mac2. */
export function macOffsets(type: typeof MESSAGE_INITIATION | typeof MESSAGE_RESPONSE): { mac1: number; mac2: number } {
  return type === MESSAGE_INITIATION ? Initiation : Response;
}
