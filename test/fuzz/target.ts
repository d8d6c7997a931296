/**
 * What a fuzz target is: a fresh instance per run (setup → inputs → teardown), seed inputs that
 * are valid and realistic, a grammar-aware generator, a mutator, and run(input), which throws a
 * FuzzViolation (or anything else) when a property does not hold. Inputs round-trip through
 * bytes so a failing one can be written to test/fuzz/crashes/ and replayed.
 */
import type { Rng } from '../helpers/mutate.ts';

export interface FuzzTarget<I> {
  readonly name: string;
  /** One line: what is fed and what is asserted. */
  readonly description: string;
  /** Builds the state under test (devices, sockets). Called once, before any input. */
  setup(): void | Promise<void>;
  /** Valid inputs, run unmodified first and then used as mutation bases. */
  seeds(): readonly I[];
  /** A fresh input from the target's grammar (valid, near-valid or plain random). */
  generate(rng: Rng): I;
  /** A variant of input (never modified in place). */
  mutate(rng: Rng, input: I): I;
  /** Feeds one input; throws when a property does not hold. */
  run(input: I): void | Promise<void>;
  /**
   * Deeper, slower checks run every few thousand inputs and at the end: the legitimate session
   * still works, the server still serves, state is back to its baseline.
   */
  check?(): void | Promise<void>;
  /** Counters worth printing at the end (drops by reason, answers by errno, …). */
  stats?(): Record<string, number>;
  encode(input: I): Uint8Array;
  decode(bytes: Uint8Array): I;
  /** Short human-readable rendering for a failure report. */
  describe(input: I): string;
  teardown(): void | Promise<void>;
}

/** A property that does not hold (as opposed to an exception escaping the code under test). */
export class FuzzViolation extends Error {
  override readonly name = 'FuzzViolation';
}

export function check(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) throw new FuzzViolation(typeof message === 'string' ? message : message());
}

export type TargetFactory = () => FuzzTarget<unknown>;

/** Picks one of weighted choices: [[weight, value], …]. */
export function weighted<T>(rng: Rng, choices: readonly (readonly [number, T])[]): T {
  let total = 0;
  for (const [w] of choices) total += w;
  let r = (rng.u32() / 0x1_0000_0000) * total;
  for (const [w, v] of choices) {
    if (r < w) return v;
    r -= w;
  }
  return choices[choices.length - 1]![1];
}

/** Little binary writer/reader for encoding structured inputs as crash files. */
export class ByteWriter {
  private parts: Uint8Array[] = [];
  u8(v: number): this {
    this.parts.push(Uint8Array.of(v & 0xff));
    return this;
  }
  u32(v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0);
    this.parts.push(b);
    return this;
  }
  bytes(v: Uint8Array): this {
    this.u32(v.length);
    this.parts.push(Uint8Array.from(v));
    return this;
  }
  string(v: string): this {
    return this.bytes(new TextEncoder().encode(v));
  }
  finish(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.parts));
  }
}

export class ByteReader {
  private at = 0;
  private readonly data: Uint8Array;
  constructor(data: Uint8Array) {
    this.data = data;
  }
  u8(): number {
    if (this.at + 1 > this.data.length) throw new RangeError('crash file truncated');
    return this.data[this.at++]!;
  }
  u32(): number {
    if (this.at + 4 > this.data.length) throw new RangeError('crash file truncated');
    const v = new DataView(this.data.buffer, this.data.byteOffset + this.at, 4).getUint32(0);
    this.at += 4;
    return v;
  }
  bytes(): Uint8Array {
    const n = this.u32();
    if (this.at + n > this.data.length) throw new RangeError('crash file truncated');
    const out = this.data.slice(this.at, this.at + n);
    this.at += n;
    return out;
  }
  string(): string {
    return new TextDecoder().decode(this.bytes());
  }
  get done(): boolean {
    return this.at >= this.data.length;
  }
}
