/**
 * Timing on a shared, noisy machine: a figure is the median of several rounds, and rounds of
 * workloads that are compared are interleaved (rotating the order each round) so that a burst
 * of load from a neighbour hits every contender instead of one.
 */

/** Something to time, in batches of n operations. */
export interface Workload {
  /** Untimed: readies the next n operations (e.g. seals n packets that run(n) then opens). */
  prepare?(n: number): void;
  /** Timed: performs exactly n operations. */
  run(n: number): void;
}

export interface MeasureOptions {
  /** Timed work per sample (one round of one workload), in milliseconds. */
  readonly minTimeMs: number;
  /** Samples per workload; the reported figure is their median. */
  readonly rounds: number;
  /** Untimed work per workload before the first round (JIT tier-up, caches). Default minTimeMs. */
  readonly warmupMs?: number;
  /** Largest batch (prepare/run n); workloads with fixed-size scratch state set this. Default 1 << 20. */
  readonly maxBatch?: number;
}

export interface Stats {
  /** Operations per second, one per round, in round order. */
  readonly samples: number[];
  readonly median: number;
  readonly min: number;
  readonly max: number;
  /** (max − min) / median. */
  readonly spread: number;
}

const DEFAULT_MAX_BATCH = 1 << 20;
/** A batch aims to take about this share of a sample, so a sample has ~20 clock readings. */
const BATCHES_PER_SAMPLE = 20;

/** Times one workload, carrying its learned batch size from sample to sample. */
export class Sampler {
  private batch = 1;
  private readonly workload: Workload;
  private readonly maxBatch: number;

  constructor(workload: Workload, maxBatch: number = DEFAULT_MAX_BATCH) {
    this.workload = workload;
    this.maxBatch = Math.max(1, maxBatch);
  }

  /** Runs batches until at least minTimeMs of timed work; returns operations per second. */
  sample(minTimeMs: number): number {
    const minNs = minTimeMs * 1e6;
    const targetBatchNs = minNs / BATCHES_PER_SAMPLE;
    let ops = 0;
    let timedNs = 0;
    while (timedNs < minNs) {
      const n = this.batch;
      this.workload.prepare?.(n);
      const start = process.hrtime.bigint();
      this.workload.run(n);
      const elapsed = Number(process.hrtime.bigint() - start);
      ops += n;
      timedNs += elapsed;
      if (elapsed < targetBatchNs && n < this.maxBatch) {
        // Grow towards the target in one step when the batch is measurable, else double.
        const scaled = elapsed > 50_000 ? Math.ceil((n * targetBatchNs) / elapsed) : n * 2;
        this.batch = Math.min(this.maxBatch, Math.max(n + 1, scaled));
      }
    }
    return (ops * 1e9) / timedNs;
  }
}

export function stats(samples: number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length === 0 ? NaN : sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  const min = sorted[0] ?? NaN;
  const max = sorted[sorted.length - 1] ?? NaN;
  return { samples: [...samples], median, min, max, spread: (max - min) / median };
}

/** Times one workload: rounds samples of minTimeMs each, after a warmup. */
export function measure(workload: Workload | ((n: number) => void), options: MeasureOptions): Stats {
  const w = typeof workload === 'function' ? { run: workload } : workload;
  return compare({ only: w }, options).only!;
}

/**
 * Times several workloads side by side: every round samples each of them once, the order
 * rotating by one each round, so slow phases of a noisy machine are shared out evenly.
 * onSample (if given) sees each sample as it is taken.
 */
export function compare<K extends string>(
  workloads: Record<K, Workload>,
  options: MeasureOptions,
  onSample?: (key: K, round: number, opsPerSec: number) => void,
): Record<K, Stats> {
  const keys = Object.keys(workloads) as K[];
  const samplers = new Map<K, Sampler>(keys.map((k) => [k, new Sampler(workloads[k], options.maxBatch)]));
  const warmupMs = options.warmupMs ?? options.minTimeMs;
  if (warmupMs > 0) for (const k of keys) samplers.get(k)!.sample(warmupMs);
  const samples = new Map<K, number[]>(keys.map((k) => [k, []]));
  for (let round = 0; round < options.rounds; round++) {
    for (let i = 0; i < keys.length; i++) {
      const k = keys[(i + round) % keys.length]!;
      const opsPerSec = samplers.get(k)!.sample(options.minTimeMs);
      samples.get(k)!.push(opsPerSec);
      onSample?.(k, round, opsPerSec);
    }
  }
  const out = {} as Record<K, Stats>;
  for (const k of keys) out[k] = stats(samples.get(k)!);
  return out;
}
