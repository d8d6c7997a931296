import { describe, expect, it } from 'vitest';
import {
  KEEPALIVE_TIMEOUT,
  MAX_TIMER_HANDSHAKES,
  REKEY_ATTEMPT_TIME,
  REKEY_TIMEOUT,
  ZERO_KEYS_AFTER,
} from '../../src/noise/constants.ts';
import { Action, createTimerState, expire, nextDeadline, onEvent, setPersistentKeepalive } from '../../src/noise/timers.ts';

describe('timers (whitepaper §6)', () => {
  it('a wanted handshake sends at most one initiation per REKEY_TIMEOUT', () => {
    const s = createTimerState();
    expect(onEvent(s, 'want-handshake', 0)).toBe(Action.SendInitiation);
    onEvent(s, 'handshake-initiated', 0, 100);
    expect(onEvent(s, 'want-handshake', 1_000)).toBe(Action.None);
    expect(onEvent(s, 'want-handshake', REKEY_TIMEOUT - 1)).toBe(Action.None);
    expect(onEvent(s, 'want-handshake', REKEY_TIMEOUT)).toBe(Action.SendInitiation);
  });

  it('retransmits every REKEY_TIMEOUT + jitter and gives up after REKEY_ATTEMPT_TIME', () => {
    const s = createTimerState();
    let now = 0;
    let initiations = 0;
    onEvent(s, 'want-handshake', now);
    onEvent(s, 'handshake-initiated', now, 0);
    initiations++;
    let gaveUp = false;
    while (now < 200_000) {
      const deadline = nextDeadline(s);
      if (deadline === Infinity) break;
      now = deadline;
      const actions = expire(s, now, 250);
      if (actions & Action.SendInitiation) {
        initiations++;
        expect(actions & Action.ClearEndpointSource).toBeTruthy();
        onEvent(s, 'handshake-initiated', now, 250);
      }
      if (actions & Action.ClearStaged) {
        gaveUp = true;
      }
      if (actions & Action.ZeroKeys) break;
    }
    expect(gaveUp).toBe(true);
    // One first attempt, then retries until the count exceeds MAX_TIMER_HANDSHAKES.
    expect(initiations).toBe(MAX_TIMER_HANDSHAKES + 1 + 1);
    expect(MAX_TIMER_HANDSHAKES).toBe(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT);
    // Keys are zeroed 3 × REJECT_AFTER_TIME after giving up.
    expect(now).toBeGreaterThanOrEqual(ZERO_KEYS_AFTER);
  });

  it('jitter delays the retransmission and never fires early', () => {
    const s = createTimerState();
    onEvent(s, 'handshake-initiated', 1_000, 333);
    expect(nextDeadline(s)).toBe(1_000 + REKEY_TIMEOUT + 333);
    expect(expire(s, 1_000 + REKEY_TIMEOUT + 332)).toBe(Action.None);
  });

  it('completing the handshake stops retransmission', () => {
    const s = createTimerState();
    onEvent(s, 'handshake-initiated', 0);
    onEvent(s, 'handshake-complete', 100);
    onEvent(s, 'session-derived', 100);
    expect(nextDeadline(s)).toBe(100 + ZERO_KEYS_AFTER);
  });

  it('sends a keepalive KEEPALIVE_TIMEOUT after receiving data with nothing sent back', () => {
    const s = createTimerState();
    onEvent(s, 'data-received', 0);
    expect(nextDeadline(s)).toBe(KEEPALIVE_TIMEOUT);
    expect(expire(s, KEEPALIVE_TIMEOUT)).toBe(Action.SendKeepalive);
  });

  it('an authenticated packet sent in time cancels the keepalive', () => {
    const s = createTimerState();
    onEvent(s, 'data-received', 0);
    onEvent(s, 'authenticated-sent', 5_000);
    expect(expire(s, KEEPALIVE_TIMEOUT)).toBe(Action.None);
  });

  it('more data during the keepalive wait re-arms it once after firing', () => {
    const s = createTimerState();
    onEvent(s, 'data-received', 0);
    onEvent(s, 'data-received', 1_000);
    expect(expire(s, KEEPALIVE_TIMEOUT)).toBe(Action.SendKeepalive);
    expect(nextDeadline(s)).toBe(2 * KEEPALIVE_TIMEOUT);
  });

  it('initiates a new handshake when sent data gets no answer for KEEPALIVE + REKEY_TIMEOUT', () => {
    const s = createTimerState();
    onEvent(s, 'data-sent', 0, 10);
    const due = KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + 10;
    expect(nextDeadline(s)).toBe(due);
    const actions = expire(s, due);
    expect(actions & Action.SendInitiation).toBeTruthy();
    expect(actions & Action.ClearEndpointSource).toBeTruthy();
  });

  it('any authenticated packet received cancels that new-handshake timer', () => {
    const s = createTimerState();
    onEvent(s, 'data-sent', 0);
    onEvent(s, 'authenticated-received', 1);
    expect(expire(s, 60_000)).toBe(Action.None);
  });

  it('persistent keepalive: immediate when enabled, then every interval after traffic', () => {
    const s = createTimerState();
    expect(setPersistentKeepalive(s, 25_000, 0)).toBe(Action.SendKeepalive);
    onEvent(s, 'authenticated-traversal', 1_000);
    expect(nextDeadline(s)).toBe(26_000);
    expect(expire(s, 26_000)).toBe(Action.SendKeepalive);
    expect(setPersistentKeepalive(s, 0, 30_000)).toBe(Action.None);
    onEvent(s, 'authenticated-traversal', 31_000);
    expect(nextDeadline(s)).toBe(Infinity);
  });

  it('stop cancels every deadline', () => {
    const s = createTimerState(25_000);
    onEvent(s, 'data-sent', 0);
    onEvent(s, 'data-received', 0);
    onEvent(s, 'handshake-initiated', 0);
    onEvent(s, 'session-derived', 0);
    onEvent(s, 'authenticated-traversal', 0);
    onEvent(s, 'stop', 1);
    expect(nextDeadline(s)).toBe(Infinity);
  });

  it('reports Rearm exactly when an event moved a deadline earlier (the data path re-arms only then)', () => {
    const s = createTimerState();
    // First data sent arms new-handshake; the next ones leave it (and the real timer) alone.
    expect(onEvent(s, 'data-sent', 0, 7)).toBe(Action.Rearm);
    expect(nextDeadline(s)).toBe(KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + 7);
    expect(onEvent(s, 'data-sent', 10, 7)).toBe(Action.None);
    expect(onEvent(s, 'authenticated-sent', 10)).toBe(Action.None);
    // First data received arms the keepalive; the next only asks for another one.
    expect(onEvent(s, 'data-received', 20)).toBe(Action.Rearm);
    expect(onEvent(s, 'data-received', 30)).toBe(Action.None);
    expect(onEvent(s, 'authenticated-traversal', 30)).toBe(Action.None);
    // Session keys: the first derivation arms zeroing; a later one moves it later, not earlier.
    expect(onEvent(s, 'session-derived', 40)).toBe(Action.Rearm);
    expect(onEvent(s, 'session-derived', 50)).toBe(Action.None);
    expect(onEvent(s, 'handshake-initiated', 60, 0)).toBe(Action.Rearm);
    // Persistent keepalive: enabling arms it; traffic pushes it later only.
    const p = createTimerState(25_000);
    expect(onEvent(p, 'authenticated-traversal', 0)).toBe(Action.Rearm);
    expect(onEvent(p, 'authenticated-traversal', 5)).toBe(Action.None);
    expect(nextDeadline(p)).toBe(25_005);
  });
});
