/**
 * Transport keypairs: one session's keys, sending counter and replay window, plus the
 * current/previous/next rotation (whitepaper §5.4.6, §6.2). Sealing and opening write into
 * caller-owned buffers and allocate nothing.
 */
import type { CryptoBackend } from './crypto/backend.ts';
import {
  KEEPALIVE_TIMEOUT,
  PADDING_MULTIPLE,
  REJECT_AFTER_MESSAGES,
  REJECT_AFTER_TIME,
  REKEY_AFTER_MESSAGES,
  REKEY_AFTER_TIME,
  REKEY_TIMEOUT,
} from './constants.ts';
import type { SessionKeys } from './handshake.ts';
import { MESSAGE_TRANSPORT, TAG_LENGTH, Transport, TRANSPORT_HEADER_LENGTH, writeCounter, writeHeader, writeU32 } from './messages.ts';
import { ReplayWindow } from './replay.ts';

const EMPTY = new Uint8Array(0);

/** Length of a plaintext after WireGuard's zero padding, capped at mtu (never below the plaintext). */
export function paddedLength(length: number, mtu: number = Number.MAX_SAFE_INTEGER): number {
  const padded = Math.ceil(length / PADDING_MULTIPLE) * PADDING_MULTIPLE;
  return Math.max(length, Math.min(padded, mtu));
}

export class Keypair {
  readonly sendKey: Uint8Array;
  readonly receiveKey: Uint8Array;
  readonly localIndex: number;
  readonly remoteIndex: number;
  readonly isInitiator: boolean;
  /** Caller's monotonic clock (ms) at derivation. */
  readonly createdAt: number;
  /** The next counter to send. */
  sendCounter = 0;
  readonly replay = new ReplayWindow();
  private readonly sendNonce = new Uint8Array(12);
  private readonly receiveNonce = new Uint8Array(12);

  constructor(keys: SessionKeys, now: number) {
    this.sendKey = keys.sendKey;
    this.receiveKey = keys.receiveKey;
    this.localIndex = keys.localIndex;
    this.remoteIndex = keys.remoteIndex;
    this.isInitiator = keys.isInitiator;
    this.createdAt = now;
  }

  /** True when this keypair may no longer send or receive. */
  isExpired(now: number): boolean {
    return now - this.createdAt >= REJECT_AFTER_TIME;
  }

  /** Takes the next sending counter, or -1 when this keypair may no longer send. */
  nextSendCounter(now: number): number {
    const counter = this.sendCounter;
    if (counter >= REJECT_AFTER_MESSAGES || this.isExpired(now)) return -1;
    this.sendCounter = counter + 1;
    return counter;
  }

  /**
   * Encrypts plaintext (already padded by the caller) into a transport message in out:
   * header, then ciphertext and tag. plaintext may sit at out[16..] (in place). Returns the
   * message length, or -1 when the keypair is exhausted or expired.
   */
  seal(backend: CryptoBackend, plaintext: Uint8Array, out: Uint8Array, now: number): number {
    const counter = this.nextSendCounter(now);
    if (counter < 0) return -1;
    writeCounter(this.sendNonce, 4, counter);
    // Header after sealing: when plaintext sits at out[16..] the header bytes are not part of it.
    const written = backend.aeadSeal(out.subarray(TRANSPORT_HEADER_LENGTH), this.sendKey, this.sendNonce, plaintext, EMPTY);
    writeHeader(out, MESSAGE_TRANSPORT);
    writeU32(out, Transport.receiver, this.remoteIndex);
    writeCounter(out, Transport.counter, counter);
    return TRANSPORT_HEADER_LENGTH + written;
  }

  /**
   * Authenticates and decrypts the encrypted part of a transport message with the given
   * counter into out, then records the counter. Returns the plaintext length, -1 when
   * authentication fails, -2 for a replayed counter, -3 for an expired keypair.
   */
  open(backend: CryptoBackend, counter: number, encrypted: Uint8Array, out: Uint8Array, now: number): number {
    if (this.isExpired(now)) return -3;
    if (encrypted.length < TAG_LENGTH) return -1;
    writeCounter(this.receiveNonce, 4, counter);
    const length = backend.aeadOpen(out, this.receiveKey, this.receiveNonce, encrypted, EMPTY);
    if (length < 0) return -1;
    if (!this.replay.accept(counter, REJECT_AFTER_MESSAGES)) return -2;
    return length;
  }

  /** Sending with this keypair calls for a new handshake (whitepaper §6.2). */
  wantsRekeyOnSend(now: number): boolean {
    return this.sendCounter > REKEY_AFTER_MESSAGES || (this.isInitiator && now - this.createdAt >= REKEY_AFTER_TIME);
  }

  /** Receiving on an old initiator keypair calls for a handshake before it expires. */
  wantsRekeyOnReceive(now: number): boolean {
    return this.isInitiator && now - this.createdAt >= REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT;
  }

  /** Best-effort wipe of the session keys (JavaScript may have copied them; libsodium did not). */
  zero(): void {
    this.sendKey.fill(0);
    this.receiveKey.fill(0);
  }
}

/**
 * A peer's keypairs. The initiator sends with a new keypair at once; the responder keeps it
 * as `next` until the initiator's first data packet proves the initiator has it too.
 * Retired keypairs are handed to onRetire so their indices can be released and keys wiped.
 */
export class Keypairs {
  current: Keypair | undefined;
  previous: Keypair | undefined;
  next: Keypair | undefined;

  private readonly onRetire: (keypair: Keypair) => void;

  constructor(onRetire: (keypair: Keypair) => void = (kp) => kp.zero()) {
    this.onRetire = onRetire;
  }

  install(keypair: Keypair): void {
    if (keypair.isInitiator) {
      if (this.next) {
        this.retire(this.previous);
        this.previous = this.next;
        this.next = undefined;
        this.retire(this.current);
      } else {
        this.retire(this.previous);
        this.previous = this.current;
      }
      this.current = keypair;
    } else {
      this.retire(this.next);
      this.next = keypair;
      this.retire(this.previous);
      this.previous = undefined;
    }
  }

  /** Call after a packet authenticated under keypair: promotes `next` to current. Returns true if it did. */
  receivedWith(keypair: Keypair): boolean {
    if (keypair !== this.next) return false;
    this.retire(this.previous);
    this.previous = this.current;
    this.current = keypair;
    this.next = undefined;
    return true;
  }

  /** The keypair whose local index is receiverIndex, if this peer has it. */
  byIndex(receiverIndex: number): Keypair | undefined {
    if (this.current?.localIndex === receiverIndex) return this.current;
    if (this.next?.localIndex === receiverIndex) return this.next;
    if (this.previous?.localIndex === receiverIndex) return this.previous;
    return undefined;
  }

  clear(): void {
    this.retire(this.previous);
    this.retire(this.current);
    this.retire(this.next);
    this.previous = this.current = this.next = undefined;
  }

  private retire(keypair: Keypair | undefined): void {
    if (keypair) this.onRetire(keypair);
  }
}
