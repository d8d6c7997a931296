/**
 * Anti-replay sliding window (RFC 6479), the same acceptance rule as the kernel and wireguard-go:
 * a counter is accepted once, if it is below the limit and not more than REPLAY_WINDOW_SIZE
 * behind the greatest accepted counter. The ring is 256 32-bit words (8192 bits); whole words
 * ahead of the window are cleared as it moves, so 8128 bits are always valid history.
 * Check only after the packet authenticated, or a forger could move the window.
 */
import { REJECT_AFTER_MESSAGES, REPLAY_WINDOW_SIZE } from './constants.ts';

const WORD_BITS_LOG = 5;
const WORD_BITS = 1 << WORD_BITS_LOG;
const RING_WORDS = 256;
const RING_MASK = RING_WORDS - 1;
const BIT_MASK = WORD_BITS - 1;

export class ReplayWindow {
  private readonly ring = new Uint32Array(RING_WORDS);
  private last = 0;

  reset(): void {
    this.last = 0;
    this.ring.fill(0);
  }

  /** Accepts counter (and records it) or rejects it as replayed, too old, or over limit. */
  accept(counter: number, limit: number = REJECT_AFTER_MESSAGES): boolean {
    if (!(counter >= 0 && counter < limit)) return false;
    // Math.floor keeps word indices exact beyond 2^32 where >>> would wrap.
    const word = Math.floor(counter / WORD_BITS);
    if (counter > this.last) {
      const current = Math.floor(this.last / WORD_BITS);
      const advance = Math.min(word - current, RING_WORDS);
      for (let i = 1; i <= advance; i++) this.ring[(current + i) & RING_MASK] = 0;
      this.last = counter;
    } else if (this.last - counter > REPLAY_WINDOW_SIZE) {
      return false;
    }
    const index = word & RING_MASK;
    const bit = 1 << (counter & BIT_MASK);
    const old = this.ring[index]!;
    if (old & bit) return false;
    this.ring[index] = old | bit;
    return true;
  }
}
