/** A configured peer: its keys, handshake, sessions, timers, endpoint, staged packets and counters. */
import type { CryptoBackend } from '../noise/crypto/backend.ts';
import { CookieGenerator } from '../noise/cookie.ts';
import type { HandshakeState, PeerKeys, StaticIdentity } from '../noise/handshake.ts';
import { createHandshakeState, createPeerKeys } from '../noise/handshake.ts';
import { Keypairs } from '../noise/keypair.ts';
import type { Keypair } from '../noise/keypair.ts';
import type { TimerState } from '../noise/timers.ts';
import { createTimerState } from '../noise/timers.ts';
import { ENDPOINT_SIZE } from './endpoint.ts';

const ZERO_KEY = new Uint8Array(32);

export class Peer {
  readonly publicKey: Uint8Array;
  readonly publicKeyHex: string;
  presharedKey: Uint8Array = new Uint8Array(32);
  /** Keys derived from our identity and theirs; undefined while the device has no private key. */
  keys: PeerKeys | undefined;
  cookies: CookieGenerator | undefined;
  readonly handshake: HandshakeState = createHandshakeState();
  readonly keypairs: Keypairs;
  readonly timers: TimerState = createTimerState();
  readonly endpoint = new Uint8Array(ENDPOINT_SIZE);
  hasEndpoint = false;
  /** Seconds, as configured. */
  persistentKeepaliveInterval = 0;
  /** Packets waiting for a session, oldest first. */
  staged: Uint8Array[] = [];
  rxBytes = 0;
  txBytes = 0;
  lastHandshakeEpochMs = 0;
  /** Set when we initiated the handshake that REJECT_AFTER_TIME is about to force; reset by a new session. */
  sentLastMinuteHandshake = false;
  /** The real timer behind `timers`, armed for timers.armedAt. */
  timer: NodeJS.Timeout | undefined;
  removed = false;

  constructor(publicKey: Uint8Array, onRetire: (keypair: Keypair) => void) {
    this.publicKey = Uint8Array.from(publicKey);
    this.publicKeyHex = Buffer.from(publicKey).toString('hex');
    this.keypairs = new Keypairs(onRetire);
  }

  /** Recomputes what depends on our identity and the preshared key. */
  rekey(backend: CryptoBackend, identity: StaticIdentity | undefined): void {
    this.wipeDerivedKeys();
    if (!identity) {
      this.keys = undefined;
      this.cookies = undefined;
      return;
    }
    this.keys = createPeerKeys(backend, identity, this.publicKey, this.presharedKey);
    this.cookies = new CookieGenerator(backend, this.keys.mac1Key, this.keys.cookieKey);
  }

  /** Best-effort wipe of the peer's secrets (preshared key and what our private key derived), for a removed peer. */
  wipe(): void {
    this.wipeDerivedKeys();
    this.keys = undefined;
    this.cookies = undefined;
    this.presharedKey.fill(0);
  }

  /** Zeroes the secret parts of keys (the DH of both statics, the preshared key copy) before they are replaced. */
  private wipeDerivedKeys(): void {
    this.keys?.staticStatic.fill(0);
    this.keys?.presharedKey.fill(0);
  }

  hasPresharedKey(): boolean {
    return !this.presharedKey.every((b, i) => b === ZERO_KEY[i]);
  }
}
