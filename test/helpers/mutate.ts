/**
 * A small seeded mutator for fuzzing message decoders: a deterministic PRNG (splitmix32) and
 * byte-level mutations — bit flips, byte sets, truncation, extension, splicing two messages, and
 * setting the type byte, the reserved bytes or the length to boundary values. Every mutant is a
 * fresh Uint8Array; the input is never written. The same seed gives the same mutants.
 */

/** splitmix32: tiny, fast, passes the statistical tests a fuzzer needs; seeds may be any integer. */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    this.state = (this.state + 0x9e37_79b9) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 16), 0x85eb_ca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2_ae35);
    return (z ^ (z >>> 16)) >>> 0;
  }

  /** A uniform integer in [0, n) for 0 < n ≤ 2^32. */
  below(n: number): number {
    return Math.floor((this.u32() / 0x1_0000_0000) * n);
  }

  /** A uniform integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.below(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('pick from an empty list');
    return items[this.below(items.length)]!;
  }

  fill(out: Uint8Array): Uint8Array {
    for (let i = 0; i < out.length; i += 4) {
      const r = this.u32();
      out[i] = r & 0xff;
      if (i + 1 < out.length) out[i + 1] = (r >>> 8) & 0xff;
      if (i + 2 < out.length) out[i + 2] = (r >>> 16) & 0xff;
      if (i + 3 < out.length) out[i + 3] = r >>> 24;
    }
    return out;
  }

  bytes(length: number): Uint8Array {
    return this.fill(new Uint8Array(length));
  }

  /** An independent generator derived from this one (for a sub-task that must not shift this stream). */
  fork(): Rng {
    return new Rng(this.u32());
  }
}

/** Parses a seed from the environment: decimal or 0x-hex; undefined when absent or not a number. */
export function parseSeed(text: string | undefined): number | undefined {
  if (text === undefined || text.trim() === '') return undefined;
  const value = Number(text.trim());
  return Number.isInteger(value) ? value >>> 0 : undefined;
}

export type MutationOp = 'bitflip' | 'bitflips' | 'byte' | 'field' | 'type' | 'reserved' | 'length' | 'truncate' | 'extend' | 'splice';

export const MUTATION_OPS: readonly MutationOp[] = ['bitflip', 'bitflips', 'byte', 'field', 'type', 'reserved', 'length', 'truncate', 'extend', 'splice'];

/** Equal weights: every operation as likely as any other. */
export const UNIFORM_WEIGHTS: Readonly<Record<MutationOp, number>> = {
  bitflip: 1, bitflips: 1, byte: 1, field: 1, type: 1, reserved: 1, length: 1, truncate: 1, extend: 1, splice: 1,
};

/** Byte values at the edges of signed/unsigned ranges. */
export const BOUNDARY_BYTES: readonly number[] = [0x00, 0x01, 0x02, 0x7e, 0x7f, 0x80, 0x81, 0xfe, 0xff];
/** Type-byte values: the four WireGuard types, their neighbours and the extremes. */
export const BOUNDARY_TYPES: readonly number[] = [0, 1, 2, 3, 4, 5, 6, 0x7f, 0x80, 0xfe, 0xff];
/** Lengths around every WireGuard message size (4-byte header, 32 transport minimum, 64, 92, 148). */
export const BOUNDARY_LENGTHS: readonly number[] = [
  0, 1, 2, 3, 4, 5, 8, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65, 91, 92, 93, 147, 148, 149, 150, 1420, 1500,
];
/** Little-endian integer values worth writing into 4- and 8-byte fields (indices, counters). */
const BOUNDARY_U32: readonly number[] = [0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_ffff];
const BOUNDARY_U64: readonly bigint[] = [
  0n, 1n, 0xffff_ffffn, 0x1_0000_0000n, 0x1_0000_0001n, 2n ** 53n - 2n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 60n,
  2n ** 64n - 2n ** 13n - 1n, 2n ** 64n - 1n,
];

export interface Field {
  readonly offset: number;
  readonly length: number;
}

