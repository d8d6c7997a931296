/** Pure-TypeScript backend: @noble/curves and @noble/ciphers. Portable reference, slow on the data path. */
import { x25519 } from '@noble/curves/ed25519.js';
import { chacha20poly1305, xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { randomFillSync } from 'node:crypto';
import type { CryptoBackend } from './backend.ts';
import { TAG_LENGTH } from './backend.ts';

type AeadFactory = typeof chacha20poly1305;

const EMPTY = new Uint8Array(0);

function seal(cipher: AeadFactory, out: Uint8Array, key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): number {
  // Noble allocates its result; copying keeps the in-place contract of the interface.
  if (out.length < plaintext.length + TAG_LENGTH) return -1;
  const sealed = cipher(key, nonce, ad).encrypt(plaintext);
  out.set(sealed);
  return sealed.length;
}

function open(cipher: AeadFactory, out: Uint8Array, key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array): number {
  if (ciphertext.length < TAG_LENGTH) return -1;
  let opened: Uint8Array;
  try {
    opened = cipher(key, nonce, ad).decrypt(ciphertext);
  } catch {
    return -1;
  }
  if (out.length < opened.length) return -1;
  out.set(opened);
  return opened.length;
}

export function createNobleBackend(): CryptoBackend {
  return {
    name: 'noble',
    x25519(out, privateKey, publicKey) {
      let shared: Uint8Array;
      try {
        shared = x25519.getSharedSecret(privateKey, publicKey);
      } catch {
        // Noble refuses low-order points (all-zero result), as WireGuard must.
        out.fill(0, 0, 32);
        return false;
      }
      out.set(shared);
      return true;
    },
    x25519Base(out, privateKey) {
      out.set(x25519.getPublicKey(privateKey));
    },
    aeadSeal: (out, key, nonce, pt, ad) => seal(chacha20poly1305, out, key, nonce, pt, ad),
    aeadOpen: (out, key, nonce, ct, ad) => open(chacha20poly1305, out, key, nonce, ct, ad),
    aeadSealAt: (slab, offset, length, key, nonce) =>
      seal(chacha20poly1305, slab.subarray(offset, offset + length + TAG_LENGTH), key, nonce, slab.subarray(offset, offset + length), EMPTY),
    aeadOpenAt: (slab, offset, length, key, nonce) =>
      open(chacha20poly1305, slab.subarray(offset, offset + length), key, nonce, slab.subarray(offset, offset + length), EMPTY),
    xaeadSeal: (out, key, nonce, pt, ad) => seal(xchacha20poly1305, out, key, nonce, pt, ad),
    xaeadOpen: (out, key, nonce, ct, ad) => open(xchacha20poly1305, out, key, nonce, ct, ad),
    randomBytes(out) {
      randomFillSync(out);
    },
  };
}
