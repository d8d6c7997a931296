/**
 * WireGuard daemons as test peers, one shape for both implementations, so a namespace test can
 * be parameterised over them:
 *
 *   for (const impl of IMPLEMENTATIONS) {                  // wgts, wireguard-go
 *     const d = await impl.start(bed, ns);                 // `<impl> -f <ifname>` in ns, tracked by PID
 *     await d.configure({ privateKey, listenPort, peers, addresses: ['100.64.0.1/24'] });
 *     await d.dump(); await d.stats();                     // `wg show dump`; wgts counters (undefined for wireguard-go)
 *     await d.kill(); await d.stop();
 *   }
 *
 * Also here, because every data-plane test needs them: a pair of daemons wired to each other
 * over a veth (createTunnelPair), a TCP transfer tool that streams pseudo-random bytes and reports
 * SHA-256 at both ends (startTransfer), ping helpers, and failure diagnostics (withDiagnostics).
 */
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generatePrivateKey, publicKeyOf } from '../../../src/cli/keys.ts';
import { readStats, uapiRequest } from '../../../src/device/uapi-client.ts';
import { keyToBase64 } from '../../../src/util/hex.ts';
import type { ExecResult, NetnsBed, TrackedProcess, VethPair } from './netns.ts';
import { linkState, waitFor } from './netns.ts';
import type { Key, WgDump, WgInterfaceConfig, WgPeerConfig, WgPeerState } from './wireguard-go.ts';
import { parseDump, UAPI_DIRECTORY, WireguardGo } from './wireguard-go.ts';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const WGTS_CLI = join(REPO_ROOT, 'src/cli.ts');
/** Node 24: vitest runs under the devDependency's node, so this is the right binary for wgts. */
export const NODE = process.execPath;

export type ImplementationName = 'wgts' | 'wireguard-go';

function keyText(key: Key): string {
  return typeof key === 'string' ? key : keyToBase64(key);
}

export interface KeyPair {
  /** base64 */
  readonly privateKey: string;
  /** base64 */
  readonly publicKey: string;
}

export function newKeyPair(): KeyPair {
  const privateKey = generatePrivateKey();
  return { privateKey: keyToBase64(privateKey), publicKey: keyToBase64(publicKeyOf(privateKey)) };
}

export interface DaemonStartOptions {
  /** Default: bed.ifname('wgts') or bed.ifname('wggo'). Must be unique machine-wide. */
  readonly ifname?: string;
  /** wgts: LOG_LEVEL (default 'info'); wireguard-go: LOG_LEVEL (default 'verbose'). */
  readonly logLevel?: string;
  readonly startTimeoutMs?: number;
  /** wgts only: crypto worker threads (WGTS_WORKERS; unset: the daemon's default by CPU count). */
  readonly workers?: number;
  /** wgts only: TUN offload (WGTS_TUN_OFFLOAD; unset: the daemon's default). */
  readonly offload?: boolean;
}

/** A running WireGuard daemon in a namespace, whichever implementation. */
export interface WgDaemon {
  readonly implementation: ImplementationName;
  readonly bed: NetnsBed;
  readonly ns: string;
  readonly ifname: string;
  readonly socketPath: string;
  readonly pid: number;
  readonly process: TrackedProcess;
  /** One `wg set` (keys via 0600 files), then MTU, addresses (IPv6 without DAD) and link up. */
  configure(config: WgInterfaceConfig): Promise<void>;
  /** `wg <args>` in the namespace; resolves with stdout. */
  wg(args: readonly string[], input?: string): Promise<string>;
  /** `ip <args>` in the namespace; resolves with stdout. */
  ip(args: readonly string[]): Promise<string>;
  dump(): Promise<WgDump>;
  /** The dump line of one peer; throws if the daemon does not know it. */
  peer(publicKey: Key): Promise<WgPeerState>;
  /** wgts's counters (`wgts show`); undefined for implementations without them. */
  stats(): Promise<Record<string, number> | undefined>;
  /** The daemon's output so far. */
  log(): string;
  hasExited(): boolean;
  /** SIGKILL by PID; resolves once it has exited. Its UAPI socket file stays (as after a crash). */
  kill(): Promise<void>;
  /** SIGTERM (SIGKILL after a grace period); resolves once it exited and its TUN is gone. */
  stop(): Promise<void>;
}

