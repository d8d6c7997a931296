/**
 * Network-namespace beds for the benchmarks that need real interfaces (e2e, scale-peers):
 * namespaces, a veth pair, commands and daemons inside them, the daemons' memory, and a cleanup
 * that removes everything this run created — processes by PID, namespaces and files by name,
 * never by pattern — on success, on failure, on Ctrl-C (SIGINT/SIGTERM/SIGHUP) and, as a last
 * resort, synchronously when the process exits.
 *
 *   const bed = new Bed('e2e');                       // names start with wgts-e2e-<pid>
 *   const [a, b] = [await bed.namespace('a'), await bed.namespace('b')];
 *   const link = await bed.veth(a, b);                // 198.18.n.1/24 ↔ 198.18.n.2/24
 *   const d = await startDaemon(bed, a, WGTS_SODIUM, bed.ifname('e'));   // tracked by PID
 *   …
 *   await bed.cleanup();                              // in finally
 *
 * The primitives (exec with a deadline, waitFor, PID handling, namespace listing) are the
 * namespace tests' own, from test/netns/helpers/netns.ts; this module adds the bench's bed and
 * daemon handling on top. Underlay addresses come from 198.18.0.0/15 only.
 */
import type { ChildProcess } from 'node:child_process';
import { spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
// The namespace primitives are the tests' (one implementation); this module adds what benches need.
export { exec, IFNAME_MAX, isRoot, linkState, listNamespaces, namespacePids, pidRunning, stopPid, waitFor } from '../../test/netns/helpers/netns.ts';
export type { ExecOptions, ExecResult, WaitForOptions } from '../../test/netns/helpers/netns.ts';
import { exec, IFNAME_MAX, isRoot, linkState, listNamespaces, namespacePids, pidRunning, stopPid, waitFor } from '../../test/netns/helpers/netns.ts';
import type { ExecOptions, ExecResult, WaitForOptions } from '../../test/netns/helpers/netns.ts';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const WGTS_CLI = join(REPO_ROOT, 'src/cli.ts');
/** The benchmark runs under Node 24 (`npm run bench`), which is what wgts needs too. */
export const NODE = process.execPath;
export const UAPI_DIRECTORY = '/var/run/wireguard';


// ---------------------------------------------------------------------------------------------
// Commands



/** argv that runs cmd in namespace ns (undefined: this process's namespace). */
function inNamespace(ns: string | undefined, cmd: string, args: readonly string[]): [string, string[]] {
  return ns === undefined ? [cmd, [...args]] : ['ip', ['netns', 'exec', ns, cmd, ...args]];
}

function describe(ns: string | undefined, cmd: string, args: readonly string[]): string {
  return `${ns === undefined ? '' : `[${ns}] `}${[cmd, ...args].join(' ')}`;
}

/** Children of exec() still running, so an interrupted run can kill them by PID. */
const running = new Set<ChildProcess>();




// ---------------------------------------------------------------------------------------------
// Processes

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}


/** Whether a process with this PID exists at all (used for stale-namespace sweeping). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}


/** Memory of a process from /proc/<pid>/status, in KiB: resident now (VmRSS) and its peak (VmHWM). */
export interface Memory {
  readonly rssKiB: number;
  readonly hwmKiB: number;
}

export function processMemory(pid: number): Memory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status);
    if (!m) throw new Error(`/proc/${pid}/status has no ${name}`);
    return Number(m[1]);
  };
  return { rssKiB: field('VmRSS'), hwmKiB: field('VmHWM') };
}




/** A long-running process started by a Bed, tracked by PID until it exits. */
export interface Tracked {
  readonly name: string;
  readonly pid: number;
  /** stdout and stderr go here. */
  readonly logFile: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  hasExited(): boolean;
  /** The last bytes of its log. */
  log(limit?: number): string;
}

export interface VethEnd {
  readonly ns: string;
  readonly ifname: string;
  readonly address4: string;
}

export interface VethPair {
  readonly a: VethEnd;
  readonly b: VethEnd;
  readonly subnet4: string;
}

