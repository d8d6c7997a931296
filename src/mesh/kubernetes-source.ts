/**
 * Peers from Kubernetes Nodes: an informer (list + watch, re-list on 410 Gone, restart after
 * errors) over all Nodes; our own Node is annotated with our key, endpoint and tunnel addresses
 * — only when they differ, never as a heartbeat. Nodes that share a key get a warning and a
 * Kubernetes Event, once per conflict.
 */
import { lookup } from 'node:dns/promises';
import { CoreV1Api, KubeConfig, makeInformer, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type { Informer, ObjectCache, V1Node } from '@kubernetes/client-node';
import type { Cidr } from '../device/config.ts';
import type { Logger } from '../device/logger.ts';
import { keyToBase64 } from '../util/hex.ts';
import { formatEndpoint, formatIp, parseIp } from '../util/ip.ts';
import type { DesiredFromNodes, MeshOptions } from './nodes.ts';
import { desiredFromNodes, interfaceAddressesFor, nodeFacts } from './nodes.ts';
import type { MeshSource, SelfFacts, StrictExemption } from './types.ts';
import { ANNOTATIONS } from './types.ts';

const RESTART_DELAY_MS = 1_000;
const EVENT_NAMESPACE = 'default';

export interface KubernetesSourceOptions extends MeshOptions {
  readonly kubeConfig: KubeConfig;
  readonly nodeName: string;
  readonly logger: Logger;
}

export class KubernetesSource implements MeshSource {
  private readonly options: KubernetesSourceOptions;
  readonly api: CoreV1Api;
  private selfFacts: SelfFacts | undefined;
  private exempt: StrictExemption[] = [];
  private informer: (Informer<V1Node> & ObjectCache<V1Node>) | undefined;
  private synced = false;
  private stopped = false;
  private readonly reportedDuplicates = new Set<string>();
  private onChange: () => void = () => {};

  constructor(options: KubernetesSourceOptions) {
    this.options = options;
    this.api = options.kubeConfig.makeApiClient(CoreV1Api);
  }

  async start(onChange: () => void): Promise<void> {
    this.onChange = onChange;
    const facts = nodeFacts(await this.readSelf());
    const underlayAddress = facts.internalIps[0];
    if (!underlayAddress) throw new Error(`node ${this.options.nodeName} has no InternalIP`);
    this.selfFacts = {
      name: facts.name,
      underlayAddress,
      interfaceAddresses: interfaceAddressesFor(facts.podCidrs),
      localPrefixes: facts.podCidrs,
    };
    this.exempt = await apiServerExemptions(this.options.kubeConfig, this.api, this.options.logger);
    const informer = makeInformer<V1Node>(this.options.kubeConfig, '/api/v1/nodes', () => this.api.listNode());
    this.informer = informer;
    const changed = (): void => this.emit();
    informer.on('add', changed);
    informer.on('update', changed);
    informer.on('delete', changed);
    informer.on('error', (err: unknown) => {
      if (this.stopped) return;
      this.options.logger.warn({ err: String((err as Error)?.message ?? err) }, 'node watch failed; restarting it');
      setTimeout(() => {
        if (!this.stopped) informer.start().then(() => this.markSynced(), () => {});
      }, RESTART_DELAY_MS).unref();
    });
    await informer.start();
    this.markSynced();
  }

  private markSynced(): void {
    this.synced = true;
    this.emit();
  }

  /** The current desired state from the informer's cache. */
  current(): DesiredFromNodes {
    return desiredFromNodes(this.informer?.list() ?? [], this.options.nodeName, this.options, this.synced);
  }

  private emit(): void {
    if (this.stopped || !this.informer) return;
    const desired = this.current();
    for (const names of desired.duplicates) this.reportDuplicate(names);
    this.onChange();
  }

  private reportDuplicate(names: readonly string[]): void {
    const id = names.join(',');
    if (this.reportedDuplicates.has(id)) return;
    this.reportedDuplicates.add(id);
    const message = `nodes ${names.join(', ')} publish the same WireGuard public key; none of them gets encrypted traffic until the keys differ`;
    this.options.logger.warn({ nodes: names }, message);
    const now = new Date();
    for (const name of names) {
      this.api
        .createNamespacedEvent({
          namespace: EVENT_NAMESPACE,
          body: {
            metadata: { generateName: `wgts-duplicate-key-${name}-` },
            involvedObject: { kind: 'Node', name, apiVersion: 'v1' },
            reason: 'WireGuardDuplicateKey',
            message,
            type: 'Warning',
            source: { component: 'wgts-mesh', host: this.options.nodeName },
            firstTimestamp: now,
            lastTimestamp: now,
            count: 1,
          },
        })
        .catch((err: unknown) => this.options.logger.warn({ err: String(err) }, 'could not create a Kubernetes Event'));
    }
  }

  /** Our own Node as the API server has it now. */
  readSelf(): Promise<V1Node> {
    return this.api.readNode({ name: this.options.nodeName });
  }

  self(): SelfFacts {
    if (!this.selfFacts) throw new Error('the Kubernetes source has not started');
    return this.selfFacts;
  }

  exemptions(): readonly StrictExemption[] {
    return this.exempt;
  }

  /** Sets our annotations when they differ from what the Node carries (a merge patch of just those keys). */
  async publish(publicKey: Uint8Array, listenPort: number): Promise<void> {
    const self = this.self();
    const want: Record<string, string> = {
      [ANNOTATIONS.publicKey]: keyToBase64(publicKey),
      [ANNOTATIONS.endpoint]: formatEndpoint({ host: formatIp(parseIp(self.underlayAddress).bytes), port: listenPort }),
      [ANNOTATIONS.interfaceAddress]: self.interfaceAddresses.map((c) => formatIp(c.address)).join(','),
    };
    const node = this.informer?.get(this.options.nodeName) ?? (await this.readSelf());
    const have = node.metadata?.annotations ?? {};
    const changed = Object.fromEntries(Object.entries(want).filter(([k, v]) => have[k] !== v));
    if (Object.keys(changed).length === 0) return;
    await this.api.patchNode(
      { name: this.options.nodeName, body: { metadata: { annotations: changed } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.informer?.stop();
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
async function apiServerExemptions(kc: KubeConfig, api: CoreV1Api, logger: Logger): Promise<StrictExemption[]> {
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
    const endpoints = await api.readNamespacedEndpoints({ name: 'kubernetes', namespace: 'default' });
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
