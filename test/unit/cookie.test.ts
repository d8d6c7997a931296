/**
 * MAC1, MAC2 and cookie replies (whitepaper §5.4.4, §5.4.7): MAC1 covers every byte before it;
 * under load a responder answers with a cookie bound to the sender's address, the sender's next
 * message carries MAC2 under that cookie; cookies and the checker's secret live two minutes.
 * All clocks are the `now` parameter.
 */
import { describe, expect, it } from 'vitest';
import { COOKIE_REFRESH_TIME } from '../../src/noise/constants.ts';
import { CookieChecker, CookieGenerator, encodeSource, equalConstantTime } from '../../src/noise/cookie.ts';
import { createBackend } from '../../src/noise/crypto/index.ts';
import { consumeInitiation, createResponse } from '../../src/noise/handshake.ts';
import {
  COOKIE_REPLY_LENGTH,
  decodeCookieReply,
  decodeInitiation,
  Initiation,
  INITIATION_LENGTH,
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  readU32,
  Response,
  RESPONSE_LENGTH,
} from '../../src/noise/messages.ts';
import type { Side } from '../helpers/handshake.ts';
import { initiation, makePair, randomKey } from '../helpers/handshake.ts';

const b = createBackend('sodium');
const NOW = 1_000_000;
const UNIX_MS = 1_780_000_000_000;

const SOURCE = encodeSource(Uint8Array.of(198, 18, 0, 1), 51820);
const OTHER_HOST = encodeSource(Uint8Array.of(198, 18, 0, 2), 51820);
const OTHER_PORT = encodeSource(Uint8Array.of(198, 18, 0, 1), 51821);

/** A deterministic "random" source: distinct bytes on every call. */
function counterRandom(): (out: Uint8Array) => void {
  let n = 0;
  return (out) => {
    n++;
    for (let i = 0; i < out.length; i++) out[i] = (n * 31 + i) & 0xff;
  };
}

function checkerFor(side: Side, random = counterRandom()): CookieChecker {
  return new CookieChecker(b, side.identity.mac1Key, side.identity.cookieKey, random);
}

/** A response from `responder` to a fresh initiation from `initiator`, with MACs. */
function response(initiator: Side, responder: Side, now = NOW): Uint8Array {
  const init = initiation(b, initiator, UNIX_MS, 11, now);
  const d = decodeInitiation(init);
  if (!d.ok) throw new Error(d.error);
  const c = consumeInitiation(b, responder.identity, d.value, () => responder.peer, now);
  if (!c.ok) throw new Error(c.error);
  const msg = new Uint8Array(RESPONSE_LENGTH);
  const r = createResponse(b, responder.peer.keys, responder.peer.handshake, { ephemeralPrivate: randomKey(b), senderIndex: 22 }, msg);
  if (!r.ok) throw new Error(r.error);
  responder.cookies.addMacs(msg, MESSAGE_RESPONSE, now);
  return msg;
}

function reply(checker: CookieChecker, msg: Uint8Array, type: typeof MESSAGE_INITIATION | typeof MESSAGE_RESPONSE, source: Uint8Array, now: number) {
  const out = checker.createReply(msg, type, source, now, new Uint8Array(COOKIE_REPLY_LENGTH)).slice();
  const d = decodeCookieReply(out);
  if (!d.ok) throw new Error(d.error);
  return d.value;
}

const mac2Of = (msg: Uint8Array, type: typeof MESSAGE_INITIATION | typeof MESSAGE_RESPONSE) =>
  type === MESSAGE_INITIATION ? msg.subarray(Initiation.mac2, INITIATION_LENGTH) : msg.subarray(Response.mac2, RESPONSE_LENGTH);