export interface WgImplementation {
  readonly name: ImplementationName;
  /** For test titles: the name, plus any variant (e.g. "wgts (2 workers)"). */
  readonly label: string;
  start(bed: NetnsBed, ns: string, options?: DaemonStartOptions): Promise<WgDaemon>;
}

/** configure() for any daemon: one `wg set`, then `ip` for MTU, addresses and link state. */
export async function configureInterface(bed: NetnsBed, ns: string, ifname: string, config: WgInterfaceConfig): Promise<void> {
  const args: string[] = ['set', ifname];
  const dir = bed.tempDir();
  let files = 0;
  const keyFile = (key: Key): string => {
    const path = join(dir, `key${files++}`);
    writeFileSync(path, keyText(key) + '\n', { mode: 0o600 });
    return path;
  };
  if (config.listenPort !== undefined) args.push('listen-port', String(config.listenPort));
  if (config.fwmark !== undefined) args.push('fwmark', String(config.fwmark));
  if (config.privateKey !== undefined) args.push('private-key', keyFile(config.privateKey));
  for (const peer of config.peers ?? []) args.push(...peerArgs(peer, keyFile));
  await bed.exec(ns, 'wg', args);
  if (config.mtu !== undefined) await bed.exec(ns, 'ip', ['link', 'set', ifname, 'mtu', String(config.mtu)]);
  for (const address of config.addresses ?? []) {
    await bed.exec(ns, 'ip', ['addr', 'add', address, 'dev', ifname, ...(address.includes(':') ? ['nodad'] : [])]);
  }
  if (config.up ?? true) await bed.exec(ns, 'ip', ['link', 'set', ifname, 'up']);
}

function peerArgs(peer: WgPeerConfig, keyFile: (key: Key) => string): string[] {
  const args = ['peer', keyText(peer.publicKey)];
  if (peer.presharedKey !== undefined) args.push('preshared-key', keyFile(peer.presharedKey));
  if (peer.endpoint !== undefined) args.push('endpoint', peer.endpoint);
  if (peer.persistentKeepalive !== undefined) args.push('persistent-keepalive', String(peer.persistentKeepalive));
  if (peer.allowedIps !== undefined) args.push('allowed-ips', peer.allowedIps.join(','));
  return args;
}

/** Shared by both implementations: everything that goes through `wg` and `ip`. */
abstract class DaemonBase implements WgDaemon {
  abstract readonly implementation: ImplementationName;
  readonly bed: NetnsBed;
  readonly ns: string;
  readonly ifname: string;
  readonly socketPath: string;
  readonly process: TrackedProcess;

  constructor(bed: NetnsBed, ns: string, ifname: string, proc: TrackedProcess) {
    this.bed = bed;
    this.ns = ns;
    this.ifname = ifname;
    this.socketPath = join(UAPI_DIRECTORY, `${ifname}.sock`);
    this.process = proc;
  }

  get pid(): number {
    return this.process.pid;
  }

  configure(config: WgInterfaceConfig): Promise<void> {
    return configureInterface(this.bed, this.ns, this.ifname, config);
  }

  async wg(args: readonly string[], input?: string): Promise<string> {
    return (await this.bed.exec(this.ns, 'wg', args, input === undefined ? {} : { input })).stdout;
  }

  async ip(args: readonly string[]): Promise<string> {
    return (await this.bed.exec(this.ns, 'ip', args)).stdout;
  }

  async dump(): Promise<WgDump> {
    return parseDump(await this.wg(['show', this.ifname, 'dump']));
  }

  async peer(publicKey: Key): Promise<WgPeerState> {
    const wanted = keyText(publicKey);
    const peer = (await this.dump()).peers.find((p) => p.publicKey === wanted);
    if (!peer) throw new Error(`${this.implementation} ${this.ifname} has no peer ${wanted}`);
    return peer;
  }

  abstract stats(): Promise<Record<string, number> | undefined>;

  log(): string {
    return this.process.output();
  }

  hasExited(): boolean {
    return this.process.hasExited();
  }

