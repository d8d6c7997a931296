/**
 * Backend selection: WGTS_CRYPTO=noble|sodium picks one explicitly (an unloadable choice is an
 * error); otherwise sodium when its addon loads, else noble with a single warning line.
 */
import type { BackendName, CryptoBackend } from './backend.ts';
import { createNobleBackend } from './noble.ts';
import { createSodiumBackend } from './sodium.ts';

export type { BackendName, CryptoBackend } from './backend.ts';
export { createNobleBackend } from './noble.ts';
export { createSodiumBackend } from './sodium.ts';

export const BACKEND_NAMES: readonly BackendName[] = ['sodium', 'noble'];

export function createBackend(name: BackendName): CryptoBackend {
  return name === 'noble' ? createNobleBackend() : createSodiumBackend();
}

let cached: CryptoBackend | undefined;

export function selectBackend(
  env: NodeJS.ProcessEnv = process.env,
  warn: (line: string) => void = (line) => process.stderr.write(line + '\n'),
): CryptoBackend {
  const wanted = env.WGTS_CRYPTO?.trim();
  if (wanted) {
    if (wanted !== 'noble' && wanted !== 'sodium') {
      throw new Error(`WGTS_CRYPTO=${wanted}: expected "noble" or "sodium"`);
    }
    return createBackend(wanted);
  }
  try {
    return createSodiumBackend();
  } catch (err) {
    warn(`wgts: sodium-native unavailable (${(err as Error).message}); using the pure-TypeScript noble backend`);
    return createNobleBackend();
  }
}

/** The process-wide backend, chosen once. */
export function defaultBackend(): CryptoBackend {
  cached ??= selectBackend();
  return cached;
}
