/**
 * Property: no mutated message gets past the receive path, crashes it, or changes state.
 *
 * A real handshake between two fresh identities (keys drawn from the seed) gives one valid
 * message of each type. For each type, COUNT mutants of it (never identical to a valid message)
 * go through the whole receive path a device would run, chosen by `classify` like the device:
 *   initiation  → decodeInitiation → CookieChecker.checkMac1, and regardless of MAC1 (to reach
 *                 the crypto) consumeInitiation against a responder that already took the real one
 *   response    → decodeResponse → checkMac1, and regardless consumeResponse against the
 *                 initiator waiting for it
 *   cookie reply→ decodeCookieReply → index lookup → CookieGenerator.consumeReply
 *   transport   → decodeTransport → index lookup → Keypair.open
 * and after each one we check: nothing threw; every rejection is a ProtocolError or a negative
 * code; a rejection left the state exactly as it was (handshake fields, cookie generator and
 * checker fields, replay window), and behaves as before (a fresh transport packet is accepted and
 * an old one rejected; MAC2 on a fixed message is unchanged). The only mutants that may be
 * accepted are responses changed outside the bytes consumeResponse authenticates (sender index,
 * MACs); then the state must be exactly that of accepting the real response, and is put back.
 *
 * One fixed seed in CI; FUZZ_SEED=<n> (decimal or 0x-hex) replays another, FUZZ_COUNT=<n> changes
 * the count. A failure names the seed, the mutant and the mutations that made it.
 */
import { describe, expect, it } from 'vitest';
import { COOKIE_REFRESH_TIME } from '../../src/noise/constants.ts';
import { CookieChecker, CookieGenerator, encodeSource } from '../../src/noise/cookie.ts';
import type { BackendName, CryptoBackend } from '../../src/noise/crypto/index.ts';
import { createBackend } from '../../src/noise/crypto/index.ts';
import { tai64nFromUnixMs } from '../../src/noise/crypto/tai64n.ts';
import type { ProtocolError } from '../../src/noise/errors.ts';
import type { HandshakeState, PeerKeys, StaticIdentity } from '../../src/noise/handshake.ts';
import {
  consumeInitiation,
  copyInProgress,
  consumeResponse,
  createHandshakeState,
  createInitiation,
  createPeerKeys,
  createResponse,
  createStaticIdentity,
  deriveKeypair,
} from '../../src/noise/handshake.ts';
import { Keypair } from '../../src/noise/keypair.ts';
import {
  classify,
  COOKIE_REPLY_LENGTH,
  decodeCookieReply,
  decodeInitiation,
  decodeResponse,
  decodeTransport,
  INITIATION_LENGTH,
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  MESSAGE_TRANSPORT,
  RESPONSE_LENGTH,
} from '../../src/noise/messages.ts';
import type { MessageType } from '../../src/noise/messages.ts';
import type { Field, MutationOp } from '../helpers/mutate.ts';
import { equalBytes, hexOf, Mutator, parseSeed, Rng } from '../helpers/mutate.ts';

const DEFAULT_SEED = 0x5eed_c0de;
const SEED = parseSeed(process.env.FUZZ_SEED) ?? DEFAULT_SEED;
const COUNT = Number(process.env.FUZZ_COUNT ?? 100_000);
/** The noble backend is much slower; a smaller run checks it throws nothing sodium does not. */
const NOBLE_COUNT = Math.min(COUNT, 1_000);

/** Every ProtocolError, checked complete by the compiler. */
const PROTOCOL_ERRORS = {
  short: true,
  length: true,
  type: true,
  reserved: true,
  mac1: true,
  mac2: true,
  decrypt: true,
  'unknown-peer': true,
  'unknown-index': true,
  state: true,
  'low-order': true,
  'replay-timestamp': true,
  flood: true,
  replay: true,
  expired: true,
} satisfies Record<ProtocolError, true>;

function isProtocolError(value: unknown): value is ProtocolError {
  return typeof value === 'string' && Object.hasOwn(PROTOCOL_ERRORS, value);
}

/**
 * Points of small order on Curve25519 and non-canonical encodings of them (libsodium's and the
 * kernel's blacklist): X25519 with any of these gives all zeros, which must be 'low-order'.
 */
const LOW_ORDER_POINTS = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
  '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'cdeb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880',
  '4c9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7',
  'd9ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
  'daffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
  'dbffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
].map((h) => new Uint8Array(Buffer.from(h, 'hex')));

/**
 * Mutation weights: a bit over half of all operations change the shape (type, reserved bytes,
 * length, splices), which classify rejects for a few nanoseconds; the rest change content and
 * carry about a third of the mutants deep into X25519/AEAD, the slow and interesting part.
 */
const WEIGHTS: Partial<Record<MutationOp, number>> = {
  bitflip: 3,
  bitflips: 1,
  byte: 2,
  field: 2,
  type: 2,
  reserved: 2,
  length: 2,
  truncate: 1.5,
  extend: 1.5,
  splice: 2,
};

