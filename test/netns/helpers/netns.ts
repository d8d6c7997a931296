/**
 * Network-namespace test beds: namespaces, veth pairs, commands and long-running processes
 * inside them, and a cleanup that removes all of it — by PID and by name, never by pattern —
 * even when a test failed halfway.
 *
 *   const bed = new NetnsBed('iwg');              // names start with wgts-iwg-<pid>
 *   const a = await bed.createNamespace('a');     // wgts-iwg-<pid>-a, lo up
 *   const link = await bed.createVethPair(a, b);  // 198.18.n.1/24 ↔ 198.18.n.2/24
 *   await bed.exec(a, 'ping', ['-c1', link.b.address4]);
 *   const proc = bed.spawn(b, 'wireguard-go', ['-f', bed.ifname('wg')]);
 *   await waitFor(() => existsSync(path), { timeoutMs: 5000, what: 'UAPI socket' });
 *   afterAll(() => bed.cleanup());
 *
 * Everything is created under a prefix unique to the test file and process, so namespace tests
 * running at the same time on one machine never meet; interface names (which for wireguard-go
 * must be unique machine-wide, see wireguard-go.ts) come from ifname().
 */
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { spawn as spawnChild, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';

/** Longest interface name Linux accepts (IFNAMSIZ − 1). */
export const IFNAME_MAX = 15;

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/**
 * True when namespace tests cannot run here (not root); prints why, so a skipped suite is never
 * silent. As root it returns false: a missing tool is then a failure, not a skip.
 *   describe.skipIf(skipUnlessRoot('interop with wireguard-go'))(…)
 */
export function skipUnlessRoot(suite: string): boolean {
  if (isRoot()) return false;
  const uid = typeof process.getuid === 'function' ? process.getuid() : 'unknown';
  process.stderr.write(`[netns] skipping "${suite}": needs root for network namespaces, veth and TUN (uid ${uid})\n`);
  return true;
}

export interface ExecOptions {
  /** Kill the command (SIGKILL) and reject after this long. Default 10 s. */
  readonly timeoutMs?: number;
  /** Written to the command's stdin, which is then closed. */
  readonly input?: string | Uint8Array;
  /** Resolve with the result instead of rejecting when the exit status is not 0. */
  readonly allowFailure?: boolean;
  readonly env?: NodeJS.ProcessEnv;
}

export interface ExecResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** argv prefix that runs a command in namespace ns (undefined: the current namespace). */
export function inNamespace(ns: string | undefined, cmd: string, args: readonly string[]): [string, string[]] {
  return ns === undefined ? [cmd, [...args]] : ['ip', ['netns', 'exec', ns, cmd, ...args]];
}

function describeCommand(ns: string | undefined, cmd: string, args: readonly string[]): string {
  return `${ns === undefined ? '' : `[${ns}] `}${[cmd, ...args].join(' ')}`;
}

/** Runs cmd (in ns when given) to completion with a deadline; rejects on a non-zero status unless allowFailure. */
export function exec(ns: string | undefined, cmd: string, args: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const [file, argv] = inNamespace(ns, cmd, args);
  const what = describeCommand(ns, cmd, args);
  return new Promise((resolve, reject) => {
    const child = spawnChild(file, argv, { stdio: ['pipe', 'pipe', 'pipe'], env: options.env ?? process.env });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${what}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result: ExecResult = {
        code,
        signal,
        stdout: Buffer.concat(stdout).toString(),
        stderr: Buffer.concat(stderr).toString(),
      };
      if (timedOut) {
        reject(new Error(`${what}: no exit within ${timeoutMs} ms\nstdout: ${result.stdout}\nstderr: ${result.stderr}`));
      } else if (code !== 0 && !options.allowFailure) {
        reject(new Error(`${what}: exit ${code ?? signal}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`));
      } else {
        resolve(result);
      }
    });
    child.stdin.on('error', () => {}); // a command that exits without reading its input
    child.stdin.end(options.input ?? '');
  });
}

export interface WaitForOptions {
  readonly timeoutMs?: number;
  readonly intervalMs?: number;
  /** Named in the timeout error. */
  readonly what?: string;
}

/**
 * Polls condition until it returns a value other than undefined/false/null, and returns that
 * value; rejects after timeoutMs (default 5 s) with the last error the condition threw, if any.
 * Use for readiness (a socket file, a link state) instead of a fixed sleep.
 */
