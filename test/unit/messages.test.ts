/**
 * Message layouts at their boundaries: exact lengths, type and reserved bytes, the fields of
 * each view, little-endian integers, and transport counters across 2^32 and up to the 2^53 cap.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { REJECT_AFTER_MESSAGES } from '../../src/noise/constants.ts';
import { createBackend } from '../../src/noise/crypto/index.ts';
import { Keypair } from '../../src/noise/keypair.ts';
import type { MessageType } from '../../src/noise/messages.ts';
import {
  classify,
  COOKIE_REPLY_LENGTH,
  CookieReply,
  decodeCookieReply,
  decodeInitiation,
  decodeResponse,
  decodeTransport,
  Initiation,
  INITIATION_LENGTH,
  macOffsets,
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  MESSAGE_TRANSPORT,
  readCounter,
  readU32,
  Response,
  RESPONSE_LENGTH,
  Transport,
  TRANSPORT_MIN_LENGTH,
  writeCounter,
  writeHeader,
  writeU32,
} from '../../src/noise/messages.ts';

const decoders = {
  [MESSAGE_INITIATION]: decodeInitiation,
  [MESSAGE_RESPONSE]: decodeResponse,
  [MESSAGE_COOKIE_REPLY]: decodeCookieReply,
  [MESSAGE_TRANSPORT]: decodeTransport,
} as const;

/** A message of the given type and length: header written, body a recognisable pattern. */
function message(type: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 4; i < length; i++) bytes[i] = (i * 7) & 0xff;
  if (length > 0) bytes[0] = type;
  // Transport: keep the counter small, whatever the pattern.
  if (type === MESSAGE_TRANSPORT && length >= 16) bytes.fill(0, Transport.counter + 4, Transport.counter + 8);
  return bytes;
}

const CASES: { type: MessageType; name: string; length: number }[] = [
  { type: MESSAGE_INITIATION, name: 'initiation', length: INITIATION_LENGTH },
  { type: MESSAGE_RESPONSE, name: 'response', length: RESPONSE_LENGTH },
  { type: MESSAGE_COOKIE_REPLY, name: 'cookie reply', length: COOKIE_REPLY_LENGTH },
  { type: MESSAGE_TRANSPORT, name: 'transport', length: TRANSPORT_MIN_LENGTH },
];

describe('message sizes', () => {
  it('are the protocol constants', () => {
    expect([INITIATION_LENGTH, RESPONSE_LENGTH, COOKIE_REPLY_LENGTH, TRANSPORT_MIN_LENGTH]).toEqual([148, 92, 64, 32]);
  });
});

describe.each(CASES)('$name', ({ type, length }) => {
  const decode = decoders[type];

  it(`is exactly ${length} bytes${type === MESSAGE_TRANSPORT ? ' or more' : ''}`, () => {
    expect(classify(message(type, length))).toBe(type);
    expect(decode(message(type, length)).ok).toBe(true);
    const shorter = message(type, length - 1);
    const longer = message(type, length + 1);
    if (type === MESSAGE_TRANSPORT) {
      expect(classify(shorter)).toBe('short');
      expect(decode(shorter)).toEqual({ ok: false, error: 'short' });
      expect(classify(longer)).toBe(type);
      expect(decode(longer).ok).toBe(true);
      expect(classify(message(type, 65_535))).toBe(type);
    } else {
      expect(classify(shorter)).toBe('length');
      expect(classify(longer)).toBe('length');
      expect(decode(shorter)).toEqual({ ok: false, error: 'length' });
      expect(decode(longer)).toEqual({ ok: false, error: 'length' });
      expect(decode(message(type, length * 2))).toEqual({ ok: false, error: 'length' });
    }
  });

  it('is too short to classify below 4 bytes, and not that type when empty', () => {
    for (let n = 0; n < 4; n++) {
      expect(classify(message(type, n))).toBe('short');
      expect(decode(message(type, n))).toEqual({ ok: false, error: 'short' });
    }
  });

  it.each([0, 5, 6, 0x80, 255])('rejects type byte %i at its length', (bad) => {
    const bytes = message(type, length);
    bytes[0] = bad;
    expect(classify(bytes)).toBe('type');
    expect(decode(bytes)).toEqual({ ok: false, error: 'type' });
    // An unknown type with reserved bytes set is still an unknown type.
    bytes[2] = 1;
    expect(classify(bytes)).toBe('type');
  });

  it.each([1, 2, 3])('rejects a non-zero reserved byte %i', (at) => {
    for (const value of [1, 0x80, 0xff]) {
      const bytes = message(type, length);
      bytes[at] = value;
      expect(classify(bytes)).toBe('reserved');
      expect(decode(bytes)).toEqual({ ok: false, error: 'reserved' });
    }
  });

  it('is not decoded as any other type', () => {
    const bytes = message(type, length);
    for (const [other, otherDecode] of Object.entries(decoders)) {
      if (Number(other) === type) continue;
      expect(otherDecode(bytes)).toEqual({ ok: false, error: 'type' });
    }
  });
});

