/**
 * The WireGuard device: private key, listen port, fwmark, peers, cryptokey routing, and the
 * two packet paths (send.ts: TUN → UDP; receive.ts: UDP → TUN). I/O is injected: the daemon
 * plugs in the native TUN and UDP socket, tests plug in memory. Configuration goes through
 * apply(), all or nothing.
 */
import { isIP } from 'node:net';
import type { CryptoBackend } from '../noise/crypto/backend.ts';
import { CookieChecker } from '../noise/cookie.ts';
import type { StaticIdentity } from '../noise/handshake.ts';
import { clearHandshake, createStaticIdentity } from '../noise/handshake.ts';
import type { Keypair } from '../noise/keypair.ts';
import { Action, needsRearm, nextDeadline, onEvent, setPersistentKeepalive } from '../noise/timers.ts';
import type { TimerEvent } from '../noise/timers.ts';
import { REKEY_TIMEOUT_JITTER_MAX } from '../noise/constants.ts';
import { AllowedIps } from './allowed-ips.ts';
import type { CryptoExecutor } from './crypto-batch.ts';
import { InlineExecutor } from './crypto-batch.ts';
import type { ConfigTransaction, DeviceControl, DeviceSnapshot, PeerChange } from './config.ts';
import { ConfigError, EADDRINUSE, EINVAL } from './config.ts';
import { clearSource, ENDPOINT_SIZE, readEndpointRecord, writeEndpointRecord } from './endpoint.ts';
import { IndexTable } from './index-table.ts';
import { Peer } from './peer.ts';
import { RateLimiter } from './rate-limiter.ts';
import { DeviceCounters } from './counters.ts';
import type { Logger } from './logger.ts';
import { silentLogger } from './logger.ts';
import * as send from './send.ts';
import * as receive from './receive.ts';

/** Writes a batch of IP packets to the TUN: packet i is slab[offsets[i] .. + lengths[i]). */
export interface PacketTunnel {
  write(slab: Uint8Array, offsets: Int32Array, lengths: Int32Array, count: number): number;
  readonly mtu: number;
}

/** A bound UDP socket. Datagram i goes to the endpoint record at addrs[i * 40]. */
export interface DatagramTransport {
  readonly port: number;
  send(slab: Uint8Array, offsets: Int32Array, lengths: Int32Array, addrs: Uint8Array, count: number): number;
  setMark(mark: number): void;
  close(): void;
}

/** Receives a batch of datagrams (i at slab[offsets[i]], length lengths[i], source record i in addrs); a Promise means: keep the slab until it settles. */
export type DatagramHandler = (slab: Uint8Array, offsets: Int32Array, lengths: Int32Array, addrs: Uint8Array, count: number) => void | Promise<void>;

/** Binds a UDP socket on port (0 = any) with the fwmark, delivering received batches to onDatagrams. */
export type TransportFactory = (port: number, fwmark: number, onDatagrams: DatagramHandler) => DatagramTransport;

export interface DeviceOptions {
  readonly backend: CryptoBackend;
  readonly tun: PacketTunnel;
  readonly openTransport: TransportFactory;
  readonly logger?: Logger;
  /** Monotonic milliseconds. */
  readonly now?: () => number;
  /** Wall-clock Unix milliseconds (handshake timestamps, last_handshake_time). */
  readonly epochMs?: () => number;
  /** Most packets the device sends in one batch. */
  readonly batchSize?: number;
  /** Where AEAD batches run: inline (default) or a WorkerPool. */
  readonly crypto?: CryptoExecutor;
  /** Figures from outside the device added to stats(), e.g. the process's heap and GC. */
  readonly extraStats?: () => Readonly<Record<string, number>>;
}

/** What an index in the receiver-index table points at. */
export interface IndexEntry {
  readonly peer: Peer;
  keypair: Keypair | undefined;
}

