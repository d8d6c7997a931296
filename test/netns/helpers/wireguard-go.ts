/**
 * wireguard-go as a test peer: started in a namespace under a machine-unique interface name
 * (every namespace shares /var/run/wireguard, where the UAPI socket <ifname>.sock lives),
 * configured with the real `wg` and `ip`, observed through `wg show <if> dump`, stopped by PID.
 */
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { keyToBase64 } from '../../../src/util/hex.ts';
import type { NetnsBed, TrackedProcess } from './netns.ts';
import { linkState, waitFor } from './netns.ts';

export const UAPI_DIRECTORY = '/var/run/wireguard';

export type Key = Uint8Array | string;

function keyText(key: Key): string {
  return typeof key === 'string' ? key : keyToBase64(key);
}

export interface WgPeerConfig {
  readonly publicKey: Key;
  readonly presharedKey?: Key;
  /** host:port or [v6]:port */
  readonly endpoint?: string;
  readonly allowedIps?: readonly string[];
  readonly persistentKeepalive?: number;
}

export interface WgInterfaceConfig {
  readonly privateKey?: Key;
  readonly listenPort?: number;
  readonly fwmark?: number;
  readonly peers?: readonly WgPeerConfig[];
  /** Interface addresses with prefix length, e.g. 100.64.0.2/24. */
  readonly addresses?: readonly string[];
  readonly mtu?: number;
  /** Bring the interface up (default true). */
  readonly up?: boolean;
}

/** One peer line of `wg show <if> dump`. */
export interface WgPeerState {
  readonly publicKey: string;
  readonly presharedKey: string | undefined;
  readonly endpoint: string | undefined;
  readonly allowedIps: readonly string[];
  /** Unix seconds; 0 when there has been none. */
  readonly latestHandshake: number;
  readonly rxBytes: number;
  readonly txBytes: number;
  readonly persistentKeepalive: number | undefined;
}

export interface WgDump {
  readonly privateKey: string | undefined;
  readonly publicKey: string | undefined;
  readonly listenPort: number;
  readonly fwmark: number | undefined;
  readonly peers: readonly WgPeerState[];
}

const none = (field: string | undefined): string | undefined => (field === undefined || field === '(none)' || field === 'off' ? undefined : field);

/** Parses `wg show <if> dump` (tab-separated; the interface line, then one line per peer). */
export function parseDump(text: string): WgDump {
  const lines = text.split('\n').filter((line) => line.length > 0);
  const head = (lines[0] ?? '').split('\t');
  const peers = lines.slice(1).map((line): WgPeerState => {
    const f = line.split('\t');
    if (f.length < 8) throw new Error(`wg dump: unexpected peer line "${line}"`);
    const allowed = none(f[3]);
    const keepalive = none(f[7]);
    return {
      publicKey: f[0]!,
      presharedKey: none(f[1]),
      endpoint: none(f[2]),
      allowedIps: allowed ? allowed.split(',') : [],
      latestHandshake: Number(f[4]),
      rxBytes: Number(f[5]),
      txBytes: Number(f[6]),
      persistentKeepalive: keepalive === undefined ? undefined : Number(keepalive),
    };
  });
  const fwmark = none(head[3]);
  return {
    privateKey: none(head[0]),
    publicKey: none(head[1]),
    listenPort: Number(head[2] ?? 0),
    fwmark: fwmark === undefined ? undefined : Number(fwmark),
    peers,
  };
}

export interface StartOptions {
  /** Default: bed.ifname('wggo'). */
  readonly ifname?: string;
  /** wireguard-go's LOG_LEVEL: 'error' | 'verbose' | 'debug' (default 'verbose', kept for failure messages). */
  readonly logLevel?: string;
  readonly startTimeoutMs?: number;
  /** The binary (default 'wireguard-go'). */
  readonly binary?: string;
}

export class WireguardGo {
  readonly bed: NetnsBed;
  readonly ns: string;
  readonly ifname: string;
  readonly socketPath: string;
  readonly process: TrackedProcess;

  private constructor(bed: NetnsBed, ns: string, ifname: string, proc: TrackedProcess) {
    this.bed = bed;
    this.ns = ns;
    this.ifname = ifname;
    this.socketPath = join(UAPI_DIRECTORY, `${ifname}.sock`);
    this.process = proc;
  }

