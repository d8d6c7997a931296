/**
 * `wgts mesh`: the node agent. It never carries packets: the data plane (`wgts --persist
 * wgts0`, its own process or container) does, and the agent configures it over UAPI. So
 * killing the agent changes nothing on the wire, and restarting the data plane keeps routes
 * pointing into the persistent interface (packets wait or drop, never leave in the clear)
 * until the agent — which notices the new UAPI socket within half a second — configures it again.
 */
import { statSync } from 'node:fs';
import type { Server } from 'node:http';
import type { Cidr } from '../device/config.ts';
import type { Logger } from '../device/logger.ts';
import { readStats, RemoteDevice, uapiSocketPath } from '../device/uapi-client.ts';
import { generatePrivateKey, publicKeyOf } from '../cli/keys.ts';
import { keyToBase64 } from '../util/hex.ts';
import { parseIp } from '../util/ip.ts';
import { HostNetwork } from './host-network.ts';
import { loadOrCreateKey, writeKeyFile } from './keys.ts';
import { MeshMetrics } from './metrics.ts';
import { detectUnderlayMtu, tunnelMtu } from './mtu.ts';
import { Reconciler } from './reconciler.ts';
import type { HostConfig, MeshPeer, MeshSource, MeshState } from './types.ts';
import { MESH_DEFAULTS } from './types.ts';

export interface MeshAgentOptions {
  /** Where peers come from: KubernetesSource, FileSource. */
  readonly source: MeshSource;
  readonly ifname: string;
  readonly listenPort: number;
  readonly keyFile: string;
  readonly hostEncryption: boolean;
  readonly strict: boolean;
  /** Milliseconds between key rotations; undefined: never. */
  readonly rotateKeysMs?: number;
  readonly metricsListen?: string;
  readonly uapiDir?: string;
  readonly logger: Logger;
}

const DATA_PLANE_POLL_MS = 500;
const RESYNC_MS = 30_000;
const RETRY_MS = 1_000;

/** Identity of the UAPI socket file: a data-plane restart makes a new one. */
function socketIdentity(path: string): string | undefined {
  try {
    const s = statSync(path);
    return `${s.dev}:${s.ino}:${s.ctimeMs}`;
  } catch {
    return undefined;
  }
}

export class MeshAgent {
  private readonly options: MeshAgentOptions;
  private readonly logger: Logger;
  readonly metrics = new MeshMetrics();
  private readonly plane: RemoteDevice;
  private readonly reconciler: Reconciler;
  private readonly host = new HostNetwork();
  private readonly source: MeshSource;
  private privateKey: Uint8Array;
  private started = false;
  private underlayMtu: number | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private readonly timers: NodeJS.Timeout[] = [];
  private server: Server | undefined;
  private socketSeen: string | undefined;

  constructor(options: MeshAgentOptions) {
    this.options = options;
    this.logger = options.logger;
    this.plane = new RemoteDevice(options.ifname, options.uapiDir);
    this.reconciler = new Reconciler(this.plane);
    this.source = options.source;
    const { key, created } = loadOrCreateKey(options.keyFile);
    this.privateKey = key;
    this.logger.info({ keyFile: options.keyFile, created, publicKey: keyToBase64(publicKeyOf(key)) }, created ? 'generated a node key' : 'loaded the node key');
  }

  /** The public key this agent's private key gives (a FileSource finds its own entry by it). */
  get publicKey(): Uint8Array {
    return publicKeyOf(this.privateKey);
  }

  async start(): Promise<void> {
    if (this.options.metricsListen) this.server = await this.metrics.listen(this.options.metricsListen);
    await this.source.start(() => this.trigger());
    this.started = true;
    this.underlayMtu = await detectUnderlayMtu(this.source.self().underlayAddress).catch(() => undefined);
    await this.source.publish(this.publicKey, this.options.listenPort);
    this.timers.push(setInterval(() => this.watchDataPlane(), DATA_PLANE_POLL_MS));
    this.timers.push(setInterval(() => this.trigger(), RESYNC_MS));
    if (this.options.rotateKeysMs) this.timers.push(setInterval(() => void this.rotateKey(), this.options.rotateKeysMs));
    for (const t of this.timers) t.unref();
    this.trigger();
  }

  /** Reconciles now, or once more after the run in progress. */
  trigger(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.reconcileOnce().finally(() => {
      this.running = undefined;
      if (this.again) {
        this.again = false;
        this.trigger();
      }
    });
  }

  private watchDataPlane(): void {
    const identity = socketIdentity(uapiSocketPath(this.options.ifname, this.options.uapiDir));
    if (identity !== this.socketSeen) {
      if (identity && this.socketSeen) this.logger.info('the data plane restarted; configuring it again');
      this.socketSeen = identity;
      if (identity) this.trigger();
    }
  }

