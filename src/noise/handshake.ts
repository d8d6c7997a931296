/**
 * Noise_IKpsk2 as WireGuard specifies it (whitepaper §5.4), sans I/O. Ephemeral keys,
 * timestamps, indices and the clock are parameters, so fixed inputs give fixed bytes.
 * MAC1/MAC2 are not written here: cookie.ts adds them to the finished message.
 *
 * Each function changes the handshake state only when it succeeds; a rejected message
 * leaves every byte of state as it was.
 */
import type { CryptoBackend } from './crypto/backend.ts';
import { hash, kdf } from './crypto/blake2s.ts';
import { compareTai64n, TAI64N_LENGTH } from './crypto/tai64n.ts';
import { CONSTRUCTION, HANDSHAKE_INITIATION_RATE, IDENTIFIER, LABEL_COOKIE, LABEL_MAC1 } from './constants.ts';
import type { Result } from './errors.ts';
import { fail, ok } from './errors.ts';
import type { InitiationView, ResponseView } from './messages.ts';
import {
  Initiation,
  INITIATION_LENGTH,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  Response,
  RESPONSE_LENGTH,
  writeHeader,
  writeU32,
} from './messages.ts';

const KEY = 32;
const encoder = new TextEncoder();
const ZERO_NONCE = new Uint8Array(12);
const EMPTY = new Uint8Array(0);

/** HASH(CONSTRUCTION): the initial chaining key. */
export const INITIAL_CHAINING_KEY: Uint8Array = hash(new Uint8Array(KEY), encoder.encode(CONSTRUCTION));
/** HASH(C || IDENTIFIER): the initial hash before the responder's static key is mixed in. */
export const INITIAL_HASH: Uint8Array = hash(new Uint8Array(KEY), INITIAL_CHAINING_KEY, encoder.encode(IDENTIFIER));

/** Our own static key and what is derived from it once. */
export interface StaticIdentity {
  readonly privateKey: Uint8Array;
  readonly publicKey: Uint8Array;
  /** HASH(INITIAL_HASH || publicKey): the hash every initiation to us starts from. */
  readonly initialHash: Uint8Array;
  /** HASH("mac1----" || publicKey): checks MAC1 on messages sent to us. */
  readonly mac1Key: Uint8Array;
  /** HASH("cookie--" || publicKey): encrypts the cookie replies we send. */
  readonly cookieKey: Uint8Array;
}

/** A remote peer's static key and what is derived from it and our identity. */
export interface PeerKeys {
  readonly remoteStatic: Uint8Array;
  readonly presharedKey: Uint8Array;
  /** DH(our private, their public), computed once; all zero for a low-order key. */
  readonly staticStatic: Uint8Array;
  readonly staticStaticValid: boolean;
  readonly initialHash: Uint8Array;
  /** HASH("mac1----" || remoteStatic): MAC1 key for messages we send them. */
  readonly mac1Key: Uint8Array;
  /** HASH("cookie--" || remoteStatic): decrypts cookie replies they send us. */
  readonly cookieKey: Uint8Array;
}

export function labelKey(out: Uint8Array, label: string, publicKey: Uint8Array): Uint8Array {
  return hash(out, encoder.encode(label), publicKey);
}

export function createStaticIdentity(backend: CryptoBackend, privateKey: Uint8Array): StaticIdentity {
  const publicKey = new Uint8Array(KEY);
  backend.x25519Base(publicKey, privateKey);
  return {
    privateKey: Uint8Array.from(privateKey),
    publicKey,
    initialHash: hash(new Uint8Array(KEY), INITIAL_HASH, publicKey),
    mac1Key: labelKey(new Uint8Array(KEY), LABEL_MAC1, publicKey),
    cookieKey: labelKey(new Uint8Array(KEY), LABEL_COOKIE, publicKey),
  };
}

export function createPeerKeys(
  backend: CryptoBackend,
  identity: StaticIdentity,
  remoteStatic: Uint8Array,
  presharedKey: Uint8Array = new Uint8Array(KEY),
): PeerKeys {
  const staticStatic = new Uint8Array(KEY);
  const staticStaticValid = backend.x25519(staticStatic, identity.privateKey, remoteStatic);
  return {
    remoteStatic: Uint8Array.from(remoteStatic),
    presharedKey: Uint8Array.from(presharedKey),
    staticStatic,
    staticStaticValid,
    initialHash: hash(new Uint8Array(KEY), INITIAL_HASH, remoteStatic),
    mac1Key: labelKey(new Uint8Array(KEY), LABEL_MAC1, remoteStatic),
    cookieKey: labelKey(new Uint8Array(KEY), LABEL_COOKIE, remoteStatic),
  };
}

export type HandshakePhase = 'none' | 'initiation-created' | 'initiation-consumed' | 'response-created' | 'response-consumed';

