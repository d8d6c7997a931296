/**
 * The conformance runner behind `wgts conformance` and `npm test`: reads vector files and
 * checks every vector on every crypto backend. A file may hold any of the sections below;
 * unknown sections are an error, so a typo cannot silently skip vectors.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CryptoBackend } from './noise/crypto/backend.ts';
import { blake2s, hash, kdf, mac } from './noise/crypto/blake2s.ts';
import { CookieChecker, CookieGenerator, sealCookieReply } from './noise/cookie.ts';
import { LABEL_COOKIE } from './noise/constants.ts';
import {
  consumeInitiation,
  consumeResponse,
  createHandshakeState,
  createInitiation,
  createPeerKeys,
  createResponse,
  createStaticIdentity,
  deriveKeypair,
  labelKey,
} from './noise/handshake.ts';
import { Keypair, paddedLength } from './noise/keypair.ts';
import {
  COOKIE_REPLY_LENGTH,
  decodeInitiation,
  decodeResponse,
  decodeTransport,
  INITIATION_LENGTH,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  RESPONSE_LENGTH,
} from './noise/messages.ts';
import { fromHex, toHex } from './util/hex.ts';

export const BUNDLED_VECTORS_DIR = resolve(fileURLToPath(import.meta.url), '../../test/vectors');

/** One check: undefined when it passes, else what differed. */
type Check = () => string | undefined;

interface NamedCheck {
  readonly name: string;
  readonly run: Check;
}

export interface ConformanceResult {
  passed: number;
  failed: number;
  failures: string[];
}

type Vector = Record<string, unknown>;

function str(v: Vector, key: string): string {
  const value = v[key];
  if (typeof value !== 'string') throw new Error(`field "${key}" missing or not a string`);
  return value;
}

function num(v: Vector, key: string): number {
  const value = v[key];
  if (typeof value !== 'number' || !Number.isInteger(value)) throw new Error(`field "${key}" missing or not an integer`);
  return value;
}

function hex(v: Vector, key: string): Uint8Array {
  return fromHex(str(v, key));
}

function expectBytes(what: string, actual: Uint8Array, expected: Uint8Array): string | undefined {
  if (actual.length === expected.length && actual.every((b, i) => b === expected[i])) return undefined;
  return `${what}: got ${toHex(actual)}, want ${toHex(expected)}`;
}

function first(...results: (string | undefined)[]): string | undefined {
  return results.find((r) => r !== undefined);
}

function label(v: Vector, index: number): string {
  return typeof v.name === 'string' ? v.name : `#${index}`;
}

// ---- primitive sections -------------------------------------------------------------------

function x25519Checks(b: CryptoBackend, v: Vector): Check {
  return () => {
    const out = new Uint8Array(32);
    if (!b.x25519(out, hex(v, 'private'), hex(v, 'public'))) return 'rejected a valid point';
    return expectBytes('shared', out, hex(v, 'shared'));
  };
}

function x25519IteratedCheck(b: CryptoBackend, v: Vector): Check {
  return () => {
    let k: Uint8Array = new Uint8Array(32);
    k[0] = 9;
    let u: Uint8Array = Uint8Array.from(k);
    const iterations = num(v, 'iterations');
    for (let i = 0; i < iterations; i++) {
      const next = new Uint8Array(32);
      b.x25519(next, k, u);
      u = k;
      k = next;
    }
    return expectBytes(`after ${iterations}`, k, hex(v, 'result'));
  };
}

function x25519LowOrderCheck(b: CryptoBackend, v: Vector): Check {
  return () => {
    const out = new Uint8Array(32).fill(0xaa);
    if (b.x25519(out, hex(v, 'private'), hex(v, 'public'))) return `accepted low-order point, result ${toHex(out)}`;
    return out.every((x) => x === 0) ? undefined : 'rejected but left a non-zero output';
  };
}

