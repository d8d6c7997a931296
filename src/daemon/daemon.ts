/**
 * The `wgts <ifname>` daemon: a TUN named ifname, a UDP socket, a Device, and the UAPI socket
 * that wg and wg-quick drive. Exits on SIGINT/SIGTERM, when the TUN is deleted, or when the
 * UAPI socket file is removed — as wireguard-go does.
 */
import { availableParallelism } from 'node:os';
import pino from 'pino';
import { WorkerPool } from '../device/worker-pool.ts';
import { Device } from '../device/device.ts';
import type { Logger } from '../device/logger.ts';
import { isValidInterfaceName, UapiServer } from '../device/uapi-server.ts';
import { defaultBackend } from '../noise/crypto/index.ts';
import { loadNative } from '../tun/native.ts';
import { TunDevice } from '../tun/tun-device.ts';
import { reportReady } from '../cli/launcher.ts';
import { HeapMeter } from './heap-meter.ts';
import { TunPump, udpTransports } from './io.ts';

export interface DaemonOptions {
  readonly ifname: string;
  /** Keep the interface (and its addresses and routes) when the daemon exits. */
  readonly persist?: boolean;
  readonly logLevel?: string;
  readonly uapiDir?: string;
  /** Crypto worker threads; 0 runs all crypto on the main thread. */
  readonly workers?: number;
  /** TUN TCP offload (TSO split on read, coalesced GSO writes); default: tunOffloadDefault(). */
  readonly offload?: boolean;
}

/**
 * Whether the TUN uses offloads when neither --offload nor --no-offload is given:
 * WGTS_TUN_OFFLOAD=0|1, else on (measured in src/tun/README.md: fewer, bigger TUN reads and
 * writes, several times the TCP throughput).
 */
export function tunOffloadDefault(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.WGTS_TUN_OFFLOAD !== '0';
}

/**
 * Worker threads by default: none on machines with 2 or fewer CPUs, where the measured e2e
 * throughput was best inline (BENCHMARKS.md), else one per CPU beyond the first two, up to 4.
 */
export function defaultWorkers(cpus: number = availableParallelism()): number {
  return cpus <= 2 ? 0 : Math.min(4, cpus - 2);
}

/** MTU of an interface the daemon creates: wireguard-go's DefaultMTU (1500 − 80). */
export const DEFAULT_MTU = 1420;

/** Whether a network interface of this name exists in our network namespace. */
function interfaceExists(ifname: string): boolean {
  try {
    loadNative().getMtu(ifname);
    return true;
  } catch {
    return false;
  }
}

export function createLogger(level: string, ifname: string): pino.Logger {
  return pino({ level, base: { ifname } }, pino.destination(2));
}

export async function runDaemon(options: DaemonOptions): Promise<number> {
  const { ifname } = options;
  const logger = createLogger(options.logLevel ?? 'info', ifname);
  if (!isValidInterfaceName(ifname)) {
    const message = `"${ifname}" is not a valid interface name (1–15 characters, no '/', ':' or spaces)`;
    logger.error(message);
    reportReady(message);
    return 1;
  }
  let tun: TunDevice;
  const offload = options.offload ?? tunOffloadDefault();
  try {
    const created = !interfaceExists(ifname);
    tun = TunDevice.open(ifname, { persist: options.persist ?? false, offload });
    if (offload && !tun.offload) logger.warn({ reason: tun.offloadError }, 'the kernel refused TUN offload; running without it');
    // A new TUN starts at 1500, which with WireGuard's 60/80 bytes of overhead makes every
    // full-size packet an outer fragment; start at wireguard-go's 1420 instead. A persistent
    // interface we attach to keeps the MTU it has (wg-quick or the mesh sets their own).
    if (created) tun.mtu = DEFAULT_MTU;
  } catch (err) {
    const message = `cannot create TUN ${ifname}: ${(err as Error).message}`;
    logger.error(message);
    reportReady(message);
    return 1;
  }
  const backend = defaultBackend();
  const pump = new TunPump(tun);
  const workers = options.workers ?? defaultWorkers();
  const crypto = workers > 0 ? new WorkerPool(backend, workers, 128) : undefined;
  const heap = new HeapMeter();
  const device = new Device({
    extraStats: () => ({ ...heap.read(), ...pump.offloadStats() }),
    backend,
    tun: pump,
    openTransport: udpTransports(logger as Logger),
    logger: logger as Logger,
    ...(crypto ? { crypto } : {}),
  });
  const uapi = new UapiServer();
  let finish!: (code: number) => void;
  const finished = new Promise<number>((resolve) => (finish = resolve));
  let stopping = false;
  const stop = async (reason: string, code = 0): Promise<void> => {
    if (stopping) return;
    stopping = true;
    logger.info({ reason }, 'shutting down');
    await uapi.close().catch(() => {});
    device.close();
    tun.close();
    heap.stop();
    finish(code);
  };
  try {
    device.start(0);
    pump.start(device, (err) => void stop(`TUN failed: ${err.message}`, 1));
    await uapi.listen(ifname, device, {
      ...(options.uapiDir ? { dir: options.uapiDir } : {}),
      log: (message) => logger.warn({ uapi: message }, 'bad UAPI request'),
    });
  } catch (err) {
    const message = `cannot start ${ifname}: ${(err as Error).message}`;
    logger.error(message);
    reportReady(message);
    device.close();
    tun.close();
    heap.stop();
    return 1;
  }
  uapi.once('socketRemoved', () => void stop('UAPI socket removed'));
  const onSignal = (signal: NodeJS.Signals) => void stop(signal);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  logger.info({ crypto: backend.name, workers, offload: tun.offload, port: device.listenPort, persist: options.persist ?? false }, 'interface up, UAPI listening');
  reportReady();
  const code = await finished;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return code;
}
