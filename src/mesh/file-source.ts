/**
 * Peers from a peers file (`wgts mesh --peers mesh.yaml`, format in peers-file.ts): the same
 * file on every host; this host is the entry with its public key (or --name), every other
 * entry is a peer.
 *
 * Live reload: the file's directory is watched (editors and config tools replace files rather
 * than write them in place, which a watch on the file itself would miss) and its identity
 * (inode, size, mtime) is also polled every half second, so an edit applies within a second on
 * any filesystem. A file that does not parse or validate — or that lacks this host — is
 * reported once, with file:line:col and the reason, and the last good configuration stays in
 * force: nothing is torn down for a typo. Edits that change nothing (comments, layout) are not
 * passed on; the agent reconciles only what differs, so sessions of unchanged peers continue.
 *
 * DNS endpoints are resolved when the file is loaded, again when a peer's handshake is stale
 * (older than 135 s, as wireguard-tools' reresolve-dns.sh does) and every five minutes anyway;
 * a failed lookup keeps the last address.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import type { FSWatcher } from 'node:fs';
import { readFileSync, statSync, watch } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { EndpointAddress } from '../device/config.ts';
import type { Logger } from '../device/logger.ts';
import { keyToBase64 } from '../util/hex.ts';
import { formatIp, parseIp } from '../util/ip.ts';
import type { HostEndpoint, PeersFile, PeersFileHost } from './peers-file.ts';
import { diffPeersFiles, findSelf, formatHostEndpoint, isEmptyDiff, parsePeersFile, PeersFileError, peersOf } from './peers-file.ts';
import type { MeshSource, MeshState, SelfFacts, StrictExemption } from './types.ts';

export const FILE_POLL_MS = 500;
/** Debounce of watch events: an editor's write-then-rename arrives as a burst. */
const WATCH_SETTLE_MS = 50;
const RESOLVE_CHECK_MS = 30_000;
/** A handshake older than this (REKEY_AFTER_TIME + REKEY_TIMEOUT + jitter, as reresolve-dns.sh) makes the endpoint worth resolving again. */
export const STALE_HANDSHAKE_MS = 135_000;
export const RESOLVE_EVERY_MS = 5 * 60_000;
const LOOKUP_TIMEOUT_MS = 5_000;
/** A file that could not be used for a passing reason (its own endpoint name does not resolve) is tried again after this. */
const RETRY_MS = 5_000;

export interface FileSourceOptions {
  /** The peers file. */
  readonly path: string;
  /** --name: find this host by name instead of by public key. */
  readonly name?: string | undefined;
  /** This host's public key (the agent's, from its key file). */
  readonly publicKey: () => Uint8Array;
  /** The data plane's listen port: this host's endpoint in the file must name it. */
  readonly listenPort: number;
  readonly logger: Logger;
  /** Last handshake per peer (hex public key → epoch ms, 0 none), for re-resolving stale DNS endpoints. */
  readonly handshakes?: () => Promise<ReadonlyMap<string, number>>;
  /** DNS lookup (default: getaddrinfo through dns.promises.lookup); returns an IP address. */
  readonly lookup?: (host: string) => Promise<string>;
  readonly pollMs?: number;
  readonly resolveCheckMs?: number;
}

interface Config {
  readonly peers: PeersFile;
  readonly self: PeersFileHost;
}

interface Resolution {
  readonly address: string | undefined;
  readonly at: number;
}

const defaultLookup = async (host: string): Promise<string> => (await dnsLookup(host)).address;

export class FileSource implements MeshSource {
  private readonly options: FileSourceOptions;
  private readonly path: string;
  private readonly lookup: (host: string) => Promise<string>;
  private config: Config | undefined;
  /** The text last read (good or bad), so an unchanged file is neither re-parsed nor re-reported. */
  private lastText: string | undefined;
  private lastReadError: string | undefined;
  private fileIdentity: string | undefined;
  private readonly resolved = new Map<string, Resolution>();
  private readonly resolving = new Map<string, Promise<void>>();
  private watcher: FSWatcher | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private settle: NodeJS.Timeout | undefined;
  private onChange: () => void = () => {};
  private firstGood: (() => void) | undefined;
  private abandon: ((err: Error) => void) | undefined;
  private stopped = false;
  private reloading: Promise<void> = Promise.resolve();
  /** When a file that could not be used for a passing reason (an unresolvable name) is tried again. */
  private retryAt = 0;
  /** How many times a new configuration was taken into use (for tests and metrics). */
  applied = 0;

  constructor(options: FileSourceOptions) {
    this.options = options;
    this.path = resolve(options.path);
    this.lookup = options.lookup ?? defaultLookup;
  }