function aeadCheck(seal: CryptoBackend['aeadSeal'], open: CryptoBackend['aeadOpen'], v: Vector): Check {
  return () => {
    const key = hex(v, 'key');
    const nonce = hex(v, 'nonce');
    const aad = hex(v, 'aad');
    const plaintext = hex(v, 'plaintext');
    const ciphertext = hex(v, 'ciphertext');
    const sealed = new Uint8Array(plaintext.length + 16);
    const n = seal(sealed, key, nonce, plaintext, aad);
    const opened = new Uint8Array(Math.max(0, ciphertext.length - 16));
    const m = open(opened, key, nonce, ciphertext, aad);
    // In place: the plaintext already sits in the output buffer.
    const inPlace = new Uint8Array(plaintext.length + 16);
    inPlace.set(plaintext);
    seal(inPlace, key, nonce, inPlace.subarray(0, plaintext.length), aad);
    return first(
      n === ciphertext.length ? undefined : `seal wrote ${n} bytes`,
      expectBytes('seal', sealed, ciphertext),
      m === plaintext.length ? undefined : `open returned ${m}`,
      expectBytes('open', opened, plaintext),
      expectBytes('seal in place', inPlace, ciphertext),
    );
  };
}

function aeadInvalidCheck(open: CryptoBackend['aeadOpen'], v: Vector): Check {
  return () => {
    const ciphertext = hex(v, 'ciphertext');
    const out = new Uint8Array(Math.max(0, ciphertext.length - 16));
    const m = open(out, hex(v, 'key'), hex(v, 'nonce'), ciphertext, hex(v, 'aad'));
    return m < 0 ? undefined : 'forged ciphertext authenticated';
  };
}

function blake2sCheck(v: Vector): Check {
  return () => {
    const key = hex(v, 'key');
    const input = hex(v, 'input');
    const expected = hex(v, 'output');
    if (key.length === 0 && expected.length === 32) return expectBytes('hash', hash(new Uint8Array(32), input), expected);
    if (key.length > 0 && expected.length === 16) return expectBytes('mac', mac(new Uint8Array(16), key, input), expected);
    return expectBytes('blake2s', blake2s(new Uint8Array(expected.length), expected.length, key.length > 0 ? key : undefined, input), expected);
  };
}

function kdfCheck(v: Vector): Check {
  return () => {
    const key = hex(v, 'key');
    const input = hex(v, 'input');
    const t = [hex(v, 't0'), hex(v, 't1'), hex(v, 't2')].filter((x) => x.length > 0);
    const outs = t.map(() => new Uint8Array(32));
    kdf(key, input, ...outs);
    return first(...t.map((expected, i) => expectBytes(`T${i + 1}`, outs[i]!, expected)));
  };
}

// ---- WireGuard sections -------------------------------------------------------------------