  /**
   * Runs `wireguard-go -f <ifname>` inside ns and resolves once its UAPI socket exists and the
   * TUN is there; rejects (with its output) if it exits first.
   */
  static async start(bed: NetnsBed, ns: string, options: StartOptions = {}): Promise<WireguardGo> {
    const ifname = options.ifname ?? bed.ifname('wggo');
    const socketPath = join(UAPI_DIRECTORY, `${ifname}.sock`);
    if (existsSync(socketPath)) throw new Error(`${socketPath} already exists: another daemon uses the name ${ifname}`);
    const proc = bed.spawn(ns, options.binary ?? 'wireguard-go', ['-f', ifname], {
      env: { ...process.env, LOG_LEVEL: options.logLevel ?? 'verbose' },
    });
    const wg = new WireguardGo(bed, ns, ifname, proc);
    try {
      await waitFor(
        async () => {
          if (proc.hasExited()) throw new Error(`wireguard-go exited:\n${proc.output()}`);
          return existsSync(socketPath) && (await linkState(ns, ifname)) !== undefined;
        },
        { timeoutMs: options.startTimeoutMs ?? 10_000, what: `wireguard-go ${ifname} socket and TUN` },
      );
    } catch (err) {
      await bed.stop(proc);
      throw new Error(`${(err as Error).message}\n--- wireguard-go output ---\n${proc.output()}`);
    }
    return wg;
  }

  /** Runs `wg <args>` inside the namespace. */
  async wg(args: readonly string[], input?: string): Promise<string> {
    const result = await this.bed.exec(this.ns, 'wg', args, input === undefined ? {} : { input });
    return result.stdout;
  }

  /** Runs `ip <args>` inside the namespace. */
  async ip(args: readonly string[]): Promise<string> {
    const result = await this.bed.exec(this.ns, 'ip', args);
    return result.stdout;
  }

  /** Applies config with one `wg set` (keys through 0600 files in a private temp dir), then addresses, MTU and link up. */
  async configure(config: WgInterfaceConfig): Promise<void> {
    const args: string[] = ['set', this.ifname];
    const dir = this.bed.tempDir();
    let files = 0;
    const keyFile = (key: Key): string => {
      const path = join(dir, `key${files++}`);
      writeFileSync(path, keyText(key) + '\n', { mode: 0o600 });
      return path;
    };
    if (config.listenPort !== undefined) args.push('listen-port', String(config.listenPort));
    if (config.fwmark !== undefined) args.push('fwmark', String(config.fwmark));
    if (config.privateKey !== undefined) args.push('private-key', keyFile(config.privateKey));
    for (const peer of config.peers ?? []) {
      args.push('peer', keyText(peer.publicKey));
      if (peer.presharedKey !== undefined) args.push('preshared-key', keyFile(peer.presharedKey));
      if (peer.endpoint !== undefined) args.push('endpoint', peer.endpoint);
      if (peer.persistentKeepalive !== undefined) args.push('persistent-keepalive', String(peer.persistentKeepalive));
      if (peer.allowedIps !== undefined) args.push('allowed-ips', peer.allowedIps.join(','));
    }
    await this.wg(args);
    if (config.mtu !== undefined) await this.ip(['link', 'set', this.ifname, 'mtu', String(config.mtu)]);
    for (const address of config.addresses ?? []) await this.ip(['addr', 'add', address, 'dev', this.ifname]);
    if (config.up ?? true) await this.ip(['link', 'set', this.ifname, 'up']);
  }

  async dump(): Promise<WgDump> {
    return parseDump(await this.wg(['show', this.ifname, 'dump']));
  }

  /** The dump line of one peer; throws if wireguard-go does not know it. */
  async peer(publicKey: Key): Promise<WgPeerState> {
    const wanted = keyText(publicKey);
    const peer = (await this.dump()).peers.find((p) => p.publicKey === wanted);
    if (!peer) throw new Error(`wireguard-go ${this.ifname} has no peer ${wanted}`);
    return peer;
  }

  /** wireguard-go's log so far (LOG_LEVEL output), for failure messages. */
  log(): string {
    return this.process.output();
  }

  /**
   * SIGTERM by PID (SIGKILL after a grace period); resolves once it exited and its TUN is gone.
   * A socket file left behind (only after SIGKILL) is removed: the name is ours alone.
   */
  async stop(): Promise<void> {
    await this.bed.stop(this.process);
    await waitFor(async () => (await linkState(this.ns, this.ifname)) === undefined, {
      timeoutMs: 5_000,
      what: `wireguard-go ${this.ifname} TUN removed`,
    });
    rmSync(this.socketPath, { force: true });
  }
}
