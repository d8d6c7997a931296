/**
 * `wgts mesh` process: flags to a MeshSource and a MeshAgent, logs, signals. The source is a
 * peers file with --peers (a host mesh), else Kubernetes Nodes. The agent leaves peers and
 * routes in place on exit.
 */
import { hostname } from 'node:os';
import pino from 'pino';
import type { Logger } from '../device/logger.ts';
import { RemoteDevice } from '../device/uapi-client.ts';
import { MeshAgent, parseDuration } from './agent.ts';
import type { MeshSource } from './types.ts';

export interface MeshCommandOptions {
  /** A peers file: the host mesh (no Kubernetes). */
  readonly peers?: string;
  /** With peers: this host's entry by name instead of by public key. */
  readonly name?: string;
  readonly kubeconfig?: string;
  readonly nodeName?: string;
  readonly interface: string;
  readonly listenPort: number;
  readonly keyFile: string;
  readonly hostEncryption?: boolean;
  readonly strict?: boolean;
  readonly rotateKeys?: string;
  readonly metricsListen: string;
  readonly logLevel: string;
}

/** Flags that belong to the other source; a file mesh has no unencrypted nodes, no API server, and keys change by editing the file. */
const KUBERNETES_ONLY = [
  ['kubeconfig', '--kubeconfig'],
  ['nodeName', '--node-name'],
  ['hostEncryption', '--host-encryption'],
  ['strict', '--strict'],
  ['rotateKeys', '--rotate-keys'],
] as const;

export async function runMesh(options: MeshCommandOptions): Promise<number> {
  const fileMesh = options.peers !== undefined;
  const nodeName = fileMesh ? (options.name ?? hostname()) : (options.nodeName ?? process.env.NODE_NAME);
  const logger = pino({ level: options.logLevel, base: { component: 'wgts-mesh', node: nodeName } }, pino.destination(2));
  if (fileMesh) {
    const conflicting = KUBERNETES_ONLY.filter(([key]) => options[key] !== undefined && options[key] !== false).map(([, flag]) => flag);
    if (conflicting.length > 0) {
      logger.error(`${conflicting.join(', ')} ${conflicting.length > 1 ? 'are' : 'is'} for the Kubernetes mesh, not with --peers: every host in a peers file is a peer, and its key changes by editing the file`);
      return 2;
    }
  } else {
    if (options.name !== undefined) {
      logger.error('--name picks this host in a peers file: use it with --peers (on Kubernetes: --node-name)');
      return 2;
    }
    if (!nodeName) {
      logger.error('no node name: pass --node-name or set NODE_NAME (or --peers FILE for a host mesh)');
      return 2;
    }
  }
  let agent: MeshAgent | undefined;
  try {
    let source: MeshSource;
    if (fileMesh) {
      const { FileSource } = await import('./file-source.ts');
      const plane = new RemoteDevice(options.interface);
      source = new FileSource({
        path: options.peers!,
        name: options.name,
        publicKey: () => {
          if (!agent) throw new Error('the agent has no key yet');
          return agent.publicKey;
        },
        listenPort: options.listenPort,
        logger: logger as Logger,
        handshakes: async () => new Map((await plane.get()).peers.map((p) => [Buffer.from(p.publicKey).toString('hex'), p.lastHandshakeEpochMs])),
      });
    } else {
      const { KubeConfig } = await import('@kubernetes/client-node');
      const { KubernetesSource } = await import('./kubernetes-source.ts');
      const kubeConfig = new KubeConfig();
      if (options.kubeconfig) kubeConfig.loadFromFile(options.kubeconfig);
      else kubeConfig.loadFromCluster();
      source = new KubernetesSource({ kubeConfig, nodeName: nodeName!, hostEncryption: options.hostEncryption ?? false, defaultPort: options.listenPort, logger: logger as Logger });
    }
    agent = new MeshAgent({
      source,
      ifname: options.interface,
      listenPort: options.listenPort,
      keyFile: options.keyFile,
      hostEncryption: options.hostEncryption ?? false,
      strict: options.strict ?? false,
      ...(options.rotateKeys ? { rotateKeysMs: parseDuration(options.rotateKeys) } : {}),
      metricsListen: options.metricsListen,
      logger: logger as Logger,
    });
  } catch (err) {
    logger.error({ err: (err as Error).message }, 'cannot start the mesh agent');
    return 1;
  }
  const stop = new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  let stopping = false;
  // A file mesh may wait in start() for a usable file (this host's entry in it); a signal still ends it.
  const outcome = await Promise.race([
    agent.start().then(
      () => 'running' as const,
      (err: unknown) => {
        if (!stopping) logger.error({ err: (err as Error).message }, 'cannot start the mesh agent');
        return 'failed' as const;
      },
    ),
    stop.then(() => 'stopped' as const),
  ]);
  stopping = true;
  if (outcome === 'running') {
    logger.info('mesh agent running');
    await stop;
  }
  await agent.stop();
  if (outcome === 'failed') return 1;
  logger.info(outcome === 'running' ? 'mesh agent stopped; peers and routes stay in place' : 'mesh agent stopped before it was running');
  return 0;
}