describe('decoders', () => {
  it('say "type" for a valid message of another type', () => {
    expect(decodeInitiation(message(MESSAGE_RESPONSE, RESPONSE_LENGTH))).toEqual({ ok: false, error: 'type' });
    expect(decodeResponse(message(MESSAGE_INITIATION, INITIATION_LENGTH))).toEqual({ ok: false, error: 'type' });
    expect(decodeCookieReply(message(MESSAGE_TRANSPORT, 64))).toEqual({ ok: false, error: 'type' });
    expect(decodeTransport(message(MESSAGE_COOKIE_REPLY, COOKIE_REPLY_LENGTH))).toEqual({ ok: false, error: 'type' });
  });

  it('return views over the same buffer at the documented offsets', () => {
    const backing = new Uint8Array(8 + INITIATION_LENGTH);
    const bytes = backing.subarray(8);
    bytes.set(message(MESSAGE_INITIATION, INITIATION_LENGTH));
    writeU32(bytes, Initiation.sender, 0xdead_beef);
    const i = decodeInitiation(bytes);
    if (!i.ok) throw new Error(i.error);
    expect(i.value.sender).toBe(0xdead_beef);
    const parts = [i.value.ephemeral, i.value.encryptedStatic, i.value.encryptedTimestamp, i.value.mac1, i.value.mac2];
    expect(parts.map((p) => p.byteOffset - bytes.byteOffset)).toEqual([8, 40, 88, 116, 132]);
    expect(parts.map((p) => p.length)).toEqual([32, 48, 28, 16, 16]);
    for (const p of parts) expect(p.buffer).toBe(backing.buffer);
    bytes[Initiation.ephemeral] = 0x42;
    expect(i.value.ephemeral[0]).toBe(0x42); // a view, not a copy

    const rb = message(MESSAGE_RESPONSE, RESPONSE_LENGTH);
    writeU32(rb, Response.sender, 1);
    writeU32(rb, Response.receiver, 0xffff_ffff);
    const r = decodeResponse(rb);
    if (!r.ok) throw new Error(r.error);
    expect([r.value.sender, r.value.receiver]).toEqual([1, 0xffff_ffff]);
    const rparts = [r.value.ephemeral, r.value.encryptedEmpty, r.value.mac1, r.value.mac2];
    expect(rparts.map((p) => [p.byteOffset, p.length])).toEqual([[12, 32], [44, 16], [60, 16], [76, 16]]);

    const cb = message(MESSAGE_COOKIE_REPLY, COOKIE_REPLY_LENGTH);
    writeU32(cb, CookieReply.receiver, 0x8000_0000);
    const c = decodeCookieReply(cb);
    if (!c.ok) throw new Error(c.error);
    expect(c.value.receiver).toBe(0x8000_0000);
    expect([c.value.nonce.byteOffset, c.value.nonce.length, c.value.encryptedCookie.byteOffset, c.value.encryptedCookie.length]).toEqual([8, 24, 32, 32]);

    const tb = message(MESSAGE_TRANSPORT, 100);
    writeU32(tb, Transport.receiver, 7);
    writeCounter(tb, Transport.counter, 2 ** 40 + 3);
    const t = decodeTransport(tb);
    if (!t.ok) throw new Error(t.error);
    expect([t.value.receiver, t.value.counter, t.value.encrypted.byteOffset, t.value.encrypted.length]).toEqual([7, 2 ** 40 + 3, 16, 84]);
  });

  it('give MAC offsets for the handshake messages', () => {
    expect(macOffsets(MESSAGE_INITIATION)).toMatchObject({ mac1: 116, mac2: 132 });
    expect(macOffsets(MESSAGE_RESPONSE)).toMatchObject({ mac1: 60, mac2: 76 });
  });

  it('writeHeader sets the type and zeroes the reserved bytes', () => {
    const bytes = new Uint8Array(8).fill(0xff);
    writeHeader(bytes, MESSAGE_RESPONSE);
    expect([...bytes]).toEqual([2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
  });

  it('never throw on arbitrary bytes, and agree with classify', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 200 }), fc.constantFrom(0, 1, 2, 3, 4, 5, 255), (bytes, type) => {
        if (bytes.length > 0) bytes[0] = type;
        const kind = classify(bytes);
        for (const [t, decode] of Object.entries(decoders)) {
          const r = decode(bytes);
          if (r.ok) expect(kind).toBe(Number(t));
          else if (kind === Number(t)) expect(r.error).toBe('expired');
        }
      }),
      { numRuns: 2_000 },
    );
  });
});

