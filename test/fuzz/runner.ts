/**
 * The fuzz runner: for each target, a seeded stream of inputs — the target's seeds as they are,
 * then half generated from the target's grammar and half mutants of seeds and of earlier
 * generated inputs — fed to target.run(), with the target's deeper check() every few thousand
 * inputs and at the end.
 *
 * Memory: every K inputs (max(2,500, inputs/25)) the runner collects garbage and samples heapUsed + arrayBuffers. A run
 * fails when the sample rises more than --max-growth-mb above the first one, or when it keeps
 * rising (each quarter of the run entirely above the previous one, by more than 4 MB in all).
 *
 * A failure (a property violated, an exception escaping, an uncaught exception or unhandled
 * rejection while the target ran) stops that target. The failing input is written to
 * test/fuzz/crashes/<target>-<hash>.bin and the runner prints how to replay it, alone or with
 * the whole seeded run up to it, and whether it reproduces alone in a fresh target.
 *
 *   node test/fuzz/runner.ts [--inputs N | --per-target N] [--seed N] [--target a,b] [--check-every N] [--json F]
 *   node test/fuzz/runner.ts --replay test/fuzz/crashes/<target>-<hash>.bin
 *   node test/fuzz/runner.ts --list
 *
 * --inputs is the total, split evenly across the selected targets (default 100,000);
 * --per-target gives each target that many instead. The seed is --seed, else FUZZ_SEED (decimal
 * or 0x hex), else a random one, printed either way; each target derives its own stream from it.
 */
import { createHash, randomInt } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import { parseSeed, Rng } from '../helpers/mutate.ts';
import type { FuzzTarget, TargetFactory } from './target.ts';
import { TARGETS } from './targets.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
export const CRASH_DIR = join(HERE, 'crashes');
const REPO = join(HERE, '..', '..');
const MB = 1024 * 1024;

export interface RunOptions {
  /** Inputs for this target, seeds included. */
  readonly inputs: number;
  readonly seed: number;
  /** Run target.check() every this many inputs (and at the end). Default 2,000. */
  readonly checkEvery?: number;
  /** Sample memory every this many inputs. Default max(2,500, inputs / 25). */
  readonly memEvery?: number;
  /** Fail when memory rises this much above the first sample. Default 64 MB. */
  readonly maxGrowthMb?: number;
  /** Share of non-seed inputs that are mutants (the rest are generated). Default 0.5. */
  readonly mutateShare?: number;
  /** Where failing inputs go; default test/fuzz/crashes. */
  readonly crashDir?: string;
  /** Progress and result lines; default stdout. */
  readonly log?: (line: string) => void;
  /** Progress line at most this often (ms); default 15,000. */
  readonly progressEveryMs?: number;
}

export interface Failure {
  readonly index: number;
  readonly origin: Origin;
  readonly message: string;
  readonly stack: string | undefined;
  readonly input: string | undefined;
  readonly crashFile: string | undefined;
  readonly replay: string | undefined;
  readonly rerun: string;
  readonly reproducesAlone: boolean | undefined;
}

export interface TargetReport {
  readonly target: string;
  readonly seed: string;
  readonly inputs: number;
  readonly seeds: number;
  readonly generated: number;
  readonly mutated: number;
  readonly checks: number;
  readonly seconds: number;
  readonly inputsPerSecond: number;
  readonly memory: {
    readonly samples: number;
    readonly firstMb: number;
    readonly minMb: number;
    readonly maxMb: number;
    readonly lastMb: number;
    readonly rssPeakMb: number;
  };
  readonly stats: Record<string, number>;
  readonly failure: Failure | undefined;
}

type Origin = 'seed' | 'generated' | 'mutated' | 'check' | 'memory' | 'setup' | 'teardown';

const gc: (() => void) | undefined = (() => {
  try {
    v8.setFlagsFromString('--expose-gc');
    return vm.runInNewContext('gc') as () => void;
  } catch {
    return undefined;
  }
})();

function memorySample(): number {
  gc?.();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/** FNV-1a: a stable per-target offset of the run seed. */
function nameHash(name: string): number {
  let h = 0x811c_9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x0100_0193);
  return h >>> 0;
}

export function targetSeed(seed: number, name: string): number {
  return (seed ^ nameHash(name)) >>> 0;
}

export function hexSeed(seed: number): string {
  return `0x${(seed >>> 0).toString(16)}`;
}

const mb = (n: number): number => Math.round((n / MB) * 10) / 10;

function errorText(err: unknown): { message: string; stack: string | undefined } {
  if (err instanceof Error) return { message: `${err.name}: ${err.message}`, stack: err.stack };
  return { message: String(err), stack: undefined };
}

