import { describe, expect, it } from 'vitest';
import { AllowedIps } from '../../src/device/allowed-ips.ts';
import type { Cidr } from '../../src/device/config.ts';
import { formatCidr, parseCidr, parseIp } from '../../src/util/ip.ts';

interface Peer {
  readonly name: string;
}
const peer = (name: string): Peer => ({ name });

function ip4(a: number, b: number, c: number, d: number): Uint8Array {
  return Uint8Array.of(a, b, c, d);
}

/** An IPv6 address from four big-endian 32-bit words, as the kernel selftest writes them. */
function ip6(a: number, b: number, c: number, d: number): Uint8Array {
  const out = new Uint8Array(16);
  const view = new DataView(out.buffer);
  [a, b, c, d].forEach((w, i) => view.setUint32(i * 4, w >>> 0));
  return out;
}

function cidrOf(address: Uint8Array, prefix: number): Cidr {
  return { family: address.length === 4 ? 4 : 6, address, prefix };
}

/**
 * The kernel's fixed self-test (drivers/net/wireguard/selftest/allowedips.c,
 * wg_allowedips_selftest), case by case.
 */
describe('AllowedIps — kernel selftest cases', () => {
  const [a, b, c, d, e, f, g, h] = 'abcdefgh'.split('').map(peer) as [Peer, Peer, Peer, Peer, Peer, Peer, Peer, Peer];
  const insert4 = (t: AllowedIps<Peer>, p: Peer, w: number, x: number, y: number, z: number, cidr: number) => t.insert(cidrOf(ip4(w, x, y, z), cidr), p);
  const insert6 = (t: AllowedIps<Peer>, p: Peer, w: number, x: number, y: number, z: number, cidr: number) => t.insert(cidrOf(ip6(w, x, y, z), cidr), p);

  function build(): AllowedIps<Peer> {
    const t = new AllowedIps<Peer>();
    insert4(t, a, 192, 168, 4, 0, 24);
    insert4(t, b, 192, 168, 4, 4, 32);
    insert4(t, c, 192, 168, 0, 0, 16);
    insert4(t, d, 192, 95, 5, 64, 27);
    insert4(t, c, 192, 95, 5, 65, 27); // replaces the previous entry; host bits must be masked
    insert6(t, d, 0x26075300, 0x60006b00, 0, 0xc05f0543, 128);
    insert6(t, c, 0x26075300, 0x60006b00, 0, 0, 64);
    insert4(t, e, 0, 0, 0, 0, 0);
    insert6(t, e, 0, 0, 0, 0, 0);
    insert6(t, f, 0, 0, 0, 0, 0); // replaces the previous entry
    insert6(t, g, 0x24046800, 0, 0, 0, 32);
    insert6(t, h, 0x24046800, 0x40040800, 0xdeadbeef, 0xdeadbeef, 64); // host bits must be masked
    insert6(t, a, 0x24046800, 0x40040800, 0xdeadbeef, 0xdeadbeef, 128);
    insert6(t, c, 0x24446800, 0x40e40800, 0xdeaebeef, 0xdefbeef, 128);
    insert6(t, b, 0x24446800, 0xf0e40800, 0xeeaebeef, 0, 98);
    insert4(t, g, 64, 15, 112, 0, 20);
    insert4(t, h, 64, 15, 123, 211, 25); // host bits must be masked
    insert4(t, a, 10, 0, 0, 0, 25);
    insert4(t, b, 10, 0, 0, 128, 25);
    insert4(t, a, 10, 1, 0, 0, 30);
    insert4(t, b, 10, 1, 0, 4, 30);
    insert4(t, c, 10, 1, 0, 8, 29);
    insert4(t, d, 10, 1, 0, 16, 29);
    t.verify();
    return t;
  }

  it('finds the longest match for each of the 28 lookups', () => {
    const t = build();
    const cases: [Peer, Uint8Array][] = [
      [a, ip4(192, 168, 4, 20)],
      [a, ip4(192, 168, 4, 0)],
      [b, ip4(192, 168, 4, 4)],
      [c, ip4(192, 168, 200, 182)],
      [c, ip4(192, 95, 5, 68)],
      [e, ip4(192, 95, 5, 96)],
      [d, ip6(0x26075300, 0x60006b00, 0, 0xc05f0543)],
      [c, ip6(0x26075300, 0x60006b00, 0, 0xc02e01ee)],
      [f, ip6(0x26075300, 0x60006b01, 0, 0)],
      [g, ip6(0x24046800, 0x40040806, 0, 0x1006)],
      [g, ip6(0x24046800, 0x40040806, 0x1234, 0x5678)],
      [f, ip6(0x240467ff, 0x40040806, 0x1234, 0x5678)],
      [f, ip6(0x24046801, 0x40040806, 0x1234, 0x5678)],
      [h, ip6(0x24046800, 0x40040800, 0x1234, 0x5678)],
      [h, ip6(0x24046800, 0x40040800, 0, 0)],
      [h, ip6(0x24046800, 0x40040800, 0x10101010, 0x10101010)],
      [a, ip6(0x24046800, 0x40040800, 0xdeadbeef, 0xdeadbeef)],
      [g, ip4(64, 15, 116, 26)],
      [g, ip4(64, 15, 127, 3)],
      [g, ip4(64, 15, 123, 1)],
      [h, ip4(64, 15, 123, 128)],
      [h, ip4(64, 15, 123, 129)],
      [a, ip4(10, 0, 0, 52)],
      [b, ip4(10, 0, 0, 220)],
      [a, ip4(10, 1, 0, 2)],
      [b, ip4(10, 1, 0, 6)],
      [c, ip4(10, 1, 0, 10)],
      [d, ip4(10, 1, 0, 20)],
    ];
    const got = cases.map(([, address]) => t.lookup(address)?.name);
    expect(got).toEqual(cases.map(([want]) => want.name));
  });

  it('removes every /32 of a peer spread across the space', () => {
    const t = build();
    for (const first of [1, 64, 128, 192, 255]) insert4(t, a, first, 0, 0, 0, 32);
    t.removeValue(a);
    t.verify();
    for (const first of [1, 64, 128, 192, 255]) expect(t.lookup(ip4(first, 0, 0, 0))).not.toBe(a);
    expect(t.entriesOf(a)).toEqual([]);
  });

  it('removes a peer holding a prefix and a longer one inside it', () => {
    const t = new AllowedIps<Peer>();
    insert4(t, a, 192, 168, 0, 0, 16);
    insert4(t, a, 192, 168, 0, 0, 24);
    t.removeValue(a);
    t.verify();
    expect(t.lookup(ip4(192, 168, 0, 1))).toBeUndefined();
    expect(t.nodeCount).toBe(0);
  });

  it('inserts and frees 128 /128s that differ from all-ones in one bit each', () => {
    const t = new AllowedIps<Peer>();
    const addresses: Uint8Array[] = [];
    for (let i = 0; i < 128; i++) {
      const ip = new Uint8Array(16).fill(0xff);
      new DataView(ip.buffer).setBigUint64(i < 64 ? 8 : 0, ~(1n << BigInt(i % 64)) & 0xffff_ffff_ffff_ffffn);
      addresses.push(ip);
      t.insert(cidrOf(ip, 128), a);
    }
    t.verify();
    // 64 of the 128 are equal (bit i and bit i-64 of the same half); the kernel inserts 128 times.
    expect(t.size).toBe(new Set(addresses.map((x) => Buffer.from(x).toString('hex'))).size);
    for (const ip of addresses) expect(t.lookup(ip)).toBe(a);
    expect(t.lookup(new Uint8Array(16).fill(0xff))).toBeUndefined();
    t.removeValue(a);
    t.verify();
    expect(t.nodeCount).toBe(0);
  });

  it("lists a peer's five prefixes, masked", () => {
    const t = new AllowedIps<Peer>();
    insert4(t, a, 192, 95, 5, 93, 27);
    insert6(t, a, 0x26075300, 0x60006b00, 0, 0xc05f0543, 128);
    insert4(t, a, 10, 1, 0, 20, 29);
    insert6(t, a, 0x26075300, 0x6d8a6bf8, 0xdab1f1df, 0xc05f1523, 83);
    insert6(t, a, 0x26075300, 0x6d8a6bf8, 0xdab1f1df, 0xc05f1523, 21);
    expect(t.entriesOf(a)).toEqual([
      cidrOf(ip4(192, 95, 5, 64), 27),
      cidrOf(ip6(0x26075300, 0x60006b00, 0, 0xc05f0543), 128),
      cidrOf(ip4(10, 1, 0, 16), 29),
      cidrOf(ip6(0x26075300, 0x6d8a6bf8, 0xdab1e000, 0), 83),
      cidrOf(ip6(0x26075000, 0, 0, 0), 21),
    ]);
    expect(t.size).toBe(5);
  });
});

