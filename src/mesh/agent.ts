/**
 * `wgts mesh`: the node agent. It never carries packets: the data plane (`wgts --persist
 * wgts0`, its own process or container) does, and the agent configures it over UAPI. So
 * killing the agent changes nothing on the wire, and restarting the data plane keeps routes
 * pointing into the persistent interface (packets wait or drop, never leave in the clear)
 * until the agent — which notices the new UAPI socket within half a second — configures it again.
 */
import { statSync } from 'node:fs';
import type { Server } from 'node:http';
import { lookup } from 'node:dns/promises';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import type { Cidr } from '../device/config.ts';
import type { Logger } from '../device/logger.ts';
import { readStats, RemoteDevice, uapiSocketPath } from '../device/uapi-client.ts';
import { generatePrivateKey, publicKeyOf } from '../cli/keys.ts';
import { keyToBase64 } from '../util/hex.ts';
import { formatEndpoint, formatIp, parseIp } from '../util/ip.ts';
import { HostNetwork } from './host-network.ts';
import { loadOrCreateKey, writeKeyFile } from './keys.ts';
import { KubernetesSource } from './kubernetes-source.ts';
import { MeshMetrics } from './metrics.ts';
import { detectUnderlayMtu, tunnelMtu } from './mtu.ts';
import type { DesiredFromNodes, NodeFacts } from './nodes.ts';
import { interfaceAddressesFor, nodeFacts } from './nodes.ts';
import { Reconciler } from './reconciler.ts';
import type { HostConfig, StrictExemption } from './types.ts';
import { MESH_DEFAULTS } from './types.ts';

