/**
 * `wgts <ifname>` without -f behaves like wireguard-go: it starts the daemon in the background
 * and returns only once the daemon reports that the TUN and the UAPI socket exist, so
 * `wg set` right after it works. The daemon reports over an IPC channel, then detaches.
 */
import { spawn } from 'node:child_process';
import { openSync } from 'node:fs';

export const READY_MESSAGE = 'wgts-ready';
const READY_TIMEOUT_MS = 30_000;

/** Re-executes this command in the foreground as a detached child; resolves with the exit code for the launcher. */
export function launchInBackground(argv: readonly string[], logFile?: string): Promise<number> {
  // Like wireguard-go the daemon keeps the launcher's terminal; never a pipe, or whoever reads
  // the launcher's output would wait for the daemon to exit.
  const out = logFile ? openSync(logFile, 'a') : process.stderr.isTTY ? 'inherit' : 'ignore';
  const child = spawn(process.execPath, [...process.execArgv, ...argv], {
    detached: true,
    stdio: ['ignore', out, out, 'ipc'],
    env: { ...process.env, WG_PROCESS_FOREGROUND: '1', WGTS_REPORT_READY: '1' },
  });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      process.stderr.write('wgts: the daemon did not become ready in time\n');
      child.kill('SIGTERM');
      resolve(1);
    }, READY_TIMEOUT_MS);
    child.on('message', (message) => {
      if (message === READY_MESSAGE) {
        clearTimeout(timer);
        child.disconnect();
        child.unref();
        resolve(0);
      } else if (typeof message === 'object' && message !== null && 'error' in message) {
        clearTimeout(timer);
        process.stderr.write(`wgts: ${(message as { error: string }).error}\n`);
        resolve(1);
      }
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(code ?? (signal ? 1 : 0));
    });
  });
}

/** In the daemon: tells a waiting launcher that we are up (or why we are not). */
export function reportReady(error?: string): void {
  if (!process.send || process.env.WGTS_REPORT_READY !== '1') return;
  process.send(error ? { error } : READY_MESSAGE);
  if (!error) process.disconnect?.();
}