describe('AllowedIps — behaviour', () => {
  const a = peer('a');
  const b = peer('b');
  const texts = (t: AllowedIps<Peer>, p: Peer) => t.entriesOf(p).map(formatCidr);

  it('routes through /0 and to exact /32 and /128 prefixes', () => {
    const t = new AllowedIps<Peer>();
    expect(t.lookup(parseIp('1.2.3.4').bytes)).toBeUndefined();
    t.insert(parseCidr('0.0.0.0/0'), a);
    t.insert(parseCidr('::/0'), a);
    t.insert(parseCidr('1.2.3.4/32'), b);
    t.insert(parseCidr('fd00::1/128'), b);
    t.insert(parseCidr('255.255.255.255/32'), b);
    t.insert(parseCidr('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128'), b);
    const at = (s: string) => t.lookup(parseIp(s).bytes)?.name;
    expect(at('1.2.3.4')).toBe('b');
    expect(at('1.2.3.5')).toBe('a');
    expect(at('0.0.0.0')).toBe('a');
    expect(at('255.255.255.255')).toBe('b');
    expect(at('255.255.255.254')).toBe('a');
    expect(at('fd00::1')).toBe('b');
    expect(at('fd00::')).toBe('a');
    expect(at('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff')).toBe('b');
    expect(at('::')).toBe('a');
    expect(t.remove(parseCidr('0.0.0.0/0'), a)).toBe(true);
    expect(at('1.2.3.5')).toBeUndefined();
    expect(at('1.2.3.4')).toBe('b');
    expect(at('fd00::2')).toBe('a'); // the IPv6 /0 is separate
    t.verify();
  });

  it('reads addresses from packet buffers at offsets', () => {
    const t = new AllowedIps<Peer>();
    t.insert(parseCidr('10.0.0.0/8'), a);
    t.insert(parseCidr('192.168.1.0/24'), b);
    t.insert(parseCidr('fd00:1::/32'), a);
    t.insert(parseCidr('fd00:2::/32'), b);

    // An IPv4 header: source 192.168.1.7, destination 10.9.8.7, at offset 5 in a batch buffer.
    const v4 = new Uint8Array(20);
    v4[0] = 0x45;
    v4.set([192, 168, 1, 7], 12);
    v4.set([10, 9, 8, 7], 16);
    const buf4 = new Uint8Array(64);
    buf4.set(v4, 5);
    expect(t.lookupDestination(v4)).toBe(a);
    expect(t.lookupSource(v4)).toBe(b);
    expect(t.lookupDestination(buf4, 5, 20)).toBe(a);
    expect(t.lookupSource(buf4, 5, 20)).toBe(b);
    expect(t.lookupDestination(buf4.subarray(5, 25))).toBe(a);
    expect(t.lookupV4(buf4, 5 + 16)).toBe(a);
    expect(t.lookupV4(buf4, 5 + 12)).toBe(b);
    expect(t.lookupDestination(Buffer.from(v4))).toBe(a);

    // An IPv6 header: source fd00:2::1, destination fd00:1::2.
    const v6 = new Uint8Array(40);
    v6[0] = 0x60;
    v6.set(parseIp('fd00:2::1').bytes, 8);
    v6.set(parseIp('fd00:1::2').bytes, 24);
    const buf6 = new Uint8Array(100);
    buf6.set(v6, 33);
    expect(t.lookupDestination(v6)).toBe(a);
    expect(t.lookupSource(v6)).toBe(b);
    expect(t.lookupDestination(buf6, 33, 40)).toBe(a);
    expect(t.lookupSource(buf6, 33)).toBe(b);
    expect(t.lookupV6(buf6, 33 + 24)).toBe(a);
    expect(t.lookupV6(buf6, 33 + 8)).toBe(b);

    // Too short for the header, or another version.
    expect(t.lookupDestination(v4.subarray(0, 19))).toBeUndefined();
    expect(t.lookupSource(v6.subarray(0, 39))).toBeUndefined();
    expect(t.lookupDestination(buf4, 5, 19)).toBeUndefined();
    expect(t.lookupDestination(new Uint8Array(0))).toBeUndefined();
    const v5 = Uint8Array.from(v4);
    v5[0] = 0x55;
    expect(t.lookupDestination(v5)).toBeUndefined();
    const v6as4 = Uint8Array.from(v4);
    v6as4[0] = 0x65; // says IPv6 but is only 20 bytes
    expect(t.lookupDestination(v6as4)).toBeUndefined();
  });

  it('masks host bits and lists prefixes in insertion order; re-inserting moves a prefix', () => {
    const t = new AllowedIps<Peer>();
    for (const s of ['10.1.2.3/8', 'fd00::1:2/112', '192.168.7.9/24', '10.0.0.1/32', '::/0']) t.insert(parseCidr(s), a);
    t.insert({ family: 4, address: Uint8Array.of(172, 16, 99, 1), prefix: 12 }, a); // unmasked input
    expect(texts(t, a)).toEqual(['10.0.0.0/8', 'fd00::1:0/112', '192.168.7.0/24', '10.0.0.1/32', '::/0', '172.16.0.0/12']);
    t.insert(parseCidr('192.168.7.0/24'), b);
    expect(texts(t, a)).toEqual(['10.0.0.0/8', 'fd00::1:0/112', '10.0.0.1/32', '::/0', '172.16.0.0/12']);
    expect(texts(t, b)).toEqual(['192.168.7.0/24']);
    expect(t.lookup(parseIp('192.168.7.200').bytes)).toBe(b);
    // Re-inserting for the same value moves it to the end, as the kernel does.
    t.insert(parseCidr('10.0.0.0/8'), a);
    expect(texts(t, a)).toEqual(['fd00::1:0/112', '10.0.0.1/32', '::/0', '172.16.0.0/12', '10.0.0.0/8']);
    expect(t.size).toBe(6);
    // The caller's address is not modified.
    const address = Uint8Array.of(1, 2, 3, 4);
    t.insert({ family: 4, address, prefix: 16 }, b);
    expect([...address]).toEqual([1, 2, 3, 4]);
    t.verify();
  });

  it('removes a prefix only for its own value', () => {
    const t = new AllowedIps<Peer>();
    t.insert(parseCidr('10.0.0.0/8'), a);
    t.insert(parseCidr('10.1.0.0/16'), b);
    expect(t.remove(parseCidr('10.0.0.0/8'), b)).toBe(false);
    expect(t.remove(parseCidr('10.1.0.0/16'), a)).toBe(false);
    expect(t.remove(parseCidr('10.0.0.0/9'), a)).toBe(false);
    expect(t.remove(parseCidr('10.0.0.0/8'), peer('stranger'))).toBe(false);
    expect(t.remove(parseCidr('10.1.2.3/16'), b)).toBe(true); // host bits ignored
    expect(t.remove(parseCidr('10.1.0.0/16'), b)).toBe(false);
    expect(t.lookup(parseIp('10.1.2.3').bytes)).toBe(a);
    expect(texts(t, b)).toEqual([]);
    expect(t.size).toBe(1);
    t.verify();
  });

  it('leaves nothing of a removed peer', () => {
    const t = new AllowedIps<Peer>();
    for (let i = 0; i < 200; i++) {
      t.insert(cidrOf(ip4(10, i, 0, 0), 16), a);
      t.insert(cidrOf(ip6(0xfd000000, i, 0, 0), 64), a);
      t.insert(cidrOf(ip4(10, i, 1, 0), 24), b);
    }
    expect(t.removeValue(a)).toBe(400);
    t.verify();
    expect(t.entriesOf(a)).toEqual([]);
    expect(t.size).toBe(200);
    expect([...t.values()]).toEqual([b]);
    expect(t.lookup(ip4(10, 5, 0, 1))).toBeUndefined();
    expect(t.lookup(ip4(10, 5, 1, 1))).toBe(b);
    expect(t.lookup(ip6(0xfd000000, 5, 0, 1))).toBeUndefined();
    expect(t.removeValue(a)).toBe(0);
    expect(t.removeValue(b)).toBe(200);
    expect(t.nodeCount).toBe(0);
    expect(t.size).toBe(0);
    t.verify();
    // clear() forgets everything at once, and the table is usable afterwards.
    t.insert(parseCidr('10.0.0.0/8'), a);
    t.insert(parseCidr('fd00::/8'), b);
    t.clear();
    expect([t.size, t.nodeCount, [...t.values()].length]).toEqual([0, 0, 0]);
    expect(t.lookup(ip4(10, 1, 1, 1))).toBeUndefined();
    t.insert(parseCidr('10.0.0.0/8'), b);
    expect(t.lookup(ip4(10, 1, 1, 1))).toBe(b);
    expect(t.entriesOf(a)).toEqual([]);
    t.verify();
  });

  it('rejects malformed prefixes', () => {
    const t = new AllowedIps<Peer>();
    expect(() => t.insert({ family: 4, address: new Uint8Array(16), prefix: 8 }, a)).toThrow(RangeError);
    expect(() => t.insert({ family: 6, address: new Uint8Array(16), prefix: 129 }, a)).toThrow(RangeError);
    expect(() => t.insert({ family: 4, address: new Uint8Array(4), prefix: -1 }, a)).toThrow(RangeError);
    expect(() => t.insert({ family: 5 as 4, address: new Uint8Array(4), prefix: 1 }, a)).toThrow(RangeError);
    expect(() => t.lookup(new Uint8Array(5))).toThrow(RangeError);
    expect(t.size).toBe(0);
  });
});