export interface MeshAgentOptions {
  readonly nodeName: string;
  readonly kubeconfig?: string;
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
  private source: KubernetesSource | undefined;
  private privateKey: Uint8Array;
  private self: NodeFacts | undefined;
  private exemptions: StrictExemption[] = [];
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
    const { key, created } = loadOrCreateKey(options.keyFile);
    this.privateKey = key;
    this.logger.info({ keyFile: options.keyFile, created, publicKey: keyToBase64(publicKeyOf(key)) }, created ? 'generated a node key' : 'loaded the node key');
  }

  async start(): Promise<void> {
    if (this.options.metricsListen) this.server = await this.metrics.listen(this.options.metricsListen);
    const kc = new KubeConfig();
    if (this.options.kubeconfig) kc.loadFromFile(this.options.kubeconfig);
    else kc.loadFromCluster();
    this.exemptions = await apiServerExemptions(kc, this.logger);
    const source = new KubernetesSource({
      kubeConfig: kc,
      nodeName: this.options.nodeName,
      hostEncryption: this.options.hostEncryption,
      defaultPort: this.options.listenPort,
      logger: this.logger,
    });
    this.source = source;
    this.self = nodeFacts(await source.readSelf());
    if (!this.self.internalIps[0]) throw new Error(`node ${this.options.nodeName} has no InternalIP`);
    this.underlayMtu = await detectUnderlayMtu(this.self.internalIps[0]).catch(() => undefined);
    await source.start(() => this.trigger());
    await this.publish();
    this.timers.push(setInterval(() => this.watchDataPlane(), DATA_PLANE_POLL_MS));
    this.timers.push(setInterval(() => this.trigger(), RESYNC_MS));
    if (this.options.rotateKeysMs) this.timers.push(setInterval(() => void this.rotateKey(), this.options.rotateKeysMs));
    for (const t of this.timers) t.unref();
    this.trigger();
  }

  private interfaceAddresses(): Cidr[] {
    return interfaceAddressesFor(this.self?.podCidrs ?? []);
  }

  private async publish(): Promise<void> {
    const self = this.self!;
    const endpointHost = self.internalIps[0]!;
    await this.source!.publish({
      publicKey: keyToBase64(publicKeyOf(this.privateKey)),
      endpoint: formatEndpoint({ host: formatIp(parseIp(endpointHost).bytes), port: this.options.listenPort }),
      interfaceAddress: this.interfaceAddresses().map((c) => formatIp(c.address)).join(','),
    });
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
    if (!source || this.stopped) return;
    this.metrics.lastLoopAt = Date.now();
    const desired = source.current();
    const end = this.metrics.reconcileSeconds.startTimer();
    try {
      const result = await this.reconciler.reconcile({
        privateKey: this.privateKey,
        listenPort: this.options.listenPort,
        fwmark: MESH_DEFAULTS.fwmark,
        peers: desired.peers,
        removeStale: desired.synced,
      });
      if (result.changed) this.logger.info({ added: result.added.length, updated: result.updated.length, removed: result.removed.length }, 'data plane reconciled');
      const changes = await this.host.apply(this.hostConfig(desired));
      if (changes && Object.values(changes).some((n) => typeof n === 'number' && n > 0)) this.logger.info({ changes }, 'host network reconciled');
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

  hostConfig(desired: DesiredFromNodes): HostConfig {
    const routes = [...desired.peers.flatMap((p) => p.allowedIps), ...desired.blackholed];
    const throws = [...(this.self?.podCidrs ?? [])];
    // API server traffic (TLS already) never depends on the tunnel: a broken tunnel cannot lock the node out.
    if (this.options.hostEncryption) throws.push(...this.exemptions.map((e) => e.address));
    const family = this.self?.internalIps[0] && parseIp(this.self.internalIps[0]).family === 6 ? 6 : 4;
    return {
      ifname: this.options.ifname,
      addresses: this.interfaceAddresses(),
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
              exempt: [
                ...this.exemptions,
                ...(this.self?.internalIps ?? []).map((ip) => ({ address: hostCidr(ip), protocol: 'udp' as const, port: this.options.listenPort })),
              ],
            },
          }
        : {}),
    };
  }

  private async observe(desired: DesiredFromNodes): Promise<void> {
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
    await this.running;
    await this.publish();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    await this.source?.stop();
    await this.running;
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

function hostCidr(address: string): Cidr {
  const ip = parseIp(address);
  return { family: ip.family, address: ip.bytes, prefix: ip.family === 4 ? 32 : 128 };
}

/**
 * Where the API server really is: the kubeconfig's server (resolved once if it is a name) and,
 * since in-cluster that is only the `kubernetes` Service's virtual IP, the endpoints behind
 * that Service — the addresses packets actually reach after kube-proxy.
 */
async function apiServerExemptions(kc: KubeConfig, logger: Logger): Promise<StrictExemption[]> {
  const out: StrictExemption[] = [];
  const server = kc.getCurrentCluster()?.server;
  if (server) {
    const url = new URL(server);
    const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
    const host = url.hostname.replace(/^\[|\]$/g, '');
    try {
      for (const a of await lookup(host, { all: true })) out.push({ address: hostCidr(a.address), protocol: 'tcp', port });
    } catch (err) {
      logger.warn({ server, err: (err as Error).message }, 'cannot resolve the API server address in the kubeconfig');
    }
  }
  try {
    const endpoints = await kc.makeApiClient(CoreV1Api).readNamespacedEndpoints({ name: 'kubernetes', namespace: 'default' });
    for (const subset of endpoints.subsets ?? []) {
      for (const address of subset.addresses ?? []) {
        for (const port of subset.ports ?? []) out.push({ address: hostCidr(address.ip), protocol: 'tcp', port: port.port });
      }
    }
  } catch (err) {
    logger.debug({ err: String((err as Error).message ?? err) }, 'no endpoints for the kubernetes Service; exempting the kubeconfig address only');
  }
  return out;
}

export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (!match) throw new Error(`"${text}" is not a duration (e.g. 90s, 30m, 24h)`);
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
  const ms = Number(match[1]) * unit;
  if (ms < 1_000) throw new Error(`"${text}" is shorter than a second`);
  return ms;
}
