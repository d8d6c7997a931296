/** What every benchmark module exports, so bench/index.ts can run it by name. */
export interface BenchOptions {
  /** A short smoke run: few rounds, little time per sample. Figures are not meant to be quoted. */
  readonly quick: boolean;
  /** Arguments after the benchmark's name that the dispatcher did not consume. */
  readonly args: readonly string[];
}

/** A benchmark prints its own report and returns its raw results (written by --json). */
export interface BenchModule {
  run(options: BenchOptions): Promise<BenchResult>;
}

export type BenchResult = Record<string, unknown>;

/** Thrown for bad benchmark-specific arguments; the dispatcher prints it and exits 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}