/** Collects exceptions nothing caught while a target runs (socket callbacks, timers, promises). */
class EscapeTrap {
  readonly escaped: unknown[] = [];
  private readonly onError = (err: unknown): void => {
    this.escaped.push(err);
  };
  install(): void {
    process.on('uncaughtException', this.onError);
    process.on('unhandledRejection', this.onError);
  }
  uninstall(): void {
    process.off('uncaughtException', this.onError);
    process.off('unhandledRejection', this.onError);
  }
}

export async function runTarget(factory: TargetFactory, options: RunOptions): Promise<TargetReport> {
  const log = options.log ?? ((line: string) => process.stdout.write(`${line}\n`));
  const target = factory();
  const seed = targetSeed(options.seed, target.name);
  const rng = new Rng(seed);
  const checkEvery = Math.max(1, options.checkEvery ?? 2_000);
  const memEvery = Math.max(1, options.memEvery ?? Math.max(2_500, Math.floor(options.inputs / 25)));
  const maxGrowth = (options.maxGrowthMb ?? 64) * MB;
  const mutateShare = options.mutateShare ?? 0.5;
  const progressEvery = options.progressEveryMs ?? 15_000;
  const trap = new EscapeTrap();
  const counts = { seeds: 0, generated: 0, mutated: 0, checks: 0 };
  const samples: number[] = [];
  let rssPeak = 0;
  let failure: Failure | undefined;
  let index = 0;
  let current: unknown;
  let origin: Origin = 'setup';
  const start = performance.now();
  let lastProgress = start;

  const fail = async (err: unknown): Promise<void> => {
    const { message, stack } = errorText(err);
    let crashFile: string | undefined;
    let description: string | undefined;
    let reproducesAlone: boolean | undefined;
    const hasInput = origin === 'seed' || origin === 'generated' || origin === 'mutated';
    if (hasInput) {
      try {
        description = target.describe(current);
      } catch (e) {
        description = `(describe failed: ${errorText(e).message})`;
      }
      try {
        const bytes = target.encode(current);
        const hash = createHash('sha256').update(bytes).digest('hex').slice(0, 12);
        const dir = options.crashDir ?? CRASH_DIR;
        mkdirSync(dir, { recursive: true });
        crashFile = join(dir, `${target.name}-${hash}.bin`);
        writeFileSync(crashFile, bytes);
        reproducesAlone = await replayOnce(factory, bytes).then((r) => r !== undefined, () => undefined);
      } catch (e) {
        description += ` (could not write the crash file: ${errorText(e).message})`;
      }
    }
    const rel = crashFile ? relative(REPO, crashFile) : undefined;
    failure = {
      index,
      origin,
      message,
      stack,
      input: description,
      crashFile: rel,
      replay: rel ? `node test/fuzz/runner.ts --replay ${rel}` : undefined,
      rerun: `node test/fuzz/runner.ts --target ${target.name} --seed ${hexSeed(options.seed)} --inputs ${index + 1}`,
      reproducesAlone,
    };
  };

  trap.install();
  try {
    try {
      await target.setup();
    } catch (err) {
      await fail(err);
    }
    const seeds = failure ? [] : target.seeds();
    const pool: unknown[] = [...seeds];
    const recent: unknown[] = [];
    for (index = 0; index < options.inputs && !failure; index++) {
      if (index < seeds.length) {
        current = seeds[index];
        origin = 'seed';
        counts.seeds++;
      } else if (rng.chance(mutateShare)) {
        const base = recent.length > 0 && rng.chance(0.3) ? rng.pick(recent) : rng.pick(pool);
        current = target.mutate(rng, base);
        // Stacked mutants now and then: a mutant of a mutant reaches further from the seeds.
        if (rng.chance(0.15)) current = target.mutate(rng, current);
        origin = 'mutated';
        counts.mutated++;
      } else {
        current = target.generate(rng);
        origin = 'generated';
        counts.generated++;
        if (recent.length < 64) recent.push(current);
        else recent[rng.below(64)] = current;
      }
      try {
        const pending = target.run(current);
        if (pending) await pending;
        else if ((index & 255) === 255) await new Promise((r) => setImmediate(r));
      } catch (err) {
        await fail(err);
        break;
      }
      if (trap.escaped.length > 0) {
        await fail(new Error(`uncaught while the target ran: ${errorText(trap.escaped[0]).message}`));
        break;
      }
      const done = index + 1;
      if (target.check && done % checkEvery === 0) {
        origin = 'check';
        try {
          await target.check();
          counts.checks++;
        } catch (err) {
          await fail(err);
          break;
        }
      }
      if (done % memEvery === 0) {
        const sample = memorySample();
        rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
        samples.push(sample);
        if (sample - samples[0]! > maxGrowth) {
          origin = 'memory';
          await fail(new Error(`memory grew ${mb(sample - samples[0]!)} MB (limit ${mb(maxGrowth)} MB): ${samples.map(mb).join(', ')} MB`));
          break;
        }
      }
      const now = performance.now();
      if (now - lastProgress > progressEvery) {
        lastProgress = now;
        log(`[fuzz] ${target.name}: ${done}/${options.inputs} (${Math.floor((done / options.inputs) * 100)}%), ${Math.round(done / ((now - start) / 1000))}/s, memory ${mb(samples.at(-1) ?? 0)} MB`);
      }
    }
    if (!failure && target.check) {
      origin = 'check';
      try {
        await target.check();
        counts.checks++;
      } catch (err) {
        await fail(err);
      }
    }
    if (!failure && trap.escaped.length > 0) await fail(new Error(`uncaught while the target ran: ${errorText(trap.escaped[0]).message}`));
    if (!failure) {
      const growth = trend(samples);
      if (growth !== undefined) {
        origin = 'memory';
        await fail(new Error(`memory kept growing (+${mb(growth)} MB, every quarter of the run above the one before): ${samples.map(mb).join(', ')} MB`));
      }
    }
  } finally {
    origin = 'teardown';
    try {
      await target.teardown();
    } catch (err) {
      if (!failure) await fail(err);
    }
    trap.uninstall();
  }

  const seconds = (performance.now() - start) / 1000;
  const inputs = failure ? failure.index + 1 : options.inputs;
  const report: TargetReport = {
    target: target.name,
    seed: hexSeed(options.seed),
    inputs,
    seeds: counts.seeds,
    generated: counts.generated,
    mutated: counts.mutated,
    checks: counts.checks,
    seconds: Math.round(seconds * 100) / 100,
    inputsPerSecond: Math.round(inputs / seconds),
    memory: {
      samples: samples.length,
      firstMb: mb(samples[0] ?? 0),
      minMb: mb(samples.length ? Math.min(...samples) : 0),
      maxMb: mb(samples.length ? Math.max(...samples) : 0),
      lastMb: mb(samples.at(-1) ?? 0),
      rssPeakMb: mb(rssPeak),
    },
    stats: safeStats(target),
    failure,
  };
  log(formatReport(report));
  return report;
}