  async kill(): Promise<void> {
    this.bed.trackPath(this.socketPath);
    if (this.process.hasExited()) return;
    try {
      process.kill(this.pid, 'SIGKILL');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
    await this.process.exited;
  }

  async stop(): Promise<void> {
    await this.bed.stop(this.process);
    await waitFor(async () => (await linkState(this.ns, this.ifname)) === undefined, {
      timeoutMs: 5_000,
      what: `${this.implementation} ${this.ifname} TUN removed`,
    });
    rmSync(this.socketPath, { force: true });
  }
}

/** wgts in the foreground (`wgts -f <ifname>`), spawned by the bed so it is tracked by PID. */
export class WgtsDaemon extends DaemonBase {
  readonly implementation = 'wgts' as const;

  /**
   * Resolves once the daemon answers `get=1` on its UAPI socket and its TUN exists (a stale
   * socket file left by a killed predecessor does not count as ready); rejects with the daemon's
   * output if it exits first.
   */
  static async start(bed: NetnsBed, ns: string, options: DaemonStartOptions = {}): Promise<WgtsDaemon> {
    const ifname = options.ifname ?? bed.ifname('wgts');
    const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: options.logLevel ?? 'info' };
    delete env.WGTS_WORKERS;
    delete env.WGTS_TUN_OFFLOAD;
    if (options.workers !== undefined) env.WGTS_WORKERS = String(options.workers);
    if (options.offload !== undefined) env.WGTS_TUN_OFFLOAD = options.offload ? '1' : '0';
    const proc = bed.spawn(ns, NODE, [WGTS_CLI, '-f', ifname], { env });
    const daemon = new WgtsDaemon(bed, ns, ifname, proc);
    bed.trackPath(daemon.socketPath);
    try {
      const outcome = await waitFor(
        async () => {
          if (proc.hasExited()) return 'exited';
          if (!existsSync(daemon.socketPath) || (await linkState(ns, ifname)) === undefined) return false;
          const answer = await uapiRequest(ifname, 'get=1\n\n', undefined, 2_000);
          return answer.errno === 0 && 'ready';
        },
        { timeoutMs: options.startTimeoutMs ?? 15_000, intervalMs: 25, what: `wgts ${ifname} UAPI socket and TUN` },
      );
      if (outcome === 'exited') throw new Error(`wgts ${ifname} exited before it was ready`);
    } catch (err) {
      await bed.stop(proc);
      throw new Error(`${(err as Error).message}\n--- wgts output ---\n${proc.output()}`);
    }
    return daemon;
  }

  async stats(): Promise<Record<string, number>> {
    return readStats(this.ifname);
  }
}

/** wireguard-go through the existing helper, in the common shape. */
class WireguardGoDaemon extends DaemonBase {
  readonly implementation = 'wireguard-go' as const;
  readonly inner: WireguardGo;

  constructor(inner: WireguardGo) {
    super(inner.bed, inner.ns, inner.ifname, inner.process);
    this.inner = inner;
    this.bed.trackPath(this.socketPath);
  }

  async stats(): Promise<undefined> {
    return undefined;
  }
}

export const wgtsImplementation: WgImplementation = {
  name: 'wgts',
  label: 'wgts',
  start: (bed, ns, options) => WgtsDaemon.start(bed, ns, options),
};

/** wgts with a fixed number of crypto worker threads (0: all crypto inline on the main thread). */
export function wgtsWithWorkers(workers: number): WgImplementation {
  return {
    name: 'wgts',
    label: `wgts (${workers} workers)`,
    start: (bed, ns, options = {}) => WgtsDaemon.start(bed, ns, { ...options, workers }),
  };
}

/** wgts with TUN offload forced on or off. */
export function wgtsWithOffload(offload: boolean): WgImplementation {
  return {
    name: 'wgts',
    label: offload ? 'wgts (offload)' : 'wgts (no offload)',
    start: (bed, ns, options = {}) => WgtsDaemon.start(bed, ns, { ...options, offload }),
  };
}

export const wireguardGoImplementation: WgImplementation = {
  name: 'wireguard-go',
  label: 'wireguard-go',
  start: async (bed, ns, options = {}) => new WireguardGoDaemon(await WireguardGo.start(bed, ns, options)),
};