export async function waitFor<T>(
  condition: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  options: WaitForOptions = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 5_000;
  const intervalMs = options.intervalMs ?? 10;
  const deadline = performance.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await condition();
      if (value !== undefined && value !== null && value !== false) return value;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (performance.now() >= deadline) {
      const reason = lastError instanceof Error ? `: ${lastError.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${options.what ?? 'condition'}${reason}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** A long-running process started by a NetnsBed, tracked by PID until it exits. */
export interface TrackedProcess {
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Resolves when the process has exited (code or signal). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Whether the process has exited. */
  hasExited(): boolean;
  /** Recent stdout+stderr text (the last 64 KiB), for failure messages; empty when the output is piped elsewhere. */
  output(): string;
}

export interface SpawnInNamespaceOptions {
  readonly env?: NodeJS.ProcessEnv;
  /**
   * Deliver SIGTERM to the process when the test process dies, even by SIGKILL (through
   * `setpriv --pdeathsig`), so a killed test run leaves no daemon behind. Default true.
   */
  readonly dieWithParent?: boolean;
  /**
   * 'capture' (default): stdout and stderr are collected into output(); 'pipe': the caller
   * reads child.stdout / child.stderr itself (stdin is a pipe in both cases).
   */
  readonly stdio?: 'capture' | 'pipe';
}

export interface VethEnd {
  readonly ns: string;
  readonly ifname: string;
  /** IPv4 address without prefix length. */
  readonly address4: string;
  /** IPv6 address without prefix length (when the pair was created with ipv6). */
  readonly address6: string | undefined;
}

export interface VethPair {
  readonly a: VethEnd;
  readonly b: VethEnd;
  /** e.g. 198.18.3.0/24 */
  readonly subnet4: string;
  readonly prefixLength4: number;
}

export interface VethOptions {
  /** Also add fd00::/8 addresses (/64, no DAD). */
  readonly ipv6?: boolean;
  readonly mtu?: number;
}

const OUTPUT_LIMIT = 64 * 1024;
const PREFIX_PATTERN = /^wgts-([a-z0-9]+)-(\d+)(?:-|$)/;

/**
 * One test file's namespaces, links, processes and temporary directories. cleanup() (call it in
 * afterAll) removes them all; a process 'exit' hook does the same synchronously if the test
 * runner goes away before afterAll runs.
 */
export class NetnsBed {
  /** wgts-<tag>-<pid> */
  readonly prefix: string;
  private readonly tag: string;
  private readonly namespaces: string[] = [];
  private readonly rootLinks: string[] = [];
  private readonly processes = new Map<number, TrackedProcess>();
  private readonly tempDirs: string[] = [];
  /** Processes this bed did not spawn itself (e.g. a daemon that forked away), stopped by PID. */
  private readonly adoptedPids = new Map<number, string>();
  /** Files (e.g. a UAPI socket left by a SIGKILLed daemon) removed by cleanup(). */
  private readonly trackedPaths: string[] = [];
  private subnetCounter = 0;
  private ifnameCounter = 0;
  private cleaned = false;
  private readonly exitHook = (): void => this.cleanupSync();

  /** tag: a few lowercase letters/digits naming the test file, e.g. 'iwg'. */
  constructor(tag: string) {
    if (!/^[a-z0-9]{1,6}$/.test(tag)) throw new Error(`NetnsBed tag "${tag}": use 1–6 lowercase letters or digits`);
    this.tag = tag;
    this.prefix = `wgts-${tag}-${process.pid}`;
    process.once('exit', this.exitHook);
  }

  /**
   * A name for a new interface, unique on this machine among beds: base + pid (base 36) + a
   * counter, at most 15 characters. Interface names of wireguard-go must be machine-unique
   * because all namespaces share /var/run/wireguard.
   */
  ifname(base: string): string {
    const name = `${base}${process.pid.toString(36)}${(this.ifnameCounter++).toString(36)}`;
    if (name.length > IFNAME_MAX) throw new Error(`interface name ${name} is longer than ${IFNAME_MAX} characters`);
    return name;
  }

  /**
   * Removes namespaces a previous run of this same test file left behind when it was killed
   * before its cleanup (their creator's PID is gone), first stopping — by PID, from
   * `ip netns pids` — any process still running inside them. Only this bed's tag is touched.
   */
  async sweepStale(): Promise<string[]> {
    const removed: string[] = [];
    for (const ns of await listNamespaces()) {
      const match = PREFIX_PATTERN.exec(ns);
      if (!match || match[1] !== this.tag) continue;
      const pid = Number(match[2]);
      if (pid === process.pid || processAlive(pid)) continue;
      const pids = await exec(undefined, 'ip', ['netns', 'pids', ns], { allowFailure: true });
      const leftovers = pids.stdout.split(/\s+/).filter(Boolean).map(Number);
      for (const leftover of leftovers) signal(leftover, 'SIGTERM');
      await waitFor(() => leftovers.every((p) => !processAlive(p)), { timeoutMs: 3_000, what: `processes in stale ${ns}` }).catch(() => {
        for (const leftover of leftovers) signal(leftover, 'SIGKILL');
      });
      await exec(undefined, 'ip', ['netns', 'delete', ns], { allowFailure: true });
      removed.push(ns);
    }
    return removed;
  }

  /** Creates namespace <prefix>-<name> with its loopback up; returns its full name. */
  async createNamespace(name: string): Promise<string> {
    const ns = `${this.prefix}-${name}`;
    await exec(undefined, 'ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    await exec(undefined, 'ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    return ns;
  }

  /**
   * A veth pair between two namespaces (created directly inside them, so the names never touch
   * the root namespace), addressed from 198.18.0.0/15: a gets .1 and b gets .2 of a fresh /24.
   * Resolves once both ends are operationally up.
   */
  async createVethPair(nsA: string, nsB: string, options: VethOptions = {}): Promise<VethPair> {
    const n = this.subnetCounter++;
    if (n >= 512) throw new Error('out of 198.18.0.0/15 subnets');
    const base = `198.${18 + (n >> 8)}.${n & 0xff}`;
    const ifA = `veth${n}a`;
    const ifB = `veth${n}b`;
    await exec(undefined, 'ip', ['link', 'add', ifA, 'netns', nsA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB]);
    const ends: VethEnd[] = [];
    for (const [ns, ifname, host] of [[nsA, ifA, 1], [nsB, ifB, 2]] as const) {
      const address4 = `${base}.${host}`;
      const address6 = options.ipv6 ? canonicalIPv6(`fd00:0:0:${n.toString(16)}::${host}`) : undefined;
      await exec(undefined, 'ip', ['-n', ns, 'addr', 'add', `${address4}/24`, 'dev', ifname]);
      if (address6) await exec(undefined, 'ip', ['-n', ns, 'addr', 'add', `${address6}/64`, 'dev', ifname, 'nodad']);
      if (options.mtu) await exec(undefined, 'ip', ['-n', ns, 'link', 'set', ifname, 'mtu', String(options.mtu)]);
      await exec(undefined, 'ip', ['-n', ns, 'link', 'set', ifname, 'up']);
      ends.push({ ns, ifname, address4, address6 });
    }
    for (const end of ends) {
      await waitFor(async () => (await linkState(end.ns, end.ifname)) === 'UP', { timeoutMs: 5_000, what: `${end.ns}/${end.ifname} up` });
    }
    return { a: ends[0]!, b: ends[1]!, subnet4: `${base}.0/24`, prefixLength4: 24 };
  }

  /** Remembers a link created in the root namespace so cleanup() deletes it. */
  trackRootLink(ifname: string): void {
    this.rootLinks.push(ifname);
  }

  /**
   * Adopts a process this bed did not spawn (a daemon that detached, found with namespacePids()),
   * so cleanup() stops it by PID. Adopting a PID twice is harmless.
   */
  trackPid(pid: number, name: string): void {
    this.adoptedPids.set(pid, name);
  }

  /** A file cleanup() removes (if it still exists), e.g. a UAPI socket a killed daemon left. */
  trackPath(path: string): void {
    if (!this.trackedPaths.includes(path)) this.trackedPaths.push(path);
  }

  /** A private (0700) temporary directory removed by cleanup(). */
  tempDir(): string {
    const dir = mkdtempSync(join(tmpdir(), `${this.prefix}-`));
    this.tempDirs.push(dir);
    return dir;
  }

  /** Runs a command to completion inside ns (undefined: the test's own namespace). */
  exec(ns: string | undefined, cmd: string, args: readonly string[], options?: ExecOptions): Promise<ExecResult> {
    return exec(ns, cmd, args, options);
  }

  /**
   * Starts a long-running command inside ns, tracked by PID. `ip netns exec` execs the command
   * in place, so the PID is the command's own.
   */
  spawn(ns: string | undefined, cmd: string, args: readonly string[], options: SpawnInNamespaceOptions = {}): TrackedProcess {
    if (this.cleaned) throw new Error('NetnsBed already cleaned up');
    const [file, argv] =
      options.dieWithParent ?? true ? inNamespace(ns, 'setpriv', ['--pdeathsig', 'SIGTERM', '--', cmd, ...args]) : inNamespace(ns, cmd, args);
    const spawnOptions: SpawnOptions = { stdio: ['pipe', 'pipe', 'pipe'], env: options.env ?? process.env };
    const child = spawnChild(file, argv, spawnOptions);
    const pid = child.pid;
    if (pid === undefined) throw new Error(`${describeCommand(ns, cmd, args)}: could not start`);
    let text = '';
    if ((options.stdio ?? 'capture') === 'capture') {
      const append = (chunk: Buffer): void => {
        text += chunk.toString();
        if (text.length > OUTPUT_LIMIT) text = text.slice(-OUTPUT_LIMIT);
      };
      child.stdout?.on('data', append);
      child.stderr?.on('data', append);
    }
    child.stdin?.on('error', () => {});
    let done = false;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.on('exit', (code, signal) => {
        done = true;
        this.processes.delete(pid);
        resolve({ code, signal });
      });
      child.on('error', () => {
        done = true;
        this.processes.delete(pid);
        resolve({ code: null, signal: null });
      });
    });
    const tracked: TrackedProcess = {
      name: describeCommand(ns, cmd, args),
      pid,
      child,
      exited,
      hasExited: () => done,
      output: () => text,
    };
    this.processes.set(pid, tracked);
    return tracked;
  }

  /** SIGTERM, then SIGKILL if it has not exited within graceMs; resolves once it has exited. */
  async stop(proc: TrackedProcess, graceMs = 3_000): Promise<void> {
    if (proc.hasExited()) return;
    signal(proc.pid, 'SIGTERM');
    const timer = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), graceMs).unref());
    if ((await Promise.race([proc.exited, timer])) === 'timeout') {
      signal(proc.pid, 'SIGKILL');
      await proc.exited;
    }
  }

  /**
   * Stops every tracked process (by PID), deletes the namespaces (and with them their links),
   * root-namespace links and temporary directories. Attempts everything; throws one error
   * listing what failed. Safe to call more than once.
   */
  async cleanup(): Promise<void> {
    if (this.cleaned) return;
    this.cleaned = true;
    process.removeListener('exit', this.exitHook);
    const failures: string[] = [];
    await Promise.all([...this.processes.values()].map((proc) => this.stop(proc).catch((err: Error) => failures.push(`${proc.name}: ${err.message}`))));
    // Adopted processes, then anything else still running inside our namespaces (a daemon that
    // detached from its launcher): deleting a namespace does not end the processes in it.
    const leftovers = new Map(this.adoptedPids);
    this.adoptedPids.clear();
    for (const ns of this.namespaces) {
      for (const pid of await namespacePids(ns)) if (!leftovers.has(pid)) leftovers.set(pid, `process in ${ns}`);
    }
    await Promise.all([...leftovers].map(([pid, name]) => stopPid(pid).catch((err: Error) => failures.push(`${name} (pid ${pid}): ${err.message}`))));
    for (const link of this.rootLinks.splice(0)) {
      const result = await exec(undefined, 'ip', ['link', 'delete', link], { allowFailure: true });
      if (result.code !== 0 && !/Cannot find device/.test(result.stderr)) failures.push(`ip link delete ${link}: ${result.stderr.trim()}`);
    }
    for (const ns of this.namespaces.splice(0).reverse()) {
      const result = await exec(undefined, 'ip', ['netns', 'delete', ns], { allowFailure: true });
      if (result.code !== 0 && !/No such file/.test(result.stderr)) failures.push(`ip netns delete ${ns}: ${result.stderr.trim()}`);
    }
    for (const path of [...this.tempDirs.splice(0), ...this.trackedPaths.splice(0)]) {
      try {
        rmSync(path, { recursive: true, force: true });
      } catch (err) {
        failures.push(`rm ${path}: ${(err as Error).message}`);
      }
    }
    const leftover = (await listNamespaces()).filter((ns) => ns === this.prefix || ns.startsWith(`${this.prefix}-`));
    if (leftover.length > 0) failures.push(`namespaces still present: ${leftover.join(', ')}`);
    if (failures.length > 0) throw new Error(`NetnsBed ${this.prefix} cleanup:\n  ${failures.join('\n  ')}`);
  }

  /** Last-resort synchronous cleanup when the process exits without cleanup(). */
  private cleanupSync(): void {
    if (this.cleaned) return;
    this.cleaned = true;
    for (const proc of this.processes.values()) signal(proc.pid, 'SIGKILL');
    for (const pid of this.adoptedPids.keys()) signal(pid, 'SIGKILL');
    for (const ns of this.namespaces) {
      const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '';
      for (const pid of pids.split(/\s+/).filter(Boolean).map(Number)) signal(pid, 'SIGKILL');
    }
    for (const link of this.rootLinks) spawnSync('ip', ['link', 'delete', link], { stdio: 'ignore' });
    for (const ns of this.namespaces) spawnSync('ip', ['netns', 'delete', ns], { stdio: 'ignore' });
    for (const path of [...this.tempDirs, ...this.trackedPaths]) rmSync(path, { recursive: true, force: true });
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** SIGTERM, SIGKILL after graceMs; resolves once the process is gone (for processes we did not spawn). */
export async function stopPid(pid: number, graceMs = 3_000): Promise<void> {
  if (!pidRunning(pid)) return;
  signal(pid, 'SIGTERM');
  try {
    await waitFor(() => !pidRunning(pid), { timeoutMs: graceMs, intervalMs: 20, what: `pid ${pid} to exit` });
  } catch {
    signal(pid, 'SIGKILL');
    await waitFor(() => !pidRunning(pid), { timeoutMs: 5_000, intervalMs: 20, what: `pid ${pid} to exit after SIGKILL` });
  }
}

/**
 * Whether pid is a live process: it exists and is not a zombie. (A detached daemon's zombie may
 * never be reaped when PID 1 does not reap orphans, as in some containers.)
 */
export function pidRunning(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  // pid (comm) state …: comm may contain spaces and parentheses; the state follows the last ')'.
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X' && state !== '';
}

/** PIDs of the processes whose network namespace is ns (`ip netns pids`); empty if ns is gone. */
export async function namespacePids(ns: string): Promise<number[]> {
  const result = await exec(undefined, 'ip', ['netns', 'pids', ns], { allowFailure: true });
  if (result.code !== 0) return [];
  return result.stdout.split(/\s+/).filter(Boolean).map(Number);
}

/** Whether a process with this PID exists (a zombie counts until reaped). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** RFC 5952 text of an IPv6 address (as the kernel and node:dgram print it), e.g. fd00:0:0:0::1 → fd00::1. */
export function canonicalIPv6(address: string): string {
  return new URL(`http://[${address}]/`).hostname.slice(1, -1);
}

/** Names from `ip netns list` (which may append "(id: N)"). */
export async function listNamespaces(): Promise<string[]> {
  const result = await exec(undefined, 'ip', ['netns', 'list']);
  return result.stdout
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((name) => name.length > 0);
}

/** operstate of a link inside ns ('UP', 'DOWN', 'UNKNOWN', …), or undefined when it does not exist. */
export async function linkState(ns: string | undefined, ifname: string): Promise<string | undefined> {
  const args = ns === undefined ? ['-j', 'link', 'show', 'dev', ifname] : ['-n', ns, '-j', 'link', 'show', 'dev', ifname];
  const result = await exec(undefined, 'ip', args, { allowFailure: true });
  if (result.code !== 0) return undefined;
  const links = JSON.parse(result.stdout) as Array<{ operstate?: string }>;
  return links[0]?.operstate;
}

/**
 * For a describe block: a bed of two namespaces, a and b, joined by one veth, made before its
 * tests (after sweeping what a killed run left) and removed after them. link() is the veth.
 */
export function vethPairBed(prefix: string): { readonly bed: NetnsBed; link(): VethPair } {
  const bed = new NetnsBed(prefix);
  let link: VethPair | undefined;
  beforeAll(async () => {
    await bed.sweepStale();
    link = await bed.createVethPair(await bed.createNamespace('a'), await bed.createNamespace('b'));
  });
  afterAll(async () => {
    await bed.cleanup();
  });
  return {
    bed,
    link: () => {
      if (!link) throw new Error(`${prefix}: the veth pair is made in beforeAll`);
      return link;
    },
  };
}
