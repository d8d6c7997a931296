import { bundledVectorFiles, runConformance } from '../conformance.ts';
import type { BackendName } from '../noise/crypto/index.ts';
import { BACKEND_NAMES, createBackend } from '../noise/crypto/index.ts';

/** Prints one line per failure and a closing `N passed, N failed`; returns the exit code. */
export async function runConformanceCommand(files: string[], backend?: string): Promise<number> {
  if (backend !== undefined && !BACKEND_NAMES.includes(backend as BackendName)) {
    process.stderr.write(`wgts conformance: unknown backend "${backend}" (noble|sodium)\n`);
    return 2;
  }
  const names = backend ? [backend as BackendName] : BACKEND_NAMES;
  const backends = names.map((name) => createBackend(name));
  const result = await runConformance(files.length > 0 ? files : bundledVectorFiles(), backends, (line) =>
    process.stdout.write(line + '\n'),
  );
  process.stdout.write(`conformance: ${result.passed} passed, ${result.failed} failed\n`);
  return result.failed === 0 && result.passed > 0 ? 0 : 1;
}