export const IMPLEMENTATIONS: readonly WgImplementation[] = [wgtsImplementation, wireguardGoImplementation];

/** Reads wgts counters (the `stats=1` UAPI extension behind `wgts show`). */
export function wgtsStats(ifname: string): Promise<Record<string, number>> {
  return readStats(ifname);
}

/**
 * A directory holding an executable `wgts` that runs this checkout's CLI under Node 24: put it
 * first on PATH for wg-quick (WG_QUICK_USERSPACE_IMPLEMENTATION=wgts).
 */
export function wgtsCommandDir(bed: NetnsBed): string {
  const dir = bed.tempDir();
  writeFileSync(join(dir, 'wgts'), `#!/bin/sh\nexec '${NODE}' '${WGTS_CLI}' "$@"\n`, { mode: 0o755 });
  return dir;
}

// ---------------------------------------------------------------------------------------------
// Two daemons wired to each other

export interface TunnelEnd {
  readonly daemon: WgDaemon;
  readonly keys: KeyPair;
  readonly ns: string;
  /** Overlay IPv4 address (no prefix length). */
  readonly inner4: string;
  /** Overlay IPv6 address, when the pair has one. */
  readonly inner6: string | undefined;
  /** The endpoint the other side was given, host:port or [v6]:port. */
  readonly endpoint: string;
  readonly listenPort: number;
}

export interface TunnelPair {
  readonly a: TunnelEnd;
  readonly b: TunnelEnd;
  readonly ends: readonly [TunnelEnd, TunnelEnd];
  /** Stops both daemons. */
  stop(): Promise<void>;
  /** Dumps, counters, logs and addresses of both sides, for a failure message. */
  diagnostics(): Promise<string>;
}

export interface TunnelPairOptions {
  readonly link: VethPair;
  readonly implementations: readonly [WgImplementation, WgImplementation];
  /** Underlay family of the endpoints (default 4; 6 needs a veth pair created with ipv6). */
  readonly underlay?: 4 | 6;
  /** Overlay IPv4 addresses of a and b, in a /24 (default 100.64.0.1 and 100.64.0.2). */
  readonly overlay4?: readonly [string, string];
  /** Overlay IPv6 addresses of a and b, in a /64 (default none). */
  readonly overlay6?: readonly [string, string];
  /** Listen ports of a and b (default 51820 both: each is in its own namespace). */
  readonly ports?: readonly [number, number];
  /** Which sides learn the other's endpoint (default both). */
  readonly endpoints?: 'both' | 'a-knows-b';
  readonly logLevel?: string;
}