/** Replays one handshake from both sides and compares every message and key with the vector. */
function handshakeCheck(b: CryptoBackend, v: Vector): Check {
  return () => {
    const now = 1_000;
    const initiator = createStaticIdentity(b, hex(v, 'initiator_static_private'));
    const responder = createStaticIdentity(b, hex(v, 'responder_static_private'));
    const psk = hex(v, 'preshared_key');
    const atInitiator = { keys: createPeerKeys(b, initiator, responder.publicKey, psk), handshake: createHandshakeState() };
    const atResponder = { keys: createPeerKeys(b, responder, initiator.publicKey, psk), handshake: createHandshakeState() };

    const initiation = new Uint8Array(INITIATION_LENGTH);
    const created = createInitiation(b, initiator, atInitiator.keys, atInitiator.handshake, {
      ephemeralPrivate: hex(v, 'initiator_ephemeral_private'),
      timestamp: hex(v, 'timestamp_tai64n'),
      senderIndex: num(v, 'initiator_index'),
    }, initiation);
    if (!created.ok) return `createInitiation: ${created.error}`;
    new CookieGenerator(b, atInitiator.keys.mac1Key, atInitiator.keys.cookieKey).addMacs(initiation, MESSAGE_INITIATION, now);
    const initiationMismatch = expectBytes('initiation', initiation, hex(v, 'initiation'));
    if (initiationMismatch) return initiationMismatch;

    const checker = new CookieChecker(b, responder.mac1Key, responder.cookieKey);
    const theirInitiation = hex(v, 'initiation');
    if (!checker.checkMac1(theirInitiation, MESSAGE_INITIATION)) return 'responder rejected MAC1 of the initiation';
    const decodedInitiation = decodeInitiation(theirInitiation);
    if (!decodedInitiation.ok) return `decodeInitiation: ${decodedInitiation.error}`;
    const consumed = consumeInitiation(b, responder, decodedInitiation.value, (key) =>
      key.every((x, i) => x === initiator.publicKey[i]) ? atResponder : undefined, now);
    if (!consumed.ok) return `consumeInitiation: ${consumed.error}`;
    const timestampMismatch = expectBytes('decrypted timestamp', consumed.value.timestamp, hex(v, 'timestamp_tai64n'));
    if (timestampMismatch) return timestampMismatch;

    const response = new Uint8Array(RESPONSE_LENGTH);
    const responded = createResponse(b, atResponder.keys, atResponder.handshake, {
      ephemeralPrivate: hex(v, 'responder_ephemeral_private'),
      senderIndex: num(v, 'responder_index'),
    }, response);
    if (!responded.ok) return `createResponse: ${responded.error}`;
    new CookieGenerator(b, atResponder.keys.mac1Key, atResponder.keys.cookieKey).addMacs(response, MESSAGE_RESPONSE, now);
    const responseMismatch = expectBytes('response', response, hex(v, 'response'));
    if (responseMismatch) return responseMismatch;

    const initiatorChecker = new CookieChecker(b, initiator.mac1Key, initiator.cookieKey);
    const theirResponse = hex(v, 'response');
    if (!initiatorChecker.checkMac1(theirResponse, MESSAGE_RESPONSE)) return 'initiator rejected MAC1 of the response';
    const decodedResponse = decodeResponse(theirResponse);
    if (!decodedResponse.ok) return `decodeResponse: ${decodedResponse.error}`;
    const completed = consumeResponse(b, initiator, decodedResponse.value, (index) =>
      index === atInitiator.handshake.localIndex ? atInitiator : undefined);
    if (!completed.ok) return `consumeResponse: ${completed.error}`;

    const iKeys = deriveKeypair(atInitiator.handshake);
    const rKeys = deriveKeypair(atResponder.handshake);
    if (!iKeys.ok || !rKeys.ok) return 'deriveKeypair failed';
    const keyMismatch = first(
      expectBytes('initiator sending key', iKeys.value.sendKey, hex(v, 'initiator_sending_key')),
      expectBytes('initiator receiving key', iKeys.value.receiveKey, hex(v, 'initiator_receiving_key')),
      expectBytes('responder receiving key', rKeys.value.receiveKey, hex(v, 'initiator_sending_key')),
      expectBytes('responder sending key', rKeys.value.sendKey, hex(v, 'initiator_receiving_key')),
    );
    if (keyMismatch) return keyMismatch;

    const iKeypair = new Keypair(iKeys.value, now);
    const rKeypair = new Keypair(rKeys.value, now);
    const payload = hex(v, 'transport_payload');
    const padded = new Uint8Array(paddedLength(payload.length));
    padded.set(payload);
    const data = new Uint8Array(16 + padded.length + 16);
    const dataLength = iKeypair.seal(b, padded, data, now);
    const keepalive = new Uint8Array(32);
    const keepaliveLength = rKeypair.seal(b, new Uint8Array(0), keepalive, now);
    const transportMismatch = first(
      expectBytes('transport_counter0', data.subarray(0, dataLength), hex(v, 'transport_counter0')),
      expectBytes('keepalive_from_responder', keepalive.subarray(0, keepaliveLength), hex(v, 'keepalive_from_responder')),
    );
    if (transportMismatch) return transportMismatch;

    const theirData = decodeTransport(hex(v, 'transport_counter0'));
    if (!theirData.ok) return `decodeTransport: ${theirData.error}`;
    const opened = new Uint8Array(theirData.value.encrypted.length);
    const openedLength = rKeypair.open(b, theirData.value.counter, theirData.value.encrypted, opened, now);
    if (openedLength < 0) return `responder could not open transport_counter0 (${openedLength})`;
    if (rKeypair.open(b, theirData.value.counter, theirData.value.encrypted, opened, now) !== -2) return 'replayed transport message accepted';
    return expectBytes('decrypted payload', opened.subarray(0, payload.length), payload);
  };
}

