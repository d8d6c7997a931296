/**
 * A small runner for iproute2, nft and sysctl, optionally inside a network namespace:
 *
 *   ip:     `ip -n <ns> …`                 (or plain `ip …`)
 *   nft:    `ip netns exec <ns> nft …`     (or plain `nft …`)
 *   sysctl: `ip netns exec <ns> sysctl …`  (or /proc/sys directly, in our own namespace)
 *
 * Reads use `ip -N -j` (numeric protocols, tables and route types, JSON); writes go through
 * `ip -batch -`, whose failures name the line (`Command failed -:N`), so errors here quote the
 * command that failed and the line of the batch it was.
 */
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';

/**
 * Where net sysctls are read and written in our own namespace: /proc/sys, or $WGTS_PROC_SYS. In an
 * unprivileged container /proc/sys is read-only, so deploy/ mounts the host's /proc/sys/net at
 * /host/proc/sys/net and sets WGTS_PROC_SYS=/host/proc/sys.
 */
export function procSysRoot(env: NodeJS.ProcessEnv = process.env): string {
  return env.WGTS_PROC_SYS || '/proc/sys';
}

export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A failed ip/nft/sysctl command: the command line, the batch line that failed (if any), and stderr. */
export class HostCommandError extends Error {
  readonly command: string;
  /** 1-based line of the batch/script input that failed, when the tool reported it. */
  readonly line: number | undefined;
  /** Text of that line. */
  readonly lineText: string | undefined;
  readonly stderr: string;
  readonly exitCode: number | null;
  constructor(command: string, result: RunResult, line?: number, lineText?: string) {
    const where = line === undefined ? '' : ` at line ${line}${lineText === undefined ? '' : ` "${lineText}"`}`;
    const detail = result.stderr.trim() || result.stdout.trim() || `exit ${result.code}`;
    super(`${command} failed${where}: ${detail}`);
    this.name = 'HostCommandError';
    this.command = command;
    this.line = line;
    this.lineText = lineText;
    this.stderr = result.stderr;
    this.exitCode = result.code;
  }
}

const DEFAULT_TIMEOUT_MS = 30_000;

/** Runs file with args, feeding input on stdin; never rejects for a non-zero exit (see result.code). */
export function run(file: string, args: readonly string[], input?: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${[file, ...args].join(' ')}: ${err.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(stdout).toString(), stderr: Buffer.concat(stderr).toString() });
    });
    child.stdin.on('error', () => {}); // a command that exits without reading its input
    child.stdin.end(input ?? '');
  });
}

/** `ip -batch` and `nft -f` name the failing input line as `-:N` (nft: `-:N:col-col:`, or `/dev/stdin:N`). */
export function failedLine(stderr: string): number | undefined {
  const match = /Command failed -:(\d+)/.exec(stderr) ?? /(?:^|\n)(?:-|\/dev\/stdin):(\d+):/.exec(stderr);
  return match ? Number(match[1]) : undefined;
}

export interface IpRunnerOptions {
  /** Network namespace (a name under /var/run/netns); undefined: the current one. */
  readonly netns?: string;
  readonly timeoutMs?: number;
}

/** ip/nft/sysctl for one namespace. */
export class IpRunner {
  readonly netns: string | undefined;
  private readonly timeoutMs: number;