/** A deterministic PRNG (mulberry32), so a failure reproduces. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

function masked(address: Uint8Array, prefix: number): Uint8Array {
  const out = Uint8Array.from(address);
  for (let i = 0; i < out.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    out[i]! &= (0xff << (8 - keep)) & 0xff;
  }
  return out;
}

const keyOf = (address: Uint8Array, prefix: number) => `${Buffer.from(masked(address, prefix)).toString('hex')}/${prefix}`;

function toBigInt(address: Uint8Array): bigint {
  let x = 0n;
  for (const byte of address) x = (x << 8n) | BigInt(byte);
  return x;
}

interface RefEntry<T> {
  readonly cidr: Cidr;
  readonly value: T;
}

/**
 * The obviously correct table: prefixes in insertion order, and a lookup that tries every
 * prefix length from longest to shortest (a map per length, keyed by the address's top bits).
 */
class Reference<T> {
  readonly entries = new Map<string, RefEntry<T>>();
  private readonly byLength = new Map<number, Map<bigint, RefEntry<T>>>();

  private slot(cidr: Cidr): [Map<bigint, RefEntry<T>>, bigint] {
    const bits = cidr.address.length * 8;
    const key = bits * 1000 + cidr.prefix;
    let map = this.byLength.get(key);
    if (!map) this.byLength.set(key, (map = new Map()));
    return [map, toBigInt(cidr.address) >> BigInt(bits - cidr.prefix)];
  }