describe('little-endian integers', () => {
  it('writeU32/readU32 round-trip every 32-bit value at any offset', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff_ffff }), fc.integer({ min: 0, max: 12 }), (value, offset) => {
        const bytes = new Uint8Array(16).fill(0xaa);
        writeU32(bytes, offset, value);
        // Exactly four bytes written, least significant first, and read back unsigned.
        const expected = new Uint8Array(16).fill(0xaa);
        new DataView(expected.buffer).setUint32(offset, value, true);
        return readU32(bytes, offset) === value && bytes.every((x, i) => x === expected[i]);
      }),
      { numRuns: 5_000 },
    );
  });

  it('at the boundaries', () => {
    const bytes = new Uint8Array(4);
    for (const [value, wire] of [
      [0, [0, 0, 0, 0]],
      [1, [1, 0, 0, 0]],
      [0x7fff_ffff, [0xff, 0xff, 0xff, 0x7f]],
      [0x8000_0000, [0, 0, 0, 0x80]],
      [0xffff_ffff, [0xff, 0xff, 0xff, 0xff]],
    ] as const) {
      writeU32(bytes, 0, value);
      expect([...bytes]).toEqual(wire);
      expect(readU32(bytes, 0)).toBe(value); // unsigned, never negative
    }
    // A signed 32-bit value writes the same bytes as its unsigned twin.
    writeU32(bytes, 0, -1);
    expect(readU32(bytes, 0)).toBe(0xffff_ffff);
  });
});

