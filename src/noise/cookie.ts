/**
 * MAC1/MAC2 and cookie replies (whitepaper §5.4.4, §5.4.7). MAC1 proves the sender knows our
 * public key and is checked before any X25519 work; MAC2 proves, under load, that the sender
 * can receive at its source address. Clocks and randomness are parameters.
 */
import type { CryptoBackend } from './crypto/backend.ts';
import { mac, MAC_LENGTH } from './crypto/blake2s.ts';
import { COOKIE_REFRESH_TIME } from './constants.ts';
import type { Result } from './errors.ts';
import { fail, ok } from './errors.ts';
import type { CookieReplyView } from './messages.ts';
import {
  COOKIE_NONCE_LENGTH,
  COOKIE_REPLY_LENGTH,
  CookieReply,
  Initiation,
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  readU32,
  Response,
  writeHeader,
  writeU32,
} from './messages.ts';

type HandshakeMessageType = typeof MESSAGE_INITIATION | typeof MESSAGE_RESPONSE;

function offsets(type: HandshakeMessageType): { mac1: number; mac2: number } {
  return type === MESSAGE_INITIATION ? Initiation : Response;
}

/** Constant-time equality of two equal-length byte strings. */
export function equalConstantTime(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** The bytes a cookie is bound to: the IP address (4 or 16 bytes) then the port, little-endian (as wireguard-go). */
export function encodeSource(address: Uint8Array, port: number, out: Uint8Array = new Uint8Array(address.length + 2)): Uint8Array {
  out.set(address);
  out[address.length] = port & 0xff;
  out[address.length + 1] = (port >>> 8) & 0xff;
  return out.subarray(0, address.length + 2);
}

/** Seals a cookie reply: XAEAD(cookieKey, nonce, cookie, AD = mac1 of the message answered). */
export function sealCookieReply(
  backend: CryptoBackend,
  cookieKey: Uint8Array,
  receiverIndex: number,
  nonce: Uint8Array,
  cookie: Uint8Array,
  mac1: Uint8Array,
  out: Uint8Array,
): Uint8Array {
  const msg = out.subarray(0, COOKIE_REPLY_LENGTH);
  writeHeader(msg, MESSAGE_COOKIE_REPLY);
  writeU32(msg, CookieReply.receiver, receiverIndex);
  msg.set(nonce.subarray(0, COOKIE_NONCE_LENGTH), CookieReply.nonce);
  backend.xaeadSeal(msg.subarray(CookieReply.cookie), cookieKey, msg.subarray(CookieReply.nonce, CookieReply.cookie), cookie, mac1);
  return msg;
}

/**
 * The sending side, one per peer: writes MAC1 (and MAC2 while a cookie from the peer is fresh)
 * and takes cookie replies for the last message it sent.
 */
export class CookieGenerator {
  private readonly backend: CryptoBackend;
  private readonly mac1Key: Uint8Array;
  private readonly cookieKey: Uint8Array;
  private readonly lastMac1 = new Uint8Array(MAC_LENGTH);
  private hasLastMac1 = false;
  private readonly cookie = new Uint8Array(MAC_LENGTH);
  private cookieSetAt = -Infinity;

  /** mac1Key/cookieKey: HASH(label || peer's public key), from PeerKeys. */
  constructor(backend: CryptoBackend, mac1Key: Uint8Array, cookieKey: Uint8Array) {
    this.backend = backend;
    this.mac1Key = mac1Key;
    this.cookieKey = cookieKey;
  }

  /** Fills the MAC1 and MAC2 fields of a finished initiation or response. */
  addMacs(msg: Uint8Array, type: HandshakeMessageType, now: number): void {
    const at = offsets(type);
    const mac1Field = msg.subarray(at.mac1, at.mac2);
    mac(mac1Field, this.mac1Key, msg.subarray(0, at.mac1));
    this.lastMac1.set(mac1Field);
    this.hasLastMac1 = true;
    const mac2Field = msg.subarray(at.mac2, at.mac2 + MAC_LENGTH);
    if (now - this.cookieSetAt < COOKIE_REFRESH_TIME) mac(mac2Field, this.cookie, msg.subarray(0, at.mac2));
    else mac2Field.fill(0);
  }

  /** Decrypts a cookie reply to the last message we sent and keeps the cookie for MAC2. */
  consumeReply(reply: CookieReplyView, now: number): Result<void> {
    if (!this.hasLastMac1) return fail('state');
    const cookie = new Uint8Array(MAC_LENGTH);
    if (this.backend.xaeadOpen(cookie, this.cookieKey, reply.nonce, reply.encryptedCookie, this.lastMac1) < 0) return fail('decrypt');
    this.cookie.set(cookie);
    this.cookieSetAt = now;
    this.hasLastMac1 = false;
    return ok(undefined);
  }

  hasFreshCookie(now: number): boolean {
    return now - this.cookieSetAt < COOKIE_REFRESH_TIME;
  }
}

/**
 * The receiving side, one per device: checks MAC1 and MAC2 on handshake messages addressed to
 * us and makes cookie replies. The secret behind cookies is replaced every COOKIE_REFRESH_TIME.
 */
export class CookieChecker {
  private readonly backend: CryptoBackend;
  private readonly random: (out: Uint8Array) => void;
  private mac1Key: Uint8Array;
  private cookieKey: Uint8Array;
  private readonly secret = new Uint8Array(32);
  private secretSetAt = -Infinity;
  private readonly scratch = new Uint8Array(MAC_LENGTH);

  /** mac1Key/cookieKey: HASH(label || our public key), from StaticIdentity. random fills secrets and nonces. */
  constructor(backend: CryptoBackend, mac1Key: Uint8Array, cookieKey: Uint8Array, random: (out: Uint8Array) => void = (o) => backend.randomBytes(o)) {
    this.backend = backend;
    this.mac1Key = mac1Key;
    this.cookieKey = cookieKey;
    this.random = random;
  }

  /** After a private key change. */
  setKeys(mac1Key: Uint8Array, cookieKey: Uint8Array): void {
    this.mac1Key = mac1Key;
    this.cookieKey = cookieKey;
  }

  checkMac1(msg: Uint8Array, type: HandshakeMessageType): boolean {
    const at = offsets(type);
    mac(this.scratch, this.mac1Key, msg.subarray(0, at.mac1));
    return equalConstantTime(this.scratch, msg.subarray(at.mac1, at.mac2));
  }

  /** True when MAC2 is the MAC under the current cookie for this source. */
  checkMac2(msg: Uint8Array, type: HandshakeMessageType, source: Uint8Array, now: number): boolean {
    if (now - this.secretSetAt > COOKIE_REFRESH_TIME) return false;
    const at = offsets(type);
    const cookie = mac(new Uint8Array(MAC_LENGTH), this.secret, source);
    mac(this.scratch, cookie, msg.subarray(0, at.mac2));
    return equalConstantTime(this.scratch, msg.subarray(at.mac2, at.mac2 + MAC_LENGTH));
  }

  /** Writes the cookie reply answering msg (whose MAC1 already checked) into out[0..64). */
  createReply(msg: Uint8Array, type: HandshakeMessageType, source: Uint8Array, now: number, out: Uint8Array): Uint8Array {
    if (now - this.secretSetAt > COOKIE_REFRESH_TIME) {
      this.random(this.secret);
      this.secretSetAt = now;
    }
    const at = offsets(type);
    const cookie = mac(new Uint8Array(MAC_LENGTH), this.secret, source);
    const nonce = new Uint8Array(COOKIE_NONCE_LENGTH);
    this.random(nonce);
    return sealCookieReply(this.backend, this.cookieKey, readU32(msg, 4), nonce, cookie, msg.subarray(at.mac1, at.mac2), out);
  }
}
