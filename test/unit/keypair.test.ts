import { describe, expect, it } from 'vitest';
import { createBackend } from '../../src/noise/crypto/index.ts';
import { REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME, KEEPALIVE_TIMEOUT, REKEY_TIMEOUT } from '../../src/noise/constants.ts';
import { Keypair, Keypairs, paddedLength } from '../../src/noise/keypair.ts';
import { decodeTransport } from '../../src/noise/messages.ts';
import { handshake, makePair } from '../helpers/handshake.ts';

const b = createBackend('sodium');

function session(isInitiator: boolean, index: number, now = 0): Keypair {
  return new Keypair({ sendKey: new Uint8Array(32).fill(index), receiveKey: new Uint8Array(32).fill(index), localIndex: index, remoteIndex: index + 100, isInitiator }, now);
}

describe('Keypair', () => {
  it('pads to multiples of 16, never beyond the MTU', () => {
    expect(paddedLength(0)).toBe(0);
    expect(paddedLength(1)).toBe(16);
    expect(paddedLength(84)).toBe(96);
    expect(paddedLength(1419, 1420)).toBe(1420);
    expect(paddedLength(1420, 1420)).toBe(1420);
    expect(paddedLength(1500, 1420)).toBe(1500);
  });

  it('seals in place with increasing counters; reordering within the window is accepted, duplicates are not', () => {
    const { a, b: bb } = makePair(b);
    const { ka, kb } = handshake(b, a, bb);
    const packets: Uint8Array[] = [];
    for (let i = 0; i < 5; i++) {
      const buf = new Uint8Array(16 + 32 + 16);
      buf.fill(i, 16, 48);
      const n = ka.seal(b, buf.subarray(16, 48), buf, 0);
      expect(n).toBe(64);
      packets.push(buf);
    }
    const plain = new Uint8Array(64);
    for (const i of [4, 0, 2, 1, 3]) {
      const d = decodeTransport(packets[i]!);
      if (!d.ok) throw new Error(d.error);
      expect(d.value.counter).toBe(i);
      expect(kb.open(b, d.value.counter, d.value.encrypted, plain, 0)).toBe(32);
      expect(plain[0]).toBe(i);
    }
    const again = decodeTransport(packets[2]!);
    if (!again.ok) throw new Error();
    expect(kb.open(b, again.value.counter, again.value.encrypted, plain, 0)).toBe(-2);
  });

  it('a forged packet does not move the replay window', () => {
    const { a, b: bb } = makePair(b);
    const { ka, kb } = handshake(b, a, bb);
    const buf = new Uint8Array(48);
    ka.seal(b, new Uint8Array(16), buf, 0);
    const plain = new Uint8Array(32);
    // Forged: counter far ahead, garbage tag.
    expect(kb.open(b, 1_000_000, buf.subarray(16), plain, 0)).toBe(-1);
    expect(kb.open(b, 0, buf.subarray(16), plain, 0)).toBe(16);
  });

  it('expires at REJECT_AFTER_TIME for both directions', () => {
    const { a, b: bb } = makePair(b);
    const { ka, kb } = handshake(b, a, bb, { now: 0 });
    const buf = new Uint8Array(48);
    expect(ka.seal(b, new Uint8Array(16), buf, REJECT_AFTER_TIME)).toBe(-1);
    expect(ka.seal(b, new Uint8Array(16), buf, REJECT_AFTER_TIME - 1)).toBe(48);
    expect(kb.open(b, 0, buf.subarray(16), new Uint8Array(32), REJECT_AFTER_TIME)).toBe(-3);
  });

  it('asks for a rekey after REKEY_AFTER_TIME (initiator) or REKEY_AFTER_MESSAGES (either)', () => {
    const i = session(true, 1);
    const r = session(false, 2);
    expect(i.wantsRekeyOnSend(REKEY_AFTER_TIME - 1)).toBe(false);
    expect(i.wantsRekeyOnSend(REKEY_AFTER_TIME)).toBe(true);
    expect(r.wantsRekeyOnSend(REKEY_AFTER_TIME)).toBe(false);
    r.sendCounter = REKEY_AFTER_MESSAGES * 2;
    expect(r.wantsRekeyOnSend(0)).toBe(true);
    expect(i.wantsRekeyOnReceive(REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT)).toBe(true);
    expect(r.wantsRekeyOnReceive(REJECT_AFTER_TIME)).toBe(false);
  });
});

describe('Keypairs rotation', () => {
  it('initiator: new becomes current, old current becomes previous, older is retired', () => {
    const retired: number[] = [];
    const kps = new Keypairs((kp) => retired.push(kp.localIndex));
    kps.install(session(true, 1));
    kps.install(session(true, 2));
    kps.install(session(true, 3));
    expect(kps.current?.localIndex).toBe(3);
    expect(kps.previous?.localIndex).toBe(2);
    expect(retired).toEqual([1]);
  });

  it('responder: held as next until the first packet under it arrives', () => {
    const retired: number[] = [];
    const kps = new Keypairs((kp) => retired.push(kp.localIndex));
    kps.install(session(true, 1));
    const next = session(false, 2);
    kps.install(next);
    expect(kps.current?.localIndex).toBe(1);
    expect(kps.next).toBe(next);
    expect(kps.byIndex(2)).toBe(next);
    expect(kps.receivedWith(kps.current!)).toBe(false);
    expect(kps.receivedWith(next)).toBe(true);
    expect(kps.current).toBe(next);
    expect(kps.previous?.localIndex).toBe(1);
    expect(kps.next).toBeUndefined();
    kps.clear();
    expect(retired.sort()).toEqual([1, 2]);
    expect(kps.byIndex(2)).toBeUndefined();
  });

  it('an initiator handshake finishing while a next is pending promotes it to previous', () => {
    const retired: number[] = [];
    const kps = new Keypairs((kp) => retired.push(kp.localIndex));
    kps.install(session(true, 1));
    kps.install(session(false, 2));
    kps.install(session(true, 3));
    expect(kps.current?.localIndex).toBe(3);
    expect(kps.previous?.localIndex).toBe(2);
    expect(retired).toEqual([1]);
  });
});
