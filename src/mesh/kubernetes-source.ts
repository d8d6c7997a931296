/**
 * Peers from Kubernetes Nodes: an informer (list + watch, re-list on 410 Gone, restart after
 * errors) over all Nodes; our own Node is annotated with our key, endpoint and tunnel addresses
 * — only when they differ, never as a heartbeat. Nodes that share a key get a warning and a
 * Kubernetes Event, once per conflict.
 */
import { CoreV1Api, KubeConfig, makeInformer, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type { Informer, ObjectCache, V1Node } from '@kubernetes/client-node';
import type { Logger } from '../device/logger.ts';
import type { DesiredFromNodes, MeshOptions } from './nodes.ts';
import { desiredFromNodes } from './nodes.ts';
import { ANNOTATIONS } from './types.ts';

const RESTART_DELAY_MS = 1_000;
const EVENT_NAMESPACE = 'default';

export interface KubernetesSourceOptions extends MeshOptions {
  readonly kubeConfig: KubeConfig;
  readonly nodeName: string;
  readonly logger: Logger;
}

export class KubernetesSource {
  private readonly options: KubernetesSourceOptions;
  readonly api: CoreV1Api;
  private informer: (Informer<V1Node> & ObjectCache<V1Node>) | undefined;
  private synced = false;
  private stopped = false;
  private readonly reportedDuplicates = new Set<string>();
  private onChange: (desired: DesiredFromNodes) => void = () => {};

  constructor(options: KubernetesSourceOptions) {
    this.options = options;
    this.api = options.kubeConfig.makeApiClient(CoreV1Api);
  }

  async start(onChange: (desired: DesiredFromNodes) => void): Promise<void> {
    this.onChange = onChange;
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
    this.onChange(desired);
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

  /** Sets our annotations when they differ from what the Node carries (a merge patch of just those keys). */
  async publish(values: { publicKey: string; endpoint: string; interfaceAddress: string }): Promise<boolean> {
    const node = this.informer?.get(this.options.nodeName) ?? (await this.readSelf());
    const have = node.metadata?.annotations ?? {};
    const want: Record<string, string> = {
      [ANNOTATIONS.publicKey]: values.publicKey,
      [ANNOTATIONS.endpoint]: values.endpoint,
      [ANNOTATIONS.interfaceAddress]: values.interfaceAddress,
    };
    const changed = Object.fromEntries(Object.entries(want).filter(([k, v]) => have[k] !== v));
    if (Object.keys(changed).length === 0) return false;
    await this.api.patchNode(
      { name: this.options.nodeName, body: { metadata: { annotations: changed } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    return true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.informer?.stop();
  }
}
