import { describe, expect, it } from 'vitest';
import { createBackend } from '../../src/noise/crypto/index.ts';
import { SlabViews } from '../../src/noise/crypto/slab-views.ts';
import { IndexTable } from '../../src/device/index-table.ts';

const TAG = 16;

describe.each(['sodium', 'noble'] as const)('%s aeadSealAt / aeadOpenAt (the in-place data-path entry points)', (name) => {
  const backend = createBackend(name);
  const key = new Uint8Array(32).map((_, i) => i * 7);
  const nonce = new Uint8Array(12).map((_, i) => 100 + i);

  it('seal in place equals aeadSeal into a fresh buffer, and opens back, at any offset and length', () => {
    for (const [offset, length] of [[0, 0], [16, 1], [16, 15], [48, 1420], [1000, 64], [5, 333]] as const) {
      const plaintext = new Uint8Array(length).map((_, i) => (i * 31 + offset) & 0xff);
      const slab = new Uint8Array(new SharedArrayBuffer(4096));
      slab.fill(0xee);
      slab.set(plaintext, offset);
      expect(backend.aeadSealAt(slab, offset, length, key, nonce)).toBe(length + TAG);
      const expected = new Uint8Array(length + TAG);
      backend.aeadSeal(expected, key, nonce, plaintext, new Uint8Array(0));
      expect(Buffer.from(slab.subarray(offset, offset + length + TAG)).equals(Buffer.from(expected))).toBe(true);
      // Bytes around the range are untouched.
      if (offset > 0) expect(slab[offset - 1]).toBe(0xee);
      expect(slab[offset + length + TAG]).toBe(0xee);
      expect(backend.aeadOpenAt(slab, offset, length + TAG, key, nonce)).toBe(length);
      expect(Buffer.from(slab.subarray(offset, offset + length)).equals(Buffer.from(plaintext))).toBe(true);
    }
  });

  it('a forged or truncated message opens to -1', () => {
    const slab = new Uint8Array(256);
    slab.fill(3, 16, 16 + 100);
    backend.aeadSealAt(slab, 16, 100, key, nonce);
    const good = slab.slice();
    // A failed open may scribble over the range (libsodium zeroes it), so start each try afresh.
    const attempt = (length: number, n: Uint8Array, edit?: (s: Uint8Array) => void): number => {
      slab.set(good);
      edit?.(slab);
      return backend.aeadOpenAt(slab, 16, length, key, n);
    };
    expect(attempt(116, nonce, (s) => (s[16 + 50]! ^= 1))).toBe(-1);
    expect(attempt(116, nonce, (s) => (s[16 + 115]! ^= 0x80))).toBe(-1);
    expect(attempt(115, nonce)).toBe(-1);
    expect(attempt(15, nonce)).toBe(-1);
    const otherNonce = nonce.slice();
    otherNonce[0]! ^= 1;
    expect(attempt(116, otherNonce)).toBe(-1);
    slab.set(good);
    expect(backend.aeadOpenAt(slab, 16, 116, key, nonce)).toBe(100);
  });
});

describe('SlabViews', () => {
  it('returns the same view for the same range of the same buffer, a different one otherwise', () => {
    const views = new SlabViews();
    const slab = new Uint8Array(new SharedArrayBuffer(1024));
    const a = views.view(slab, 16, 100);
    expect(views.view(slab, 16, 100)).toBe(a);
    expect(a.byteOffset).toBe(16);
    expect(a.length).toBe(100);
    expect(views.view(slab, 16, 116)).not.toBe(a);
    expect(views.view(slab, 32, 100)).not.toBe(a);
    // A view of a view's range is keyed by the absolute position in the buffer.
    expect(views.view(slab.subarray(16), 0, 100)).toBe(a);
    expect(views.view(new Uint8Array(1024), 16, 100)).not.toBe(a);
  });

  it('stays bounded: an offset with many lengths starts over rather than growing', () => {
    const views = new SlabViews();
    const slab = new Uint8Array(4096);
    const first = views.view(slab, 0, 1);
    for (let n = 2; n <= 100; n++) expect(views.view(slab, 0, n).length).toBe(n);
    expect(views.view(slab, 0, 1)).not.toBe(first);
  });

  it('refuses a range outside the slab', () => {
    const views = new SlabViews();
    expect(() => views.view(new Uint8Array(100), 90, 11)).toThrow(RangeError);
    expect(() => views.view(new Uint8Array(100), -1, 10)).toThrow(RangeError);
  });
});

describe('IndexTable', () => {
  it('finds an index by its uint32 or int32 form, for indices on both sides of 2^31', () => {
    const table = new IndexTable<string>();
    const seen: number[] = [];
    for (let i = 0; i < 64; i++) seen.push(table.allocate(`e${i}`));
    expect(seen.some((x) => x >= 2 ** 31)).toBe(true);
    seen.forEach((index, i) => {
      expect(index).toBeGreaterThanOrEqual(0);
      expect(index).toBeLessThan(2 ** 32);
      expect(table.get(index)).toBe(`e${i}`);
      expect(table.get(index | 0)).toBe(`e${i}`);
    });
    table.release(seen[0]! | 0);
    expect(table.get(seen[0]!)).toBeUndefined();
    expect(table.size).toBe(63);
  });
});