export class Device implements DeviceControl {
  readonly backend: CryptoBackend;
  readonly tun: PacketTunnel;
  readonly logger: Logger;
  readonly now: () => number;
  readonly epochMs: () => number;
  readonly batchSize: number;
  readonly crypto: CryptoExecutor;
  readonly counters = new DeviceCounters();
  readonly allowedIps = new AllowedIps<Peer>();
  readonly indices = new IndexTable<IndexEntry>();
  readonly peers = new Map<string, Peer>();
  readonly rateLimiter = new RateLimiter();
  identity: StaticIdentity | undefined;
  cookieChecker: CookieChecker | undefined;
  transport: DatagramTransport | undefined;
  listenPort = 0;
  fwmark = 0;
  closed = false;
  /** Handshake messages waiting for processing (see receive.ts). */
  readonly handshakeQueue: receive.QueuedHandshake[] = [];
  lastUnderLoadAt = -Infinity;
  private readonly openTransport: TransportFactory;
  private readonly jitterState = Int32Array.of(Math.floor(Math.random() * 0x7fff_ffff) | 1);
  private readonly extraStats: (() => Readonly<Record<string, number>>) | undefined;
  private configuring: Promise<void> = Promise.resolve();

  constructor(options: DeviceOptions) {
    this.backend = options.backend;
    this.tun = options.tun;
    this.openTransport = options.openTransport;
    this.logger = options.logger ?? silentLogger;
    // Whole milliseconds: a small integer passes through the per-packet calls that take `now`
    // without being boxed into a heap number (a fractional one is, every time). Every deadline
    // is milliseconds anyway. Small until 2^31 ms (24.8 days) after process start.
    this.now = options.now ?? (() => Math.floor(performance.now()));
    this.epochMs = options.epochMs ?? (() => Date.now());
    this.batchSize = options.batchSize ?? 128;
    this.crypto = options.crypto ?? new InlineExecutor(this.backend, this.batchSize);
    this.extraStats = options.extraStats;
    send.initSendBuffers(this);
    receive.initReceiveBuffers(this);
  }

  /** Binds the UDP socket (port 0: any). Call once before traffic flows. */
  start(port = 0): void {
    this.bind(port);
  }

  private bind(port: number): void {
    const transport = this.openTransport(port, this.fwmark, (slab, offsets, lengths, addrs, count) =>
      receive.receiveDatagrams(this, slab, offsets, lengths, addrs, count),
    );
    this.transport?.close();
    this.transport = transport;
    this.listenPort = transport.port;
  }

  /**
   * Called by the TUN reader with a batch of outgoing IP packets (see send.ts for the layout).
   * A Promise means the batch is being sealed on worker threads: keep the slab until it settles.
   */
  handleTunPackets(slab: Uint8Array, offsets: Int32Array, lengths: Int32Array, count: number): void | Promise<void> {
    return send.sendTunPackets(this, slab, offsets, lengths, count);
  }

  // ---- configuration ---------------------------------------------------------------------

  snapshot(): DeviceSnapshot {
    return {
      privateKey: this.identity ? Uint8Array.from(this.identity.privateKey) : undefined,
      listenPort: this.listenPort,
      fwmark: this.fwmark,
      peers: [...this.peers.values()].map((p) => ({
        publicKey: p.publicKey,
        presharedKey: p.presharedKey,
        endpoint: p.hasEndpoint ? readEndpointRecord(p.endpoint, 0) : undefined,
        lastHandshakeEpochMs: p.lastHandshakeEpochMs,
        rxBytes: p.rxBytes,
        txBytes: p.txBytes,
        persistentKeepaliveInterval: p.persistentKeepaliveInterval,
        allowedIps: this.allowedIps.entriesOf(p),
      })),
    };
  }

  /** Serialised: concurrent UAPI connections apply one transaction at a time. */
  apply(tx: ConfigTransaction): Promise<void> {
    const run = this.configuring.then(() => this.applyNow(tx));
    this.configuring = run.catch(() => {});
    return run;
  }

  private applyNow(tx: ConfigTransaction): void {
    if (this.closed) throw new ConfigError('device is closed', EINVAL);
    validate(tx);
    // The only step that can fail after validation is binding a new port: do it first.
    if (tx.listenPort !== undefined && (tx.listenPort !== this.listenPort || !this.transport)) {
      try {
        this.bind(tx.listenPort);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        throw new ConfigError(`cannot listen on port ${tx.listenPort}: ${e.message}`, e.code === 'EADDRINUSE' ? EADDRINUSE : EINVAL);
      }
    }
    if (tx.fwmark !== undefined && tx.fwmark !== this.fwmark) {
      this.fwmark = tx.fwmark;
      this.transport?.setMark(tx.fwmark);
    }
    if (tx.privateKey !== undefined) this.setPrivateKey(tx.privateKey);
    if (tx.replacePeers) for (const peer of [...this.peers.values()]) this.removePeer(peer);
    for (const change of tx.peers ?? []) this.applyPeer(change);
  }

