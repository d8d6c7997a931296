/**
 * The primitives WireGuard needs, behind one interface so the protocol core never knows
 * which library computes them. Every output goes into a caller-owned buffer: the hot path
 * (aeadSealAt/aeadOpenAt) allocates nothing per call on the sodium backend.
 */
export interface CryptoBackend {
  readonly name: BackendName;

  /** out = X25519(privateKey, publicKey). Returns false (and zeroes out) when the result is all zero. */
  x25519(out: Uint8Array, privateKey: Uint8Array, publicKey: Uint8Array): boolean;
  /** out = X25519(privateKey, 9). */
  x25519Base(out: Uint8Array, privateKey: Uint8Array): void;

  /**
   * ChaCha20-Poly1305 (RFC 8439) with a 12-byte nonce. Writes plaintext.length + 16 bytes
   * to out, which may alias plaintext exactly (in place). Returns the bytes written.
   */
  aeadSeal(out: Uint8Array, key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): number;
  /** Inverse of aeadSeal; returns the plaintext length, or -1 when authentication fails (out is then unspecified). */
  aeadOpen(out: Uint8Array, key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array): number;

  /**
   * aeadSeal in place on the data path: seals the length bytes at slab[offset] with no
   * associated data and writes length + 16 bytes there. Allocates nothing per call in steady
   * state (the backends reuse their views of the slab). Returns the bytes written.
   */
  aeadSealAt(slab: Uint8Array, offset: number, length: number, key: Uint8Array, nonce: Uint8Array): number;
  /** aeadOpen in place: opens the length bytes (ciphertext and tag) at slab[offset]; the plaintext length, or -1. */
  aeadOpenAt(slab: Uint8Array, offset: number, length: number, key: Uint8Array, nonce: Uint8Array): number;

  /** XChaCha20-Poly1305 with a 24-byte nonce (cookie replies). Same contract as aeadSeal. */
  xaeadSeal(out: Uint8Array, key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): number;
  xaeadOpen(out: Uint8Array, key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array): number;

  /** Fills out with cryptographically secure random bytes. */
  randomBytes(out: Uint8Array): void;
}

export type BackendName = 'noble' | 'sodium';

export const KEY_LENGTH = 32;
export const TAG_LENGTH = 16;
export const AEAD_NONCE_LENGTH = 12;
export const XAEAD_NONCE_LENGTH = 24;
