/**
 * `wgts demo`: an HTTP login carrying a bearer token and a password, sent from one network
 * namespace to another through a WireGuard tunnel, while tcpdump records the wire between them.
 * The capture is then read back (src/demo/pcap.ts) and searched for the secrets: with the tunnel
 * the wire shows only UDP 51820 and no secret; with --plaintext (no tunnel) it shows both.
 *
 *   namespace A  wgtsdemo-<pid>-a                 namespace B  wgtsdemo-<pid>-b
 *     client.ts ─► wgd<pid>a 100.64.77.1 ═══ UDP 51820 ═══ wgd<pid>b 100.64.77.2 ─► server.ts :8080
 *                  wgdv<pid>a 198.18.77.1 ─── veth ─────── wgdv<pid>b 198.18.77.2
 *                  ▲ tcpdump
 *
 * The WireGuard daemon runs inside each namespace as `IMPL IFNAME` (the wireguard-go contract:
 * daemonize, return once /var/run/wireguard/IFNAME.sock exists), configured with the real `wg`.
 * IMPL is this wgts by default; options.impl or WGTS_DEMO_IMPL (e.g. wireguard-go) replaces it.
 *
 * Everything the demo creates — namespaces, daemons, children, sockets, temporary files — is
 * removed before runDemo returns, on errors, and on SIGINT/SIGTERM.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generatePrivateKey, publicKeyOf } from '../cli/keys.ts';
import { keyToBase64 } from '../util/hex.ts';
import type { StdioOptions } from 'node:child_process';
import type { ClientReport } from './client.ts';
import type { CaptureReport } from './pcap.ts';
import { analyzeCapture, textAround } from './pcap.ts';
import type { RunOptions, RunResult } from './proc.ts';
import { inNamespace, pidAlive, run, signalPid, sleep, Tracked, waitFor, which } from './proc.ts';

export interface DemoOptions {
  /** The same run without the tunnel: HTTP straight over the veth, where the secrets show. */
  readonly plaintext?: boolean;
  /**
   * The WireGuard daemon, run as `IMPL IFNAME` inside each namespace (words split on spaces).
   * Default: env WGTS_DEMO_IMPL, else this wgts (`node …/cli.ts`).
   */
  readonly impl?: string;
  /** Receives each output line (default: stdout). */
  readonly log?: (line: string) => void;
}

export const INSTALL_HINT = 'apt-get install -y iproute2 tcpdump wireguard-tools';

const UNDERLAY_A = '198.18.77.1';
const UNDERLAY_B = '198.18.77.2';
const OVERLAY_A = '100.64.77.1';
const OVERLAY_B = '100.64.77.2';
const WG_PORT = 51820;
const HTTP_PORT = 8080;
const REQUESTS = 3;
const UAPI_DIRECTORY = '/var/run/wireguard';
const NAME_PREFIX = 'wgtsdemo';
const STALE_NAMESPACE = /^wgtsdemo-(\d+)-[ab]$/;
const STALE_TEMPDIR = /^wgtsdemo-(\d+)-/;

/** This module's extension: '.ts' when running from src, '.js' from dist; the siblings match. */
const EXTENSION = extname(fileURLToPath(import.meta.url));
const sibling = (relative: string): string => fileURLToPath(new URL(`${relative}${EXTENSION}`, import.meta.url));
const CLI_PATH = sibling('../cli');
const SERVER_PATH = sibling('./server');
const CLIENT_PATH = sibling('./client');

/** A run in progress in this process (names are per-PID, so two at once would collide). */
let active = false;