describe('MAC1', () => {
  const cases = [
    { name: 'initiation', type: MESSAGE_INITIATION, mac1: Initiation.mac1, mac2: Initiation.mac2 },
    { name: 'response', type: MESSAGE_RESPONSE, mac1: Response.mac1, mac2: Response.mac2 },
  ] as const;

  it.each(cases)('accepts a valid $name and rejects every single-bit flip of the bytes it covers and of MAC1', ({ type, mac1, mac2 }) => {
    const { a, b: bb } = makePair(b);
    const msg = type === MESSAGE_INITIATION ? initiation(b, a, UNIX_MS) : response(a, bb);
    // The receiver checks with its own key: b receives the initiation, a the response.
    const checker = checkerFor(type === MESSAGE_INITIATION ? bb : a);
    expect(checker.checkMac1(msg, type)).toBe(true);
    let rejected = 0;
    for (let byte = 0; byte < mac2; byte++) {
      for (let bit = 0; bit < 8; bit++) {
        const m = msg.slice();
        m[byte]! ^= 1 << bit;
        expect(checker.checkMac1(m, type), `flip ${byte}.${bit}`).toBe(false);
        rejected++;
      }
    }
    expect(rejected).toBe(mac2 * 8);
    expect(mac2 - mac1).toBe(16);
    // MAC2 is not covered by MAC1.
    for (let byte = mac2; byte < msg.length; byte++) {
      const m = msg.slice();
      m[byte]! ^= 0x80;
      expect(checker.checkMac1(m, type)).toBe(true);
    }
    expect(checker.checkMac1(msg, type)).toBe(true);
  });

  it('is keyed to the receiver: another identity rejects it', () => {
    const { a, b: bb } = makePair(b);
    const { b: stranger } = makePair(b);
    const msg = initiation(b, a, UNIX_MS);
    expect(checkerFor(bb).checkMac1(msg, MESSAGE_INITIATION)).toBe(true);
    expect(checkerFor(stranger).checkMac1(msg, MESSAGE_INITIATION)).toBe(false);
    expect(checkerFor(a).checkMac1(msg, MESSAGE_INITIATION)).toBe(false);
  });

  it('is written as zero MAC2 while no cookie is held', () => {
    const { a } = makePair(b);
    const msg = initiation(b, a, UNIX_MS);
    expect(mac2Of(msg, MESSAGE_INITIATION).every((x) => x === 0)).toBe(true);
    expect(a.cookies.hasFreshCookie(NOW)).toBe(false);
  });
});

