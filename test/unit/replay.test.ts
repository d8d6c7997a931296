import { describe, expect, it } from 'vitest';
import { REJECT_AFTER_MESSAGES, REPLAY_WINDOW_SIZE } from '../../src/noise/constants.ts';
import { ReplayWindow } from '../../src/noise/replay.ts';

/** The kernel's counter selftest (drivers/net/wireguard/selftest/counter.c), case by case. */
describe('ReplayWindow — kernel selftest cases', () => {
  const LIM = REPLAY_WINDOW_SIZE + 1;
  const R = REJECT_AFTER_MESSAGES;
  const cases: [number, boolean][] = [
    [0, true], [1, true], [1, false], [9, true], [8, true], [7, true], [7, false],
    [LIM, true], [LIM - 1, true], [LIM - 1, false], [LIM - 2, true], [2, true], [2, false],
    [LIM + 16, true], [3, false], [LIM + 16, false], [LIM * 4, true], [LIM * 4 - (LIM - 1), true],
    [10, false], [LIM * 4 - LIM, false], [LIM * 4 - (LIM + 1), false], [LIM * 4 - (LIM - 2), true],
    [LIM * 4 + 1 - LIM, false], [0, false], [R, false], [R - 1, true], [R, false], [R - 1, false],
    [R - 2, true], [R + 1, false], [R + 2, false], [R - 2, false], [R - 3, true], [0, false],
  ];
  it('accepts and rejects exactly as the kernel does, in sequence', () => {
    const w = new ReplayWindow();
    const got = cases.map(([counter]) => w.accept(counter));
    expect(got).toEqual(cases.map(([, want]) => want));
  });

  it('accepts a whole window in order, then 0 once', () => {
    const w = new ReplayWindow();
    for (let i = 1; i <= REPLAY_WINDOW_SIZE; i++) expect(w.accept(i)).toBe(true);
    expect(w.accept(0)).toBe(true);
    expect(w.accept(0)).toBe(false);
  });

  it('rejects 0 once the window has moved one past it', () => {
    const w = new ReplayWindow();
    for (let i = 2; i <= REPLAY_WINDOW_SIZE + 1; i++) expect(w.accept(i)).toBe(true);
    expect(w.accept(1)).toBe(true);
    expect(w.accept(0)).toBe(false);
  });

  it('accepts a whole window in reverse order', () => {
    const w = new ReplayWindow();
    for (let i = REPLAY_WINDOW_SIZE + 1; i-- > 0; ) expect(w.accept(i)).toBe(true);
  });

  it('reverse from one past the window, then 0 is too old', () => {
    const w = new ReplayWindow();
    for (let i = REPLAY_WINDOW_SIZE + 2; i-- > 1; ) expect(w.accept(i)).toBe(true);
    expect(w.accept(0)).toBe(false);
  });

  it('reverse, then the top and 0', () => {
    const w = new ReplayWindow();
    for (let i = REPLAY_WINDOW_SIZE + 1; i-- > 1; ) expect(w.accept(i)).toBe(true);
    expect(w.accept(REPLAY_WINDOW_SIZE + 1)).toBe(true);
    expect(w.accept(0)).toBe(false);
  });

  it('reverse, then 0, then the top', () => {
    const w = new ReplayWindow();
    for (let i = REPLAY_WINDOW_SIZE + 1; i-- > 1; ) expect(w.accept(i)).toBe(true);
    expect(w.accept(0)).toBe(true);
    expect(w.accept(REPLAY_WINDOW_SIZE + 1)).toBe(true);
  });

  it('matches a naive reference on random sequences', () => {
    let seed = 0x9e3779b9;
    const rand = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32);
    for (let round = 0; round < 20; round++) {
      const w = new ReplayWindow();
      const seen = new Set<number>();
      let last = 0;
      for (let i = 0; i < 5_000; i++) {
        const counter = Math.max(0, Math.floor(last + (rand() - 0.7) * 12_000));
        const want = !seen.has(counter) && !(counter < last && last - counter > REPLAY_WINDOW_SIZE);
        expect(w.accept(counter)).toBe(want);
        if (want) {
          seen.add(counter);
          last = Math.max(last, counter);
        }
      }
    }
  });

  it('works above 2^32 where word arithmetic must not wrap', () => {
    const w = new ReplayWindow();
    const base = 2 ** 40 + 5;
    expect(w.accept(base)).toBe(true);
    expect(w.accept(base - 1)).toBe(true);
    expect(w.accept(base)).toBe(false);
    expect(w.accept(base - REPLAY_WINDOW_SIZE - 1)).toBe(false);
    expect(w.accept(base + 2 ** 32)).toBe(true);
    expect(w.accept(base)).toBe(false);
  });
});
