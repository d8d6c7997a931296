/**
 * BLAKE2s and the constructions WireGuard builds on it: HASH, MAC (keyed, 16 bytes),
 * HMAC-BLAKE2s and the KDF1..3 chain. libsodium has no BLAKE2s, so both backends share
 * this @noble/hashes implementation. Only the handshake and cookie paths use it.
 */
import { blake2s } from '@noble/hashes/blake2.js';
import { hmac as nobleHmac } from '@noble/hashes/hmac.js';

export const HASH_LENGTH = 32;
export const MAC_LENGTH = 16;

/** out[0..32) = BLAKE2s-256(parts[0] || parts[1] || …). */
export function hash(out: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  const h = blake2s.create({ dkLen: HASH_LENGTH });
  for (const part of parts) h.update(part);
  out.set(h.digest());
  return out;
}

/** out[0..16) = keyed BLAKE2s-128(key, parts…): WireGuard's MAC. */
export function mac(out: Uint8Array, key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  const h = blake2s.create({ dkLen: MAC_LENGTH, key });
  for (const part of parts) h.update(part);
  out.set(h.digest());
  return out;
}

/** out[0..32) = HMAC-BLAKE2s(key, parts…). */
export function hmac(out: Uint8Array, key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  const h = nobleHmac.create(blake2s, key);
  for (const part of parts) h.update(part);
  out.set(h.digest());
  return out;
}

const ONE = Uint8Array.of(1);

/**
 * KDFn(key, input): T0 = HMAC(key, input); T1 = HMAC(T0, 0x1); Ti = HMAC(T0, Ti-1 || i).
 * Writes T1..Tn into the given outputs (1 to 3 of them). T0 is wiped.
 */
export function kdf(key: Uint8Array, input: Uint8Array, ...outputs: Uint8Array[]): void {
  if (outputs.length < 1 || outputs.length > 3) throw new RangeError('kdf yields 1 to 3 outputs');
  const t0 = hmac(new Uint8Array(HASH_LENGTH), key, input);
  const counter = new Uint8Array(1);
  let previous: Uint8Array | undefined;
  for (let i = 0; i < outputs.length; i++) {
    const out = outputs[i]!;
    if (previous === undefined) {
      hmac(out, t0, ONE);
    } else {
      counter[0] = i + 1;
      hmac(out, t0, previous, counter);
    }
    previous = out;
  }
  t0.fill(0);
}