  private setPrivateKey(privateKey: Uint8Array): void {
    const old = this.identity;
    const zero = privateKey.every((b) => b === 0);
    if (zero) {
      this.identity = undefined;
      this.cookieChecker = undefined;
    } else {
      if (this.identity && Buffer.from(this.identity.privateKey).equals(Buffer.from(privateKey))) return;
      this.identity = createStaticIdentity(this.backend, privateKey);
      if (this.cookieChecker) this.cookieChecker.setKeys(this.identity.mac1Key, this.identity.cookieKey);
      else this.cookieChecker = new CookieChecker(this.backend, this.identity.mac1Key, this.identity.cookieKey);
    }
    const ownKey = this.identity?.publicKey;
    for (const peer of [...this.peers.values()]) {
      // A peer with our own public key is meaningless (wireguard-go removes it).
      if (ownKey && Buffer.from(ownKey).equals(Buffer.from(peer.publicKey))) {
        this.removePeer(peer);
        continue;
      }
      this.resetSessions(peer);
      peer.rekey(this.backend, this.identity);
    }
    // Nothing refers to the replaced key any more: wipe it (best effort, see RELIABILITY.md).
    if (old && old !== this.identity) old.privateKey.fill(0);
  }

  private applyPeer(change: PeerChange): void {
    const hex = Buffer.from(change.publicKey).toString('hex');
    let peer = this.peers.get(hex);
    if (change.remove) {
      if (peer) this.removePeer(peer);
      return;
    }
    if (this.identity && Buffer.from(this.identity.publicKey).equals(Buffer.from(change.publicKey))) return;
    if (!peer) {
      if (change.updateOnly) return;
      peer = new Peer(change.publicKey, (kp) => this.retireKeypair(kp));
      peer.rekey(this.backend, this.identity);
      this.peers.set(hex, peer);
    }
    const now = this.now();
    if (change.presharedKey !== undefined && !Buffer.from(change.presharedKey).equals(Buffer.from(peer.presharedKey))) {
      peer.presharedKey.fill(0);
      peer.presharedKey = Uint8Array.from(change.presharedKey);
      peer.rekey(this.backend, this.identity);
    }
    if (change.endpoint !== undefined) {
      writeEndpointRecord(peer.endpoint, 0, change.endpoint);
      peer.hasEndpoint = true;
    }
    if (change.replaceAllowedIps) this.allowedIps.removeValue(peer);
    for (const cidr of change.removeAllowedIps ?? []) this.allowedIps.remove(cidr, peer);
    for (const cidr of change.addAllowedIps ?? []) this.allowedIps.insert(cidr, peer);
    if (change.persistentKeepaliveInterval !== undefined && change.persistentKeepaliveInterval !== peer.persistentKeepaliveInterval) {
      peer.persistentKeepaliveInterval = change.persistentKeepaliveInterval;
      const actions = setPersistentKeepalive(peer.timers, change.persistentKeepaliveInterval * 1000, now);
      this.perform(peer, actions);
    }
    this.schedule(peer);
  }

  removePeer(peer: Peer): void {
    peer.removed = true;
    onEvent(peer.timers, 'stop', this.now());
    if (peer.timer) clearTimeout(peer.timer);
    peer.timer = undefined;
    peer.timers.armedAt = Infinity;
    this.resetSessions(peer);
    peer.staged = [];
    this.allowedIps.removeValue(peer);
    this.peers.delete(peer.publicKeyHex);
    peer.wipe();
  }

  /** Drops every session and pending handshake of a peer (keys wiped, indices released). */
  resetSessions(peer: Peer): void {
    if (peer.handshake.localIndex !== 0 && this.indices.get(peer.handshake.localIndex)?.keypair === undefined) {
      this.indices.release(peer.handshake.localIndex);
    }
    clearHandshake(peer.handshake);
    peer.keypairs.clear();
  }

  private retireKeypair(keypair: Keypair): void {
    this.indices.release(keypair.localIndex);
    keypair.zero();
  }

  stats(): Record<string, number> {
    return {
      ...this.counters.toRecord(),
      peers: this.peers.size,
      indices: this.indices.size,
      handshake_queue: this.handshakeQueue.length,
      ...this.extraStats?.(),
    };
  }

  // ---- timers ----------------------------------------------------------------------------