  insert(cidr: Cidr, value: T): void {
    const key = keyOf(cidr.address, cidr.prefix);
    this.entries.delete(key);
    const entry = { cidr: { family: cidr.family, address: masked(cidr.address, cidr.prefix), prefix: cidr.prefix }, value };
    this.entries.set(key, entry);
    const [map, top] = this.slot(cidr);
    map.set(top, entry);
  }

  remove(cidr: Cidr, value: T): boolean {
    const key = keyOf(cidr.address, cidr.prefix);
    if (this.entries.get(key)?.value !== value) return false;
    const [map, top] = this.slot(cidr);
    map.delete(top);
    return this.entries.delete(key);
  }

  removeValue(value: T): void {
    for (const [key, entry] of this.entries) {
      if (entry.value !== value) continue;
      this.entries.delete(key);
      const [map, top] = this.slot(entry.cidr);
      map.delete(top);
    }
  }

  lookup(address: Uint8Array): T | undefined {
    const bits = address.length * 8;
    const x = toBigInt(address);
    for (let prefix = bits; prefix >= 0; prefix--) {
      const hit = this.byLength.get(bits * 1000 + prefix)?.get(x >> BigInt(bits - prefix));
      if (hit) return hit.value;
    }
    return undefined;
  }

  entriesOf(value: T): Cidr[] {
    return [...this.entries.values()].filter((e) => e.value === value).map((e) => e.cidr);
  }
}

