/** Two fresh identities that know each other, with everything a handshake test needs. */
import type { CryptoBackend } from '../../src/noise/crypto/backend.ts';
import { CookieGenerator } from '../../src/noise/cookie.ts';
import type { HandshakeState, PeerKeys, StaticIdentity } from '../../src/noise/handshake.ts';
import {
  consumeInitiation,
  consumeResponse,
  createHandshakeState,
  createInitiation,
  createPeerKeys,
  createResponse,
  createStaticIdentity,
  deriveKeypair,
} from '../../src/noise/handshake.ts';
import { Keypair } from '../../src/noise/keypair.ts';
import { decodeInitiation, decodeResponse, INITIATION_LENGTH, MESSAGE_INITIATION, MESSAGE_RESPONSE, RESPONSE_LENGTH } from '../../src/noise/messages.ts';
import { tai64nFromUnixMs } from '../../src/noise/crypto/tai64n.ts';

export interface Side {
  identity: StaticIdentity;
  peer: { keys: PeerKeys; handshake: HandshakeState };
  cookies: CookieGenerator;
}

export function randomKey(backend: CryptoBackend): Uint8Array {
  const k = new Uint8Array(32);
  backend.randomBytes(k);
  return k;
}

export function makePair(backend: CryptoBackend, psk: Uint8Array = new Uint8Array(32)): { a: Side; b: Side } {
  const ia = createStaticIdentity(backend, randomKey(backend));
  const ib = createStaticIdentity(backend, randomKey(backend));
  const ka = createPeerKeys(backend, ia, ib.publicKey, psk);
  const kb = createPeerKeys(backend, ib, ia.publicKey, psk);
  return {
    a: { identity: ia, peer: { keys: ka, handshake: createHandshakeState() }, cookies: new CookieGenerator(backend, ka.mac1Key, ka.cookieKey) },
    b: { identity: ib, peer: { keys: kb, handshake: createHandshakeState() }, cookies: new CookieGenerator(backend, kb.mac1Key, kb.cookieKey) },
  };
}

export function initiation(backend: CryptoBackend, from: Side, unixMs: number, index = 1, now = 0): Uint8Array {
  const msg = new Uint8Array(INITIATION_LENGTH);
  const r = createInitiation(backend, from.identity, from.peer.keys, from.peer.handshake, {
    ephemeralPrivate: randomKey(backend),
    timestamp: tai64nFromUnixMs(new Uint8Array(12), unixMs),
    senderIndex: index,
  }, msg);
  if (!r.ok) throw new Error(r.error);
  from.cookies.addMacs(msg, MESSAGE_INITIATION, now);
  return msg;
}

/** A full handshake a → b; returns both keypairs. Throws the ProtocolError of the first failing step. */
export function handshake(
  backend: CryptoBackend,
  a: Side,
  b: Side,
  opts: { unixMs?: number; now?: number; indices?: [number, number] } = {},
): { ka: Keypair; kb: Keypair } {
  const now = opts.now ?? 0;
  const [ia, ib] = opts.indices ?? [1, 2];
  const init = initiation(backend, a, opts.unixMs ?? Date.now(), ia, now);
  const d = decodeInitiation(init);
  if (!d.ok) throw new Error(d.error);
  const c = consumeInitiation(backend, b.identity, d.value, () => b.peer, now);
  if (!c.ok) throw new Error(c.error);
  const resp = new Uint8Array(RESPONSE_LENGTH);
  const r = createResponse(backend, b.peer.keys, b.peer.handshake, { ephemeralPrivate: randomKey(backend), senderIndex: ib }, resp);
  if (!r.ok) throw new Error(r.error);
  b.cookies.addMacs(resp, MESSAGE_RESPONSE, now);
  const dr = decodeResponse(resp);
  if (!dr.ok) throw new Error(dr.error);
  const cr = consumeResponse(backend, a.identity, dr.value, () => a.peer);
  if (!cr.ok) throw new Error(cr.error);
  const sa = deriveKeypair(a.peer.handshake);
  const sb = deriveKeypair(b.peer.handshake);
  if (!sa.ok || !sb.ok) throw new Error('derive');
  return { ka: new Keypair(sa.value, now), kb: new Keypair(sb.value, now) };
}