/** Runs the demo; resolves with the exit code (0: the outcome was the expected one). */
export async function runDemo(options: DemoOptions = {}): Promise<number> {
  const log = options.log ?? ((line: string) => void process.stdout.write(`${line}\n`));
  if (active) {
    log('wgts demo: another demo is already running in this process');
    return 1;
  }
  active = true;
  const state = new DemoState();
  const exitHook = (): void => state.cleanupSync();
  let caught: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (caught !== undefined) {
      // A second Ctrl-C: no more waiting.
      state.cleanupSync();
      process.exit(130);
    }
    caught = sig;
    state.interrupted = true;
    log(`\n${sig}: stopping and cleaning up (again to force)…`);
    // A first pass now stops the children, which unblocks the steps; the final pass follows.
    void state.cleanup();
  };
  // `wgts demo | head`: a closed stdout must not crash the run before it has cleaned up.
  const ignoreStdoutError = (): void => {};
  if (options.log === undefined) process.stdout.on('error', ignoreStdoutError);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.once('exit', exitHook);
  try {
    let code = await demo(state, options, log).catch((err: unknown) => {
      if (!state.interrupted) log(`wgts demo failed: ${err instanceof Error ? err.message : String(err)}`);
      return 1;
    });
    const problems = await state.cleanup();
    for (const note of state.notes) log(`note: ${note}`);
    for (const problem of problems) log(`cleanup: ${problem}`);
    if (problems.length > 0 && code === 0) code = 1;
    if (caught !== undefined) code = caught === 'SIGINT' ? 130 : 143;
    return code;
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    process.removeListener('exit', exitHook);
    process.stdout.removeListener('error', ignoreStdoutError);
    active = false;
  }
}

interface Tunnel {
  readonly ns: string;
  readonly ifname: string;
  readonly socket: string;
}

/** What one run created, so cleanup removes exactly that. */
class DemoState {
  readonly tag = `${NAME_PREFIX}-${process.pid}`;
  readonly nsA = `${this.tag}-a`;
  readonly nsB = `${this.tag}-b`;
  readonly vethA = `wgdv${process.pid}a`;
  readonly vethB = `wgdv${process.pid}b`;
  readonly ifA = `wgd${process.pid}a`;
  readonly ifB = `wgd${process.pid}b`;
  interrupted = false;
  tempDir: string | undefined;
  readonly namespaces: string[] = [];
  readonly tunnels: Tunnel[] = [];
  readonly processes = new Set<Tracked>();
  readonly daemonPids = new Set<number>();
  /** Set before the first `ip netns add`: from then on cleanup verifies that nothing is left. */
  createdNamespaces = false;
  /** Remarks from cleanup that are not failures (e.g. a daemon that needed a signal to stop). */
  readonly notes = new Set<string>();
  private cleaning: Promise<unknown> | undefined;
  private readonly started = performance.now();

  elapsed(): string {
    return `${((performance.now() - this.started) / 1000).toFixed(1)}s`;
  }

  makeTempDir(): string {
    this.tempDir ??= mkdtempSync(join(tmpdir(), `${this.tag}-`));
    return this.tempDir;
  }

  /** Throws once the run was interrupted, so the demo creates nothing more. */
  guard(): void {
    if (this.interrupted) throw new Error('interrupted');
  }

