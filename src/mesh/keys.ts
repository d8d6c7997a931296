/**
 * The node's private key on disk: created on first start (0600, in a 0700 directory), refused
 * when group or others can read it — a key that leaked is not a key to keep using.
 */
import { chmodSync, closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { generatePrivateKey } from '../cli/keys.ts';
import { keyFromBase64, keyToBase64 } from '../util/hex.ts';

export class KeyFileError extends Error {
  override readonly name = 'KeyFileError';
}

/** Reads the key at path, or creates one there. */
export function loadOrCreateKey(path: string): { key: Uint8Array; created: boolean } {
  let mode: number;
  try {
    mode = statSync(path).mode;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    const key = generatePrivateKey();
    writeKeyFile(path, key);
    return { key, created: true };
  }
  if ((mode & 0o077) !== 0) {
    throw new KeyFileError(`${path} is readable by group or others (mode ${(mode & 0o777).toString(8)}); fix it with chmod 600, or move it away to get a new key`);
  }
  try {
    return { key: keyFromBase64(readFileSync(path, 'utf8')), created: false };
  } catch (err) {
    throw new KeyFileError(`${path}: ${(err as Error).message}`);
  }
}

/** Writes a key atomically: a 0600 temp file in the same directory, then rename. */
export function writeKeyFile(path: string, key: Uint8Array): void {
  const dir = dirname(path);
  // 0700 for the directory only when we create it: an existing one (/etc, or "." run from /)
  // belongs to someone else, and narrowing it could lock every other user out of it.
  const created = mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (created !== undefined) chmodSync(dir, 0o700);
  const temp = `${path}.${process.pid}.tmp`;
  // A fresh file (O_EXCL: never a leftover with a wider mode, never through a planted symlink).
  rmSync(temp, { force: true });
  const fd = openSync(temp, 'wx', 0o600);
  try {
    writeSync(fd, keyToBase64(key) + '\n');
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temp, path);
}