describe('MAC2 under load', () => {
  it('a full round: cookie reply, then MAC2 that verifies for the source only', () => {
    const { a, b: bb } = makePair(b);
    const checker = checkerFor(bb);
    const first = initiation(b, a, UNIX_MS, 0x0102_0304, NOW);
    expect(checker.checkMac1(first, MESSAGE_INITIATION)).toBe(true);
    expect(checker.checkMac2(first, MESSAGE_INITIATION, SOURCE, NOW)).toBe(false);

    // The responder is under load: it answers with a cookie reply instead of a response.
    const cookie = reply(checker, first, MESSAGE_INITIATION, SOURCE, NOW);
    expect(cookie.bytes[0]).toBe(MESSAGE_COOKIE_REPLY);
    expect(cookie.receiver).toBe(0x0102_0304); // addressed to the initiation's sender index
    expect(readU32(cookie.bytes, 4)).toBe(readU32(first, Initiation.sender));

    expect(a.cookies.consumeReply(cookie, NOW + 10)).toEqual({ ok: true, value: undefined });
    expect(a.cookies.hasFreshCookie(NOW + 10)).toBe(true);

    // The retry carries MAC2 under the cookie; the checker accepts it from the same address only.
    const retry = initiation(b, a, UNIX_MS + 1, 0x0102_0305, NOW + 20);
    expect(mac2Of(retry, MESSAGE_INITIATION).some((x) => x !== 0)).toBe(true);
    expect(checker.checkMac1(retry, MESSAGE_INITIATION)).toBe(true);
    expect(checker.checkMac2(retry, MESSAGE_INITIATION, SOURCE, NOW + 20)).toBe(true);
    expect(checker.checkMac2(retry, MESSAGE_INITIATION, OTHER_HOST, NOW + 20)).toBe(false);
    expect(checker.checkMac2(retry, MESSAGE_INITIATION, OTHER_PORT, NOW + 20)).toBe(false);
    // MAC2 covers MAC1 and everything before it.
    for (const at of [0, Initiation.sender, Initiation.ephemeral + 5, Initiation.mac1, Initiation.mac2 - 1, Initiation.mac2]) {
      const m = retry.slice();
      m[at]! ^= 1;
      expect(checker.checkMac2(m, MESSAGE_INITIATION, SOURCE, NOW + 20), `byte ${at}`).toBe(false);
    }
    // The cookie is bound to the source: a MAC2 made for another source does not verify for ours.
    const elsewhere = reply(checker, retry, MESSAGE_INITIATION, OTHER_HOST, NOW + 30);
    expect(a.cookies.consumeReply(elsewhere, NOW + 30).ok).toBe(true);
    const third = initiation(b, a, UNIX_MS + 2, 9, NOW + 40);
    expect(checker.checkMac2(third, MESSAGE_INITIATION, OTHER_HOST, NOW + 40)).toBe(true);
    expect(checker.checkMac2(third, MESSAGE_INITIATION, SOURCE, NOW + 40)).toBe(false);
  });

  it('works the same for responses (an initiator under load answers a response)', () => {
    const { a, b: bb } = makePair(b);
    const initiatorChecker = checkerFor(a);
    const first = response(a, bb);
    expect(initiatorChecker.checkMac1(first, MESSAGE_RESPONSE)).toBe(true);
    const cookie = reply(initiatorChecker, first, MESSAGE_RESPONSE, SOURCE, NOW);
    expect(cookie.receiver).toBe(22);
    expect(bb.cookies.consumeReply(cookie, NOW).ok).toBe(true);
    const again = first.slice();
    bb.cookies.addMacs(again, MESSAGE_RESPONSE, NOW + 1);
    expect(equalConstantTime(again.subarray(0, Response.mac2), first.subarray(0, Response.mac2))).toBe(true);
    expect(initiatorChecker.checkMac2(again, MESSAGE_RESPONSE, SOURCE, NOW + 1)).toBe(true);
    expect(initiatorChecker.checkMac2(again, MESSAGE_RESPONSE, OTHER_PORT, NOW + 1)).toBe(false);
  });

  it('rejects a cookie reply for a message we did not send (wrong MAC1 as AD)', () => {
    const { a, b: bb } = makePair(b);
    const checker = checkerFor(bb);
    const sent = initiation(b, a, UNIX_MS, 1, NOW);
    const notSent = sent.slice();
    notSent[Initiation.mac1]! ^= 1; // as if someone else's message with another MAC1
    const forged = reply(checker, notSent, MESSAGE_INITIATION, SOURCE, NOW);
    expect(a.cookies.consumeReply(forged, NOW)).toEqual({ ok: false, error: 'decrypt' });
    expect(a.cookies.hasFreshCookie(NOW)).toBe(false);

    // A reply to an earlier message no longer fits once a newer one went out.
    const stale = reply(checker, sent, MESSAGE_INITIATION, SOURCE, NOW);
    initiation(b, a, UNIX_MS + 1, 2, NOW + 1);
    expect(a.cookies.consumeReply(stale, NOW + 1)).toEqual({ ok: false, error: 'decrypt' });
    expect(a.cookies.hasFreshCookie(NOW + 1)).toBe(false);

    // A reply sealed by another responder (another cookie key) does not open.
    const { b: stranger } = makePair(b);
    const latest = initiation(b, a, UNIX_MS + 2, 3, NOW + 2);
    const strangers = reply(checkerFor(stranger), latest, MESSAGE_INITIATION, SOURCE, NOW + 2);
    expect(a.cookies.consumeReply(strangers, NOW + 2)).toEqual({ ok: false, error: 'decrypt' });

    // The genuine reply still works after all those rejections, and only once.
    const genuine = reply(checker, latest, MESSAGE_INITIATION, SOURCE, NOW + 2);
    expect(a.cookies.consumeReply(genuine, NOW + 2).ok).toBe(true);
    expect(a.cookies.consumeReply(genuine, NOW + 3)).toEqual({ ok: false, error: 'state' });
  });

  it('rejects a cookie reply before anything was sent', () => {
    const { a, b: bb } = makePair(b);
    const fresh = new CookieGenerator(b, a.peer.keys.mac1Key, a.peer.keys.cookieKey);
    const msg = initiation(b, a, UNIX_MS);
    expect(fresh.consumeReply(reply(checkerFor(bb), msg, MESSAGE_INITIATION, SOURCE, NOW), NOW)).toEqual({ ok: false, error: 'state' });
  });

  it('a cookie expires COOKIE_REFRESH_TIME after it arrived', () => {
    const { a, b: bb } = makePair(b);
    const checker = checkerFor(bb);
    const msg = initiation(b, a, UNIX_MS, 1, NOW);
    expect(a.cookies.consumeReply(reply(checker, msg, MESSAGE_INITIATION, SOURCE, NOW), NOW).ok).toBe(true);
    const at = (now: number) => {
      const m = msg.slice();
      a.cookies.addMacs(m, MESSAGE_INITIATION, now);
      return m;
    };
    expect(COOKIE_REFRESH_TIME).toBe(120_000);
    expect(a.cookies.hasFreshCookie(NOW + COOKIE_REFRESH_TIME - 1)).toBe(true);
    const fresh = at(NOW + COOKIE_REFRESH_TIME - 1);
    expect(mac2Of(fresh, MESSAGE_INITIATION).some((x) => x !== 0)).toBe(true);
    expect(checker.checkMac2(fresh, MESSAGE_INITIATION, SOURCE, NOW + COOKIE_REFRESH_TIME - 1)).toBe(true);
    expect(a.cookies.hasFreshCookie(NOW + COOKIE_REFRESH_TIME)).toBe(false);
    expect(mac2Of(at(NOW + COOKIE_REFRESH_TIME), MESSAGE_INITIATION).every((x) => x === 0)).toBe(true);
  });

  it("the checker's secret lasts COOKIE_REFRESH_TIME; after it rotates an old MAC2 stops verifying", () => {
    const { a, b: bb } = makePair(b);
    const checker = checkerFor(bb);
    const first = initiation(b, a, UNIX_MS, 1, NOW);
    expect(a.cookies.consumeReply(reply(checker, first, MESSAGE_INITIATION, SOURCE, NOW), NOW).ok).toBe(true);
    const withMac2 = initiation(b, a, UNIX_MS + 1, 2, NOW + 1);
    expect(checker.checkMac2(withMac2, MESSAGE_INITIATION, SOURCE, NOW + 1)).toBe(true);
    expect(checker.checkMac2(withMac2, MESSAGE_INITIATION, SOURCE, NOW + COOKIE_REFRESH_TIME)).toBe(true);
    // Past its age the secret is no longer trusted, even before it is replaced.
    expect(checker.checkMac2(withMac2, MESSAGE_INITIATION, SOURCE, NOW + COOKIE_REFRESH_TIME + 1)).toBe(false);
    // A new reply replaces the secret; the old MAC2 no longer verifies, the new cookie's does.
    const later = NOW + COOKIE_REFRESH_TIME + 1;
    const next = reply(checker, withMac2, MESSAGE_INITIATION, SOURCE, later);
    expect(checker.checkMac2(withMac2, MESSAGE_INITIATION, SOURCE, later)).toBe(false);
    expect(a.cookies.consumeReply(next, later).ok).toBe(true);
    const renewed = initiation(b, a, UNIX_MS + 2, 3, later + 1);
    expect(checker.checkMac2(renewed, MESSAGE_INITIATION, SOURCE, later + 1)).toBe(true);
  });

  it('replies made within the secret lifetime share the secret (same cookie for the same source)', () => {
    const { a, b: bb } = makePair(b);
    const checker = checkerFor(bb);
    const msg = initiation(b, a, UNIX_MS, 1, NOW);
    const one = reply(checker, msg, MESSAGE_INITIATION, SOURCE, NOW);
    const two = reply(checker, msg, MESSAGE_INITIATION, SOURCE, NOW + COOKIE_REFRESH_TIME);
    // Fresh nonces each time: the ciphertexts differ, the cookie does not.
    expect(equalConstantTime(one.nonce, two.nonce)).toBe(false);
    expect(a.cookies.consumeReply(one, NOW).ok).toBe(true);
    const m1 = msg.slice();
    a.cookies.addMacs(m1, MESSAGE_INITIATION, NOW);
    expect(a.cookies.consumeReply(two, NOW).ok).toBe(true);
    const m2 = msg.slice();
    a.cookies.addMacs(m2, MESSAGE_INITIATION, NOW);
    expect(equalConstantTime(m1, m2)).toBe(true);
  });
});

