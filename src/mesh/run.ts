/** `wgts mesh` process: flags to MeshAgent, logs, signals. The agent leaves peers and routes in place on exit. */
import pino from 'pino';
import type { Logger } from '../device/logger.ts';
import { KubeConfig } from '@kubernetes/client-node';
import { MeshAgent, parseDuration } from './agent.ts';
import { KubernetesSource } from './kubernetes-source.ts';

export interface MeshCommandOptions {
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

export async function runMesh(options: MeshCommandOptions): Promise<number> {
  const nodeName = options.nodeName ?? process.env.NODE_NAME;
  const logger = pino({ level: options.logLevel, base: { component: 'wgts-mesh', node: nodeName } }, pino.destination(2));
  if (!nodeName) {
    logger.error('no node name: pass --node-name or set NODE_NAME');
    return 2;
  }
  let agent: MeshAgent;
  try {
    const kubeConfig = new KubeConfig();
    if (options.kubeconfig) kubeConfig.loadFromFile(options.kubeconfig);
    else kubeConfig.loadFromCluster();
    const source = new KubernetesSource({ kubeConfig, nodeName, hostEncryption: options.hostEncryption ?? false, defaultPort: options.listenPort, logger: logger as Logger });
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
    await agent.start();
  } catch (err) {
    logger.error({ err: (err as Error).message }, 'cannot start the mesh agent');
    return 1;
  }
  logger.info('mesh agent running');
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  await agent.stop();
  logger.info('mesh agent stopped; peers and routes stay in place');
  return 0;
}
