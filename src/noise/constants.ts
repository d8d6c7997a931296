/** Protocol constants, in one place (whitepaper §6 and wireguard-go's constants.go). Times are milliseconds. */

export const CONSTRUCTION = 'Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s';
export const IDENTIFIER = 'WireGuard v1 zx2c4 Jason@zx2c4.com';
export const LABEL_MAC1 = 'mac1----';
export const LABEL_COOKIE = 'cookie--';

export const REKEY_AFTER_MESSAGES = 2 ** 60;
/** 2^64 − 2^13 − 1, exact as a bigint. */
export const REJECT_AFTER_MESSAGES_EXACT = (1n << 64n) - (1n << 13n) - 1n;
/**
 * Counters are JavaScript numbers, exact below 2^53; a keypair is retired at that point, which
 * at 10 M packets/s takes 28 years — well before REJECT_AFTER_MESSAGES, never observable.
 */
export const REJECT_AFTER_MESSAGES = Number.MAX_SAFE_INTEGER;

export const REKEY_AFTER_TIME = 120_000;
export const REJECT_AFTER_TIME = 180_000;
export const REKEY_ATTEMPT_TIME = 90_000;
export const REKEY_TIMEOUT = 5_000;
/** Up to this much random jitter is added to each handshake retransmission. */
export const REKEY_TIMEOUT_JITTER_MAX = 334;
export const KEEPALIVE_TIMEOUT = 10_000;
export const COOKIE_REFRESH_TIME = 120_000;
/** Initiations from one peer closer together than this are dropped (wireguard-go: HandshakeInitationRate). */
export const HANDSHAKE_INITIATION_RATE = 20;
/** REKEY_ATTEMPT_TIME / REKEY_TIMEOUT: retries before giving up. */
export const MAX_TIMER_HANDSHAKES = REKEY_ATTEMPT_TIME / REKEY_TIMEOUT;
export const ZERO_KEYS_AFTER = 3 * REJECT_AFTER_TIME;

/** Anti-replay window, as the kernel and wireguard-go: (128 − 1) × 64 bits. */
export const REPLAY_WINDOW_SIZE = 8128;

/** Packets held per peer while its handshake completes. */
export const MAX_STAGED_PACKETS = 128;
/** Under-load threshold: handshake queue length, out of its capacity (1/8, as wireguard-go). */
export const HANDSHAKE_QUEUE_CAPACITY = 1024;
export const UNDER_LOAD_QUEUE_LENGTH = HANDSHAKE_QUEUE_CAPACITY / 8;
export const UNDER_LOAD_AFTER_TIME = 1_000;

export const DEFAULT_PORT = 51820;
/** Transport payloads are zero-padded to a multiple of this. */
export const PADDING_MULTIPLE = 16;