export interface MutatorOptions {
  /** Relative weights of the operations; missing ones are 0. Default UNIFORM_WEIGHTS. */
  readonly weights?: Partial<Record<MutationOp, number>>;
  /** Other messages to splice with ("splice" is skipped when there are none). */
  readonly donors?: readonly Uint8Array[];
  /** Byte ranges worth overwriting whole (keys, MACs, indices, counters). */
  readonly fields?: readonly Field[];
  /** Values to write into fields of the same length (e.g. low-order curve points). */
  readonly dictionary?: readonly Uint8Array[];
  /** Lengths the "length" op resizes to (default BOUNDARY_LENGTHS plus the input length ± 1). */
  readonly lengths?: readonly number[];
  /** Longest extension, in bytes (default 64). */
  readonly maxExtend?: number;
  /** Up to this many operations are stacked on one mutant (default 3; one op half of the time). */
  readonly maxStack?: number;
}

export interface Mutant {
  readonly bytes: Uint8Array;
  /** What was done, e.g. ["bitflip@37.2", "truncate→91"]: enough to read a failure report. */
  readonly ops: readonly string[];
}

export class Mutator {
  private readonly rng: Rng;
  private readonly table: MutationOp[] = [];
  private readonly totals: number[] = [];
  private total = 0;
  private readonly donors: readonly Uint8Array[];
  private readonly fields: readonly Field[];
  private readonly dictionary: readonly Uint8Array[];
  private readonly lengths: readonly number[];
  private readonly maxExtend: number;
  private readonly maxStack: number;

  constructor(rng: Rng, options: MutatorOptions = {}) {
    this.rng = rng;
    this.donors = options.donors ?? [];
    this.fields = options.fields ?? [];
    this.dictionary = options.dictionary ?? [];
    this.lengths = options.lengths ?? BOUNDARY_LENGTHS;
    this.maxExtend = options.maxExtend ?? 64;
    this.maxStack = Math.max(1, options.maxStack ?? 3);
    const weights = options.weights ?? UNIFORM_WEIGHTS;
    for (const op of MUTATION_OPS) {
      let weight = weights[op] ?? 0;
      if (op === 'splice' && this.donors.length === 0) weight = 0;
      if (op === 'field' && this.fields.length === 0) weight = 0;
      if (weight <= 0) continue;
      this.total += weight;
      this.table.push(op);
      this.totals.push(this.total);
    }
    if (this.table.length === 0) throw new RangeError('no mutation operation has a positive weight');
  }

  /** One to maxStack operations (one half of the time) applied to a copy of input. */
  mutate(input: Uint8Array): Mutant {
    let stack = 1;
    while (stack < this.maxStack && this.rng.chance(0.5)) stack++;
    let bytes: Uint8Array = Uint8Array.from(input);
    const ops: string[] = [];
    for (let i = 0; i < stack; i++) {
      const [next, what] = this.apply(this.chooseOp(), bytes);
      bytes = next;
      ops.push(what);
    }
    return { bytes, ops };
  }

