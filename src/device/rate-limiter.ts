/**
 * Per-source token buckets for handshake initiations under load (kernel: 20/s, burst 5, IPv6
 * sources grouped per /64). Old buckets are swept so a spoofing flood cannot grow the table
 * without bound.
 */
export const PACKETS_PER_SECOND = 20;
export const PACKETS_BURSTABLE = 5;
const MAX_ENTRIES = 65_536;
const SWEEP_INTERVAL = 1_000;

interface Bucket {
  tokens: number;
  at: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private lastSweep = 0;

  /** True when a packet from this source (address bytes, 4 or 16) may be processed at `now` (ms). */
  allow(address: Uint8Array, now: number): boolean {
    if (now - this.lastSweep > SWEEP_INTERVAL) this.sweep(now);
    const key = address.length === 16 ? Buffer.from(address.subarray(0, 8)).toString('latin1') : Buffer.from(address).toString('latin1');
    let bucket = this.buckets.get(key);
    if (!bucket) {
      if (this.buckets.size >= MAX_ENTRIES) return false;
      bucket = { tokens: PACKETS_BURSTABLE, at: now };
      this.buckets.set(key, bucket);
    }
    bucket.tokens = Math.min(PACKETS_BURSTABLE, bucket.tokens + ((now - bucket.at) * PACKETS_PER_SECOND) / 1000);
    bucket.at = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  get size(): number {
    return this.buckets.size;
  }

  private sweep(now: number): void {
    this.lastSweep = now;
    for (const [key, bucket] of this.buckets) {
      // A bucket idle long enough to be full again holds no information.
      if (now - bucket.at > (PACKETS_BURSTABLE / PACKETS_PER_SECOND) * 1000) this.buckets.delete(key);
    }
  }
}