/** Per-peer handshake state. */
export interface HandshakeState {
  phase: HandshakePhase;
  readonly hash: Uint8Array;
  readonly chainingKey: Uint8Array;
  readonly localEphemeral: Uint8Array;
  readonly remoteEphemeral: Uint8Array;
  localIndex: number;
  remoteIndex: number;
  /** Greatest TAI64N accepted from this peer: older or equal initiations are replays. */
  readonly latestTimestamp: Uint8Array;
  /** When (ms, caller's monotonic clock) we last accepted an initiation from this peer. */
  lastInitiationConsumedAt: number;
}

export function createHandshakeState(): HandshakeState {
  return {
    phase: 'none',
    hash: new Uint8Array(KEY),
    chainingKey: new Uint8Array(KEY),
    localEphemeral: new Uint8Array(KEY),
    remoteEphemeral: new Uint8Array(KEY),
    localIndex: 0,
    remoteIndex: 0,
    latestTimestamp: new Uint8Array(TAI64N_LENGTH),
    lastInitiationConsumedAt: -Infinity,
  };
}

/** Copies the in-progress handshake (not the replay-protection fields) from one state to another. */
export function copyInProgress(from: HandshakeState, to: HandshakeState): void {
  to.phase = from.phase;
  to.hash.set(from.hash);
  to.chainingKey.set(from.chainingKey);
  to.localEphemeral.set(from.localEphemeral);
  to.remoteEphemeral.set(from.remoteEphemeral);
  to.localIndex = from.localIndex;
  to.remoteIndex = from.remoteIndex;
}

/**
 * Puts back the initiation consumeInitiation set aside (after the crossing initiation was
 * answered) and wipes `aside`: hs waits for the answer to ours again, replay protection untouched.
 */
export function restoreInitiation(hs: HandshakeState, aside: HandshakeState): void {
  copyInProgress(aside, hs);
  clearHandshake(aside);
}

/** Forgets the in-progress handshake (not the replay-protection fields). */
export function clearHandshake(hs: HandshakeState): void {
  hs.phase = 'none';
  hs.hash.fill(0);
  hs.chainingKey.fill(0);
  hs.localEphemeral.fill(0);
  hs.remoteEphemeral.fill(0);
  hs.localIndex = 0;
  hs.remoteIndex = 0;
}

export interface InitiationParams {
  readonly ephemeralPrivate: Uint8Array;
  /** 12-byte TAI64N. */
  readonly timestamp: Uint8Array;
  readonly senderIndex: number;
}

/**
 * Writes an initiation (148 bytes; MAC fields zero) into out[0..148) and moves hs to
 * 'initiation-created'. Fails with 'low-order' for a peer whose key gives a zero DH.
 */
export function createInitiation(
  backend: CryptoBackend,
  identity: StaticIdentity,
  peer: PeerKeys,
  hs: HandshakeState,
  params: InitiationParams,
  out: Uint8Array,
): Result<void> {
  if (!peer.staticStaticValid) return fail('low-order');
  const msg = out.subarray(0, INITIATION_LENGTH);
  const h = Uint8Array.from(peer.initialHash);
  const ck = Uint8Array.from(INITIAL_CHAINING_KEY);
  const key = new Uint8Array(KEY);
  const dh = new Uint8Array(KEY);
  try {
    writeHeader(msg, MESSAGE_INITIATION);
    writeU32(msg, Initiation.sender, params.senderIndex);
    const ephemeralPublic = msg.subarray(Initiation.ephemeral, Initiation.static);
    backend.x25519Base(ephemeralPublic, params.ephemeralPrivate);
    kdf(ck, ephemeralPublic, ck);
    hash(h, h, ephemeralPublic);

    if (!backend.x25519(dh, params.ephemeralPrivate, peer.remoteStatic)) return fail('low-order');
    kdf(ck, dh, ck, key);
    const encryptedStatic = msg.subarray(Initiation.static, Initiation.timestamp);
    backend.aeadSeal(encryptedStatic, key, ZERO_NONCE, identity.publicKey, h);
    hash(h, h, encryptedStatic);

    kdf(ck, peer.staticStatic, ck, key);
    const encryptedTimestamp = msg.subarray(Initiation.timestamp, Initiation.mac1);
    backend.aeadSeal(encryptedTimestamp, key, ZERO_NONCE, params.timestamp, h);
    hash(h, h, encryptedTimestamp);
    msg.fill(0, Initiation.mac1, INITIATION_LENGTH);

    hs.phase = 'initiation-created';
    hs.hash.set(h);
    hs.chainingKey.set(ck);
    hs.localEphemeral.set(params.ephemeralPrivate);
    hs.localIndex = params.senderIndex >>> 0;
    hs.remoteIndex = 0;
    return ok(undefined);
  } finally {
    key.fill(0);
    dh.fill(0);
    ck.fill(0);
    h.fill(0);
  }
}