function cookieReplyCheck(b: CryptoBackend, v: Vector): Check {
  return () => {
    const cookieKey = labelKey(new Uint8Array(32), LABEL_COOKIE, hex(v, 'responder_static_public'));
    const out = new Uint8Array(COOKIE_REPLY_LENGTH);
    sealCookieReply(b, cookieKey, num(v, 'receiver_index'), hex(v, 'nonce'), hex(v, 'cookie'), hex(v, 'mac1'), out);
    const message = hex(v, 'message');
    const cookie = new Uint8Array(16);
    const n = b.xaeadOpen(cookie, cookieKey, message.subarray(8, 32), message.subarray(32), hex(v, 'mac1'));
    return first(
      expectBytes('cookie reply', out, message),
      n === 16 ? undefined : 'could not open the cookie reply',
      expectBytes('decrypted cookie', cookie, hex(v, 'cookie')),
    );
  };
}

const SECTIONS: Record<string, (backends: CryptoBackend[], v: Vector) => { backend: string; run: Check }[]> = {
  x25519: (bs, v) => bs.map((b) => ({ backend: b.name, run: x25519Checks(b, v) })),
  x25519_iterated: (bs, v) => bs.map((b) => ({ backend: b.name, run: x25519IteratedCheck(b, v) })),
  x25519_low_order: (bs, v) => bs.map((b) => ({ backend: b.name, run: x25519LowOrderCheck(b, v) })),
  chacha20poly1305: (bs, v) => bs.map((b) => ({ backend: b.name, run: aeadCheck(b.aeadSeal, b.aeadOpen, v) })),
  chacha20poly1305_invalid: (bs, v) => bs.map((b) => ({ backend: b.name, run: aeadInvalidCheck(b.aeadOpen, v) })),
  xchacha20poly1305: (bs, v) => bs.map((b) => ({ backend: b.name, run: aeadCheck(b.xaeadSeal, b.xaeadOpen, v) })),
  xchacha20poly1305_invalid: (bs, v) => bs.map((b) => ({ backend: b.name, run: aeadInvalidCheck(b.xaeadOpen, v) })),
  blake2s: (_bs, v) => [{ backend: 'blake2s', run: blake2sCheck(v) }],
  kdf: (_bs, v) => [{ backend: 'blake2s', run: kdfCheck(v) }],
  handshakes: (bs, v) => bs.map((b) => ({ backend: b.name, run: handshakeCheck(b, v) })),
  cookie_reply: (bs, v) => bs.map((b) => ({ backend: b.name, run: cookieReplyCheck(b, v) })),
};

const METADATA_KEYS = new Set(['description', 'source', 'sources', 'notes']);

/** Builds the list of checks in one parsed vector file. */
export function checksFor(fileName: string, doc: unknown, backends: CryptoBackend[]): NamedCheck[] {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new Error(`${fileName}: not a JSON object`);
  const checks: NamedCheck[] = [];
  for (const [section, value] of Object.entries(doc)) {
    if (METADATA_KEYS.has(section)) continue;
    const make = SECTIONS[section];
    if (!make) throw new Error(`${fileName}: unknown section "${section}"`);
    const vectors = Array.isArray(value) ? value : [value];
    vectors.forEach((vector, index) => {
      for (const { backend, run } of make(backends, vector as Vector)) {
        checks.push({ name: `${fileName} ${section} ${label(vector as Vector, index)} [${backend}]`, run });
      }
    });
  }
  return checks;
}

export function bundledVectorFiles(dir: string = BUNDLED_VECTORS_DIR): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => join(dir, f));
}

export async function runConformance(
  files: string[],
  backends: CryptoBackend[],
  onFailure: (line: string) => void = () => {},
): Promise<ConformanceResult> {
  const result: ConformanceResult = { passed: 0, failed: 0, failures: [] };
  for (const file of files) {
    let checks: NamedCheck[];
    try {
      checks = checksFor(file, JSON.parse(readFileSync(file, 'utf8')), backends);
    } catch (err) {
      const line = `FAIL ${file}: ${(err as Error).message}`;
      result.failed++;
      result.failures.push(line);
      onFailure(line);
      continue;
    }
    for (const check of checks) {
      let problem: string | undefined;
      try {
        problem = check.run();
      } catch (err) {
        problem = `threw ${(err as Error).message}`;
      }
      if (problem === undefined) {
        result.passed++;
      } else {
        const line = `FAIL ${check.name}: ${problem}`;
        result.failed++;
        result.failures.push(line);
        onFailure(line);
      }
    }
  }
  return result;
}
