import { describe, expect, it } from 'vitest';
import { createBackend } from '../../src/noise/crypto/index.ts';
import { hash } from '../../src/noise/crypto/blake2s.ts';
import { toHex } from '../../src/util/hex.ts';
import { HANDSHAKE_INITIATION_RATE } from '../../src/noise/constants.ts';
import {
  consumeInitiation,
  consumeResponse,
  createHandshakeState,
  createInitiation,
  createPeerKeys,
  createResponse,
  createStaticIdentity,
  deriveKeypair,
  INITIAL_CHAINING_KEY,
  INITIAL_HASH,
  keepsOwnInitiation,
} from '../../src/noise/handshake.ts';
import { decodeInitiation, decodeResponse, INITIATION_LENGTH, RESPONSE_LENGTH } from '../../src/noise/messages.ts';
import type { Side } from '../helpers/handshake.ts';
import { handshake, initiation, makePair, randomKey } from '../helpers/handshake.ts';

const snapshot = (hs: ReturnType<typeof createHandshakeState>) => JSON.stringify({
  phase: hs.phase,
  hash: toHex(hs.hash),
  ck: toHex(hs.chainingKey),
  le: toHex(hs.localEphemeral),
  re: toHex(hs.remoteEphemeral),
  li: hs.localIndex,
  ri: hs.remoteIndex,
  ts: toHex(hs.latestTimestamp),
  at: hs.lastInitiationConsumedAt,
});