/** Growth in bytes when each quarter of the samples lies entirely above the previous one (and by > 4 MB overall). */
function trend(samples: readonly number[]): number | undefined {
  if (samples.length < 8) return undefined;
  const q = Math.floor(samples.length / 4);
  const quarters = [0, 1, 2, 3].map((i) => samples.slice(i * q, i === 3 ? samples.length : (i + 1) * q));
  for (let i = 1; i < 4; i++) if (Math.min(...quarters[i]!) <= Math.max(...quarters[i - 1]!)) return undefined;
  const growth = samples.at(-1)! - samples[0]!;
  return growth > 4 * MB ? growth : undefined;
}

function safeStats(target: FuzzTarget<unknown>): Record<string, number> {
  try {
    return target.stats?.() ?? {};
  } catch {
    return {};
  }
}

export function formatReport(r: TargetReport): string {
  const head = `[fuzz] ${r.target}: ${r.inputs} inputs (${r.seeds} seeds, ${r.generated} generated, ${r.mutated} mutated, ${r.checks} checks) in ${r.seconds} s = ${r.inputsPerSecond}/s; memory ${r.memory.minMb}–${r.memory.maxMb} MB after GC (first ${r.memory.firstMb}, last ${r.memory.lastMb}), RSS peak ${r.memory.rssPeakMb} MB; seed ${r.seed}`;
  if (!r.failure) return `${head}; OK`;
  const f = r.failure;
  const lines = [`${head}; FAILED at input ${f.index} (${f.origin})`, `  ${f.message}`];
  if (f.input) lines.push(`  input: ${f.input}`);
  if (f.crashFile) lines.push(`  written to ${f.crashFile}${f.reproducesAlone === undefined ? '' : f.reproducesAlone ? ' (fails alone in a fresh target too)' : ' (passes alone: depends on the inputs before it)'}`);
  if (f.replay) lines.push(`  replay it:        ${f.replay}`);
  lines.push(`  replay the run:   ${f.rerun}`);
  if (f.stack) lines.push(...f.stack.split('\n').slice(1, 8).map((l) => `  ${l.trim()}`));
  return lines.join('\n');
}

/** Runs one encoded input in a fresh target; resolves to the error, or undefined when it passes. */
export async function replayOnce(factory: TargetFactory, bytes: Uint8Array): Promise<unknown> {
  const target = factory();
  const trap = new EscapeTrap();
  trap.install();
  let error: unknown;
  try {
    await target.setup();
    const input = target.decode(bytes);
    await target.run(input);
    await new Promise((r) => setImmediate(r));
    if (target.check) await target.check();
    if (trap.escaped.length > 0) error = trap.escaped[0];
  } catch (err) {
    error = err;
  } finally {
    await Promise.resolve(target.teardown()).catch(() => {});
    trap.uninstall();
  }
  return error;
}

