/** The options after a benchmark's name, read the same way by every benchmark. */
import { UsageError } from './types.ts';

/** The value that follows an option, read as what the option takes. */
export interface OptionValue {
  text(): string;
  positiveInt(): number;
  /** A positive number, fractions allowed. */
  positive(): number;
  /** A comma-separated list, each item one of known (and at least one). */
  ids(known: readonly string[]): string[];
}

/**
 * Walks args, handing each option and a reader for its value to handle; handle returns false
 * for an option it does not know, which is then a UsageError listing usage.
 */
export function readOptions(args: readonly string[], usage: string, handle: (option: string, value: OptionValue) => boolean): void {
  for (let i = 0; i < args.length; i++) {
    const option = args[i]!;
    const text = (): string => {
      const v = args[++i];
      if (v === undefined) throw new UsageError(`${option} needs a value`);
      return v;
    };
    const number = (whole: boolean): number => {
      const v = text();
      const n = Number(v);
      if (!(whole ? Number.isInteger(n) : Number.isFinite(n)) || n <= 0) {
        throw new UsageError(`${option}: expected a positive ${whole ? 'whole ' : ''}number, got "${v}"`);
      }
      return n;
    };
    const value: OptionValue = {
      text,
      positiveInt: () => number(true),
      positive: () => number(false),
      ids: (known) => {
        const ids = text()
          .split(',')
          .map((x) => x.trim())
          .filter(Boolean);
        const unknown = ids.filter((id) => !known.includes(id));
        if (unknown.length > 0 || ids.length === 0) throw new UsageError(`${option}: expected a list of ${known.join(', ')}${unknown.length > 0 ? ` (unknown: ${unknown.join(', ')})` : ''}`);
        return ids;
      },
    };
    if (!handle(option, value)) throw new UsageError(`unknown option ${option} (options: ${usage})`);
  }
}
