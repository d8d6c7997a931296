import { blake2s as nobleBlake2s } from '@noble/hashes/blake2.js';
import { hmac as nobleHmac } from '@noble/hashes/hmac.js';
import { describe, expect, it } from 'vitest';
import { blake2s, hash, hmac, kdf, mac } from '../../src/noise/crypto/blake2s.ts';

function bytes(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('BLAKE2s against @noble/hashes', () => {
  it('agrees on every length around block boundaries, keyed and unkeyed, every output size', () => {
    for (let n = 0; n <= 200; n++) {
      const input = bytes(n + 1, n);
      const key = bytes(n + 1000, 1 + (n % 32));
      const size = 1 + (n % 32);
      expect(hex(blake2s(new Uint8Array(size), size, undefined, input))).toBe(hex(nobleBlake2s(input, { dkLen: size })));
      expect(hex(blake2s(new Uint8Array(size), size, key, input))).toBe(hex(nobleBlake2s(input, { dkLen: size, key })));
    }
  });

  it('hash, mac and hmac over several parts equal the one-shot forms', () => {
    for (let n = 0; n < 50; n++) {
      const a = bytes(n + 7, n * 3);
      const b = bytes(n + 9, 65 - n);
      const key = bytes(n + 11, 32);
      const joined = new Uint8Array([...a, ...b]);
      expect(hex(hash(new Uint8Array(32), a, b))).toBe(hex(nobleBlake2s(joined)));
      expect(hex(mac(new Uint8Array(16), key, a, b))).toBe(hex(nobleBlake2s(joined, { dkLen: 16, key })));
      expect(hex(hmac(new Uint8Array(32), key, a, b))).toBe(hex(nobleHmac(nobleBlake2s, key, joined)));
      const longKey = bytes(n + 13, 65 + n);
      expect(hex(hmac(new Uint8Array(32), longKey, a))).toBe(hex(nobleHmac(nobleBlake2s, longKey, a)));
    }
  });

  it('allows outputs to alias inputs, as the handshake does (h = HASH(h || x), ck = KDF(ck, …))', () => {
    const h = bytes(3, 32);
    const x = bytes(4, 48);
    const expected = nobleBlake2s(new Uint8Array([...h, ...x]));
    expect(hex(hash(h, h, x))).toBe(hex(expected));
    const ck = bytes(5, 32);
    const t0 = nobleHmac(nobleBlake2s, ck, x);
    const t1 = nobleHmac(nobleBlake2s, t0, Uint8Array.of(1));
    const t2 = nobleHmac(nobleBlake2s, t0, new Uint8Array([...t1, 2]));
    const out2 = new Uint8Array(32);
    kdf(ck, x, ck, out2);
    expect(hex(ck)).toBe(hex(t1));
    expect(hex(out2)).toBe(hex(t2));
  });
});