export function factoryFor(name: string): TargetFactory {
  const factory = TARGETS[name];
  if (!factory) throw new Error(`no fuzz target "${name}" (targets: ${Object.keys(TARGETS).join(', ')})`);
  return factory;
}

// ---------------------------------------------------------------------------------------------
// command line

interface Cli {
  inputs: number;
  perTarget: number | undefined;
  seed: number | undefined;
  targets: string[];
  replay: string | undefined;
  json: string | undefined;
  checkEvery: number | undefined;
  list: boolean;
}

function parseArgs(argv: readonly string[]): Cli {
  const cli: Cli = { inputs: 100_000, perTarget: undefined, seed: undefined, targets: Object.keys(TARGETS), replay: undefined, json: undefined, checkEvery: undefined, list: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    switch (arg) {
      case '--inputs':
        cli.inputs = Number(value().replaceAll('_', ''));
        if (!Number.isInteger(cli.inputs) || cli.inputs < 1) throw new Error('--inputs must be a positive integer');
        break;
      case '--per-target':
        cli.perTarget = Number(value().replaceAll('_', ''));
        if (!Number.isInteger(cli.perTarget) || cli.perTarget < 1) throw new Error('--per-target must be a positive integer');
        break;
      case '--seed':
        cli.seed = parseSeed(value());
        if (cli.seed === undefined) throw new Error('--seed must be an integer (decimal or 0x hex)');
        break;
      case '--target':
        cli.targets = value().split(',').map((s) => s.trim()).filter(Boolean);
        for (const t of cli.targets) factoryFor(t);
        break;
      case '--replay':
        cli.replay = value();
        break;
      case '--json':
        cli.json = value();
        break;
      case '--check-every':
        cli.checkEvery = Number(value());
        break;
      case '--list':
        cli.list = true;
        break;
      default:
        throw new Error(`unknown argument ${arg}`);
    }
  }
  return cli;
}

async function main(): Promise<number> {
  const cli = parseArgs(process.argv.slice(2));
  if (cli.list) {
    for (const [name, factory] of Object.entries(TARGETS)) process.stdout.write(`${name.padEnd(12)} ${factory().description}\n`);
    return 0;
  }
  if (cli.replay) {
    const name = basename(cli.replay).replace(/-[0-9a-f]+\.bin$/, '');
    const bytes = new Uint8Array(readFileSync(cli.replay));
    const factory = factoryFor(name);
    const shown = factory();
    process.stdout.write(`[fuzz] replaying ${cli.replay} on target ${name}: ${shown.describe(shown.decode(bytes))}\n`);
    const error = await replayOnce(factory, bytes);
    if (error === undefined) {
      process.stdout.write('[fuzz] passes\n');
      return 0;
    }
    process.stdout.write(`[fuzz] FAILS: ${errorText(error).stack ?? errorText(error).message}\n`);
    return 1;
  }
  const seed = cli.seed ?? parseSeed(process.env.FUZZ_SEED) ?? randomInt(0, 2 ** 32 - 1);
  const perTarget = cli.perTarget ?? Math.ceil(cli.inputs / cli.targets.length);
  process.stdout.write(`[fuzz] seed ${hexSeed(seed)}, ${perTarget} inputs per target, targets: ${cli.targets.join(', ')}${gc ? '' : ' (no gc(): memory samples are noisy)'}\n`);
  const reports: TargetReport[] = [];
  const started = performance.now();
  for (const name of cli.targets) {
    reports.push(await runTarget(factoryFor(name), { inputs: perTarget, seed, checkEvery: cli.checkEvery }));
  }
  const total = reports.reduce((n, r) => n + r.inputs, 0);
  const failed = reports.filter((r) => r.failure);
  process.stdout.write(`[fuzz] total: ${total} inputs in ${Math.round((performance.now() - started) / 100) / 10} s, ${failed.length === 0 ? 'no failures' : `${failed.length} failed: ${failed.map((r) => r.target).join(', ')}`}; seed ${hexSeed(seed)}\n`);
  if (cli.json) writeFileSync(cli.json, `${JSON.stringify({ seed: hexSeed(seed), node: process.version, reports }, null, 2)}\n`);
  return failed.length === 0 ? 0 : 1;
}

const isMain = (import.meta as { main?: boolean }).main ?? process.argv[1] === fileURLToPath(import.meta.url);
if (isMain) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`[fuzz] ${errorText(err).message}\n`);
      process.exit(2);
    },
  );
}