describe.each(['sodium', 'noble'] as const)('handshake (%s)', (name) => {
  const b = createBackend(name);

  it('starts from the published construction constants', () => {
    expect(toHex(INITIAL_CHAINING_KEY).startsWith('60e26dae')).toBe(true);
    expect(toHex(INITIAL_HASH).startsWith('2211b361')).toBe(true);
    expect(toHex(hash(new Uint8Array(32), new TextEncoder().encode('x')))).toHaveLength(64);
  });

  it('completes both ways and yields mirrored keys that carry data', () => {
    const { a, b: bb } = makePair(b, randomKey(b));
    const { ka, kb } = handshake(b, a, bb);
    expect(toHex(ka.sendKey)).toBe(toHex(kb.receiveKey));
    expect(toHex(ka.receiveKey)).toBe(toHex(kb.sendKey));
    expect(ka.isInitiator).toBe(true);
    expect(kb.isInitiator).toBe(false);
    const out = new Uint8Array(64);
    const n = ka.seal(b, new Uint8Array(16).fill(7), out, 0);
    const plain = new Uint8Array(32);
    expect(kb.open(b, 0, out.subarray(16, n), plain, 0)).toBe(16);
    expect(plain.subarray(0, 16).every((x) => x === 7)).toBe(true);
  });

  it('different preshared keys never agree', () => {
    const pair = makePair(b, randomKey(b));
    const other = createPeerKeys(b, pair.b.identity, pair.a.identity.publicKey, randomKey(b));
    pair.b.peer.keys = other;
    expect(() => handshake(b, pair.a, pair.b)).toThrow('decrypt');
  });

  it('rejects a replayed initiation (same timestamp) and an older one, state untouched', () => {
    const { a, b: bb } = makePair(b);
    const first = initiation(b, a, 1_700_000_000_000);
    const d = decodeInitiation(first);
    if (!d.ok) throw new Error();
    expect(consumeInitiation(b, bb.identity, d.value, () => bb.peer, 0).ok).toBe(true);
    const before = snapshot(bb.peer.handshake);
    expect(consumeInitiation(b, bb.identity, d.value, () => bb.peer, 10_000)).toEqual({ ok: false, error: 'replay-timestamp' });
    const older = decodeInitiation(initiation(b, a, 1_600_000_000_000));
    if (!older.ok) throw new Error();
    expect(consumeInitiation(b, bb.identity, older.value, () => bb.peer, 20_000)).toEqual({ ok: false, error: 'replay-timestamp' });
    expect(snapshot(bb.peer.handshake)).toBe(before);
  });

  it('drops initiations closer together than the flood limit', () => {
    const { a, b: bb } = makePair(b);
    const d1 = decodeInitiation(initiation(b, a, 1_700_000_000_000));
    const d2 = decodeInitiation(initiation(b, a, 1_700_000_001_000));
    if (!d1.ok || !d2.ok) throw new Error();
    expect(consumeInitiation(b, bb.identity, d1.value, () => bb.peer, 1_000).ok).toBe(true);
    expect(consumeInitiation(b, bb.identity, d2.value, () => bb.peer, 1_000 + HANDSHAKE_INITIATION_RATE)).toEqual({ ok: false, error: 'flood' });
    expect(consumeInitiation(b, bb.identity, d2.value, () => bb.peer, 1_001 + HANDSHAKE_INITIATION_RATE).ok).toBe(true);
  });

  it('an initiation from an unknown key is refused before its timestamp is read', () => {
    const { a, b: bb } = makePair(b);
    const d = decodeInitiation(initiation(b, a, Date.now()));
    if (!d.ok) throw new Error();
    expect(consumeInitiation(b, bb.identity, d.value, () => undefined, 0)).toEqual({ ok: false, error: 'unknown-peer' });
    expect(bb.peer.handshake.phase).toBe('none');
  });

  it('never completes with a low-order static key', () => {
    const id = createStaticIdentity(b, randomKey(b));
    const lowOrder = new Uint8Array(32); // the point 0
    const keys = createPeerKeys(b, id, lowOrder);
    expect(keys.staticStaticValid).toBe(false);
    const r = createInitiation(b, id, keys, createHandshakeState(), { ephemeralPrivate: randomKey(b), timestamp: new Uint8Array(12), senderIndex: 1 }, new Uint8Array(INITIATION_LENGTH));
    expect(r).toEqual({ ok: false, error: 'low-order' });
  });

  it('rejects a low-order ephemeral in an initiation', () => {
    const { a, b: bb } = makePair(b);
    const msg = initiation(b, a, Date.now());
    msg.fill(0, 8, 40);
    const d = decodeInitiation(msg);
    if (!d.ok) throw new Error();
    expect(consumeInitiation(b, bb.identity, d.value, () => bb.peer, 0)).toEqual({ ok: false, error: 'low-order' });
  });

  it('a response is only accepted for the pending initiation, once', () => {
    const { a, b: bb } = makePair(b);
    const d = decodeInitiation(initiation(b, a, Date.now(), 77));
    if (!d.ok) throw new Error();
    consumeInitiation(b, bb.identity, d.value, () => bb.peer, 0);
    const resp = new Uint8Array(RESPONSE_LENGTH);
    createResponse(b, bb.peer.keys, bb.peer.handshake, { ephemeralPrivate: randomKey(b), senderIndex: 88 }, resp);
    expect(createResponse(b, bb.peer.keys, bb.peer.handshake, { ephemeralPrivate: randomKey(b), senderIndex: 89 }, resp)).toEqual({ ok: false, error: 'state' });
    const dr = decodeResponse(resp);
    if (!dr.ok) throw new Error();
    expect(dr.value.receiver).toBe(77);
    expect(consumeResponse(b, a.identity, dr.value, () => undefined)).toEqual({ ok: false, error: 'unknown-index' });
    // A flipped byte in the encrypted part fails authentication and leaves the initiator waiting.
    const tampered = Uint8Array.from(resp);
    tampered[50]! ^= 1;
    const dt = decodeResponse(tampered);
    if (!dt.ok) throw new Error();
    const before = snapshot(a.peer.handshake);
    expect(consumeResponse(b, a.identity, dt.value, () => a.peer)).toEqual({ ok: false, error: 'decrypt' });
    expect(snapshot(a.peer.handshake)).toBe(before);
    expect(consumeResponse(b, a.identity, dr.value, () => a.peer).ok).toBe(true);
    expect(consumeResponse(b, a.identity, dr.value, () => a.peer)).toEqual({ ok: false, error: 'state' });
    const keys = deriveKeypair(a.peer.handshake);
    expect(keys.ok && keys.value.remoteIndex === 88 && keys.value.localIndex === 77).toBe(true);
    expect(a.peer.handshake.hash.every((x) => x === 0)).toBe(true);
  });
  it('crossed initiations: the greater static key keeps its own, the lesser answers it, one response completes both', () => {
    const pair = makePair(b);
    const greaterFirst = Buffer.compare(Buffer.from(pair.a.identity.publicKey), Buffer.from(pair.b.identity.publicKey)) > 0;
    const [hi, lo]: [Side, Side] = greaterFirst ? [pair.a, pair.b] : [pair.b, pair.a];
    // Neither side keeps anything before it has an initiation in flight.
    expect(keepsOwnInitiation(hi.peer.handshake, hi.identity, hi.peer.keys)).toBe(false);
    const fromHi = decodeInitiation(initiation(b, hi, Date.now(), 11));
    const fromLo = decodeInitiation(initiation(b, lo, Date.now(), 22));
    if (!fromHi.ok || !fromLo.ok) throw new Error('decode');
    expect(keepsOwnInitiation(hi.peer.handshake, hi.identity, hi.peer.keys)).toBe(true);
    expect(keepsOwnInitiation(lo.peer.handshake, lo.identity, lo.peer.keys)).toBe(false);
    const keep = (side: Side) => (peer: Side['peer']) => keepsOwnInitiation(peer.handshake, side.identity, peer.keys);
    // The greater side refuses the lesser's initiation, every byte of its own state kept.
    const before = snapshot(hi.peer.handshake);
    expect(consumeInitiation(b, hi.identity, fromLo.value, () => hi.peer, 0, keep(hi))).toEqual({ ok: false, error: 'crossed' });
    expect(snapshot(hi.peer.handshake)).toBe(before);
    // The lesser side consumes the greater's (overwriting its own) and answers; that answer completes hi's.
    const consumed = consumeInitiation(b, lo.identity, fromHi.value, () => lo.peer, 0, keep(lo));
    expect(consumed.ok).toBe(true);
    const resp = new Uint8Array(RESPONSE_LENGTH);
    expect(createResponse(b, lo.peer.keys, lo.peer.handshake, { ephemeralPrivate: randomKey(b), senderIndex: 33 }, resp).ok).toBe(true);
    const dr = decodeResponse(resp);
    if (!dr.ok) throw new Error('decode');
    expect(consumeResponse(b, hi.identity, dr.value, () => hi.peer).ok).toBe(true);
    const kHi = deriveKeypair(hi.peer.handshake);
    const kLo = deriveKeypair(lo.peer.handshake);
    if (!kHi.ok || !kLo.ok) throw new Error('derive');
    expect(toHex(kHi.value.sendKey)).toBe(toHex(kLo.value.receiveKey));
    expect(kHi.value.isInitiator).toBe(true);
    // Once answered, hi has nothing in flight: a later initiation from lo is consumed as usual.
    expect(keepsOwnInitiation(hi.peer.handshake, hi.identity, hi.peer.keys)).toBe(false);
  });
});