const NOW = 10_000_000; // the caller's monotonic clock (ms) when the handshake ran
const LATER = NOW + 1_000; // when the mutants arrive: cookie, keypair and cookie secret all fresh
const UNIX_MS = 1_780_000_000_000;
const TRANSPORT_BASE_COUNTER = 2 ** 32 + 7; // ahead of every probe counter, across the 32-bit line

class FuzzFailure extends Error {}

function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new FuzzFailure(message);
}

function sameRange(a: Uint8Array, b: Uint8Array, from: number, to: number): boolean {
  if (a.length < to || b.length < to) return false;
  for (let i = from; i < to; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// State snapshots: every own field of an object (typed arrays copied, nested objects followed,
// functions skipped), minus named scratch buffers that hold no state between calls.

type Snapshot = Map<string, unknown>;

const SCRATCH = new Set(['scratch', 'sendNonce', 'receiveNonce', 'backend', 'random']);

function snapshot(obj: object, prefix = '', out: Snapshot = new Map(), depth = 0): Snapshot {
  for (const [key, value] of Object.entries(obj)) {
    if (SCRATCH.has(key) || typeof value === 'function') continue;
    const path = prefix + key;
    if (ArrayBuffer.isView(value)) out.set(path, (value as Uint8Array).slice());
    else if (value !== null && typeof value === 'object') {
      if (depth < 2) snapshot(value, `${path}.`, out, depth + 1);
    } else out.set(path, value);
  }
  return out;
}

/** The first field that differs, or undefined. */
function snapshotDiff(before: Snapshot, after: Snapshot): string | undefined {
  if (before.size !== after.size) return `fields ${[...before.keys()].join(',')} → ${[...after.keys()].join(',')}`;
  for (const [key, a] of before) {
    const b = after.get(key);
    if (ArrayBuffer.isView(a)) {
      const x = a as Uint8Array;
      const y = b as Uint8Array;
      if (!ArrayBuffer.isView(b) || x.length !== y.length) return key;
      for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return `${key}[${i}]`;
    } else if (!Object.is(a, b)) return `${key}: ${String(a)} → ${String(b)}`;
  }
  return undefined;
}

function cloneHandshake(hs: HandshakeState): HandshakeState {
  return {
    phase: hs.phase,
    hash: hs.hash.slice(),
    chainingKey: hs.chainingKey.slice(),
    localEphemeral: hs.localEphemeral.slice(),
    remoteEphemeral: hs.remoteEphemeral.slice(),
    localIndex: hs.localIndex,
    remoteIndex: hs.remoteIndex,
    latestTimestamp: hs.latestTimestamp.slice(),
    lastInitiationConsumedAt: hs.lastInitiationConsumedAt,
  };
}

function restoreHandshake(hs: HandshakeState, from: HandshakeState): void {
  copyInProgress(from, hs);
  hs.latestTimestamp.set(from.latestTimestamp);
  hs.lastInitiationConsumedAt = from.lastInitiationConsumedAt;
}

// ---------------------------------------------------------------------------------------------
// The world: two peers after a real handshake, and the valid messages it produced.

interface Peer {
  readonly keys: PeerKeys;
  readonly handshake: HandshakeState;
}

interface World {
  readonly b: CryptoBackend;
  readonly initiator: StaticIdentity;
  readonly responder: StaticIdentity;
  /** The responder's entry for the initiator: has consumed `initiation` and answered it. */
  readonly atResponder: Peer;
  /** The initiator's entry for the responder: has sent `initiation` and waits for `response`. */
  readonly atInitiator: Peer;
  /** The initiator's state had it accepted `response` (remoteIndex aside). */
  readonly afterResponse: HandshakeState;
  /** The initiator's MAC writer for the responder: holds a cookie, and awaits one for `initiation`. */
  readonly generator: CookieGenerator;
  readonly responderChecker: CookieChecker;
  readonly initiatorChecker: CookieChecker;
  /** Transport keys: the initiator seals, the responder opens (the receiver under test). */
  readonly sender: Keypair;
  readonly receiver: Keypair;
  readonly sourceA: Uint8Array;
  readonly sourceB: Uint8Array;
  /** Valid messages; mutants identical to one of these are not mutants. */
  readonly initiation: Uint8Array;
  readonly response: Uint8Array;
  readonly cookieReply: Uint8Array;
  readonly data: Uint8Array;
  readonly keepalive: Uint8Array;
  /** Valid once, stale now: an older initiation, a response to another initiation, etc. */
  readonly stale: readonly Uint8Array[];
}

function buildWorld(b: CryptoBackend, rng: Rng): World {
  const key = () => rng.bytes(32);
  const initiator = createStaticIdentity(b, key());
  const responder = createStaticIdentity(b, key());
  const psk = key();
  const iKeys = createPeerKeys(b, initiator, responder.publicKey, psk);
  const rKeys = createPeerKeys(b, responder, initiator.publicKey, psk);
  const iIndex = (rng.u32() | 1) >>> 0;
  const rIndex = (iIndex + 1 + rng.below(0xffff)) >>> 0;
  const random = rng.fork();
  const responderChecker = new CookieChecker(b, responder.mac1Key, responder.cookieKey, (o) => random.fill(o));
  const initiatorChecker = new CookieChecker(b, initiator.mac1Key, initiator.cookieKey, (o) => random.fill(o));
  const generator = new CookieGenerator(b, iKeys.mac1Key, iKeys.cookieKey);
  const responderMacs = new CookieGenerator(b, rKeys.mac1Key, rKeys.cookieKey);
  const sourceA = encodeSource(Uint8Array.of(198, 18, 0, 1), 51820);
  const sourceB = encodeSource(Uint8Array.of(198, 18, 0, 2), 51820);
  const must = (r: { ok: boolean; error?: string }, what: string) => {
    if (!r.ok) throw new Error(`setup: ${what}: ${r.error}`);
  };

  // An older initiation from the same index; the responder answers it with a cookie (under load).
  const older = new Uint8Array(INITIATION_LENGTH);
  must(createInitiation(b, initiator, iKeys, createHandshakeState(), {
    ephemeralPrivate: key(), timestamp: tai64nFromUnixMs(new Uint8Array(12), UNIX_MS - 5_000), senderIndex: iIndex,
  }, older), 'older initiation');
  generator.addMacs(older, MESSAGE_INITIATION, NOW);
  const olderCookieReply = responderChecker.createReply(older, MESSAGE_INITIATION, sourceA, NOW, new Uint8Array(COOKIE_REPLY_LENGTH)).slice();
  const olderReply = decodeCookieReply(olderCookieReply);
  must(olderReply, 'decode older cookie reply');
  if (olderReply.ok) must(generator.consumeReply(olderReply.value, NOW), 'consume older cookie reply');

  // The real initiation: MAC1, and MAC2 under the cookie just received.
  const atInitiator: Peer = { keys: iKeys, handshake: createHandshakeState() };
  const initiation = new Uint8Array(INITIATION_LENGTH);
  must(createInitiation(b, initiator, iKeys, atInitiator.handshake, {
    ephemeralPrivate: key(), timestamp: tai64nFromUnixMs(new Uint8Array(12), UNIX_MS), senderIndex: iIndex,
  }, initiation), 'initiation');
  generator.addMacs(initiation, MESSAGE_INITIATION, NOW);
  if (!responderChecker.checkMac2(initiation, MESSAGE_INITIATION, sourceA, NOW)) throw new Error('setup: MAC2 of the initiation');

  // The responder takes it and answers.
  const atResponder: Peer = { keys: rKeys, handshake: createHandshakeState() };
  const decodedInitiation = decodeInitiation(initiation);
  must(decodedInitiation, 'decode initiation');
  if (decodedInitiation.ok) {
    must(consumeInitiation(b, responder, decodedInitiation.value, (k) => (equalBytes(k, initiator.publicKey) ? atResponder : undefined), NOW), 'consume initiation');
  }
  const response = new Uint8Array(RESPONSE_LENGTH);
  must(createResponse(b, rKeys, atResponder.handshake, { ephemeralPrivate: key(), senderIndex: rIndex }, response), 'response');
  responderMacs.addMacs(response, MESSAGE_RESPONSE, NOW);

  // A cookie reply to the real initiation, for another source: the one under test.
  const cookieReply = responderChecker.createReply(initiation, MESSAGE_INITIATION, sourceB, NOW, new Uint8Array(COOKIE_REPLY_LENGTH)).slice();

  // A response to another initiation from the same index (a superseded handshake).
  const otherResponder: Peer = { keys: rKeys, handshake: createHandshakeState() };
  const otherInitiation = new Uint8Array(INITIATION_LENGTH);
  must(createInitiation(b, initiator, iKeys, createHandshakeState(), {
    ephemeralPrivate: key(), timestamp: tai64nFromUnixMs(new Uint8Array(12), UNIX_MS - 1_000), senderIndex: iIndex,
  }, otherInitiation), 'other initiation');
  const decodedOther = decodeInitiation(otherInitiation);
  if (decodedOther.ok) must(consumeInitiation(b, responder, decodedOther.value, () => otherResponder, NOW), 'consume other initiation');
  const otherResponse = new Uint8Array(RESPONSE_LENGTH);
  must(createResponse(b, rKeys, otherResponder.handshake, { ephemeralPrivate: key(), senderIndex: rIndex ^ 0x5a5a }, otherResponse), 'other response');
  responderMacs.addMacs(otherResponse, MESSAGE_RESPONSE, NOW);

  // Both sides' keypairs, from copies of the states (the originals stay as the fuzz targets).
  const initiatorDone: Peer = { keys: iKeys, handshake: cloneHandshake(atInitiator.handshake) };
  const decodedResponse = decodeResponse(response);
  must(decodedResponse, 'decode response');
  if (decodedResponse.ok) must(consumeResponse(b, initiator, decodedResponse.value, () => initiatorDone), 'consume response');
  const afterResponse = cloneHandshake(initiatorDone.handshake);
  const iSession = deriveKeypair(initiatorDone.handshake);
  const rSession = deriveKeypair(cloneHandshake(atResponder.handshake));
  if (!iSession.ok || !rSession.ok) throw new Error('setup: deriveKeypair');
  const sender = new Keypair(iSession.value, NOW);
  const receiver = new Keypair(rSession.value, NOW);

  // Two transport messages not yet received, far ahead of the probes (which count from 0).
  sender.sendCounter = TRANSPORT_BASE_COUNTER;
  const data = new Uint8Array(16 + 64 + 16);
  data.set(rng.bytes(64), 16);
  sender.seal(b, data.subarray(16, 80), data, NOW);
  const keepalive = new Uint8Array(32);
  sender.seal(b, new Uint8Array(0), keepalive, NOW);
  sender.sendCounter = 0;
  // Transport the other way: the wrong key for the receiver.
  const reverseData = new Uint8Array(16 + 32 + 16);
  reverseData.set(rng.bytes(32), 16);
  receiver.seal(b, reverseData.subarray(16, 48), reverseData, NOW);
  const reverseKeepalive = new Uint8Array(32);
  receiver.seal(b, new Uint8Array(0), reverseKeepalive, NOW);

  return {
    b, initiator, responder, atResponder, atInitiator, afterResponse, generator, responderChecker, initiatorChecker,
    sender, receiver, sourceA, sourceB, initiation, response, cookieReply, data, keepalive,
    stale: [older, otherInitiation, otherResponse, olderCookieReply, reverseData, reverseKeepalive],
  };
}

/** The fields worth overwriting whole in each kind of message. */
function fieldsOf(message: Uint8Array): Field[] {
  const f = (offset: number, length: number): Field => ({ offset, length });
  switch (message[0]) {
    case MESSAGE_INITIATION:
      return [f(0, 4), f(4, 4), f(8, 32), f(40, 32), f(72, 16), f(40, 48), f(88, 12), f(100, 16), f(116, 16), f(132, 16)];
    case MESSAGE_RESPONSE:
      return [f(0, 4), f(4, 4), f(8, 4), f(12, 32), f(44, 16), f(60, 16), f(76, 16)];
    case MESSAGE_COOKIE_REPLY:
      return [f(0, 4), f(4, 4), f(8, 24), f(32, 16), f(48, 16)];
    default:
      return [f(0, 4), f(4, 4), f(8, 8), f(8, 4), f(12, 4), f(16, Math.min(16, message.length - 32)), f(message.length - 16, 16)].filter((x) => x.length > 0);
  }
}

// ---------------------------------------------------------------------------------------------
// The receive path and its checks.

type Stats = Map<string, number>;

function count(stats: Stats, key: string): void {
  stats.set(key, (stats.get(key) ?? 0) + 1);
}

class Receiver {
  private readonly w: World;
  private readonly b: CryptoBackend;
  readonly stats: Stats = new Map();
  private readonly valid: readonly Uint8Array[];
  private responderBefore: Snapshot;
  private initiatorBefore: Snapshot;
  private readonly initiatorSaved: HandshakeState;
  private generatorBefore: Snapshot;
  private readonly checkersBefore: Snapshot;
  private receiverBefore: Snapshot;
  /** addMacs on a fixed message (the real initiation) must keep giving these bytes. */
  private readonly macProbe: Uint8Array;
  private readonly plain = new Uint8Array(2048);
  private readonly probePlain = new Uint8Array(16).fill(0xa5);
  private readonly probePacket = new Uint8Array(48);
  private readonly firstProbe: Uint8Array;
  private probes = 0;

  constructor(w: World) {
    this.w = w;
    this.b = w.b;
    this.valid = [w.initiation, w.response, w.cookieReply, w.data, w.keepalive];
    this.responderBefore = snapshot(w.atResponder.handshake);
    this.initiatorSaved = cloneHandshake(w.atInitiator.handshake);
    this.initiatorBefore = snapshot(w.atInitiator.handshake);
    this.macProbe = w.initiation.slice();
    this.generatorBefore = snapshot(w.generator);
    this.checkersBefore = snapshot({ r: w.responderChecker, i: w.initiatorChecker });
    this.firstProbe = this.probeKeypair().slice();
    this.receiverBefore = snapshot(w.receiver);
  }

  isValid(bytes: Uint8Array): boolean {
    return this.valid.some((v) => equalBytes(v, bytes));
  }

  /** Feeds one datagram through the device's receive path; throws FuzzFailure on a broken property. */
  feed(m: Uint8Array): void {
    const type = classify(m);
    this.checkDecoders(m, type);
    if (typeof type !== 'number') {
      check(isProtocolError(type), `classify returned ${String(type)}`);
      count(this.stats, `classify:${type}`);
      return;
    }
    switch (type) {
      case MESSAGE_INITIATION: return this.initiation(m);
      case MESSAGE_RESPONSE: return this.response(m);
      case MESSAGE_COOKIE_REPLY: return this.cookieReply(m);
      case MESSAGE_TRANSPORT: return this.transport(m);
    }
  }

  /** Each decoder accepts exactly what classify calls its type (transport: unless the counter is past 2^53). */
  private checkDecoders(m: Uint8Array, type: MessageType | ProtocolError): void {
    const results = [decodeInitiation(m), decodeResponse(m), decodeCookieReply(m), decodeTransport(m)] as const;
    results.forEach((r, i) => {
      const own = type === i + 1;
      if (r.ok) check(own, `decoder ${i + 1} accepted a message classified ${String(type)}`);
      else {
        check(isProtocolError(r.error), `decoder ${i + 1} failed with ${String(r.error)}`);
        check(!own || (i + 1 === MESSAGE_TRANSPORT && r.error === 'expired'), `decoder ${i + 1} rejected its own type (${r.error})`);
      }
    });
  }

  private initiation(m: Uint8Array): void {
    const w = this.w;
    const decoded = decodeInitiation(m);
    check(decoded.ok, 'decodeInitiation');
    const mac1 = w.responderChecker.checkMac1(m, MESSAGE_INITIATION);
    count(this.stats, mac1 ? 'initiation:mac1-pass' : 'initiation:mac1-fail');
    const peer = w.atResponder;
    const result = consumeInitiation(this.b, w.responder, decoded.value, (k) => (equalBytes(k, w.initiator.publicKey) ? peer : undefined), LATER);
    count(this.stats, 'initiation:consumed');
    // The responder already took the real initiation, and every other one we made is older:
    // whatever decrypts is a replay, whatever does not is garbage.
    check(!result.ok, 'consumeInitiation accepted a mutant');
    if (result.ok) return;
    check(isProtocolError(result.error), `consumeInitiation failed with ${String(result.error)}`);
    count(this.stats, `initiation:${result.error}`);
    const authentic = w.stale.concat([w.initiation]).some((v) => v[0] === MESSAGE_INITIATION && sameRange(m, v, 8, 116));
    check(authentic === (result.error === 'replay-timestamp'), `authentic=${authentic} but ${result.error}`);
    check(['low-order', 'decrypt', 'replay-timestamp'].includes(result.error), `unexpected ${result.error}`);
    // MAC1 passes only on the exact first 132 bytes of an initiation we made (MAC2 is free).
    if (mac1) check(w.stale.concat([w.initiation]).some((v) => v[0] === MESSAGE_INITIATION && sameRange(m, v, 0, 132)), 'MAC1 verified on a forged initiation');
    this.expectUnchanged('responder handshake', this.responderBefore, snapshot(peer.handshake));
    this.expectUnchanged('cookie checkers', this.checkersBefore, snapshot({ r: w.responderChecker, i: w.initiatorChecker }));
  }

  private response(m: Uint8Array): void {
    const w = this.w;
    const decoded = decodeResponse(m);
    check(decoded.ok, 'decodeResponse');
    const mac1 = w.initiatorChecker.checkMac1(m, MESSAGE_RESPONSE);
    count(this.stats, mac1 ? 'response:mac1-pass' : 'response:mac1-fail');
    const hs = w.atInitiator.handshake;
    const result = consumeResponse(this.b, w.initiator, decoded.value, (index) => (index === hs.localIndex ? w.atInitiator : undefined));
    count(this.stats, 'response:consumed');
    // consumeResponse authenticates the receiver index (by lookup), the ephemeral and the empty
    // payload: bytes 8..60. The sender index and the MACs are not its business.
    const authentic = sameRange(m, w.response, 8, 60);
    if (mac1) check(w.stale.concat([w.response]).some((v) => v[0] === MESSAGE_RESPONSE && sameRange(m, v, 0, 76)), 'MAC1 verified on a forged response');
    if (result.ok) {
      count(this.stats, 'response:accepted');
      check(authentic, 'consumeResponse accepted a response whose authenticated bytes changed');
      const expected = cloneHandshake(w.afterResponse);
      expected.remoteIndex = decoded.value.sender;
      this.expectUnchanged('accepted response state', snapshot(expected), snapshot(hs));
      restoreHandshake(hs, this.initiatorSaved);
      this.expectUnchanged('restored initiator handshake', this.initiatorBefore, snapshot(hs));
      return;
    }
    check(isProtocolError(result.error), `consumeResponse failed with ${String(result.error)}`);
    count(this.stats, `response:${result.error}`);
    check(!authentic, `authentic response rejected (${result.error})`);
    check(['unknown-index', 'low-order', 'decrypt'].includes(result.error), `unexpected ${result.error}`);
    this.expectUnchanged('initiator handshake', this.initiatorBefore, snapshot(hs));
    this.expectUnchanged('cookie checkers', this.checkersBefore, snapshot({ r: w.responderChecker, i: w.initiatorChecker }));
  }

  private cookieReply(m: Uint8Array): void {
    const w = this.w;
    const decoded = decodeCookieReply(m);
    check(decoded.ok, 'decodeCookieReply');
    // The device finds the handshake by the receiver index before it decrypts.
    if (decoded.value.receiver !== w.atInitiator.handshake.localIndex) {
      count(this.stats, 'cookie:unknown-index');
      return;
    }
    const result = w.generator.consumeReply(decoded.value, LATER);
    check(!result.ok, 'consumeReply accepted a mutant');
    if (result.ok) return;
    check(isProtocolError(result.error), `consumeReply failed with ${String(result.error)}`);
    check(result.error === 'decrypt', `unexpected ${result.error} (the generator forgot the message it awaits a reply for?)`);
    count(this.stats, `cookie:${result.error}`);
    this.expectUnchanged('cookie generator', this.generatorBefore, snapshot(w.generator));
    this.checkMacProbe();
  }

  private transport(m: Uint8Array): void {
    const w = this.w;
    const decoded = decodeTransport(m);
    if (!decoded.ok) {
      check(decoded.error === 'expired', `decodeTransport: ${decoded.error}`);
      count(this.stats, 'transport:expired');
      return;
    }
    if (decoded.value.receiver !== w.receiver.localIndex) {
      count(this.stats, 'transport:unknown-index');
      return;
    }
    const n = w.receiver.open(this.b, decoded.value.counter, decoded.value.encrypted, this.plain, LATER);
    check(n < 0, `Keypair.open accepted a mutant (counter ${decoded.value.counter})`);
    // Authentication comes before the replay check: an unauthenticated packet is never "replayed".
    check(n === -1, `Keypair.open returned ${n}`);
    count(this.stats, 'transport:auth');
    this.expectUnchanged('receiving keypair', this.receiverBefore, snapshot(w.receiver));
    this.checkKeypairBehaviour();
  }

  private expectUnchanged(what: string, before: Snapshot, after: Snapshot): void {
    const diff = snapshotDiff(before, after);
    check(diff === undefined, `${what} changed: ${diff}`);
  }

  /** MAC2 written by the generator for the fixed message is what it was. */
  private checkMacProbe(): void {
    const probe = this.w.initiation.slice();
    this.w.generator.addMacs(probe, MESSAGE_INITIATION, LATER);
    check(equalBytes(probe, this.macProbe), 'addMacs on the fixed message changed (MAC1 or MAC2)');
  }

  /** Seals a fresh packet with the next counter; returns the sealed message. */
  private probeKeypair(): Uint8Array {
    const n = this.w.sender.seal(this.b, this.probePlain, this.probePacket, LATER);
    check(n === this.probePacket.length, 'probe seal');
    const decoded = decodeTransport(this.probePacket);
    check(decoded.ok, 'probe decode');
    const opened = this.w.receiver.open(this.b, decoded.value.counter, decoded.value.encrypted, this.plain, LATER);
    check(opened === this.probePlain.length, `a fresh packet with counter ${decoded.value.counter} was rejected (${opened})`);
    check(this.w.receiver.open(this.b, decoded.value.counter, decoded.value.encrypted, this.plain, LATER) === -2, 'a packet just accepted was accepted again');
    this.probes++;
    return this.probePacket;
  }

  /** A fresh packet is accepted and an old one rejected, as before the mutant. */
  private checkKeypairBehaviour(): void {
    this.probeKeypair();
    const old = decodeTransport(this.firstProbe);
    check(old.ok, 'first probe decode');
    check(this.w.receiver.open(this.b, old.value.counter, old.value.encrypted, this.plain, LATER) === -2, 'the first accepted counter is accepted again');
    this.receiverBefore = snapshot(this.w.receiver);
  }

  /** Every state at once, as it was (run periodically, whichever path the mutants took). */
  checkAll(): void {
    const w = this.w;
    this.expectUnchanged('responder handshake', this.responderBefore, snapshot(w.atResponder.handshake));
    this.expectUnchanged('initiator handshake', this.initiatorBefore, snapshot(w.atInitiator.handshake));
    this.expectUnchanged('cookie generator', this.generatorBefore, snapshot(w.generator));
    this.expectUnchanged('cookie checkers', this.checkersBefore, snapshot({ r: w.responderChecker, i: w.initiatorChecker }));
    this.expectUnchanged('receiving keypair', this.receiverBefore, snapshot(w.receiver));
    this.checkMacProbe();
    this.checkKeypairBehaviour();
  }

  /** After the storm, every valid message still does what it should. */
  finalChecks(): void {
    const w = this.w;
    const b = this.b;
    this.checkAll();

    // The real initiation is a replay; a newer one from the initiator is accepted.
    const replay = decodeInitiation(w.initiation);
    check(replay.ok, 'decode initiation');
    const lookup = (k: Uint8Array) => (equalBytes(k, w.initiator.publicKey) ? w.atResponder : undefined);
    const replayed = consumeInitiation(b, w.responder, replay.value, lookup, LATER);
    check(!replayed.ok && replayed.error === 'replay-timestamp', 'the real initiation, again, is a replay');
    const newer = new Uint8Array(INITIATION_LENGTH);
    const made = createInitiation(b, w.initiator, w.atInitiator.keys, createHandshakeState(), {
      ephemeralPrivate: new Uint8Array(32).fill(9), timestamp: tai64nFromUnixMs(new Uint8Array(12), UNIX_MS + 1_000), senderIndex: 77,
    }, newer);
    check(made.ok, 'newer initiation');
    const newerDecoded = decodeInitiation(newer);
    check(newerDecoded.ok, 'decode newer initiation');
    const taken = consumeInitiation(b, w.responder, newerDecoded.value, lookup, LATER);
    check(taken.ok, `a newer initiation was rejected (${taken.ok ? '' : taken.error})`);

    // The real response completes the initiator's handshake.
    const response = decodeResponse(w.response);
    check(response.ok, 'decode response');
    check(consumeResponse(b, w.initiator, response.value, () => w.atInitiator).ok, 'the real response was rejected');

    // The real cookie reply is taken; MAC2 is then under the new cookie, bound to its source.
    const reply = decodeCookieReply(w.cookieReply);
    check(reply.ok, 'decode cookie reply');
    check(w.generator.consumeReply(reply.value, LATER).ok, 'the real cookie reply was rejected');
    const probe = w.initiation.slice();
    w.generator.addMacs(probe, MESSAGE_INITIATION, LATER);
    check(!equalBytes(probe, this.macProbe), 'MAC2 did not change with the new cookie');
    check(w.responderChecker.checkMac2(probe, MESSAGE_INITIATION, w.sourceB, LATER), 'MAC2 under the new cookie');
    check(!w.responderChecker.checkMac2(probe, MESSAGE_INITIATION, w.sourceA, LATER), 'MAC2 for the other source');
    check(LATER - NOW < COOKIE_REFRESH_TIME, 'cookie still fresh');

    // The two transport messages never received are received now, once.
    for (const message of [w.data, w.keepalive]) {
      const d = decodeTransport(message);
      check(d.ok, 'decode transport');
      const n = w.receiver.open(b, d.value.counter, d.value.encrypted, this.plain, LATER);
      check(n === message.length - 32, `a valid transport message (counter ${d.value.counter}) was rejected (${n})`);
      check(w.receiver.open(b, d.value.counter, d.value.encrypted, this.plain, LATER) === -2, 'replay accepted');
    }
  }
}

// ---------------------------------------------------------------------------------------------

interface Run {
  readonly stats: Stats;
  readonly identical: number;
  readonly ms: number;
}

const NAMES: Record<MessageType, string> = { 1: 'initiation', 2: 'response', 3: 'cookie reply', 4: 'transport' };

function fuzz(backendName: BackendName, type: MessageType, seed: number, total: number): Run {
  const started = performance.now();
  // One stream per (seed, type): each type can be replayed alone.
  const rng = new Rng((seed ^ Math.imul(type, 0x9e37_79b9)) >>> 0);
  const w = buildWorld(createBackend(backendName), rng.fork());
  const receiver = new Receiver(w);
  const bases = type === MESSAGE_INITIATION ? [w.initiation]
    : type === MESSAGE_RESPONSE ? [w.response]
    : type === MESSAGE_COOKIE_REPLY ? [w.cookieReply]
    : [w.data, w.keepalive];
  const donors = [w.initiation, w.response, w.cookieReply, w.data, w.keepalive, ...w.stale];
  const mutators = bases.map((base) => new Mutator(rng.fork(), { weights: WEIGHTS, donors, fields: fieldsOf(base), dictionary: LOW_ORDER_POINTS }));
  let counted = 0;
  let identical = 0;
  while (counted < total) {
    const which = counted % bases.length;
    const mutant = mutators[which]!.mutate(bases[which]!);
    if (receiver.isValid(mutant.bytes)) {
      identical++;
      check(identical < total, 'the mutator keeps returning valid messages');
      continue;
    }
    counted++;
    try {
      receiver.feed(mutant.bytes);
      if (counted % 1024 === 0) receiver.checkAll();
    } catch (err) {
      const what = err instanceof FuzzFailure ? err.message : `exception escaped: ${(err as Error)?.stack ?? String(err)}`;
      throw new Error(
        `FUZZ_SEED=${SEED} (0x${SEED.toString(16)}) backend=${backendName} ${NAMES[type]} mutant #${counted}\n` +
        `  ops: ${mutant.ops.join(' ; ')}\n  bytes (${mutant.bytes.length}): ${hexOf(mutant.bytes)}\n  ${what}`,
        { cause: err },
      );
    }
  }
  try {
    receiver.finalChecks();
  } catch (err) {
    throw new Error(`FUZZ_SEED=${SEED} backend=${backendName} ${NAMES[type]}: after ${counted} mutants: ${(err as Error).message}`, { cause: err });
  }
  return { stats: receiver.stats, identical, ms: performance.now() - started };
}

function report(backendName: string, type: MessageType, total: number, run: Run): string {
  const parts = [...run.stats.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`);
  return `[fuzz ${backendName} seed=0x${SEED.toString(16)}] ${NAMES[type]}: ${total} mutants (+${run.identical} identical skipped) in ${Math.round(run.ms)} ms: ${parts.join(' ')}`;
}

const stat = (run: Run, key: string) => run.stats.get(key) ?? 0;

describe(`mutated messages never pass, throw, or change state (seed 0x${SEED.toString(16)})`, () => {
  const big = COUNT >= 100_000;

  it(`initiation: ${COUNT} mutants through checkMac1 and consumeInitiation`, () => {
    const run = fuzz('sodium', MESSAGE_INITIATION, SEED, COUNT);
    console.log(report('sodium', MESSAGE_INITIATION, COUNT, run));
    if (big) {
      // Deep enough: a good share reached X25519, and every kind of rejection happened.
      expect(stat(run, 'initiation:consumed')).toBeGreaterThan(COUNT / 10);
      for (const k of ['classify:length', 'classify:type', 'classify:reserved', 'classify:short', 'initiation:mac1-pass',
        'initiation:decrypt', 'initiation:replay-timestamp', 'initiation:low-order']) expect(stat(run, k), k).toBeGreaterThan(0);
    }
  }, 180_000);

  it(`response: ${COUNT} mutants through checkMac1 and consumeResponse`, () => {
    const run = fuzz('sodium', MESSAGE_RESPONSE, SEED, COUNT);
    console.log(report('sodium', MESSAGE_RESPONSE, COUNT, run));
    if (big) {
      expect(stat(run, 'response:consumed')).toBeGreaterThan(COUNT / 10);
      for (const k of ['classify:length', 'classify:type', 'classify:reserved', 'response:mac1-pass', 'response:accepted',
        'response:decrypt', 'response:unknown-index', 'response:low-order']) expect(stat(run, k), k).toBeGreaterThan(0);
    }
  }, 180_000);

  it(`cookie reply: ${COUNT} mutants through consumeReply`, () => {
    const run = fuzz('sodium', MESSAGE_COOKIE_REPLY, SEED, COUNT);
    console.log(report('sodium', MESSAGE_COOKIE_REPLY, COUNT, run));
    if (big) {
      expect(stat(run, 'cookie:decrypt')).toBeGreaterThan(COUNT / 10);
      for (const k of ['classify:length', 'classify:type', 'classify:reserved', 'cookie:unknown-index']) expect(stat(run, k), k).toBeGreaterThan(0);
    }
  }, 180_000);

  it(`transport: ${COUNT} mutants through decodeTransport and Keypair.open`, () => {
    const run = fuzz('sodium', MESSAGE_TRANSPORT, SEED, COUNT);
    console.log(report('sodium', MESSAGE_TRANSPORT, COUNT, run));
    if (big) {
      expect(stat(run, 'transport:auth')).toBeGreaterThan(COUNT / 10);
      for (const k of ['classify:short', 'classify:type', 'classify:reserved', 'transport:expired', 'transport:unknown-index']) {
        expect(stat(run, k), k).toBeGreaterThan(0);
      }
    }
  }, 180_000);

  it(`the noble backend: ${NOBLE_COUNT} mutants of each type`, () => {
    for (const type of [MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_COOKIE_REPLY, MESSAGE_TRANSPORT] as const) {
      const run = fuzz('noble', type, SEED, NOBLE_COUNT);
      console.log(report('noble', type, NOBLE_COUNT, run));
    }
  }, 180_000);

  it('the seed and the mutants are reproducible', () => {
    const a = new Mutator(new Rng(SEED), { weights: WEIGHTS, donors: [new Uint8Array(64)], fields: [{ offset: 8, length: 32 }] });
    const b = new Mutator(new Rng(SEED), { weights: WEIGHTS, donors: [new Uint8Array(64)], fields: [{ offset: 8, length: 32 }] });
    const base = new Uint8Array(148).fill(3);
    for (let i = 0; i < 1_000; i++) {
      const x = a.mutate(base);
      const y = b.mutate(base);
      expect(x.ops).toEqual(y.ops);
      expect(equalBytes(x.bytes, y.bytes)).toBe(true);
      expect(x.bytes).not.toBe(base);
    }
    expect(base.every((v) => v === 3)).toBe(true);
  });
});