  constructor(options: IpRunnerOptions = {}) {
    this.netns = options.netns;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** argv for `ip`, with `-n <ns>` when set. */
  ipArgs(args: readonly string[]): string[] {
    return this.netns === undefined ? [...args] : ['-n', this.netns, ...args];
  }

  /** [file, argv] for a command other than ip, through `ip netns exec` when a namespace is set. */
  private inNamespace(cmd: string, args: readonly string[]): [string, string[]] {
    return this.netns === undefined ? [cmd, [...args]] : ['ip', ['netns', 'exec', this.netns, cmd, ...args]];
  }

  private describe(file: string, argv: readonly string[]): string {
    return [file, ...argv].join(' ');
  }

  /** Runs `ip <args>`; throws HostCommandError on a non-zero exit. */
  async ip(args: readonly string[], input?: string): Promise<string> {
    const argv = this.ipArgs(args);
    const result = await run('ip', argv, input, this.timeoutMs);
    if (result.code !== 0) throw new HostCommandError(this.describe('ip', argv), result);
    return result.stdout;
  }

  /** Runs `ip -N -j <args>` and parses the JSON (empty output is an empty list). */
  async ipJson<T = unknown>(args: readonly string[]): Promise<T[]> {
    const out = (await this.ip(['-N', '-j', ...args])).trim();
    if (out === '') return [];
    return JSON.parse(out) as T[];
  }

  /**
   * Runs lines through one `ip [-6] -batch -` (aborting at the first failure, as ip does without
   * -force); the error names the failing line. Nothing runs for an empty list.
   */
  async ipBatch(family: 4 | 6, lines: readonly string[]): Promise<void> {
    if (lines.length === 0) return;
    const argv = this.ipArgs([family === 6 ? '-6' : '-4', '-batch', '-']);
    const result = await run('ip', argv, `${lines.join('\n')}\n`, this.timeoutMs);
    if (result.code === 0) return;
    const line = failedLine(result.stderr);
    throw new HostCommandError(this.describe('ip', argv), result, line, line === undefined ? undefined : lines[line - 1]);
  }

  /** Runs `nft <args>` (script on stdin for `-f -`); the error names the failing script line. */
  async nft(args: readonly string[], script?: string): Promise<RunResult> {
    const [file, argv] = this.inNamespace('nft', args);
    return run(file, argv, script, this.timeoutMs);
  }

  async nftOrThrow(args: readonly string[], script?: string): Promise<string> {
    const [file, argv] = this.inNamespace('nft', args);
    const result = await run(file, argv, script, this.timeoutMs);
    if (result.code === 0) return result.stdout;
    const line = script === undefined ? undefined : failedLine(result.stderr);
    throw new HostCommandError(this.describe(file, argv), result, line, line === undefined ? undefined : script?.split('\n')[line - 1]?.trim());
  }

  /**
   * Reads sysctls (keys in slash form, e.g. `net/ipv4/conf/all/src_valid_mark`, so interface
   * names with dots work); undefined for one that does not exist.
   */
  async readSysctls(keys: readonly string[]): Promise<Array<string | undefined>> {
    if (this.netns === undefined) {
      return Promise.all(keys.map(async (key) => (await readFile(`${procSysRoot()}/${key}`, 'utf8').catch(() => undefined))?.trim()));
    }
    // One process per key: `sysctl -n a b` stops printing at a missing key, losing the alignment.
    return Promise.all(
      keys.map(async (key) => {
        const [file, argv] = this.inNamespace('sysctl', ['-n', key]);
        const result = await run(file, argv, undefined, this.timeoutMs);
        return result.code === 0 ? result.stdout.trim() : undefined;
      }),
    );
  }

  /** Writes sysctls (slash-form keys); throws naming the one that failed. */
  async writeSysctls(values: ReadonlyArray<readonly [key: string, value: string]>): Promise<void> {
    if (values.length === 0) return;
    if (this.netns === undefined) {
      for (const [key, value] of values) {
        try {
          await writeFile(`${procSysRoot()}/${key}`, value);
        } catch (err) {
          throw new Error(`sysctl -w ${key}=${value} failed: ${(err as Error).message}`);
        }
      }
      return;
    }
    const [file, argv] = this.inNamespace('sysctl', ['-w', ...values.map(([key, value]) => `${key}=${value}`)]);
    const result = await run(file, argv, undefined, this.timeoutMs);
    if (result.code !== 0) throw new HostCommandError(this.describe(file, argv), result);
  }
}