const PREFIX_PATTERN = /^wgts-([a-z0-9]+)-(\d+)(?:-|$)/;

/**
 * One benchmark run's namespaces, processes, files and temporary directories, all named under
 * wgts-<tag>-<pid>. cleanup() removes them; Ctrl-C runs it too (then exits 130), and an 'exit'
 * hook does the same synchronously if the process goes away without it.
 */
export class Bed {
  readonly prefix: string;
  private readonly tag: string;
  private readonly namespaces: string[] = [];
  private readonly processes = new Map<number, Tracked>();
  private readonly paths: string[] = [];
  private readonly tempDirs: string[] = [];
  private subnet = 0;
  private ifnames = 0;
  private cleaned = false;
  /** Set on SIGINT/SIGTERM/SIGHUP: the benchmark should stop (cleanup is already running). */
  interrupted = false;
  private cleaning: Promise<void> | undefined;
  private readonly exitHook = (): void => this.cleanupSync();
  private readonly signalHook = (sig: NodeJS.Signals): void => {
    this.interrupted = true;
    process.stderr.write(`\n${sig}: cleaning up ${this.prefix}…\n`);
    this.cleanup()
      .catch((err: Error) => process.stderr.write(`${err.message}\n`))
      .finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };

  /** tag: 1–6 lowercase letters or digits naming the benchmark. */
  constructor(tag: string) {
    if (!/^[a-z0-9]{1,6}$/.test(tag)) throw new Error(`Bed tag "${tag}": use 1–6 lowercase letters or digits`);
    if (!isRoot()) throw new Error('this benchmark needs root (network namespaces, veth, TUN)');
    this.tag = tag;
    this.prefix = `wgts-${tag}-${process.pid}`;
    process.once('exit', this.exitHook);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, this.signalHook);
  }

  /** A machine-unique interface name: base + pid (base 36) + a counter (daemons share /var/run/wireguard). */
  ifname(base: string): string {
    const name = `${base}${process.pid.toString(36)}${(this.ifnames++).toString(36)}`;
    if (name.length > IFNAME_MAX) throw new Error(`interface name ${name} is longer than ${IFNAME_MAX} characters`);
    return name;
  }

  /** Removes namespaces an earlier, killed run of this benchmark left behind (its PID is gone), stopping their processes by PID. */
  async sweepStale(): Promise<string[]> {
    const removed: string[] = [];
    for (const ns of await listNamespaces()) {
      const m = PREFIX_PATTERN.exec(ns);
      if (!m || m[1] !== this.tag) continue;
      const pid = Number(m[2]);
      if (pid === process.pid || processExists(pid)) continue;
      for (const leftover of await namespacePids(ns)) await stopPid(leftover).catch(() => {});
      await exec(undefined, 'ip', ['netns', 'delete', ns], { allowFailure: true });
      removed.push(ns);
    }
    return removed;
  }

  /** Creates <prefix>-<name> with loopback up. */
  async namespace(name: string): Promise<string> {
    const ns = `${this.prefix}-${name}`;
    await exec(undefined, 'ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    await exec(undefined, 'ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    return ns;
  }

  /** A veth pair created inside the two namespaces, 198.18.n.1/24 ↔ 198.18.n.2/24; resolves once both ends are up. */
  async veth(nsA: string, nsB: string): Promise<VethPair> {
    const n = this.subnet++;
    if (n >= 512) throw new Error('out of 198.18.0.0/15 subnets');
    const base = `198.${18 + (n >> 8)}.${n & 0xff}`;
    const ends: VethEnd[] = [
      { ns: nsA, ifname: `veth${n}a`, address4: `${base}.1` },
      { ns: nsB, ifname: `veth${n}b`, address4: `${base}.2` },
    ];
    await exec(undefined, 'ip', ['link', 'add', ends[0]!.ifname, 'netns', nsA, 'type', 'veth', 'peer', 'name', ends[1]!.ifname, 'netns', nsB]);
    for (const end of ends) {
      await exec(undefined, 'ip', ['-n', end.ns, 'addr', 'add', `${end.address4}/24`, 'dev', end.ifname]);
      await exec(undefined, 'ip', ['-n', end.ns, 'link', 'set', end.ifname, 'up']);
    }
    for (const end of ends) {
      await waitFor(async () => (await linkState(end.ns, end.ifname)) === 'UP', { what: `${end.ns}/${end.ifname} up` });
    }
    return { a: ends[0]!, b: ends[1]!, subnet4: `${base}.0/24` };
  }

  /** A private temporary directory, removed by cleanup(). */
  tempDir(): string {
    const dir = mkdtempSync(join(tmpdir(), `${this.prefix}-`));
    this.tempDirs.push(dir);
    return dir;
  }

  /** A file cleanup() removes if it still exists (e.g. a UAPI socket). */
  trackPath(path: string): void {
    if (!this.paths.includes(path)) this.paths.push(path);
  }

  /**
   * Starts a long-running command in ns, tracked by PID, output to a log file. It runs under
   * `setpriv --pdeathsig SIGTERM`, so it is told to exit even if this process is SIGKILLed.
   * (`ip netns exec` and setpriv exec in place: the PID is the command's own.)
   */
  spawn(ns: string, cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Tracked {
    if (this.cleaned) throw new Error('Bed already cleaned up');
    const [file, argv] = inNamespace(ns, 'setpriv', ['--pdeathsig', 'SIGTERM', '--', cmd, ...args]);
    const dir = this.tempDirs[0] ?? this.tempDir();
    const logFile = join(dir, `${cmd.split('/').pop()}-${this.processes.size}-${Date.now()}.log`);
    const fd = openSync(logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(file, argv, { stdio: ['ignore', fd, fd], env });
    } finally {
      closeSync(fd);
    }
    const pid = child.pid;
    if (pid === undefined) throw new Error(`${describe(ns, cmd, args)}: could not start`);
    let done = false;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolvePromise) => {
      child.on('exit', (code, sig) => {
        done = true;
        this.processes.delete(pid);
        resolvePromise({ code, signal: sig });
      });
      child.on('error', () => {
        done = true;
        this.processes.delete(pid);
        resolvePromise({ code: null, signal: null });
      });
    });
    const tracked: Tracked = {
      name: describe(ns, cmd, args),
      pid,
      logFile,
      exited,
      hasExited: () => done,
      log: (limit = 4096) => {
        try {
          const text = readFileSync(logFile, 'utf8');
          return text.length > limit ? text.slice(-limit) : text;
        } catch {
          return '';
        }
      },
    };
    this.processes.set(pid, tracked);
    return tracked;
  }

  /** SIGTERM, SIGKILL after graceMs; resolves once it exited. */
  async stop(proc: Tracked, graceMs = 3_000): Promise<void> {
    if (proc.hasExited()) return;
    signal(proc.pid, 'SIGTERM');
    const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), graceMs).unref());
    if ((await Promise.race([proc.exited, timer])) === 'timeout') {
      signal(proc.pid, 'SIGKILL');
      await proc.exited;
    }
  }

  /** Stops every process (by PID), deletes the namespaces, tracked files and temporary directories. Safe to call twice. */
  cleanup(): Promise<void> {
    this.cleaning ??= this.doCleanup();
    return this.cleaning;
  }

  private async doCleanup(): Promise<void> {
    this.cleaned = true;
    const failures: string[] = [];
    for (const child of running) child.kill('SIGKILL');
    await Promise.all([...this.processes.values()].map((p) => this.stop(p).catch((err: Error) => failures.push(`${p.name}: ${err.message}`))));
    // Anything else still inside our namespaces (deleting a namespace does not end its processes).
    for (const ns of this.namespaces) {
      for (const pid of await namespacePids(ns)) await stopPid(pid).catch((err: Error) => failures.push(`pid ${pid} in ${ns}: ${err.message}`));
    }
    for (const ns of this.namespaces.splice(0).reverse()) {
      const r = await exec(undefined, 'ip', ['netns', 'delete', ns], { allowFailure: true });
      if (r.code !== 0 && !/No such file/.test(r.stderr)) failures.push(`ip netns delete ${ns}: ${r.stderr.trim()}`);
    }
    for (const path of [...this.paths.splice(0), ...this.tempDirs.splice(0)]) {
      try {
        rmSync(path, { recursive: true, force: true });
      } catch (err) {
        failures.push(`rm ${path}: ${(err as Error).message}`);
      }
    }
    process.removeListener('exit', this.exitHook);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.removeListener(sig, this.signalHook);
    const leftover = (await listNamespaces()).filter((ns) => ns.startsWith(`${this.prefix}-`));
    if (leftover.length > 0) failures.push(`namespaces still present: ${leftover.join(', ')}`);
    if (failures.length > 0) throw new Error(`cleanup of ${this.prefix}:\n  ${failures.join('\n  ')}`);
  }

  /** Last resort when the process exits without cleanup(): SIGKILL by PID, delete by name. */
  private cleanupSync(): void {
    if (this.cleaned) return;
    this.cleaned = true;
    for (const child of running) child.kill('SIGKILL');
    for (const proc of this.processes.values()) signal(proc.pid, 'SIGKILL');
    for (const ns of this.namespaces) {
      const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '';
      for (const pid of pids.split(/\s+/).filter(Boolean).map(Number)) signal(pid, 'SIGKILL');
    }
    for (const ns of this.namespaces) spawnSync('ip', ['netns', 'delete', ns], { stdio: 'ignore' });
    for (const path of [...this.paths, ...this.tempDirs]) rmSync(path, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// WireGuard daemons

/** base64 X25519 key pair (node:crypto, i.e. OpenSSL). */
export interface KeyPair {
  readonly privateKey: string;
  readonly publicKey: string;
}

export function newKeyPair(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const raw = (der: Buffer): string => der.subarray(der.length - 32).toString('base64');
  return {
    privateKey: raw(privateKey.export({ format: 'der', type: 'pkcs8' })),
    publicKey: raw(publicKey.export({ format: 'der', type: 'spki' })),
  };
}

/** Which daemon to run, and how. */
export interface Implementation {
  /** Short id for JSON and options, e.g. 'wgts-sodium'. */
  readonly id: string;
  /** For tables, e.g. 'wgts sodium w0'. */
  readonly label: string;
  readonly kind: 'wgts' | 'wireguard-go';
  /** Extra environment (WGTS_CRYPTO, WGTS_WORKERS, LOG_LEVEL). */
  readonly env: Readonly<Record<string, string>>;
  /** wgts only: the CLI to run (default src/cli.ts, i.e. TypeScript run by Node's type stripping). */
  readonly cli?: string;
}

export interface Daemon {
  readonly impl: Implementation;
  readonly ns: string;
  readonly ifname: string;
  readonly socketPath: string;
  readonly process: Tracked;
  readonly pid: number;
}

/**
 * Starts `<impl> -f <ifname>` in ns (the foreground form of the daemon, so this process holds
 * its PID) and resolves once the TUN exists and the UAPI socket answers `wg show`; rejects with
 * the daemon's log if it exits or does not become ready.
 */
export async function startDaemon(bed: Bed, ns: string, impl: Implementation, ifname: string, timeoutMs = 20_000): Promise<Daemon> {
  const socketPath = join(UAPI_DIRECTORY, `${ifname}.sock`);
  if (existsSync(socketPath)) throw new Error(`${socketPath} already exists: another daemon uses the name ${ifname}`);
  const env = { ...process.env, ...impl.env };
  const proc = impl.kind === 'wgts' ? bed.spawn(ns, NODE, [impl.cli ?? WGTS_CLI, '-f', ifname], env) : bed.spawn(ns, 'wireguard-go', ['-f', ifname], env);
  bed.trackPath(socketPath);
  try {
    await waitFor(
      async () => {
        if (proc.hasExited()) throw new Error(`${impl.label} exited`);
        if (!existsSync(socketPath) || (await linkState(ns, ifname)) === undefined) return false;
        return (await exec(ns, 'wg', ['show', ifname, 'listen-port'], { allowFailure: true, timeoutMs: 3_000 })).code === 0;
      },
      { timeoutMs, intervalMs: 20, what: `${impl.label} ${ifname}: TUN and UAPI socket` },
    );
  } catch (err) {
    await bed.stop(proc);
    throw new Error(`${(err as Error).message}\n--- ${impl.label} log ---\n${proc.log()}`);
  }
  return { impl, ns, ifname, socketPath, process: proc, pid: proc.pid };
}

/** Stops a daemon by PID and waits until its TUN is gone; removes its socket file. */
export async function stopDaemon(bed: Bed, d: Daemon): Promise<void> {
  await bed.stop(d.process);
  await waitFor(async () => (await linkState(d.ns, d.ifname)) === undefined, { timeoutMs: 5_000, what: `${d.ifname} removed` }).catch(async () => {
    await exec(d.ns, 'ip', ['link', 'delete', d.ifname], { allowFailure: true });
  });
  rmSync(d.socketPath, { force: true });
}

/**
 * Compiles wgts (tsconfig.build.json, i.e. what `npm run build` puts in dist/) into a package
 * root under dir — its own package.json, with node_modules and build/Release linked to this
 * checkout's — and returns the path of its dist/cli.js. The checkout's own dist/ is not touched.
 */
export async function buildWgts(dir: string): Promise<string> {
  const root = join(dir, 'wgts-build');
  mkdirSync(join(root, 'build'), { recursive: true });
  copyFileSync(join(REPO_ROOT, 'package.json'), join(root, 'package.json'));
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(root, 'node_modules'));
  symlinkSync(join(REPO_ROOT, 'build', 'Release'), join(root, 'build', 'Release'));
  const tsc = join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  await exec(undefined, NODE, [tsc, '-p', join(REPO_ROOT, 'tsconfig.build.json'), '--outDir', join(root, 'dist')], { timeoutMs: 600_000 });
  const cli = join(root, 'dist', 'cli.js');
  if (!existsSync(cli)) throw new Error(`tsc did not produce ${cli}`);
  return cli;
}

/** Which wgts code a run measured: the commit, uncommitted changes under src/, and when the native addon was built. */
export interface SourceState {
  readonly commit: string;
  readonly dirtySrcFiles: readonly string[];
  readonly nativeAddonBuilt: string | undefined;
}

export async function sourceState(): Promise<SourceState> {
  const git = async (args: string[]): Promise<string> => (await exec(undefined, 'git', ['-C', REPO_ROOT, ...args], { allowFailure: true })).stdout.trimEnd();
  let nativeAddonBuilt: string | undefined;
  try {
    nativeAddonBuilt = statSync(join(REPO_ROOT, 'build', 'Release', 'wgts_native.node')).mtime.toISOString();
  } catch {
    nativeAddonBuilt = undefined;
  }
  return {
    commit: (await git(['rev-parse', '--short', 'HEAD'])).trim(),
    dirtySrcFiles: (await git(['status', '--porcelain', '--', 'src'])).split('\n').filter(Boolean).map((l) => l.slice(3)),
    nativeAddonBuilt,
  };
}

export function describeSourceState(s: SourceState): string {
  const dirty = s.dirtySrcFiles.length === 0 ? 'src/ clean' : `uncommitted in src/: ${s.dirtySrcFiles.join(', ')}`;
  return `wgts at ${s.commit} (${dirty}); native addon built ${s.nativeAddonBuilt ?? '(missing)'}`;
}

/** Writes a key to a 0600 file in dir; returns its path. */
export function keyFile(dir: string, name: string, key: string): string {
  const path = join(dir, name);
  writeFileSync(path, key + '\n', { mode: 0o600 });
  return path;
}