  /** Applies one operation to bytes (which it may modify) and returns the result and a description. */
  apply(op: MutationOp, bytes: Uint8Array): [Uint8Array, string] {
    const rng = this.rng;
    switch (op) {
      case 'bitflip': {
        if (bytes.length === 0) return this.apply('extend', bytes);
        const at = rng.below(bytes.length);
        const bit = rng.below(8);
        bytes[at]! ^= 1 << bit;
        return [bytes, `bitflip@${at}.${bit}`];
      }
      case 'bitflips': {
        if (bytes.length === 0) return this.apply('extend', bytes);
        const n = rng.range(2, 8);
        const where: string[] = [];
        for (let i = 0; i < n; i++) {
          const at = rng.below(bytes.length);
          const bit = rng.below(8);
          bytes[at]! ^= 1 << bit;
          where.push(`${at}.${bit}`);
        }
        return [bytes, `bitflips@${where.join(',')}`];
      }
      case 'byte': {
        if (bytes.length === 0) return this.apply('extend', bytes);
        const at = rng.below(bytes.length);
        const value = rng.chance(0.5) ? rng.pick(BOUNDARY_BYTES) : rng.below(256);
        bytes[at] = value;
        return [bytes, `byte@${at}=${value}`];
      }
      case 'field': {
        const field = rng.pick(this.fields);
        if (field.offset + field.length > bytes.length) return this.apply('bitflip', bytes);
        const target = bytes.subarray(field.offset, field.offset + field.length);
        return [bytes, `field@${field.offset}+${field.length}=${this.fillField(target)}`];
      }
      case 'type': {
        if (bytes.length === 0) return this.apply('extend', bytes);
        const value = rng.chance(0.8) ? rng.pick(BOUNDARY_TYPES) : rng.below(256);
        bytes[0] = value;
        return [bytes, `type=${value}`];
      }
      case 'reserved': {
        if (bytes.length < 2) return this.apply('extend', bytes);
        const at = rng.range(1, Math.min(3, bytes.length - 1));
        const value = rng.chance(0.7) ? rng.pick(BOUNDARY_BYTES.filter((b) => b !== 0)) : rng.range(1, 255);
        bytes[at] = value;
        return [bytes, `reserved@${at}=${value}`];
      }
      case 'length': {
        const choices = [...this.lengths, bytes.length - 1, bytes.length + 1].filter((n) => n >= 0);
        const length = rng.pick(choices);
        return [resize(bytes, length, rng), `length→${length}`];
      }
      case 'truncate': {
        if (bytes.length === 0) return this.apply('extend', bytes);
        const length = rng.chance(0.5) ? bytes.length - rng.range(1, Math.min(4, bytes.length)) : rng.below(bytes.length);
        return [bytes.slice(0, length), `truncate→${length}`];
      }
      case 'extend': {
        const extra = rng.chance(0.5) ? rng.range(1, 4) : rng.range(1, this.maxExtend);
        const zero = rng.chance(0.5);
        const out = new Uint8Array(bytes.length + extra);
        out.set(bytes);
        if (!zero) rng.fill(out.subarray(bytes.length));
        return [out, `extend+${extra}${zero ? '(zero)' : ''}`];
      }
      case 'splice': {
        const donor = rng.pick(this.donors);
        const cut = rng.range(0, bytes.length);
        const donorCut = rng.chance(0.5) ? Math.min(cut, donor.length) : rng.range(0, donor.length);
        // Either our head and the donor's tail, or the donor's head and our tail.
        if (rng.chance(0.5)) {
          const out = new Uint8Array(cut + donor.length - donorCut);
          out.set(bytes.subarray(0, cut));
          out.set(donor.subarray(donorCut), cut);
          return [out, `splice(head ${cut}, donor tail @${donorCut} of ${donor.length})`];
        }
        const out = new Uint8Array(donorCut + bytes.length - cut);
        out.set(donor.subarray(0, donorCut));
        out.set(bytes.subarray(cut), donorCut);
        return [out, `splice(donor head ${donorCut} of ${donor.length}, tail @${cut})`];
      }
    }
  }

  private chooseOp(): MutationOp {
    const r = this.rng.u32() / 0x1_0000_0000 * this.total;
    for (let i = 0; i < this.table.length; i++) if (r < this.totals[i]!) return this.table[i]!;
    return this.table[this.table.length - 1]!;
  }

  /** Overwrites a whole field with a boundary value and says which. */
  private fillField(target: Uint8Array): string {
    const rng = this.rng;
    const words = this.dictionary.filter((w) => w.length === target.length);
    const choice = rng.below(5);
    if (choice === 0 && words.length > 0) {
      const word = rng.pick(words);
      target.set(word);
      return `dict#${this.dictionary.indexOf(word)}`;
    }
    if (choice === 1 && (target.length === 4 || target.length === 8)) {
      const view = new DataView(target.buffer, target.byteOffset, target.length);
      if (target.length === 4) {
        const value = rng.pick(BOUNDARY_U32);
        view.setUint32(0, value, true);
        return `u32:${value}`;
      }
      const value = rng.pick(BOUNDARY_U64);
      view.setBigUint64(0, value, true);
      return `u64:${value}`;
    }
    if (choice === 2) {
      target.fill(0);
      return 'zero';
    }
    if (choice === 3) {
      target.fill(0xff);
      return 'ones';
    }
    rng.fill(target);
    return 'random';
  }
}

/** A copy of bytes cut or grown to length; growth is zeros or random, half each. */
function resize(bytes: Uint8Array, length: number, rng: Rng): Uint8Array {
  const out = new Uint8Array(length);
  out.set(bytes.subarray(0, Math.min(length, bytes.length)));
  if (length > bytes.length && rng.chance(0.5)) rng.fill(out.subarray(bytes.length));
  return out;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function hexOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('hex');
}