  /** run() for the demo's steps: refused after an interruption. */
  run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    this.guard();
    return run(argv, options);
  }

  /** A long-running child, tracked for cleanup: refused after an interruption. */
  spawn(name: string, argv: readonly string[], stdio?: StdioOptions): Tracked {
    this.guard();
    const proc = new Tracked(name, argv, stdio);
    this.processes.add(proc);
    void proc.exited.then(() => this.processes.delete(proc));
    return proc;
  }

  /**
   * Removes everything created so far; resolves with what could not be removed (empty: all
   * gone). Each call queues one more pass after any pass in progress, so something created
   * while a pass ran (a command in flight at Ctrl-C) is removed by the next one.
   */
  cleanup(): Promise<string[]> {
    const pass = (this.cleaning ?? Promise.resolve([])).then(() => this.doCleanup());
    this.cleaning = pass;
    return pass;
  }

  private async doCleanup(): Promise<string[]> {
    const problems: string[] = [];
    const attempt = async (what: string, action: () => Promise<unknown>): Promise<void> => {
      try {
        await action();
      } catch (err) {
        problems.push(`${what}: ${(err as Error).message}`);
      }
    };
    // Our children first (server, tcpdump, launchers), by PID.
    await Promise.all([...this.processes].map((proc) => attempt(`stop ${proc.name}`, () => proc.stop())));
    // A wireguard-go-style daemon exits when its TUN is deleted; signal it by PID if it does not.
    for (const tunnel of this.tunnels) {
      await attempt(`ip link del ${tunnel.ifname}`, () => run(['ip', '-n', tunnel.ns, 'link', 'del', tunnel.ifname], { allowFailure: true }));
    }
    await attempt('daemons', async () => {
      const how = await stopPids([...this.daemonPids], 3_000);
      if (how !== 'exited') this.notes.add(`the WireGuard daemon did not exit when its interface was deleted: ${how === 'terminated' ? 'stopped it with SIGTERM' : 'killed it'}`);
    });
    // Anything else still inside our namespaces is ours too (they have our unique names).
    for (const ns of this.namespaces) {
      await attempt(`processes in ${ns}`, async () => stopPids(await namespacePids(ns), 2_000));
    }
    for (const ns of [...this.namespaces].reverse()) {
      await attempt(`ip netns delete ${ns}`, async () => {
        const result = await run(['ip', 'netns', 'delete', ns], { allowFailure: true });
        if (result.code !== 0 && !/No such file/.test(result.stderr)) throw new Error(result.stderr.trim());
      });
    }
    for (const tunnel of this.tunnels) {
      await attempt(`rm ${tunnel.socket}`, async () => rmSync(tunnel.socket, { force: true }));
    }
    if (this.tempDir !== undefined) {
      const dir = this.tempDir;
      await attempt(`rm ${dir}`, async () => rmSync(dir, { recursive: true, force: true }));
    }
    if (!this.createdNamespaces) return problems;
    await attempt('verify', async () => {
      const left = (await listNamespaces()).filter((ns) => ns === this.nsA || ns === this.nsB);
      if (left.length > 0) throw new Error(`namespaces still present: ${left.join(', ')}`);
      const alive = [...this.daemonPids].filter(pidAlive);
      if (alive.length > 0) throw new Error(`daemon processes still running: ${alive.join(', ')}`);
    });
    return problems;
  }

  /** Last resort when the process exits with the run unfinished: everything by PID and name, synchronously. */
  cleanupSync(): void {
    for (const proc of this.processes) signalPid(proc.pid, 'SIGKILL');
    for (const tunnel of this.tunnels) spawnSync('ip', ['-n', tunnel.ns, 'link', 'del', tunnel.ifname], { stdio: 'ignore' });
    for (const pid of this.daemonPids) signalPid(pid, 'SIGKILL');
    for (const ns of this.namespaces) {
      const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '';
      for (const pid of pids.split(/\s+/).filter(Boolean).map(Number)) signalPid(pid, 'SIGKILL');
      spawnSync('ip', ['netns', 'delete', ns], { stdio: 'ignore' });
    }
    for (const tunnel of this.tunnels) rmSync(tunnel.socket, { force: true });
    if (this.tempDir !== undefined) rmSync(this.tempDir, { recursive: true, force: true });
  }
}