describe('encodeSource', () => {
  it('IPv4: four address bytes, then the port little-endian', () => {
    expect([...encodeSource(Uint8Array.of(198, 18, 0, 1), 51820)]).toEqual([198, 18, 0, 1, 0x6c, 0xca]);
    expect([...encodeSource(Uint8Array.of(0, 0, 0, 0), 0)]).toEqual([0, 0, 0, 0, 0, 0]);
    expect([...encodeSource(Uint8Array.of(255, 255, 255, 255), 65535)]).toEqual([255, 255, 255, 255, 0xff, 0xff]);
  });

  it('IPv6: sixteen address bytes, then the port little-endian', () => {
    const fd00 = Uint8Array.of(0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1);
    const encoded = encodeSource(fd00, 1);
    expect(encoded.length).toBe(18);
    expect([...encoded]).toEqual([...fd00, 1, 0]);
  });

  it('writes into a caller buffer and returns just the encoding', () => {
    const out = new Uint8Array(18).fill(0xee);
    const v4 = encodeSource(Uint8Array.of(10, 0, 0, 1), 0x1234, out);
    expect([...v4]).toEqual([10, 0, 0, 1, 0x34, 0x12]);
    expect(v4.buffer).toBe(out.buffer);
  });

  it('different addresses, families or ports give different cookies', () => {
    const { a, b: bb } = makePair(b);
    const checker = checkerFor(bb);
    const msg = initiation(b, a, UNIX_MS, 1, NOW);
    const v4mapped = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 1);
    const sources = [SOURCE, OTHER_HOST, OTHER_PORT, encodeSource(v4mapped, 51820)];
    expect(a.cookies.consumeReply(reply(checker, msg, MESSAGE_INITIATION, SOURCE, NOW), NOW).ok).toBe(true);
    const signed = msg.slice();
    a.cookies.addMacs(signed, MESSAGE_INITIATION, NOW);
    expect(sources.map((s) => checker.checkMac2(signed, MESSAGE_INITIATION, s, NOW))).toEqual([true, false, false, false]);
  });
});