  private async reconcileOnce(): Promise<void> {
    const source = this.source;
    if (!this.started || this.stopped) return;
    this.metrics.lastLoopAt = Date.now();
    const desired = source.current();
    const end = this.metrics.reconcileSeconds.startTimer();
    try {
      // Routes first: a new peer's prefixes point into the tunnel before the peer exists there,
      // so for those milliseconds its traffic is dropped in the tunnel instead of leaving by
      // the underlay's plain routes. (A removed peer: gone from the device, then its routes.)
      const changes = await this.host.apply(this.hostConfig(desired));
      if (changes && Object.values(changes).some((n) => typeof n === 'number' && n > 0)) this.logger.info({ changes }, 'host network reconciled');
      const result = await this.reconciler.reconcile({
        privateKey: this.privateKey,
        listenPort: this.options.listenPort,
        fwmark: MESH_DEFAULTS.fwmark,
        peers: desired.peers,
        removeStale: desired.synced,
      });
      if (result.changed) this.logger.info({ added: result.added.length, updated: result.updated.length, removed: result.removed.length }, 'data plane reconciled');
      if (result.added.length > 0) await this.greet(result.added, desired.peers);
      await this.observe(desired);
      this.metrics.reconciles.inc({ result: 'ok' });
      this.metrics.ready = desired.synced;
    } catch (err) {
      this.metrics.reconciles.inc({ result: 'error' });
      this.metrics.ready = false;
      this.logger.warn({ err: (err as Error).message }, 'reconcile failed; retrying');
      const retry = setTimeout(() => this.trigger(), RETRY_MS);
      retry.unref();
    } finally {
      end();
    }
  }

  /**
   * Starts a handshake with peers just added to the data plane. A peer that still holds a
   * session with us from before (our data plane restarted, the node rebooted, our key rotated)
   * keeps sending on it, and we drop those packets (unknown index), until its own timers give
   * up after 15 s (KEEPALIVE_TIMEOUT + REKEY_TIMEOUT) — unless we initiate. UAPI has no
   * "initiate" command, but turning persistent keepalive on sends a keepalive at once, which
   * without a session means a handshake (wgts and wireguard-go alike); it is turned off again
   * right away, so the configured value stays what the source wants.
   */
  private async greet(addedHex: readonly string[], peers: readonly MeshPeer[]): Promise<void> {
    const added = new Set(addedHex);
    const quiet = peers.filter((p) => added.has(Buffer.from(p.publicKey).toString('hex')) && !p.persistentKeepalive);
    if (quiet.length === 0) return;
    await this.plane.set({ peers: quiet.map((p) => ({ publicKey: p.publicKey, updateOnly: true, persistentKeepaliveInterval: 1 })) });
    await this.plane.set({ peers: quiet.map((p) => ({ publicKey: p.publicKey, updateOnly: true, persistentKeepaliveInterval: 0 })) });
  }

  hostConfig(desired: MeshState): HostConfig {
    const self = this.source.self();
    const exemptions = this.source.exemptions();
    const routes = [...desired.peers.flatMap((p) => p.allowedIps), ...desired.blackholed];
    const throws = [...self.localPrefixes];
    // Control-plane traffic (TLS already) never depends on the tunnel: a broken tunnel cannot lock the node out.
    if (this.options.hostEncryption) throws.push(...exemptions.map((e) => e.address));
    const family = parseIp(self.underlayAddress).family;
    return {
      ifname: this.options.ifname,
      addresses: self.interfaceAddresses,
      mtu: tunnelMtu(this.underlayMtu, family),
      table: MESH_DEFAULTS.table,
      rulePriority: MESH_DEFAULTS.rulePriority,
      fwmark: MESH_DEFAULTS.fwmark,
      fwmarkMask: MESH_DEFAULTS.fwmarkMask,
      routes,
      throws,
      ...(this.options.strict
        ? {
            strict: {
              drop: desired.unencrypted.flatMap((n) => n.prefixes),
              exempt: [...exemptions, { address: hostCidr(self.underlayAddress), protocol: 'udp' as const, port: this.options.listenPort }],
            },
          }
        : {}),
    };
  }

  private async observe(desired: MeshState): Promise<void> {
    const snapshot = await this.plane.get();
    const names = new Map(desired.peers.map((p) => [Buffer.from(p.publicKey).toString('hex'), p.name]));
    this.metrics.observePeers(snapshot, names, desired.peers.length, desired.unencrypted.length, Date.now());
    try {
      this.metrics.observeDrops(await readStats(this.options.ifname, this.options.uapiDir));
    } catch {
      // another implementation behind the socket (e.g. wireguard-go) has no stats: fine
    }
  }

  /** New key: the data plane switches first, then the annotation tells the peers. */
  async rotateKey(): Promise<void> {
    const key = generatePrivateKey();
    writeKeyFile(this.options.keyFile, key);
    this.privateKey = key;
    this.metrics.keyRotations.inc();
    this.logger.info({ publicKey: keyToBase64(publicKeyOf(key)) }, 'rotating the node key');
    this.trigger();
    // Until a reconcile that started after the switch has finished (trigger() only queues one
    // behind a run in progress, which still carries the old key): peers learn the new key last.
    while (this.running) await this.running;
    await this.source.publish(this.publicKey, this.options.listenPort);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    await this.source.stop();
    await this.running;
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

function hostCidr(address: string): Cidr {
  const ip = parseIp(address);
  return { family: ip.family, address: ip.bytes, prefix: ip.family === 4 ? 32 : 128 };
}

export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (!match) throw new Error(`"${text}" is not a duration (e.g. 90s, 30m, 24h)`);
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
  const ms = Number(match[1]) * unit;
  if (ms < 1_000) throw new Error(`"${text}" is shorter than a second`);
  return ms;
}
