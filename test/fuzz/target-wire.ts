/**
 * Target "wire": the four message decoders and classify() over raw bytes.
 *
 * Properties: nothing throws; classify() and the decoders agree (a decoder succeeds exactly when
 * classify names its type, and otherwise fails with classify's reason); a decoded view is a
 * window onto the input (no copies) with every field at its documented offset and length;
 * readCounter() is -1 exactly when the counter does not fit in 53 bits; the input is never
 * written.
 */
import {
  classify,
  COOKIE_REPLY_LENGTH,
  decodeCookieReply,
  decodeInitiation,
  decodeResponse,
  decodeTransport,
  INITIATION_LENGTH,
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  MESSAGE_TRANSPORT,
  readCounter,
  readU32,
  RESPONSE_LENGTH,
  TRANSPORT_MIN_LENGTH,
} from '../../src/noise/messages.ts';
import { BOUNDARY_LENGTHS, equalBytes, hexOf, Mutator, type Rng } from '../helpers/mutate.ts';
import { check, type FuzzTarget } from './target.ts';
import { LENGTH_OF, MESSAGE_FIELDS } from './wire-fields.ts';

function isWindow(view: Uint8Array, input: Uint8Array, offset: number, length: number): boolean {
  return view.buffer === input.buffer && view.byteOffset === input.byteOffset + offset && view.length === length;
}

/** Seed messages of each type with plausible content (the device target uses real captured ones). */
function seedMessages(): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const [type, length] of [[1, INITIATION_LENGTH], [2, RESPONSE_LENGTH], [3, COOKIE_REPLY_LENGTH], [4, 32], [4, 48], [4, 1452]] as const) {
    const m = new Uint8Array(length);
    for (let i = 4; i < length; i++) m[i] = (i * 37 + type) & 0xff;
    m[0] = type;
    m[1] = m[2] = m[3] = 0;
    out.push(m);
  }
  return out;
}

export class WireTarget implements FuzzTarget<Uint8Array> {
  readonly name = 'wire';
  readonly description = 'classify/decodeInitiation/decodeResponse/decodeCookieReply/decodeTransport over raw bytes: agree, never throw, views not copies';
  private mutator: Mutator | undefined;
  private mutatorRng: Rng | undefined;
  private readonly seedList = seedMessages();
  private readonly counts = new Map<string, number>();

  setup(): void {}

  seeds(): readonly Uint8Array[] {
    return this.seedList;
  }

  generate(rng: Rng): Uint8Array {
    const r = rng.below(10);
    if (r < 3) return rng.bytes(rng.chance(0.5) ? rng.pick(BOUNDARY_LENGTHS) : rng.below(1600));
    // A header of a chosen type with a length around its size.
    const type = rng.chance(0.85) ? rng.range(1, 4) : rng.below(256);
    const base = LENGTH_OF[type] ?? rng.below(200);
    const length = Math.max(0, rng.chance(0.6) ? base : base + rng.range(-3, 3) + (type === 4 && rng.chance(0.5) ? rng.below(1500) : 0));
    const m = rng.bytes(length);
    if (length > 0) m[0] = type;
    for (let i = 1; i < Math.min(4, length); i++) m[i] = rng.chance(0.9) ? 0 : rng.below(256);
    if (type === 4 && length >= 16 && rng.chance(0.5)) {
      // Counter high word around the 53-bit limit.
      const high = rng.pick([0, 1, 0x1f_fffe, 0x1f_ffff, 0x20_0000, 0xffff_ffff]);
      new DataView(m.buffer).setUint32(12, high, true);
    }
    return m;
  }

  mutate(rng: Rng, input: Uint8Array): Uint8Array {
    if (this.mutatorRng !== rng) {
      this.mutatorRng = rng;
      this.mutator = new Mutator(rng, { donors: this.seedList, fields: MESSAGE_FIELDS, maxExtend: 256 });
    }
    return this.mutator!.mutate(input).bytes;
  }

