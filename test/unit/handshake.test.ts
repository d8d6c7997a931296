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
  restoreInitiation,
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
  it('crossed initiations: without `aside` each overwrites its own (the whitepaper), with it the answer to ours still completes', () => {
    const { a, b: bb } = makePair(b);
    const decode = (bytes: Uint8Array) => {
      const d = decodeInitiation(bytes);
      if (!d.ok) throw new Error(d.error);
      return d.value;
    };
    const fromA = decode(initiation(b, a, Date.now(), 11));
    const fromB = decode(initiation(b, bb, Date.now(), 22));
    const answer = (side: Side, index: number) => {
      const resp = new Uint8Array(RESPONSE_LENGTH);
      expect(createResponse(b, side.peer.keys, side.peer.handshake, { ephemeralPrivate: randomKey(b), senderIndex: index }, resp).ok).toBe(true);
      const keys = deriveKeypair(side.peer.handshake);
      const d = decodeResponse(resp);
      if (!keys.ok || !d.ok) throw new Error('answer');
      return { keys: keys.value, response: d.value };
    };
    // Declining to set it aside (the caller's choice, e.g. ours is stale) is the whitepaper's overwrite.
    const declined = makePair(b);
    const decFromB = decode(initiation(b, declined.b, Date.now(), 55));
    initiation(b, declined.a, Date.now(), 66);
    const refused = consumeInitiation(b, declined.a.identity, decFromB, () => declined.a.peer, 0, () => undefined);
    expect(refused.ok && refused.value.crossed).toBe(false);
    expect(declined.a.peer.handshake.phase).toBe('initiation-consumed');
    // A sets its initiation aside, answers B's, and waits for the answer to its own again.
    const aside = createHandshakeState();
    const atA = consumeInitiation(b, a.identity, fromB, () => a.peer, 0, () => aside);
    expect(atA.ok && atA.value.crossed).toBe(true);
    const fromAtoB = answer(a, 33);
    restoreInitiation(a.peer.handshake, aside);
    expect(a.peer.handshake.phase).toBe('initiation-created');
    expect(a.peer.handshake.localIndex).toBe(11);
    expect(aside.phase).toBe('none');
    expect(aside.chainingKey.every((x) => x === 0)).toBe(true);
    // B is a standard peer: it overwrites its own with A's and answers, so A's answer is refused…
    const atB = consumeInitiation(b, bb.identity, fromA, () => bb.peer, 0);
    expect(atB.ok && atB.value.crossed).toBe(false);
    const fromBtoA = answer(bb, 44);
    expect(consumeResponse(b, bb.identity, fromAtoB.response, () => bb.peer)).toEqual({ ok: false, error: 'state' });
    // …but B's answer completes A's initiation: the same session on both sides.
    expect(consumeResponse(b, a.identity, fromBtoA.response, () => a.peer).ok).toBe(true);
    const kA = deriveKeypair(a.peer.handshake);
    if (!kA.ok) throw new Error(kA.error);
    expect(kA.value.isInitiator).toBe(true);
    expect(toHex(kA.value.sendKey)).toBe(toHex(fromBtoA.keys.receiveKey));
    expect(toHex(kA.value.receiveKey)).toBe(toHex(fromBtoA.keys.sendKey));
    // Replay protection moved on with B's initiation, not back with the restore.
    expect(consumeInitiation(b, a.identity, fromB, () => a.peer, 10_000)).toEqual({ ok: false, error: 'replay-timestamp' });
  });
});
