/**
 * The bounded, seeded fuzz run for CI: every target in test/fuzz/targets.ts gets 20,000 inputs
 * (fewer for two slow ones, see INPUTS; FUZZ_INPUTS=<n> overrides) from one fixed seed, so a
 * failure here is a failure on every machine. FUZZ_SEED=<n> (decimal or 0x hex) runs another
 * seed; the long run is `npm run fuzz` (test/fuzz/runner.ts). A failure prints the property,
 * the input, the crash file it was written to and the commands that replay it.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseSeed, type Rng } from '../helpers/mutate.ts';
import { formatReport, hexSeed, runTarget } from './runner.ts';
import { check, type FuzzTarget } from './target.ts';
import { TARGETS } from './targets.ts';

/** The CI seed; change it only together with RELIABILITY.md's numbers. */
export const CI_SEED = 0x5eed_f022;
const SEED = parseSeed(process.env.FUZZ_SEED) ?? CI_SEED;
const OVERRIDE = process.env.FUZZ_INPUTS ? Number(process.env.FUZZ_INPUTS) : undefined;
/**
 * Inputs per target. Two targets get fewer to keep the whole file under a minute on the 2-core
 * CI machine: the UAPI server costs a unix-socket connection per input (~1 ms), and a peers file
 * goes through the YAML parser (~1.5 ms for an accepted one, parsed twice). `npm run fuzz` runs
 * them at length.
 */
const INPUTS: Record<string, number> = { 'uapi-server': 10_000, 'peers-file': 5_000 };
const DEFAULT_INPUTS = 20_000;

describe(`fuzz (seed ${hexSeed(SEED)})`, () => {
  for (const [name, factory] of Object.entries(TARGETS)) {
    const inputs = OVERRIDE ?? INPUTS[name] ?? DEFAULT_INPUTS;
    it(`${name}: ${inputs} seeded inputs keep every property`, async () => {
      const report = await runTarget(factory, { inputs, seed: SEED, log: (line) => console.log(line) });
      expect(report.failure, formatReport(report)).toBeUndefined();
    }, 180_000);
  }
});

/** A toy target for the runner's own tests: bytes in, a fault injected on demand. */
function toyTarget(fault: 'violation' | 'throw' | 'leak'): FuzzTarget<Uint8Array> {
  const kept: Uint8Array[] = [];
  return {
    name: `toy-${fault}`,
    description: 'runner self-test',
    setup: () => {},
    seeds: () => [Uint8Array.of(1, 2, 3)],
    generate: (rng: Rng) => rng.bytes(rng.below(8)),
    mutate: (rng: Rng, input: Uint8Array) => Uint8Array.from(input, (b) => b ^ rng.below(256)),
    run: (input: Uint8Array) => {
      if (fault === 'leak') kept.push(new Uint8Array(256 * 1024));
      else if (input[0] === 0x42) {
        if (fault === 'violation') check(false, 'first byte 0x42');
        else throw new TypeError('boom');
      }
    },
    encode: (input: Uint8Array) => input,
    decode: (bytes: Uint8Array) => bytes,
    describe: (input: Uint8Array) => Buffer.from(input).toString('hex'),
    teardown: () => {},
  };
}

describe('fuzz runner', () => {
  it('stops at a violated property or an escaping exception, writes the input, and says how to replay it', async () => {
    for (const fault of ['violation', 'throw'] as const) {
      const dir = mkdtempSync(join(tmpdir(), 'wgts-fuzz-runner-'));
      try {
        const report = await runTarget(() => toyTarget(fault) as FuzzTarget<unknown>, { inputs: 100_000, seed: 1, crashDir: dir, log: () => {} });
        expect(report.failure?.message).toMatch(fault === 'violation' ? /FuzzViolation: first byte 0x42/ : /TypeError: boom/);
        expect(report.inputs).toBeLessThan(100_000);
        expect(readdirSync(dir)).toEqual([`${report.failure!.crashFile!.split('/').pop()}`]);
        expect(report.failure!.crashFile).toMatch(new RegExp(`toy-${fault}-[0-9a-f]{12}\\.bin$`));
        expect(report.failure!.replay).toContain('--replay');
        expect(report.failure!.rerun).toBe(`node test/fuzz/runner.ts --target toy-${fault} --seed 0x1 --inputs ${report.inputs}`);
        expect(report.failure!.reproducesAlone).toBe(true);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });

  it('fails a target whose memory keeps growing', async () => {
    const report = await runTarget(() => toyTarget('leak') as FuzzTarget<unknown>, { inputs: 2_000, seed: 1, memEvery: 100, maxGrowthMb: 32, log: () => {} });
    expect(report.failure?.origin).toBe('memory');
    expect(report.failure?.message).toMatch(/memory grew/);
  });
});