  /**
   * Loads the file and resolves once it is usable (valid, with this host in it, this host's
   * endpoint resolved). Until then it logs why not and keeps watching, so a host whose entry
   * is not yet in the file starts as soon as it is.
   */
  async start(onChange: () => void): Promise<void> {
    this.onChange = onChange;
    this.watch();
    this.timers.push(setInterval(() => this.poll(), this.options.pollMs ?? FILE_POLL_MS));
    this.timers.push(setInterval(() => void this.refreshDns(), this.options.resolveCheckMs ?? RESOLVE_CHECK_MS));
    for (const t of this.timers) t.unref();
    const ready = new Promise<void>((resolveReady, reject) => {
      this.firstGood = resolveReady;
      this.abandon = reject;
    });
    await this.reload();
    await ready;
  }

  current(): MeshState {
    const config = this.config;
    if (!config) return { peers: [], unencrypted: [], blackholed: [], synced: false };
    return {
      peers: peersOf(config.peers, config.self, (e) => this.endpointOf(e)),
      unencrypted: [],
      blackholed: [],
      synced: true,
    };
  }

  self(): SelfFacts {
    const config = this.config;
    if (!config) throw new Error('the peers file has not been loaded');
    const underlay = this.endpointOf(config.self.endpoint);
    if (!underlay) throw new Error(`cannot resolve this host's endpoint ${formatHostEndpoint(config.self.endpoint)}`);
    return {
      name: config.self.name,
      underlayAddress: underlay.host,
      interfaceAddresses: config.self.addresses,
      localPrefixes: [],
    };
  }

  /** Nothing to publish: the file is the directory. The key is logged for pasting into it. */
  async publish(publicKey: Uint8Array, listenPort: number): Promise<void> {
    this.options.logger.info({ publicKey: keyToBase64(publicKey), listenPort, file: this.path }, "this host's public key (its publicKey in the peers file)");
  }

  exemptions(): readonly StrictExemption[] {
    return [];
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    if (this.settle) clearTimeout(this.settle);
    this.watcher?.close();
    this.abandon?.(new Error('stopped before the peers file was usable'));
    await Promise.allSettled(this.resolving.values());
  }

  /** Re-reads the file now (also what the watcher and the poll call); reloads run one at a time, in order. */
  reload(): Promise<void> {
    this.reloading = this.reloading.then(() => this.reloadOnce());
    return this.reloading;
  }

  private async reloadOnce(): Promise<void> {
    if (this.stopped) return;
    let text: string;
    try {
      // Identity first: a file replaced between the two is then seen as changed by the next poll.
      this.fileIdentity = identity(this.path);
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      const message = `cannot read ${this.path}: ${(err as Error).message}`;
      if (message !== this.lastReadError) {
        this.lastReadError = message;
        this.options.logger.error({ file: this.path }, `${message}; ${this.config ? 'keeping the last good configuration' : 'waiting for it'}`);
      }
      this.lastText = undefined;
      this.retryAt = 0;
      return;
    }
    this.lastReadError = undefined;
    if (text === this.lastText) return;
    this.lastText = text;
    let next: Config;
    try {
      const peers = parsePeersFile(text, this.path);
      const self = findSelf(peers, this.path, { name: this.options.name, publicKey: this.options.publicKey(), listenPort: this.options.listenPort });
      next = { peers, self };
    } catch (err) {
      this.reportInvalid(err);
      return;
    }
    const diff = diffPeersFiles(this.config?.peers, next.peers);
    if (this.config && isEmptyDiff(diff)) {
      this.options.logger.debug({ file: this.path }, 'peers file rewritten without changes');
      return;
    }
    // Names are resolved before the new configuration is used, so a new peer starts with its endpoint.
    await this.resolveAll(next, false);
    if (!this.endpointOf(next.self.endpoint)) {
      this.options.logger.error({ file: this.path, endpoint: formatHostEndpoint(next.self.endpoint) }, `cannot resolve this host's endpoint; ${this.config ? 'keeping the last good configuration' : 'waiting'}`);
      this.lastText = undefined;
      this.retryAt = Date.now() + RETRY_MS;
      return;
    }
    const first = this.config === undefined;
    this.config = next;
    this.applied++;
    this.options.logger.info(
      { file: this.path, self: next.self.name, hosts: next.peers.hosts.length, added: diff.added, removed: diff.removed, changed: diff.changed },
      first ? 'peers file loaded' : 'peers file changed; applying',
    );
    this.onChange();
    if (first) this.firstGood?.();
  }