/** What the caller keeps per peer, found by the initiator's static key. */
export interface InitiationTarget {
  readonly keys: PeerKeys;
  readonly handshake: HandshakeState;
}

export interface ConsumedInitiation<P extends InitiationTarget> {
  readonly peer: P;
  readonly timestamp: Uint8Array;
  /** Our own initiation to this peer was in flight; it was copied to `aside` (see consumeInitiation). */
  readonly crossed: boolean;
}

/**
 * Authenticates an initiation addressed to identity (MAC1 is checked beforehand by cookie.ts),
 * finds the initiator with lookupPeer, and rejects replayed timestamps and floods. On success
 * the peer's handshake is in 'initiation-consumed', ready for createResponse.
 *
 * Crossed initiations (both sides initiate at once, or ours was lost while theirs arrives): the
 * whitepaper's single handshake state makes each side overwrite its own initiation with the
 * other's, so both hold only an unconfirmed responder keypair, reject the answer to their own,
 * and nothing flows until a retransmission REKEY_TIMEOUT (5 s) later. When setAside gives a
 * state for the peer (the caller's call: is ours recent enough to be worth keeping?), an
 * initiation of ours still waiting for its answer is copied there first (crossed: true); the
 * caller answers theirs, then puts ours back with restoreInitiation, so whichever answer arrives
 * completes a session — with any peer, since the peer's side of the exchange is unchanged.
 */
export function consumeInitiation<P extends InitiationTarget>(
  backend: CryptoBackend,
  identity: StaticIdentity,
  msg: InitiationView,
  lookupPeer: (remoteStatic: Uint8Array) => P | undefined,
  now: number,
  setAside?: (peer: P) => HandshakeState | undefined,
): Result<ConsumedInitiation<P>> {
  const h = Uint8Array.from(identity.initialHash);
  const ck = Uint8Array.from(INITIAL_CHAINING_KEY);
  const key = new Uint8Array(KEY);
  const dh = new Uint8Array(KEY);
  const remoteStatic = new Uint8Array(KEY);
  const timestamp = new Uint8Array(TAI64N_LENGTH);
  try {
    kdf(ck, msg.ephemeral, ck);
    hash(h, h, msg.ephemeral);
    if (!backend.x25519(dh, identity.privateKey, msg.ephemeral)) return fail('low-order');
    kdf(ck, dh, ck, key);
    if (backend.aeadOpen(remoteStatic, key, ZERO_NONCE, msg.encryptedStatic, h) < 0) return fail('decrypt');
    hash(h, h, msg.encryptedStatic);

    const peer = lookupPeer(remoteStatic);
    if (!peer) return fail('unknown-peer');
    if (!peer.keys.staticStaticValid) return fail('low-order');
    kdf(ck, peer.keys.staticStatic, ck, key);
    if (backend.aeadOpen(timestamp, key, ZERO_NONCE, msg.encryptedTimestamp, h) < 0) return fail('decrypt');
    hash(h, h, msg.encryptedTimestamp);

    const hs = peer.handshake;
    if (compareTai64n(timestamp, hs.latestTimestamp) <= 0) return fail('replay-timestamp');
    if (now - hs.lastInitiationConsumedAt <= HANDSHAKE_INITIATION_RATE) return fail('flood');

    const aside = hs.phase === 'initiation-created' ? setAside?.(peer) : undefined;
    const crossed = aside !== undefined;
    if (aside) copyInProgress(hs, aside);
    hs.phase = 'initiation-consumed';
    hs.hash.set(h);
    hs.chainingKey.set(ck);
    hs.remoteEphemeral.set(msg.ephemeral);
    hs.remoteIndex = msg.sender;
    hs.latestTimestamp.set(timestamp);
    hs.lastInitiationConsumedAt = now;
    return ok({ peer, timestamp, crossed });
  } finally {
    key.fill(0);
    dh.fill(0);
    ck.fill(0);
    h.fill(0);
  }
}

export interface ResponseParams {
  readonly ephemeralPrivate: Uint8Array;
  readonly senderIndex: number;
}