describe('AllowedIps — randomized against a naive reference', () => {
  for (const family of [4, 6] as const) {
    it(`IPv${family}: inserts (with overrides), removes and peer removals agree on every lookup`, () => {
      const random = rng(family === 4 ? 0x5eed4 : 0x5eed6);
      const bytes = family === 4 ? 4 : 16;
      const bits = bytes * 8;
      const int = (n: number) => Math.floor(random() * n);
      const peers = Array.from({ length: 24 }, (_, i) => peer(`p${i}`));
      const t = new AllowedIps<Peer>();
      const r = new Reference<Peer>();

      // Clustered addresses so that prefixes nest and part at every depth: a few bases, each
      // mutated below a random bit, as the kernel's randomized test does.
      const bases = Array.from({ length: 8 }, () => Uint8Array.from({ length: bytes }, () => int(256)));
      const randomAddress = (): Uint8Array => {
        if (random() < 0.1) return Uint8Array.from({ length: bytes }, () => int(256));
        const base = bases[int(bases.length)]!;
        const keep = int(bits + 1);
        const out = Uint8Array.from({ length: bytes }, () => int(256));
        for (let i = 0; i < bytes; i++) {
          const k = Math.max(0, Math.min(8, keep - i * 8));
          const mask = (0xff << (8 - k)) & 0xff;
          out[i] = (base[i]! & mask) | (out[i]! & ~mask & 0xff);
        }
        return out;
      };
      const randomPrefix = (): number => {
        const x = random();
        return x < 0.02 ? 0 : x < 0.1 ? bits : int(bits + 1);
      };
      const inserted: Cidr[] = [];
      const check = (queries: number) => {
        for (let i = 0; i < queries; i++) {
          // Half near inserted prefixes (their first and last addresses, or inside), half anywhere.
          let address: Uint8Array;
          if (inserted.length > 0 && random() < 0.5) {
            const c = inserted[int(inserted.length)]!;
            address = Uint8Array.from(c.address);
            const mode = int(3);
            for (let bit = c.prefix; bit < bits; bit++) {
              const on = mode === 0 ? 0 : mode === 1 ? 1 : int(2);
              if (on) address[bit >> 3]! |= 0x80 >> (bit & 7);
            }
          } else address = randomAddress();
          const want = r.lookup(address);
          const got = t.lookup(address);
          if (got !== want) throw new Error(`lookup ${Buffer.from(address).toString('hex')}: got ${got?.name}, want ${want?.name}`);
        }
      };

      for (let i = 0; i < 3000; i++) {
        const cidr = cidrOf(randomAddress(), randomPrefix()); // host bits left set: insert masks
        const p = peers[int(peers.length)]!;
        t.insert(cidr, p);
        r.insert(cidr, p);
        inserted.push({ family, address: masked(cidr.address, cidr.prefix), prefix: cidr.prefix });
        // Some overrides of an existing prefix by another peer.
        if (random() < 0.1) {
          const again = inserted[int(inserted.length)]!;
          const q = peers[int(peers.length)]!;
          t.insert(again, q);
          r.insert(again, q);
        }
      }
      t.verify();
      expect(t.size).toBe(r.entries.size);
      check(4000);
      for (const p of peers) expect(t.entriesOf(p)).toEqual(r.entriesOf(p));

      // Removes: half of them of the right value, half of a random one.
      for (let i = 0; i < 1500; i++) {
        const c = inserted[int(inserted.length)]!;
        const p = random() < 0.5 ? (r.entries.get(keyOf(c.address, c.prefix))?.value ?? peers[0]!) : peers[int(peers.length)]!;
        expect(t.remove(c, p)).toBe(r.remove(c, p));
      }
      t.verify();
      expect(t.size).toBe(r.entries.size);
      check(3000);

      // Peers leave one by one; re-add a few prefixes in between so freed records are reused.
      for (const [i, p] of peers.entries()) {
        t.removeValue(p);
        r.removeValue(p);
        expect(t.entriesOf(p)).toEqual([]);
        if (i % 4 === 0) {
          for (let j = 0; j < 50; j++) {
            const cidr = cidrOf(randomAddress(), randomPrefix());
            const q = peers[peers.length - 1]!;
            t.insert(cidr, q);
            r.insert(cidr, q);
          }
        }
        t.verify();
        expect(t.size).toBe(r.entries.size);
        check(300);
      }
      for (const p of peers) expect(t.entriesOf(p)).toEqual(r.entriesOf(p));
      expect(t.size).toBe(0);
      expect(t.nodeCount).toBe(0);
    });
  }

  it('both families in one table, looked up from packets, agree with the reference', () => {
    const random = rng(0xab1e);
    const int = (n: number) => Math.floor(random() * n);
    const peers = Array.from({ length: 10 }, (_, i) => peer(`q${i}`));
    const t = new AllowedIps<Peer>();
    const r = new Reference<Peer>();
    for (let i = 0; i < 2000; i++) {
      const v6 = random() < 0.4;
      // Short prefixes in a narrow space so that lookups hit.
      const address = v6 ? Uint8Array.from({ length: 16 }, (_, k) => (k < 2 ? 0xfd : int(4))) : Uint8Array.from({ length: 4 }, (_, k) => (k === 0 ? 10 : int(4)));
      const prefix = v6 ? 16 + int(113) : 8 + int(25);
      const p = peers[int(peers.length)]!;
      t.insert(cidrOf(address, prefix), p);
      r.insert(cidrOf(address, prefix), p);
    }
    const packet = new Uint8Array(200);
    for (let i = 0; i < 3000; i++) {
      const v6 = random() < 0.4;
      const offset = int(100);
      const src = v6 ? Uint8Array.from({ length: 16 }, (_, k) => (k < 2 ? 0xfd : int(4))) : Uint8Array.from({ length: 4 }, (_, k) => (k === 0 ? 10 : int(4)));
      const dst = v6 ? Uint8Array.from({ length: 16 }, (_, k) => (k < 2 ? 0xfd : int(4))) : Uint8Array.from({ length: 4 }, (_, k) => (k === 0 ? 10 : int(4)));
      packet.fill(int(256));
      packet[offset] = v6 ? 0x60 : 0x45;
      packet.set(src, offset + (v6 ? 8 : 12));
      packet.set(dst, offset + (v6 ? 24 : 16));
      expect(t.lookupSource(packet, offset, v6 ? 40 : 20)).toBe(r.lookup(src));
      expect(t.lookupDestination(packet, offset, v6 ? 40 : 20)).toBe(r.lookup(dst));
    }
    t.verify();
    for (const p of peers) expect(t.entriesOf(p)).toEqual(r.entriesOf(p));
  });
});