  private reportInvalid(err: unknown): void {
    const keeping = this.config ? 'the last good configuration stays in force' : 'waiting for a valid file';
    if (err instanceof PeersFileError) {
      for (const p of err.problems) {
        this.options.logger.error({ file: err.file, line: p.line, col: p.col }, `${err.file}:${p.line}:${p.col}: ${p.message}`);
      }
      this.options.logger.error({ file: err.file, problems: err.problems.length }, `${err.file} rejected; ${keeping}`);
    } else {
      this.options.logger.error({ file: this.path, err: (err as Error).message }, `${this.path} rejected; ${keeping}`);
    }
  }

  private watch(): void {
    try {
      const name = basename(this.path);
      this.watcher = watch(dirname(this.path), { persistent: false }, (_event, file) => {
        if (file !== null && file !== name) return;
        if (this.settle) clearTimeout(this.settle);
        this.settle = setTimeout(() => void this.reload(), WATCH_SETTLE_MS);
        this.settle.unref();
      });
      this.watcher.on('error', (err) => {
        this.options.logger.debug({ err: err.message }, 'watching the peers file directory failed; polling only');
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch (err) {
      this.options.logger.debug({ err: (err as Error).message }, 'cannot watch the peers file directory; polling only');
    }
  }

  /** The stat fallback: a changed identity (or a file that came back) means a reload. */
  private poll(): void {
    if (this.stopped) return;
    const now = identity(this.path);
    if (now !== this.fileIdentity || (this.lastText === undefined && Date.now() >= this.retryAt)) void this.reload();
  }

  private endpointOf(endpoint: HostEndpoint): EndpointAddress | undefined {
    if (!endpoint.dns) return { host: endpoint.host, port: endpoint.port };
    const address = this.resolved.get(endpoint.host)?.address;
    return address === undefined ? undefined : { host: address, port: endpoint.port };
  }

  /** Resolves the names of config (only those not resolved yet, unless force). */
  private async resolveAll(config: Config, force: boolean): Promise<boolean> {
    const names = new Set(config.peers.hosts.filter((h) => h.endpoint.dns && (force || !this.resolved.has(h.endpoint.host))).map((h) => h.endpoint.host));
    const results = await Promise.all([...names].map((name) => this.resolveName(name)));
    return results.some(Boolean);
  }

  /** Looks a name up; true when its address changed. One lookup per name at a time. */
  private async resolveName(name: string): Promise<boolean> {
    const before = this.resolved.get(name)?.address;
    let pending = this.resolving.get(name);
    if (!pending) {
      pending = (async () => {
        try {
          const address = await withTimeout(this.lookup(name), LOOKUP_TIMEOUT_MS);
          const ip = parseIp(address);
          this.resolved.set(name, { address: formatIp(ip.bytes), at: Date.now() });
        } catch (err) {
          const previous = this.resolved.get(name);
          this.resolved.set(name, { address: previous?.address, at: Date.now() });
          this.options.logger.warn({ name, err: (err as Error).message, keeping: previous?.address }, 'cannot resolve an endpoint name');
        } finally {
          this.resolving.delete(name);
        }
      })();
      this.resolving.set(name, pending);
    }
    await pending;
    const after = this.resolved.get(name)?.address;
    if (after !== before && before !== undefined) this.options.logger.info({ name, before, after }, 'endpoint name resolves to a new address');
    return after !== before;
  }

  /**
   * Re-resolves names whose peers have not completed a handshake for STALE_HANDSHAKE_MS (or
   * ever), and every name every RESOLVE_EVERY_MS; a changed address is passed on.
   */
  async refreshDns(now = Date.now()): Promise<void> {
    const config = this.config;
    if (!config || this.stopped) return;
    const dnsHosts = config.peers.hosts.filter((h) => h.endpoint.dns);
    if (dnsHosts.length === 0) return;
    let handshakes: ReadonlyMap<string, number> = new Map();
    try {
      handshakes = (await this.options.handshakes?.()) ?? new Map();
    } catch {
      // the data plane is away (restarting): resolve on the periodic schedule only
    }
    const due = new Set<string>();
    for (const host of dnsHosts) {
      const last = this.resolved.get(host.endpoint.host);
      const periodic = !last || now - last.at >= RESOLVE_EVERY_MS || last.address === undefined;
      const handshake = handshakes.get(Buffer.from(host.publicKey).toString('hex'));
      const stale = host !== config.self && handshake !== undefined && now - handshake > STALE_HANDSHAKE_MS;
      if (periodic || stale) due.add(host.endpoint.host);
    }
    const changed = await Promise.all([...due].map((name) => this.resolveName(name)));
    if (changed.some(Boolean) && !this.stopped) this.onChange();
  }
}

function identity(path: string): string | undefined {
  try {
    const s = statSync(path);
    return `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
  } catch {
    return undefined;
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    timer.unref();
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolvePromise(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
