/** libsodium backend (sodium-native): X25519 and both AEADs in native code, in place, no allocation. */
import { createRequire } from 'node:module';
import type { CryptoBackend } from './backend.ts';
import { TAG_LENGTH } from './backend.ts';
import { SlabViews } from './slab-views.ts';

const EMPTY = new Uint8Array(0);

interface SodiumNative {
  crypto_scalarmult(q: Uint8Array, n: Uint8Array, p: Uint8Array): void;
  crypto_scalarmult_base(q: Uint8Array, n: Uint8Array): void;
  crypto_aead_chacha20poly1305_ietf_encrypt(c: Uint8Array, m: Uint8Array, ad: Uint8Array | null, nsec: null, npub: Uint8Array, k: Uint8Array): number;
  crypto_aead_chacha20poly1305_ietf_decrypt(m: Uint8Array, nsec: null, c: Uint8Array, ad: Uint8Array | null, npub: Uint8Array, k: Uint8Array): number;
  crypto_aead_xchacha20poly1305_ietf_encrypt(c: Uint8Array, m: Uint8Array, ad: Uint8Array | null, nsec: null, npub: Uint8Array, k: Uint8Array): number;
  crypto_aead_xchacha20poly1305_ietf_decrypt(m: Uint8Array, nsec: null, c: Uint8Array, ad: Uint8Array | null, npub: Uint8Array, k: Uint8Array): number;
  randombytes_buf(buf: Uint8Array): void;
}

/** Loads sodium-native; throws when its prebuilt addon is missing for this platform. */
export function loadSodium(): SodiumNative {
  const require = createRequire(import.meta.url);
  return require('sodium-native') as SodiumNative;
}

export function createSodiumBackend(sodium: SodiumNative = loadSodium()): CryptoBackend {
  const views = new SlabViews();
  return {
    name: 'sodium',
    x25519(out, privateKey, publicKey) {
      try {
        // libsodium returns -1 (sodium-native throws) exactly when the result is all zero.
        sodium.crypto_scalarmult(out.subarray(0, 32), privateKey, publicKey);
        return true;
      } catch {
        out.fill(0, 0, 32);
        return false;
      }
    },
    x25519Base(out, privateKey) {
      sodium.crypto_scalarmult_base(out.subarray(0, 32), privateKey);
    },
    aeadSeal(out, key, nonce, plaintext, ad) {
      return sodium.crypto_aead_chacha20poly1305_ietf_encrypt(out.subarray(0, plaintext.length + TAG_LENGTH), plaintext, ad, null, nonce, key);
    },
    aeadOpen(out, key, nonce, ciphertext, ad) {
      if (ciphertext.length < TAG_LENGTH) return -1;
      try {
        return sodium.crypto_aead_chacha20poly1305_ietf_decrypt(out.subarray(0, ciphertext.length - TAG_LENGTH), null, ciphertext, ad, nonce, key);
      } catch {
        return -1;
      }
    },
    aeadSealAt(slab, offset, length, key, nonce) {
      return sodium.crypto_aead_chacha20poly1305_ietf_encrypt(views.view(slab, offset, length + TAG_LENGTH), views.view(slab, offset, length), EMPTY, null, nonce, key);
    },
    aeadOpenAt(slab, offset, length, key, nonce) {
      if (length < TAG_LENGTH) return -1;
      try {
        return sodium.crypto_aead_chacha20poly1305_ietf_decrypt(views.view(slab, offset, length - TAG_LENGTH), null, views.view(slab, offset, length), EMPTY, nonce, key);
      } catch {
        return -1;
      }
    },
    xaeadSeal(out, key, nonce, plaintext, ad) {
      return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(out.subarray(0, plaintext.length + TAG_LENGTH), plaintext, ad, null, nonce, key);
    },
    xaeadOpen(out, key, nonce, ciphertext, ad) {
      if (ciphertext.length < TAG_LENGTH) return -1;
      try {
        return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(out.subarray(0, ciphertext.length - TAG_LENGTH), null, ciphertext, ad, nonce, key);
      } catch {
        return -1;
      }
    },
    randomBytes(out) {
      sodium.randombytes_buf(out);
    },
  };
}
