/**
 * TAI64N timestamps as WireGuard uses them: 8 bytes big-endian (2^62 + seconds) then 4 bytes
 * big-endian nanoseconds. Like wireguard-go, the nanoseconds are rounded down to a coarse
 * granularity (2^24 ns ≈ 16.8 ms) so the timestamp does not leak a precise clock.
 */
export const TAI64N_LENGTH = 12;
/** 2^62 + 10: TAI is ahead of UTC, and wireguard-go (whose timestamps peers compare) adds the 10 s. */
const TAI64_BASE = 0x4000_0000_0000_000an;
export const TIMESTAMP_WHITENER_MASK = 0x00ff_ffff;

export function encodeTai64n(out: Uint8Array, unixSeconds: bigint, nanoseconds: number): Uint8Array {
  const view = new DataView(out.buffer, out.byteOffset, TAI64N_LENGTH);
  view.setBigUint64(0, TAI64_BASE + unixSeconds);
  view.setUint32(8, nanoseconds >>> 0);
  return out;
}

/** A whitened TAI64N for a wall-clock time given in milliseconds (and optional extra nanoseconds). */
export function tai64nFromUnixMs(out: Uint8Array, unixMs: number, extraNs = 0): Uint8Array {
  const seconds = Math.floor(unixMs / 1000);
  const ns = (unixMs - seconds * 1000) * 1_000_000 + extraNs;
  return encodeTai64n(out, BigInt(seconds), (ns & ~TIMESTAMP_WHITENER_MASK) >>> 0);
}

/** Lexicographic comparison of two 12-byte timestamps: >0 when a is later than b. */
export function compareTai64n(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < TAI64N_LENGTH; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return 0;
}