describe('transport counters', () => {
  const le = (value: bigint) => {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setBigUint64(0, value, true);
    return bytes;
  };

  it.each([
    0, 1, 0xffff_fffe, 0xffff_ffff, 2 ** 32, 2 ** 32 + 1, 2 ** 33 - 1, 2 ** 48, 2 ** 53 - 2, 2 ** 53 - 1,
  ])('%i round-trips and matches the 64-bit little-endian encoding', (counter) => {
    const bytes = new Uint8Array(8);
    writeCounter(bytes, 0, counter);
    expect([...bytes]).toEqual([...le(BigInt(counter))]);
    expect(readCounter(bytes, 0)).toBe(counter);
  });

  it('crosses 2^32 into the high word', () => {
    const bytes = new Uint8Array(8);
    writeCounter(bytes, 0, 2 ** 32 - 1);
    expect([...bytes]).toEqual([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    writeCounter(bytes, 0, 2 ** 32);
    expect([...bytes]).toEqual([0, 0, 0, 0, 1, 0, 0, 0]);
  });

  it('are -1 (unrepresentable) from 2^53 up', () => {
    for (const value of [2n ** 53n, 2n ** 53n + 1n, 2n ** 60n, 2n ** 64n - 2n ** 13n - 1n, 2n ** 64n - 1n]) {
      expect(readCounter(le(value), 0)).toBe(-1);
    }
    expect(readCounter(le(2n ** 53n - 1n), 0)).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('read exactly for any 8 bytes', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.integer({ min: 0, max: 8 }), (value, offset) => {
        const bytes = new Uint8Array(16);
        bytes.set(le(value), offset);
        const read = readCounter(bytes, offset);
        if (value >= 2n ** 53n) expect(read).toBe(-1);
        else expect(BigInt(read)).toBe(value);
      }),
      { numRuns: 5_000 },
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (counter) => {
        const bytes = new Uint8Array(8);
        writeCounter(bytes, 0, counter);
        expect(readCounter(bytes, 0)).toBe(counter);
      }),
      { numRuns: 5_000 },
    );
  });

  it('decodeTransport: the largest exact counter decodes, 2^53 is expired', () => {
    const bytes = message(MESSAGE_TRANSPORT, 32);
    writeCounter(bytes, Transport.counter, Number.MAX_SAFE_INTEGER);
    const ok = decodeTransport(bytes);
    expect(ok.ok && ok.value.counter).toBe(Number.MAX_SAFE_INTEGER);
    bytes.set(le(2n ** 53n), Transport.counter);
    expect(decodeTransport(bytes)).toEqual({ ok: false, error: 'expired' });
    bytes.fill(0xff, Transport.counter, Transport.counter + 8);
    expect(decodeTransport(bytes)).toEqual({ ok: false, error: 'expired' });
  });

  it('carry a keypair across 2^32 and stop at the 2^53 cap', () => {
    const b = createBackend('sodium');
    const key = new Uint8Array(32).fill(1);
    const sender = new Keypair({ sendKey: key, receiveKey: new Uint8Array(32), localIndex: 1, remoteIndex: 2, isInitiator: true }, 0);
    const receiver = new Keypair({ sendKey: new Uint8Array(32), receiveKey: key, localIndex: 2, remoteIndex: 1, isInitiator: false }, 0);
    const plain = new Uint8Array(16);
    sender.sendCounter = 2 ** 32 - 1;
    for (const expected of [2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1]) {
      const packet = new Uint8Array(48);
      expect(sender.seal(b, new Uint8Array(16).fill(5), packet, 0)).toBe(48);
      const d = decodeTransport(packet);
      if (!d.ok) throw new Error(d.error);
      expect(d.value.counter).toBe(expected);
      expect(receiver.open(b, d.value.counter, d.value.encrypted, plain, 0)).toBe(16);
      // The counter is the nonce: the same ciphertext under a neighbouring counter fails.
      expect(receiver.open(b, d.value.counter + 1, d.value.encrypted, plain, 0)).toBe(-1);
    }
    // REJECT_AFTER_MESSAGES is 2^53 − 1: the last counter sealed is 2^53 − 2.
    expect(REJECT_AFTER_MESSAGES).toBe(2 ** 53 - 1);
    sender.sendCounter = REJECT_AFTER_MESSAGES - 1;
    const last = new Uint8Array(32);
    expect(sender.seal(b, new Uint8Array(0), last, 0)).toBe(32);
    const d = decodeTransport(last);
    expect(d.ok && d.value.counter).toBe(2 ** 53 - 2);
    if (d.ok) expect(receiver.open(b, d.value.counter, d.value.encrypted, plain, 0)).toBe(0);
    expect(sender.seal(b, new Uint8Array(0), new Uint8Array(32), 0)).toBe(-1);
  });
});