describe('AllowedIps — jump tables', () => {
  it('stay exact through every insert and remove, and agree with a table without them', () => {
    const random = rng(0x7ab1e5);
    const int = (n: number) => Math.floor(random() * n);
    const peers = Array.from({ length: 6 }, (_, i) => peer(`j${i}`));
    const t = new AllowedIps<Peer>();
    const plain = new AllowedIps<Peer>({ jumpTables: false });
    const live: [Cidr, Peer][] = [];
    // A dense cluster (100.64.0.0/10, fd00:1234::/32) with short and long prefixes, so that
    // tables hang below the root and IPv6 windows cross word boundaries.
    const randomCidr = (): Cidr => {
      if (random() < 0.5) {
        const a = Uint8Array.of(100, 64 | int(64), int(256), int(256));
        return cidrOf(a, random() < 0.3 ? 10 + int(14) : 24 + int(9));
      }
      const a = Uint8Array.from({ length: 16 }, (_, k) => (k < 4 ? [0xfd, 0, 0x12, 0x34][k]! : int(256)));
      return cidrOf(a, random() < 0.3 ? 24 + int(40) : 64 + int(65));
    };
    const probe = (c: Cidr): Uint8Array => {
      const a = Uint8Array.from(c.address);
      for (let bit = c.prefix; bit < a.length * 8; bit++) if (int(2)) a[bit >> 3]! |= 0x80 >> (bit & 7);
      return a;
    };
    for (let op = 0; op < 2500; op++) {
      if (live.length > 0 && random() < 0.3) {
        const [cidr, p] = live.splice(int(live.length), 1)[0]!;
        expect(t.remove(cidr, p)).toBe(plain.remove(cidr, p));
      } else if (random() < 0.02) {
        const p = peers[int(peers.length)]!;
        expect(t.removeValue(p)).toBe(plain.removeValue(p));
        for (let i = live.length - 1; i >= 0; i--) if (live[i]![1] === p) live.splice(i, 1);
      } else {
        const cidr = randomCidr();
        const p = peers[int(peers.length)]!;
        t.insert(cidr, p);
        plain.insert(cidr, p);
        live.push([cidr, p]);
      }
      if (op % 25 === 0) {
        t.verify();
        for (let q = 0; q < 40; q++) {
          const address = live.length > 0 && random() < 0.8 ? probe(live[int(live.length)]![0]) : probe(randomCidr());
          expect(t.lookup(address)).toBe(plain.lookup(address));
        }
      }
    }
    expect(t.tableByteLength).toBeGreaterThan(0);
    expect(plain.tableByteLength).toBe(0);
    for (const p of peers) {
      expect(t.entriesOf(p)).toEqual(plain.entriesOf(p));
      t.removeValue(p);
      t.verify();
    }
    expect(t.nodeCount).toBe(0);
    expect(t.tableByteLength).toBe(0);
  });

  it('index a mesh of /32s inside one /10 below its shared bits', () => {
    const t = new AllowedIps<Peer>();
    const p = Array.from({ length: 4096 }, (_, i) => peer(`m${i}`));
    for (let i = 0; i < p.length; i++) t.insert(cidrOf(ip4(100, 64 + (i >> 8), i & 0xff, 7), 32), p[i]!);
    t.verify();
    expect(t.tableByteLength).toBeGreaterThan(0);
    for (let i = 0; i < p.length; i += 37) expect(t.lookup(ip4(100, 64 + (i >> 8), i & 0xff, 7))).toBe(p[i]);
    expect(t.lookup(ip4(100, 64, 0, 8))).toBeUndefined();
    expect(t.lookup(ip4(10, 64, 0, 7))).toBeUndefined();
  });
});
