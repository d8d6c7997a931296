/**
 * Child processes for the demo: one-shot commands with a deadline, and long-running ones
 * tracked by PID so cleanup can stop exactly what the demo started. Nothing here kills by
 * name or pattern.
 */
import type { ChildProcess, StdioOptions } from 'node:child_process';
import { spawn } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';

export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  /** SIGKILL and reject after this long (default 10 s). */
  readonly timeoutMs?: number;
  /** Resolve instead of rejecting on a non-zero exit. */
  readonly allowFailure?: boolean;
  readonly env?: NodeJS.ProcessEnv;
}

/** argv that runs cmd inside namespace ns (undefined: here). */
export function inNamespace(ns: string | undefined, argv: readonly string[]): string[] {
  return ns === undefined ? [...argv] : ['ip', 'netns', 'exec', ns, ...argv];
}

/** Runs a command to completion; rejects (with its output) on a non-zero exit unless allowFailure. */
export function run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error('run: empty command');
  const what = argv.join(' ');
  const timeoutMs = options.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${what}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result = { code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
      if (timedOut) reject(new Error(`${what}: still running after ${timeoutMs} ms\n${result.stderr}`));
      else if (code !== 0 && !options.allowFailure) reject(new Error(`${what}: exit ${code ?? signal}\n${(result.stderr || result.stdout).trim()}`));
      else resolve(result);
    });
  });
}

/** A long-running child, tracked by PID until it exits. */
export class Tracked {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private done = false;
  private text = '';

  constructor(name: string, argv: readonly string[], stdio: StdioOptions = ['pipe', 'pipe', 'pipe']) {
    const [file, ...args] = argv;
    if (file === undefined) throw new Error('Tracked: empty command');
    this.name = name;
    this.child = spawn(file, args, { stdio });
    if (this.child.pid === undefined) throw new Error(`${name}: could not start ${file}`);
    this.pid = this.child.pid;
    const keep = (chunk: Buffer): void => {
      this.text = (this.text + chunk.toString()).slice(-32_768);
    };
    this.child.stdout?.on('data', keep);
    this.child.stderr?.on('data', keep);
    this.child.stdin?.on('error', () => {});
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.done = true;
        resolve({ code, signal });
      });
      this.child.on('error', () => {
        this.done = true;
        resolve({ code: null, signal: null });
      });
    });
  }

  hasExited(): boolean {
    return this.done;
  }

  /** stdout and stderr so far (the last 32 KiB). */
  output(): string {
    return this.text;
  }

  /** Resolves with the first output line matching pattern; rejects if the process exits first or after timeoutMs. */
  waitForOutput(pattern: RegExp, timeoutMs: number): Promise<string> {
    return waitFor(() => {
      const match = this.text.split('\n').find((line) => pattern.test(line));
      if (match !== undefined) return match;
      if (this.done) throw new Error(`${this.name} exited before it was ready:\n${this.text.trim()}`);
      return undefined;
    }, { timeoutMs, what: `${this.name} to be ready` });
  }

  /** SIGTERM (or the given signal), SIGKILL after graceMs; resolves once the process is gone. */
  async stop(sig: NodeJS.Signals = 'SIGTERM', graceMs = 2_000): Promise<void> {
    if (this.done) return;
    signalPid(this.pid, sig);
    const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), graceMs).unref());
    if ((await Promise.race([this.exited, timeout])) === 'timeout') {
      signalPid(this.pid, 'SIGKILL');
      await this.exited;
    }
  }
}

export function signalPid(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** Whether pid names a live process (a zombie, dead but not yet reaped, counts as gone). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Polls until condition returns something other than undefined/null/false; rejects after timeoutMs. */
export async function waitFor<T>(
  condition: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  options: { timeoutMs: number; intervalMs?: number; what: string },
): Promise<T> {
  const deadline = performance.now() + options.timeoutMs;
  for (;;) {
    // An error thrown by the condition (say, a process that died) is final: it propagates.
    const value = await condition();
    if (value !== undefined && value !== null && value !== false) return value;
    if (performance.now() >= deadline) throw new Error(`timed out after ${options.timeoutMs} ms waiting for ${options.what}`);
    await sleep(options.intervalMs ?? 20);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The full path of an executable found on PATH (as spawn would find it; or the path itself when it has a slash), else undefined. */
export function which(command: string): string | undefined {
  const candidates = command.includes('/')
    ? [command]
    : (process.env['PATH'] ?? '').split(delimiter).filter(Boolean).map((dir) => join(dir, command));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return isAbsolute(candidate) ? candidate : join(process.cwd(), candidate);
    } catch {
      // not here
    }
  }
  return undefined;
}