async function demo(state: DemoState, options: DemoOptions, log: (line: string) => void): Promise<number> {
  const plaintext = options.plaintext ?? false;
  const impl = resolveImpl(options.impl);
  const missing = checkPrerequisites(plaintext, impl);
  if (missing.length > 0) {
    for (const line of missing) log(`wgts demo: ${line}`);
    return 2;
  }
  for (const line of await sweepStale()) log(line);

  const token = randomBytes(16).toString('hex');
  const password = `pw-${randomBytes(12).toString('hex')}`;
  const secrets = { token: Buffer.from(token), password: Buffer.from(password) };
  const target = plaintext ? UNDERLAY_B : OVERLAY_B;
  const url = `http://${target}:${HTTP_PORT}/login`;
  const step = (text: string): void => log(`[${state.elapsed()}] ${text}`);

  log(plaintext ? 'wgts demo --plaintext: an HTTP login sent in the clear, watched on the wire' : 'wgts demo: an HTTP login sent through a WireGuard tunnel, watched on the wire');
  log(`  A  ${state.nsA}  veth ${state.vethA} ${UNDERLAY_A}${plaintext ? '' : `  tunnel ${state.ifA} ${OVERLAY_A}`}`);
  log(`  B  ${state.nsB}  veth ${state.vethB} ${UNDERLAY_B}${plaintext ? '' : `  tunnel ${state.ifB} ${OVERLAY_B}`}`);
  if (!plaintext) log(`  WireGuard daemon: ${impl.label} (${impl.argv.join(' ')})`);
  log(`  secrets: token ${token}, password ${password}`);
  log('');

  // The underlay: two namespaces and a veth pair. No IPv6 addresses and static neighbour
  // entries, so the only packets on the wire are the ones the demo sends.
  state.createdNamespaces = true;
  for (const ns of [state.nsA, state.nsB]) {
    state.namespaces.push(ns); // before it exists: cleanup tolerates a namespace that never came to be
    await state.run(['ip', 'netns', 'add', ns]);
    await state.run(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
  }
  await state.run(['ip', 'link', 'add', state.vethA, 'netns', state.nsA, 'type', 'veth', 'peer', 'name', state.vethB, 'netns', state.nsB]);
  const ends = [
    { ns: state.nsA, veth: state.vethA, address: UNDERLAY_A },
    { ns: state.nsB, veth: state.vethB, address: UNDERLAY_B },
  ] as const;
  const macs: string[] = [];
  for (const end of ends) {
    await state.run(['ip', '-n', end.ns, 'link', 'set', end.veth, 'addrgenmode', 'none']);
    await state.run(['ip', '-n', end.ns, 'addr', 'add', `${end.address}/24`, 'dev', end.veth]);
    await state.run(['ip', '-n', end.ns, 'link', 'set', end.veth, 'up']);
    macs.push(await linkAddress(end.ns, end.veth));
  }
  await state.run(['ip', '-n', state.nsA, 'neigh', 'replace', UNDERLAY_B, 'lladdr', macs[1]!, 'dev', state.vethA, 'nud', 'permanent']);
  await state.run(['ip', '-n', state.nsB, 'neigh', 'replace', UNDERLAY_A, 'lladdr', macs[0]!, 'dev', state.vethB, 'nud', 'permanent']);
  for (const end of ends) {
    await waitFor(async () => (await linkState(end.ns, end.veth)) === 'UP', { timeoutMs: 5_000, what: `${end.veth} up` });
  }
  step(`namespaces ${state.nsA} and ${state.nsB} joined by a veth pair (${UNDERLAY_A} ⇄ ${UNDERLAY_B})`);

  if (!plaintext) {
    const dir = state.makeTempDir();
    const keyA = generatePrivateKey();
    const keyB = generatePrivateKey();
    // Both at once, but let both settle before failing, so cleanup never races a launch.
    const launches = await Promise.allSettled([startDaemon(state, impl, state.nsA, state.ifA), startDaemon(state, impl, state.nsB, state.ifB)]);
    const failed = launches.find((launch) => launch.status === 'rejected');
    if (failed) throw failed.reason;
    const [pidsA = [], pidsB = []] = launches.map((launch) => (launch.status === 'fulfilled' ? launch.value : []));
    const sides = [
      { ns: state.nsA, ifname: state.ifA, key: keyA, peer: publicKeyOf(keyB), endpoint: UNDERLAY_B, address: OVERLAY_A, allowed: OVERLAY_B },
      { ns: state.nsB, ifname: state.ifB, key: keyB, peer: publicKeyOf(keyA), endpoint: UNDERLAY_A, address: OVERLAY_B, allowed: OVERLAY_A },
    ] as const;
    for (const side of sides) {
      const keyFile = join(dir, `${side.ifname}.key`);
      writeFileSync(keyFile, `${keyToBase64(side.key)}\n`, { mode: 0o600 });
      await state.run(inNamespace(side.ns, [
        'wg', 'set', side.ifname,
        'private-key', keyFile,
        'listen-port', String(WG_PORT),
        'peer', keyToBase64(side.peer),
        'endpoint', `${side.endpoint}:${WG_PORT}`,
        'allowed-ips', `${side.allowed}/32`,
      ]));
      rmSync(keyFile, { force: true });
      await state.run(['ip', '-n', side.ns, 'link', 'set', side.ifname, 'addrgenmode', 'none'], { allowFailure: true });
      await state.run(['ip', '-n', side.ns, 'addr', 'add', `${side.address}/24`, 'dev', side.ifname]);
      await state.run(['ip', '-n', side.ns, 'link', 'set', side.ifname, 'up']);
    }
    step(`tunnel up: ${impl.label} ${state.ifA} (pid ${pidsA.join(',')}) in A and ${state.ifB} (pid ${pidsB.join(',')}) in B, fresh keys set with wg`);
  }

  const server = state.spawn('HTTP server', inNamespace(state.nsB, [process.execPath, SERVER_PATH, target, String(HTTP_PORT)]));
  await server.waitForOutput(/^listening /, 10_000);
  step(`HTTP server (${basename(SERVER_PATH)}) listening on ${target}:${HTTP_PORT} in B`);

  const capturePath = join(state.makeTempDir(), 'underlay.pcap');
  const tcpdump = state.spawn('tcpdump', inNamespace(state.nsA, ['tcpdump', '-i', state.vethA, '-w', capturePath, '-U', '-n', '-s', '0', '--immediate-mode', '-Z', 'root']));
  await tcpdump.waitForOutput(/listening on/, 10_000);
  step(`tcpdump capturing everything on ${state.vethA} (the wire, in A)`);

  const client = await state.run(inNamespace(state.nsA, [process.execPath, CLIENT_PATH, url, String(REQUESTS)]), {
    timeoutMs: 30_000,
    allowFailure: true,
    env: { ...process.env, WGTS_DEMO_TOKEN: token, WGTS_DEMO_PASSWORD: password },
  });
  const report = parseClientReport(client.stdout);
  if (report === undefined) throw new Error(`the HTTP client failed (exit ${client.code ?? client.signal}):\n${(client.stderr || client.stdout).trim()}`);
  const delivered = report.results.filter((r) => r.delivered).length;
  const detail = report.results.map((r) => (r.delivered ? `${r.status} in ${r.ms} ms` : `failed: ${r.error ?? `status ${r.status}`}`)).join(', ');
  step(`${REQUESTS} × POST ${url} from A (Authorization: Bearer <token>, {"password": …}): ${detail}`);

  await sleep(100); // let the last ACKs reach the capture
  await tcpdump.stop('SIGINT');
  const capture = analyzeCapture(readFileSync(capturePath), secrets, [WG_PORT, HTTP_PORT]);
  step(`capture stopped: ${capture.packets} packets, ${capture.bytes} bytes`);
  log('');

  if (!plaintext) {
    const show = await state.run(inNamespace(state.nsA, ['wg', 'show', state.ifA]));
    log(`wg show ${state.ifA} (namespace A):`);
    for (const line of show.stdout.trimEnd().split('\n')) log(line.trim() === '' ? '' : `  ${line}`);
    log('');
  }

  log(`On the wire (${state.vethA}):`);
  for (const [flow, count] of [...capture.flows].sort((x, y) => y[1] - x[1])) {
    const wg = flow === `UDP ${WG_PORT}` && capture.wireGuard.size > 0 ? `  WireGuard: ${[...capture.wireGuard].map(([kind, n]) => `${n} ${kind}`).join(', ')}` : '';
    log(`  ${flow.padEnd(12)} ${String(count).padStart(4)} packets${wg}`);
  }
  for (const [name, needle] of Object.entries(secrets)) {
    const frame = capture.secretFrames.get(name);
    const text = frame && textAround(frame, needle);
    if (text !== undefined) log(`  ${name} seen in a packet: ${text}`);
  }
  if (capture.secretFrames.size === 0 && capture.largestPayload) {
    log(`  largest payload, first 48 bytes as text: ${printable(capture.largestPayload.subarray(0, 48))}`);
  }
  log('');

  const outcome = judge(capture, plaintext, delivered);
  log(outcome.summary);
  for (const problem of outcome.problems) log(`  ✗ ${problem}`);
  return outcome.problems.length === 0 ? 0 : 1;
}

export interface Outcome {
  readonly summary: string;
  /** Why the result is not the expected one (empty: it is). */
  readonly problems: readonly string[];
}

/** The human summary and the verdict: encrypted runs must leak nothing, plaintext runs must show the secrets. */
export function judge(capture: CaptureReport, plaintext: boolean, delivered: number): Outcome {
  const expectedFlow = plaintext ? `TCP ${HTTP_PORT}` : `UDP ${WG_PORT}`;
  const flows = [...capture.flows].sort((x, y) => y[1] - x[1]);
  const only = flows.length === 1 && flows[0]![0] === expectedFlow;
  const carried = only ? `all ${expectedFlow}` : flows.map(([flow, n]) => `${n} ${flow}`).join(', ') || 'nothing';
  const found = (name: string): string => {
    const hits = capture.secretHits.get(name) ?? 0;
    return hits > 0 ? `YES (in ${hits} packet${hits === 1 ? '' : 's'})` : 'no';
  };
  const leaked = (capture.secretHits.get('token') ?? 0) > 0 || (capture.secretHits.get('password') ?? 0) > 0;
  const verdict = plaintext ? (leaked ? 'plaintext: anyone on the path can read them' : 'no secrets seen') : leaked ? 'LEAKED' : 'encrypted';
  const summary = `underlay carried ${capture.packets} packets, ${carried}; token found: ${found('token')}; password found: ${found('password')} → ${verdict}`;
  const problems: string[] = [];
  if (delivered < REQUESTS) problems.push(`only ${delivered} of ${REQUESTS} requests were answered with the secrets echoed back`);
  if (capture.packets === 0) problems.push('the capture is empty');
  if (capture.truncated) problems.push('the capture file ends inside a packet');
  if (plaintext) {
    if ((capture.secretHits.get('token') ?? 0) === 0) problems.push('the token did not show in the plaintext capture');
    if ((capture.secretHits.get('password') ?? 0) === 0) problems.push('the password did not show in the plaintext capture');
  } else {
    if (!only) problems.push(`the wire carried more than ${expectedFlow}: ${carried}`);
    if (leaked) problems.push('a secret appeared on the wire despite the tunnel');
  }
  return { summary, problems };
}

interface Impl {
  readonly argv: readonly string[];
  readonly label: string;
}

function resolveImpl(option: string | undefined): Impl {
  const text = (option ?? process.env['WGTS_DEMO_IMPL'] ?? '').trim();
  if (text.length > 0) {
    const argv = text.split(/\s+/);
    return { argv, label: basename(argv[0]!) };
  }
  return { argv: [process.execPath, CLI_PATH], label: 'wgts' };
}

/** What is missing, as lines that say how to get it (empty: ready). */
function checkPrerequisites(plaintext: boolean, impl: Impl): string[] {
  const lines: string[] = [];
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    lines.push('needs root (network namespaces, veth, TUN and tcpdump): run it with sudo');
  }
  const tools = plaintext ? ['ip', 'tcpdump'] : ['ip', 'tcpdump', 'wg'];
  const absent = tools.filter((tool) => which(tool) === undefined);
  if (absent.length > 0) lines.push(`missing ${absent.join(', ')}: install with \`${INSTALL_HINT}\``);
  if (EXTENSION === '.ts' && !(process.features as { typescript?: unknown }).typescript) {
    lines.push(`this Node (${process.version}) cannot run .ts files: use Node 24 or the built dist/`);
  }
  if (!plaintext) {
    const program = impl.argv[0]!;
    if (which(program) === undefined) lines.push(`WireGuard daemon "${program}" not found (set WGTS_DEMO_IMPL or --impl to one that exists)`);
    else if (program === process.execPath && !existsSync(CLI_PATH)) lines.push(`the wgts CLI is not at ${CLI_PATH}`);
  }
  return lines;
}