/** Writes a response (92 bytes; MAC fields zero) to a consumed initiation; hs moves to 'response-created'. */
export function createResponse(
  backend: CryptoBackend,
  peer: PeerKeys,
  hs: HandshakeState,
  params: ResponseParams,
  out: Uint8Array,
): Result<void> {
  if (hs.phase !== 'initiation-consumed') return fail('state');
  const msg = out.subarray(0, RESPONSE_LENGTH);
  const h = Uint8Array.from(hs.hash);
  const ck = Uint8Array.from(hs.chainingKey);
  const dh = new Uint8Array(KEY);
  const tau = new Uint8Array(KEY);
  const key = new Uint8Array(KEY);
  try {
    writeHeader(msg, MESSAGE_RESPONSE);
    writeU32(msg, Response.sender, params.senderIndex);
    writeU32(msg, Response.receiver, hs.remoteIndex);
    const ephemeralPublic = msg.subarray(Response.ephemeral, Response.empty);
    backend.x25519Base(ephemeralPublic, params.ephemeralPrivate);
    kdf(ck, ephemeralPublic, ck);
    hash(h, h, ephemeralPublic);
    if (!backend.x25519(dh, params.ephemeralPrivate, hs.remoteEphemeral)) return fail('low-order');
    kdf(ck, dh, ck);
    if (!backend.x25519(dh, params.ephemeralPrivate, peer.remoteStatic)) return fail('low-order');
    kdf(ck, dh, ck);
    kdf(ck, peer.presharedKey, ck, tau, key);
    hash(h, h, tau);
    const encryptedEmpty = msg.subarray(Response.empty, Response.mac1);
    backend.aeadSeal(encryptedEmpty, key, ZERO_NONCE, EMPTY, h);
    hash(h, h, encryptedEmpty);
    msg.fill(0, Response.mac1, RESPONSE_LENGTH);

    hs.phase = 'response-created';
    hs.hash.set(h);
    hs.chainingKey.set(ck);
    hs.localEphemeral.set(params.ephemeralPrivate);
    hs.localIndex = params.senderIndex >>> 0;
    return ok(undefined);
  } finally {
    dh.fill(0);
    tau.fill(0);
    key.fill(0);
    ck.fill(0);
    h.fill(0);
  }
}

/**
 * Authenticates a response to our initiation. lookupByIndex finds the peer whose pending
 * handshake has local index msg.receiver. On success hs is in 'response-consumed'.
 */
export function consumeResponse<P extends InitiationTarget>(
  backend: CryptoBackend,
  identity: StaticIdentity,
  msg: ResponseView,
  lookupByIndex: (receiverIndex: number) => P | undefined,
): Result<P> {
  const peer = lookupByIndex(msg.receiver);
  if (!peer) return fail('unknown-index');
  const hs = peer.handshake;
  if (hs.phase !== 'initiation-created' || hs.localIndex !== msg.receiver) return fail('state');
  const h = Uint8Array.from(hs.hash);
  const ck = Uint8Array.from(hs.chainingKey);
  const dh = new Uint8Array(KEY);
  const tau = new Uint8Array(KEY);
  const key = new Uint8Array(KEY);
  const empty = new Uint8Array(0);
  try {
    kdf(ck, msg.ephemeral, ck);
    hash(h, h, msg.ephemeral);
    if (!backend.x25519(dh, hs.localEphemeral, msg.ephemeral)) return fail('low-order');
    kdf(ck, dh, ck);
    if (!backend.x25519(dh, identity.privateKey, msg.ephemeral)) return fail('low-order');
    kdf(ck, dh, ck);
    kdf(ck, peer.keys.presharedKey, ck, tau, key);
    hash(h, h, tau);
    if (backend.aeadOpen(empty, key, ZERO_NONCE, msg.encryptedEmpty, h) < 0) return fail('decrypt');
    hash(h, h, msg.encryptedEmpty);

    hs.phase = 'response-consumed';
    hs.hash.set(h);
    hs.chainingKey.set(ck);
    hs.remoteIndex = msg.sender;
    return ok(peer);
  } finally {
    dh.fill(0);
    tau.fill(0);
    key.fill(0);
    ck.fill(0);
    h.fill(0);
  }
}

export interface SessionKeys {
  readonly sendKey: Uint8Array;
  readonly receiveKey: Uint8Array;
  readonly localIndex: number;
  readonly remoteIndex: number;
  readonly isInitiator: boolean;
}

/**
 * Derives the transport keys from a completed handshake — the initiator after consumeResponse,
 * the responder after createResponse — and wipes the handshake's secrets.
 */
export function deriveKeypair(hs: HandshakeState): Result<SessionKeys> {
  let isInitiator: boolean;
  if (hs.phase === 'response-consumed') isInitiator = true;
  else if (hs.phase === 'response-created') isInitiator = false;
  else return fail('state');
  const first = new Uint8Array(KEY);
  const second = new Uint8Array(KEY);
  kdf(hs.chainingKey, EMPTY, first, second);
  const keys: SessionKeys = {
    sendKey: isInitiator ? first : second,
    receiveKey: isInitiator ? second : first,
    localIndex: hs.localIndex,
    remoteIndex: hs.remoteIndex,
    isInitiator,
  };
  clearHandshake(hs);
  return ok(keys);
}