/** Starts and configures a daemon in each end of the link, each peered with the other. */
export async function createTunnelPair(bed: NetnsBed, options: TunnelPairOptions): Promise<TunnelPair> {
  const { link } = options;
  const family = options.underlay ?? 4;
  const [a4, b4] = options.overlay4 ?? ['100.64.0.1', '100.64.0.2'];
  const v6 = options.overlay6;
  const [portA, portB] = options.ports ?? [51820, 51820];
  const keys = [newKeyPair(), newKeyPair()] as const;
  const underlayHost = (end: VethPair['a']): string => {
    if (family === 4) return end.address4;
    if (!end.address6) throw new Error('IPv6 underlay needs a veth pair created with { ipv6: true }');
    return `[${end.address6}]`;
  };
  const daemons: WgDaemon[] = [];
  try {
    for (const [i, end] of [link.a, link.b].entries()) {
      const impl = options.implementations[i]!;
      daemons.push(await impl.start(bed, end.ns, options.logLevel === undefined ? {} : { logLevel: options.logLevel }));
    }
    const endpoints = [`${underlayHost(link.a)}:${portA}`, `${underlayHost(link.b)}:${portB}`] as const;
    const inner4 = [a4, b4] as const;
    const inner6 = [v6?.[0], v6?.[1]] as const;
    for (const i of [0, 1] as const) {
      const other = (1 - i) as 0 | 1;
      const knowsEndpoint = (options.endpoints ?? 'both') === 'both' || i === 0;
      await daemons[i]!.configure({
        privateKey: keys[i].privateKey,
        listenPort: i === 0 ? portA : portB,
        peers: [
          {
            publicKey: keys[other].publicKey,
            ...(knowsEndpoint ? { endpoint: endpoints[other] } : {}),
            allowedIps: [`${inner4[other]}/32`, ...(inner6[other] ? [`${inner6[other]}/128`] : [])],
          },
        ],
        addresses: [`${inner4[i]}/24`, ...(inner6[i] ? [`${inner6[i]}/64`] : [])],
      });
    }
    const end = (i: 0 | 1): TunnelEnd => ({
      daemon: daemons[i]!,
      keys: keys[i],
      ns: daemons[i]!.ns,
      inner4: inner4[i],
      inner6: inner6[i],
      endpoint: endpoints[i],
      listenPort: i === 0 ? portA : portB,
    });
    const ends = [end(0), end(1)] as const;
    return {
      a: ends[0],
      b: ends[1],
      ends,
      stop: async () => {
        await Promise.all(daemons.map((d) => d.stop()));
      },
      diagnostics: () => diagnostics(daemons),
    };
  } catch (err) {
    const text = await diagnostics(daemons).catch(() => '');
    await Promise.all(daemons.map((d) => d.stop().catch(() => {})));
    throw new Error(`${(err as Error).message}\n${text}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Diagnostics

async function safely(what: string, f: () => Promise<string>): Promise<string> {
  try {
    return await f();
  } catch (err) {
    return `(${what} failed: ${(err as Error).message.split('\n')[0]})`;
  }
}

/** wg show dump, wgts counters, addresses, routes and the log tail of each daemon. */
export async function diagnostics(daemons: readonly WgDaemon[]): Promise<string> {
  const parts: string[] = [];
  for (const d of daemons) {
    parts.push(`===== ${d.implementation} ${d.ifname} in ${d.ns} (pid ${d.pid}${d.hasExited() ? ', exited' : ''})`);
    parts.push('--- wg show dump');
    parts.push(await safely('wg show', () => d.wg(['show', d.ifname, 'dump'])));
    if (d.implementation === 'wgts') {
      parts.push('--- wgts show (non-zero)');
      parts.push(
        await safely('wgts show', async () => {
          const stats = (await d.stats()) ?? {};
          return Object.entries(stats)
            .filter(([, v]) => v !== 0)
            .map(([k, v]) => `${k}: ${v}`)
            .join('\n');
        }),
      );
    }
    parts.push('--- ip addr / ip route / ip -6 route');
    parts.push(await safely('ip addr', async () => (await d.bed.exec(d.ns, 'ip', ['-br', 'addr'])).stdout));
    parts.push(await safely('ip route', async () => (await d.bed.exec(d.ns, 'ip', ['route'])).stdout));
    parts.push(await safely('ip -6 route', async () => (await d.bed.exec(d.ns, 'ip', ['-6', 'route'])).stdout));
    parts.push('--- log (tail)');
    parts.push(d.log().slice(-4000));
  }
  return parts.join('\n');
}

/** Runs fn; if it throws, appends diagnostics of the daemons to the error (and prints them). */
export async function withDiagnostics<T>(daemons: readonly WgDaemon[] | (() => readonly WgDaemon[]), fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const list = typeof daemons === 'function' ? daemons() : daemons;
    const text = await diagnostics(list).catch((e: Error) => `(diagnostics failed: ${e.message})`);
    process.stderr.write(`\n[diagnostics]\n${text}\n`);
    if (err instanceof Error) err.message = `${err.message}\n[diagnostics]\n${text}`;
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// ping

export interface PingOptions {
  readonly count?: number;
  /** Seconds to wait for each reply (ping -W). Default 2. */
  readonly waitSeconds?: number;
  /** Seconds between echo requests (ping -i). Default 0.2. */
  readonly intervalSeconds?: number;
  /** Source address or interface (ping -I). */
  readonly source?: string;
  readonly size?: number;
  /** Set DF and never fragment locally (ping -M do). */
  readonly dontFragment?: boolean;
}

export interface PingResult extends ExecResult {
  readonly transmitted: number;
  readonly received: number;
}

/** ping (IPv4 or IPv6, from the address) in ns; never rejects for lost replies. */
export async function ping(bed: NetnsBed, ns: string, address: string, options: PingOptions = {}): Promise<PingResult> {
  const count = options.count ?? 1;
  const wait = options.waitSeconds ?? 2;
  const interval = options.intervalSeconds ?? 0.2;
  const args = ['-n', '-c', String(count), '-W', String(wait), '-i', String(interval)];
  if (options.source !== undefined) args.push('-I', options.source);
  if (options.size !== undefined) args.push('-s', String(options.size));
  if (options.dontFragment) args.push('-M', 'do');
  args.push(address);
  const result = await bed.exec(ns, 'ping', args, { allowFailure: true, timeoutMs: (count * interval + wait + 5) * 1000 });
  const match = /(\d+) packets transmitted, (\d+) received/.exec(result.stdout);
  return { ...result, transmitted: Number(match?.[1] ?? 0), received: Number(match?.[2] ?? 0) };
}

/** Polls single pings until one is answered; resolves with the time it took (ms). */
export async function waitForPing(bed: NetnsBed, ns: string, address: string, timeoutMs: number, source?: string): Promise<number> {
  const start = performance.now();
  await waitFor(
    async () => {
      const r = await ping(bed, ns, address, { count: 1, waitSeconds: 1, ...(source ? { source } : {}) });
      return r.received === 1;
    },
    { timeoutMs, intervalMs: 50, what: `a ping reply from ${address} in ${ns}` },
  );
  return performance.now() - start;
}

// ---------------------------------------------------------------------------------------------
// TCP transfer: pseudo-random bytes, SHA-256 at both ends

/** Run as `node transfer.mjs recv <bind-address>` or `node transfer.mjs send <address> <port> <bytes> <bytes/s or 0>`. */
const TRANSFER_SCRIPT = String.raw`
import net from 'node:net';
import { createHash, randomFillSync } from 'node:crypto';
const [mode, ...args] = process.argv.slice(2);
const timeoutMs = Number(process.env.TRANSFER_TIMEOUT_MS || 120000);
setTimeout(() => { process.stderr.write(mode + ': timed out after ' + timeoutMs + ' ms\n'); process.exit(3); }, timeoutMs).unref();
const fail = (what) => (err) => { process.stderr.write(mode + ': ' + what + ': ' + err.message + '\n'); process.exit(1); };
const start = performance.now();
if (mode === 'recv') {
  const [host] = args;
  const hash = createHash('sha256');
  let bytes = 0;
  let next = 1 << 20;
  const server = net.createServer((sock) => {
    server.close();
    sock.on('data', (chunk) => {
      hash.update(chunk);
      bytes += chunk.length;
      if (bytes >= next) { process.stdout.write('progress ' + bytes + '\n'); next += 1 << 20; }
    });
    sock.on('end', () => {
      process.stdout.write(JSON.stringify({ role: 'recv', bytes, sha256: hash.digest('hex'), ms: Math.round(performance.now() - start) }) + '\n');
      sock.end();
    });
    sock.on('error', fail('socket'));
  });
  server.on('error', fail('listen'));
  server.listen(0, host, () => process.stdout.write('listening ' + server.address().port + '\n'));
} else if (mode === 'send') {
  const [host, port, total, rate] = [args[0], Number(args[1]), Number(args[2]), Number(args[3] || 0)];
  const hash = createHash('sha256');
  let sent = 0;
  let connectedAt = 0;
  const sock = net.connect({ host, port });
  sock.on('error', fail('socket'));
  const pump = () => {
    while (sent < total) {
      if (rate > 0) {
        const due = connectedAt + (sent / rate) * 1000;
        const wait = due - performance.now();
        if (wait > 1) { setTimeout(pump, wait); return; }
      }
      const n = Math.min(65536, total - sent);
      const data = randomFillSync(Buffer.allocUnsafe(n));
      hash.update(data);
      sent += n;
      if (!sock.write(data)) { sock.once('drain', pump); return; }
    }
    sock.end(() => {
      process.stdout.write(JSON.stringify({ role: 'send', bytes: sent, sha256: hash.digest('hex'), ms: Math.round(performance.now() - connectedAt) }) + '\n');
    });
  };
  sock.on('connect', () => { connectedAt = performance.now(); pump(); });
  sock.on('data', () => {});
} else {
  process.stderr.write('usage: recv <address> | send <address> <port> <bytes> <rate>\n');
  process.exit(2);
}
`;

const scripts = new WeakMap<NetnsBed, string>();

function transferScript(bed: NetnsBed): string {
  let path = scripts.get(bed);
  if (!path) {
    path = join(bed.tempDir(), 'transfer.mjs');
    writeFileSync(path, TRANSFER_SCRIPT);
    scripts.set(bed, path);
  }
  return path;
}

export interface TransferSide {
  readonly role: 'send' | 'recv';
  readonly bytes: number;
  readonly sha256: string;
  readonly ms: number;
}

export interface TransferOptions {
  /** Namespace of the sender. */
  readonly from: string;
  /** Namespace of the receiver. */
  readonly to: string;
  /** The receiver's address (it listens only there): an overlay address. */
  readonly address: string;
  readonly bytes: number;
  /** Pace the sender to this many bytes per second (default: as fast as it goes). */
  readonly rateBytesPerSecond?: number;
  /** Both ends give up after this long (default 120 s). */
  readonly timeoutMs?: number;
}

export interface Transfer {
  readonly sender: TrackedProcess;
  readonly receiver: TrackedProcess;
  /** Bytes the receiver reported so far (in 1 MiB steps). */
  received(): number;
  /** Resolves when both ends finished, with what each saw; rejects (with their output) if either failed. */
  done(): Promise<{ sent: TransferSide; received: TransferSide }>;
}

function parseSide(proc: TrackedProcess, role: 'send' | 'recv'): TransferSide {
  const line = proc
    .output()
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('{'));
  if (!line) throw new Error(`${role}: no result line\n${proc.output()}`);
  const side = JSON.parse(line) as TransferSide;
  if (side.role !== role) throw new Error(`${role}: unexpected result ${line}`);
  return side;
}

/** Starts a receiver in `to` (listening on address), then a sender in `from`. */
export async function startTransfer(bed: NetnsBed, options: TransferOptions): Promise<Transfer> {
  const script = transferScript(bed);
  const timeoutMs = options.timeoutMs ?? 120_000;
  const env = { ...process.env, TRANSFER_TIMEOUT_MS: String(timeoutMs) };
  const receiver = bed.spawn(options.to, NODE, [script, 'recv', options.address], { env });
  const port = await waitFor(
    () => {
      if (receiver.hasExited()) throw new Error(`receiver exited: ${receiver.output()}`);
      const m = /listening (\d+)/.exec(receiver.output());
      return m ? Number(m[1]) : undefined;
    },
    { timeoutMs: 10_000, what: `the transfer receiver in ${options.to}` },
  );
  const sender = bed.spawn(
    options.from,
    NODE,
    [script, 'send', options.address, String(port), String(options.bytes), String(options.rateBytesPerSecond ?? 0)],
    { env },
  );
  return {
    sender,
    receiver,
    received: () => {
      const all = [...receiver.output().matchAll(/progress (\d+)/g)];
      return all.length === 0 ? 0 : Number(all.at(-1)![1]);
    },
    done: async () => {
      const [s, r] = await Promise.all([sender.exited, receiver.exited]);
      if (s.code !== 0 || r.code !== 0) {
        throw new Error(
          `transfer failed: sender ${s.code ?? s.signal}, receiver ${r.code ?? r.signal}\n` +
            `--- sender\n${sender.output().slice(-2000)}\n--- receiver\n${receiver.output().slice(-2000)}`,
        );
      }
      return { sent: parseSide(sender, 'send'), received: parseSide(receiver, 'recv') };
    },
  };
}

/** A complete transfer; resolves with both ends' results (the caller compares the hashes). */
export async function transfer(bed: NetnsBed, options: TransferOptions): Promise<{ sent: TransferSide; received: TransferSide }> {
  const t = await startTransfer(bed, options);
  return t.done();
}

/** Mbit/s of a transfer side, for logs. */
export function mbps(side: TransferSide): string {
  return ((side.bytes * 8) / 1e6 / Math.max(side.ms / 1000, 1e-3)).toFixed(0);
}