/**
 * Starts `IMPL IFNAME` inside ns and waits for the launcher to return (the daemon is then
 * ready: TUN and UAPI socket exist). Returns the daemon's PIDs: the processes in the namespace,
 * where nothing else runs yet.
 */
async function startDaemon(state: DemoState, impl: Impl, ns: string, ifname: string): Promise<number[]> {
  const socket = join(UAPI_DIRECTORY, `${ifname}.sock`);
  if (existsSync(socket)) throw new Error(`${socket} already exists: another daemon uses the interface name ${ifname}`);
  const logPath = join(state.makeTempDir(), `${ifname}.log`);
  // A file, not a pipe: a daemonized child may keep the descriptors open for as long as it runs.
  const fd = openSync(logPath, 'w', 0o600);
  state.tunnels.push({ ns, ifname, socket });
  let launcher: Tracked;
  try {
    launcher = state.spawn(`${impl.label} ${ifname}`, inNamespace(ns, [...impl.argv, ifname]), ['ignore', fd, fd]);
  } finally {
    closeSync(fd);
  }
  const output = (): string => readFileSync(logPath, 'utf8').trim();
  const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 15_000).unref());
  const result = await Promise.race([launcher.exited, timeout]);
  if (result === 'timeout') throw new Error(`${impl.label} ${ifname} did not return within 15 s:\n${output()}`);
  if (result.code !== 0) throw new Error(`${impl.label} ${ifname} failed (exit ${result.code ?? result.signal}):\n${output()}`);
  await waitFor(async () => existsSync(socket) && (await linkState(ns, ifname)) !== undefined, {
    timeoutMs: 3_000,
    what: `${ifname}: its UAPI socket and TUN`,
  });
  const pids = await namespacePids(ns);
  for (const pid of pids) state.daemonPids.add(pid);
  if (pids.length === 0) throw new Error(`${impl.label} ${ifname}: the launcher returned but no daemon runs in ${ns}:\n${output()}`);
  return pids;
}

