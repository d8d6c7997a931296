import { describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/noise/crypto/index.ts';

describe('crypto backend selection', () => {
  it('defaults to sodium when it loads, without warning', () => {
    const warnings: string[] = [];
    expect(selectBackend({}, (l) => warnings.push(l)).name).toBe('sodium');
    expect(warnings).toEqual([]);
  });
  it('honours WGTS_CRYPTO', () => {
    expect(selectBackend({ WGTS_CRYPTO: 'noble' }).name).toBe('noble');
    expect(selectBackend({ WGTS_CRYPTO: 'sodium' }).name).toBe('sodium');
  });
  it('refuses an unknown name with a clear error', () => {
    expect(() => selectBackend({ WGTS_CRYPTO: 'openssl' })).toThrow(/WGTS_CRYPTO=openssl: expected "noble" or "sodium"/);
  });
  it('both backends agree on X25519 and refuse the all-zero result', () => {
    const s = selectBackend({ WGTS_CRYPTO: 'sodium' });
    const n = selectBackend({ WGTS_CRYPTO: 'noble' });
    const priv = new Uint8Array(32).fill(3);
    const ps = new Uint8Array(32);
    const pn = new Uint8Array(32);
    s.x25519Base(ps, priv);
    n.x25519Base(pn, priv);
    expect(Buffer.from(ps).equals(Buffer.from(pn))).toBe(true);
    const out = new Uint8Array(32).fill(1);
    expect(s.x25519(out, priv, new Uint8Array(32))).toBe(false);
    expect(out.every((x) => x === 0)).toBe(true);
    expect(n.x25519(out.fill(1), priv, new Uint8Array(32))).toBe(false);
    expect(out.every((x) => x === 0)).toBe(true);
  });
});