  /** Records a timer event for a peer and performs what it calls for (re-arming the timer if a deadline moved earlier). */
  timerEvent(peer: Peer, event: TimerEvent, now: number = this.now()): void {
    const actions = onEvent(peer.timers, event, now, this.jitter());
    if (actions === Action.None) return;
    // Rearm alone (the data path, per packet): schedule() is a few comparisons when the armed
    // timer is already due earlier, as it usually is.
    if (actions === Action.Rearm) this.schedule(peer);
    else this.perform(peer, actions);
  }

  /** 0 ≤ jitter < REKEY_TIMEOUT_JITTER_MAX ms, from xorshift32: Math.random() allocates per call, and this runs per packet. */
  jitter(): number {
    let x = this.jitterState[0]!;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.jitterState[0] = x;
    return (x >>> 0) % REKEY_TIMEOUT_JITTER_MAX;
  }

  /** Arms the peer's one real timer for its earliest deadline, if that moved earlier. */
  schedule(peer: Peer): void {
    if (peer.removed || this.closed || !needsRearm(peer.timers)) return;
    const deadline = nextDeadline(peer.timers);
    if (peer.timer) clearTimeout(peer.timer);
    peer.timers.armedAt = deadline;
    if (deadline === Infinity) {
      peer.timer = undefined;
      return;
    }
    peer.timer = setTimeout(() => this.fire(peer), Math.max(0, deadline - this.now()));
    peer.timer.unref();
  }

  private fire(peer: Peer): void {
    peer.timer = undefined;
    peer.timers.armedAt = Infinity;
    if (peer.removed || this.closed) return;
    const actions = send.expireTimers(this, peer);
    this.perform(peer, actions);
    this.schedule(peer);
  }

  perform(peer: Peer, actions: number): void {
    if (actions & Action.ClearEndpointSource) clearSource(peer.endpoint, 0);
    if (actions & Action.ClearStaged) {
      this.counters.drop('handshake-gave-up', peer.staged.length);
      peer.staged = [];
    }
    if (actions & Action.ZeroKeys) this.resetSessions(peer);
    if (actions & Action.SendInitiation) send.sendInitiation(this, peer);
    if (actions & Action.SendKeepalive) send.sendKeepalive(this, peer);
    this.schedule(peer);
  }

  // ---- lifecycle ---------------------------------------------------------------------------

  close(): void {
    if (this.closed) return;
    for (const peer of [...this.peers.values()]) this.removePeer(peer);
    this.closed = true;
    this.identity?.privateKey.fill(0);
    this.identity = undefined;
    this.cookieChecker = undefined;
    this.crypto.close();
    this.transport?.close();
    this.transport = undefined;
  }

  peerByKey(publicKey: Uint8Array): Peer | undefined {
    return this.peers.get(Buffer.from(publicKey).toString('hex'));
  }
}

function validate(tx: ConfigTransaction): void {
  if (tx.privateKey !== undefined && tx.privateKey.length !== 32) throw new ConfigError('private_key must be 32 bytes');
  if (tx.listenPort !== undefined && !(Number.isInteger(tx.listenPort) && tx.listenPort >= 0 && tx.listenPort <= 65535)) {
    throw new ConfigError(`listen_port ${tx.listenPort} is out of range`);
  }
  if (tx.fwmark !== undefined && !(Number.isInteger(tx.fwmark) && tx.fwmark >= 0 && tx.fwmark <= 0xffff_ffff)) {
    throw new ConfigError(`fwmark ${tx.fwmark} is out of range`);
  }
  for (const p of tx.peers ?? []) {
    if (p.publicKey.length !== 32) throw new ConfigError('public_key must be 32 bytes');
    if (p.presharedKey !== undefined && p.presharedKey.length !== 32) throw new ConfigError('preshared_key must be 32 bytes');
    const ka = p.persistentKeepaliveInterval;
    if (ka !== undefined && !(Number.isInteger(ka) && ka >= 0 && ka <= 65535)) throw new ConfigError(`persistent_keepalive_interval ${ka} is out of range`);
    if (p.endpoint !== undefined) {
      if (!(p.endpoint.port >= 1 && p.endpoint.port <= 65535)) throw new ConfigError(`endpoint port ${p.endpoint.port} is out of range`);
      if (!isIP(p.endpoint.host)) throw new ConfigError(`endpoint host "${p.endpoint.host}" is not an IP address`);
    }
  }
}

export { ENDPOINT_SIZE };