/** Removes what earlier demos left when they were killed outright (their PID is gone). */
async function sweepStale(): Promise<string[]> {
  const lines: string[] = [];
  for (const ns of await listNamespaces()) {
    const match = STALE_NAMESPACE.exec(ns);
    if (!match || Number(match[1]) === process.pid || pidAlive(Number(match[1]))) continue;
    const pid = match[1]!;
    await stopPids(await namespacePids(ns), 2_000);
    await run(['ip', 'netns', 'delete', ns], { allowFailure: true });
    for (const side of ['a', 'b']) rmSync(join(UAPI_DIRECTORY, `wgd${pid}${side}.sock`), { force: true });
    lines.push(`removed ${ns}, left by an earlier demo (pid ${pid}) that did not finish`);
  }
  for (const entry of safeReaddir(tmpdir())) {
    const match = STALE_TEMPDIR.exec(entry);
    if (!match || Number(match[1]) === process.pid || pidAlive(Number(match[1]))) continue;
    rmSync(join(tmpdir(), entry), { recursive: true, force: true });
  }
  return lines;
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * Waits a moment for the processes to exit on their own, then SIGTERM, then SIGKILL after
 * graceMs; resolves, once all are gone, with what it took.
 */
async function stopPids(pids: readonly number[], graceMs: number): Promise<'exited' | 'terminated' | 'killed'> {
  const alive = (): number[] => pids.filter(pidAlive);
  const gone = (timeoutMs: number): Promise<boolean> =>
    waitFor(() => alive().length === 0, { timeoutMs, what: 'exit' }).then(
      () => true,
      () => false,
    );
  // A daemon whose TUN was just deleted exits by itself.
  if (await gone(1_000)) return 'exited';
  for (const pid of alive()) signalPid(pid, 'SIGTERM');
  if (await gone(graceMs)) return 'terminated';
  for (const pid of alive()) signalPid(pid, 'SIGKILL');
  await waitFor(() => alive().length === 0, { timeoutMs: 2_000, what: `processes ${alive().join(', ')} to exit after SIGKILL` });
  return 'killed';
}

async function listNamespaces(): Promise<string[]> {
  const result = await run(['ip', 'netns', 'list']);
  return result.stdout
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
}

async function namespacePids(ns: string): Promise<number[]> {
  const result = await run(['ip', 'netns', 'pids', ns], { allowFailure: true });
  return result.stdout.split(/\s+/).filter(Boolean).map(Number).filter((pid) => pid !== process.pid);
}

async function linkState(ns: string, ifname: string): Promise<string | undefined> {
  const result = await run(['ip', '-n', ns, '-j', 'link', 'show', 'dev', ifname], { allowFailure: true });
  if (result.code !== 0) return undefined;
  return (JSON.parse(result.stdout) as Array<{ operstate?: string }>)[0]?.operstate;
}

async function linkAddress(ns: string, ifname: string): Promise<string> {
  const result = await run(['ip', '-n', ns, '-j', 'link', 'show', 'dev', ifname]);
  const address = (JSON.parse(result.stdout) as Array<{ address?: string }>)[0]?.address;
  if (!address) throw new Error(`${ifname} in ${ns} has no link-layer address`);
  return address;
}

function parseClientReport(stdout: string): ClientReport | undefined {
  const line = stdout.trim().split('\n').pop();
  if (!line) return undefined;
  try {
    return JSON.parse(line) as ClientReport;
  } catch {
    return undefined;
  }
}

function printable(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
}
