/**
 * BLAKE2s (RFC 7693) and the constructions WireGuard builds on it: HASH, MAC (keyed, 16 bytes),
 * HMAC-BLAKE2s and the KDF1..3 chain. libsodium has no BLAKE2s; @noble/hashes' allocates hash
 * objects, key pads and digests on every call, which made HMAC half of a handshake's cost. This
 * one reuses one state and an unrolled compression function (blake2s-compress.ts, generated):
 * ~10× faster HMAC. It is checked against the RFC and BLAKE2 KAT vectors by the conformance suite
 * and against @noble/hashes on random inputs by test/unit/blake2s.test.ts.
 *
 * Module-level state makes these functions non-reentrant, which JavaScript's single thread
 * (and one module instance per worker) guarantees.
 */
import { compress } from './blake2s-compress.ts';

export const HASH_LENGTH = 32;
export const MAC_LENGTH = 16;
const BLOCK = 64;
const IV = Uint32Array.of(0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19);

class Blake2s {
  private readonly h = new Uint32Array(8);
  private readonly block = new Uint8Array(BLOCK);
  private filled = 0;
  /** Bytes compressed so far; inputs here stay far below 2^32 bytes, so the high word is zero. */
  private total = 0;
  private outLength = HASH_LENGTH;

  init(outLength: number, key?: Uint8Array): this {
    const keyLength = key?.length ?? 0;
    if (keyLength > 32 || outLength < 1 || outLength > 32) throw new RangeError('BLAKE2s takes a key of up to 32 bytes and gives 1 to 32');
    this.h.set(IV);
    this.h[0] = (this.h[0]! ^ (0x01010000 | (keyLength << 8) | outLength)) >>> 0;
    this.outLength = outLength;
    this.total = 0;
    this.filled = 0;
    this.block.fill(0);
    if (key && keyLength > 0) {
      // The key is absorbed as a whole zero-padded first block.
      this.block.set(key);
      this.filled = BLOCK;
    }
    return this;
  }

  update(data: Uint8Array): this {
    let at = 0;
    while (at < data.length) {
      // Compress a full block only once more data follows: the last block is compressed by final().
      if (this.filled === BLOCK) {
        this.total += BLOCK;
        compress(this.h, this.block, 0, this.total, false);
        this.filled = 0;
      }
      const take = Math.min(BLOCK - this.filled, data.length - at);
      for (let i = 0; i < take; i++) this.block[this.filled + i] = data[at + i]!;
      this.filled += take;
      at += take;
    }
    return this;
  }

  final(out: Uint8Array): Uint8Array {
    this.total += this.filled;
    this.block.fill(0, this.filled);
    compress(this.h, this.block, 0, this.total, true);
    for (let i = 0; i < this.outLength; i++) out[i] = (this.h[i >> 2]! >>> (8 * (i & 3))) & 0xff;
    this.block.fill(0);
    this.h.fill(0);
    return out;
  }
}

const state = new Blake2s();

/** out[0..outLength) = BLAKE2s(key, input): the general form (the conformance suite uses it). */
export function blake2s(out: Uint8Array, outLength: number, key: Uint8Array | undefined, input: Uint8Array): Uint8Array {
  return state.init(outLength, key).update(input).final(out);
}

/** out[0..32) = BLAKE2s-256(parts[0] || parts[1] || …). out may alias a part. */
export function hash(out: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  state.init(HASH_LENGTH);
  for (const part of parts) state.update(part);
  return state.final(out);
}

/** out[0..16) = keyed BLAKE2s-128(key, parts…): WireGuard's MAC. */
export function mac(out: Uint8Array, key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  state.init(MAC_LENGTH, key);
  for (const part of parts) state.update(part);
  return state.final(out);
}

const pad = new Uint8Array(BLOCK);
const inner = new Uint8Array(HASH_LENGTH);

/** out[0..32) = HMAC-BLAKE2s(key, parts…) (RFC 2104 over BLAKE2s-256, block 64). out may alias key or a part. */
export function hmac(out: Uint8Array, key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  pad.fill(0);
  if (key.length > BLOCK) hash(pad, key);
  else pad.set(key);
  for (let i = 0; i < BLOCK; i++) pad[i]! ^= 0x36;
  state.init(HASH_LENGTH).update(pad);
  for (const part of parts) state.update(part);
  state.final(inner);
  for (let i = 0; i < BLOCK; i++) pad[i]! ^= 0x36 ^ 0x5c;
  state.init(HASH_LENGTH).update(pad).update(inner).final(out);
  pad.fill(0);
  inner.fill(0);
  return out;
}

const ONE = Uint8Array.of(1);
const t0 = new Uint8Array(HASH_LENGTH);
const counter = new Uint8Array(1);

/**
 * KDFn(key, input): T0 = HMAC(key, input); T1 = HMAC(T0, 0x1); Ti = HMAC(T0, Ti-1 || i).
 * Writes T1..Tn into the given outputs (1 to 3 of them); an output may alias key. T0 is wiped.
 */
export function kdf(key: Uint8Array, input: Uint8Array, ...outputs: Uint8Array[]): void {
  if (outputs.length < 1 || outputs.length > 3) throw new RangeError('kdf yields 1 to 3 outputs');
  hmac(t0, key, input);
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