  run(input: Uint8Array): void {
    const copy = Uint8Array.from(input);
    // Put the input at an odd offset in a bigger buffer: views must respect byteOffset.
    const backing = new Uint8Array(input.length + 7);
    backing.set(input, 3);
    const bytes = backing.subarray(3, 3 + input.length);
    const kind = classify(bytes);
    this.counts.set(String(kind), (this.counts.get(String(kind)) ?? 0) + 1);
    const init = decodeInitiation(bytes);
    const resp = decodeResponse(bytes);
    const cookie = decodeCookieReply(bytes);
    const transport = decodeTransport(bytes);
    check(init.ok === (kind === MESSAGE_INITIATION), () => `decodeInitiation ok=${init.ok} but classify says ${kind}`);
    check(resp.ok === (kind === MESSAGE_RESPONSE), () => `decodeResponse ok=${resp.ok} but classify says ${kind}`);
    check(cookie.ok === (kind === MESSAGE_COOKIE_REPLY), () => `decodeCookieReply ok=${cookie.ok} but classify says ${kind}`);
    const counter = bytes.length >= 16 ? readCounter(bytes, 8) : 0;
    check(transport.ok === (kind === MESSAGE_TRANSPORT && counter >= 0), () => `decodeTransport ok=${transport.ok}, classify ${kind}, counter ${counter}`);
    if (typeof kind === 'string') {
      for (const r of [init, resp, cookie, transport]) check(!r.ok && r.error === kind, () => `a decoder disagrees with classify's reason ${kind}: ${JSON.stringify(r.ok ? 'ok' : r.error)}`);
    }
    if (bytes.length >= 16) {
      const high = readU32(bytes, 12);
      check((counter === -1) === high > 0x1f_ffff, () => `readCounter ${counter} for high word ${high}`);
      if (counter >= 0) check(counter === high * 2 ** 32 + readU32(bytes, 8) && Number.isSafeInteger(counter), 'readCounter value');
    }
    if (init.ok) {
      const v = init.value;
      check(v.bytes === bytes && v.sender === readU32(bytes, 4), 'initiation sender');
      check(isWindow(v.ephemeral, bytes, 8, 32) && isWindow(v.encryptedStatic, bytes, 40, 48) && isWindow(v.encryptedTimestamp, bytes, 88, 28), 'initiation views');
      check(isWindow(v.mac1, bytes, 116, 16) && isWindow(v.mac2, bytes, 132, 16), 'initiation MAC views');
    }
    if (resp.ok) {
      const v = resp.value;
      check(v.sender === readU32(bytes, 4) && v.receiver === readU32(bytes, 8), 'response indices');
      check(isWindow(v.ephemeral, bytes, 12, 32) && isWindow(v.encryptedEmpty, bytes, 44, 16), 'response views');
      check(isWindow(v.mac1, bytes, 60, 16) && isWindow(v.mac2, bytes, 76, 16), 'response MAC views');
    }
    if (cookie.ok) {
      const v = cookie.value;
      check(v.receiver === readU32(bytes, 4) && isWindow(v.nonce, bytes, 8, 24) && isWindow(v.encryptedCookie, bytes, 32, 32), 'cookie reply views');
    }
    if (transport.ok) {
      const v = transport.value;
      check(bytes.length >= TRANSPORT_MIN_LENGTH, 'transport shorter than 32 bytes accepted');
      check(v.receiver === readU32(bytes, 4) && v.counter === counter, 'transport header');
      check(isWindow(v.encrypted, bytes, 16, bytes.length - 16), 'transport payload view');
    }
    check(equalBytes(bytes, copy), () => `a decoder wrote to its input: ${hexOf(copy)} → ${hexOf(bytes)}`);
  }

  stats(): Record<string, number> {
    return Object.fromEntries([...this.counts].map(([k, v]) => [`classify_${k}`, v]));
  }

  encode(input: Uint8Array): Uint8Array {
    return input;
  }

  decode(bytes: Uint8Array): Uint8Array {
    return bytes;
  }

  describe(input: Uint8Array): string {
    return `${input.length} bytes: ${hexOf(input.subarray(0, 64))}${input.length > 64 ? '…' : ''}`;
  }

  teardown(): void {}
}
