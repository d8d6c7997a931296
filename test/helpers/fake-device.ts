/**
 * An in-memory DeviceControl for tests: the configuration semantics of wireguard-go's UAPI set
 * (and the kernel's), without sockets or crypto state. apply() works on a copy and swaps it in
 * only when the whole transaction succeeded, as the real Device must.
 */
import {
  ConfigError,
  EADDRINUSE,
  type Cidr,
  type ConfigTransaction,
  type DeviceControl,
  type DeviceSnapshot,
  type EndpointAddress,
  type PeerSnapshot,
} from '../../src/device/config.ts';
import { publicKeyOf } from '../../src/cli/keys.ts';
import { toHex } from '../../src/util/hex.ts';
import { formatCidr } from '../../src/util/ip.ts';

interface FakePeer {
  publicKey: Uint8Array;
  presharedKey: Uint8Array;
  endpoint: EndpointAddress | undefined;
  persistentKeepaliveInterval: number;
  /** Keyed by canonical prefix text, in insertion order. */
  allowedIps: Map<string, Cidr>;
  rxBytes: number;
  txBytes: number;
  lastHandshakeEpochMs: number;
}

interface FakeState {
  privateKey: Uint8Array | undefined;
  publicKey: Uint8Array | undefined;
  listenPort: number;
  fwmark: number;
  /** Keyed by public key hex, in creation order (as `wg show` lists them for us). */
  peers: Map<string, FakePeer>;
}

export interface FakeDeviceOptions {
  /** listen_port values that fail with EADDRINUSE, as a bound port would. */
  readonly portsInUse?: Iterable<number>;
}

export class FakeDevice implements DeviceControl {
  /** Every transaction apply() received, successful or not. */
  readonly transactions: ConfigTransaction[] = [];
  readonly portsInUse: Set<number>;
  /** When set, the next apply() throws it (after validation would have passed) and clears it. */
  failNext: Error | undefined;
  private state: FakeState = { privateKey: undefined, publicKey: undefined, listenPort: 0, fwmark: 0, peers: new Map() };

  constructor(options: FakeDeviceOptions = {}) {
    this.portsInUse = new Set(options.portsInUse ?? []);
  }

  snapshot(): DeviceSnapshot {
    const s = this.state;
    return {
      privateKey: s.privateKey ? s.privateKey.slice() : undefined,
      listenPort: s.listenPort,
      fwmark: s.fwmark,
      peers: [...s.peers.values()].map(snapshotPeer),
    };
  }

  async apply(tx: ConfigTransaction): Promise<void> {
    this.transactions.push(tx);
    const next = cloneState(this.state);
    applyTo(next, tx, this.portsInUse);
    const fail = this.failNext;
    if (fail) {
      this.failNext = undefined;
      throw fail;
    }
    await Promise.resolve(); // a real device awaits socket rebinds here
    this.state = next;
  }

  /** The peer with this public key (bytes or hex), as a snapshot. */
  peer(publicKey: Uint8Array | string): PeerSnapshot | undefined {
    const p = this.state.peers.get(typeof publicKey === 'string' ? publicKey.toLowerCase() : toHex(publicKey));
    return p && snapshotPeer(p);
  }

  /** Sets the counters a real device would keep (for get formatting tests). */
  setStats(publicKey: Uint8Array, stats: { rxBytes?: number; txBytes?: number; lastHandshakeEpochMs?: number }): void {
    const p = this.state.peers.get(toHex(publicKey));
    if (!p) throw new Error(`no peer ${toHex(publicKey)}`);
    if (stats.rxBytes !== undefined) p.rxBytes = stats.rxBytes;
    if (stats.txBytes !== undefined) p.txBytes = stats.txBytes;
    if (stats.lastHandshakeEpochMs !== undefined) p.lastHandshakeEpochMs = stats.lastHandshakeEpochMs;
  }
}

function snapshotPeer(p: FakePeer): PeerSnapshot {
  return {
    publicKey: p.publicKey.slice(),
    presharedKey: p.presharedKey.slice(),
    endpoint: p.endpoint ? { ...p.endpoint } : undefined,
    lastHandshakeEpochMs: p.lastHandshakeEpochMs,
    rxBytes: p.rxBytes,
    txBytes: p.txBytes,
    persistentKeepaliveInterval: p.persistentKeepaliveInterval,
    allowedIps: [...p.allowedIps.values()],
  };
}

function cloneState(s: FakeState): FakeState {
  const peers = new Map<string, FakePeer>();
  for (const [k, p] of s.peers) peers.set(k, { ...p, allowedIps: new Map(p.allowedIps) });
  return { ...s, peers };
}

function isZero(bytes: Uint8Array): boolean {
  return bytes.every((b) => b === 0);
}

/** Applies tx to s in place, in the order wireguard-go handles the lines `wg` sends. */
function applyTo(s: FakeState, tx: ConfigTransaction, portsInUse: ReadonlySet<number>): void {
  if (tx.privateKey !== undefined) {
    if (isZero(tx.privateKey)) {
      s.privateKey = undefined;
      s.publicKey = undefined;
    } else {
      s.privateKey = tx.privateKey.slice();
      s.publicKey = publicKeyOf(s.privateKey);
      // wireguard-go's SetPrivateKey drops a peer that now has our own public key.
      s.peers.delete(toHex(s.publicKey));
    }
  }
  if (tx.listenPort !== undefined) {
    if (portsInUse.has(tx.listenPort)) throw new ConfigError(`listen_port ${tx.listenPort}: address already in use`, EADDRINUSE);
    s.listenPort = tx.listenPort;
  }
  if (tx.fwmark !== undefined) s.fwmark = tx.fwmark;
  if (tx.replacePeers) s.peers.clear();

  const ownKey = s.publicKey ? toHex(s.publicKey) : undefined;
  for (const change of tx.peers ?? []) {
    const key = toHex(change.publicKey);
    if (key === ownKey) continue; // a peer with our own key is ignored
    if (change.remove) {
      s.peers.delete(key);
      continue;
    }
    let peer = s.peers.get(key);
    if (!peer) {
      if (change.updateOnly) continue;
      peer = {
        publicKey: change.publicKey.slice(),
        presharedKey: new Uint8Array(32),
        endpoint: undefined,
        persistentKeepaliveInterval: 0,
        allowedIps: new Map(),
        rxBytes: 0,
        txBytes: 0,
        lastHandshakeEpochMs: 0,
      };
      s.peers.set(key, peer);
    }
    if (change.presharedKey !== undefined) peer.presharedKey = change.presharedKey.slice();
    if (change.endpoint !== undefined) peer.endpoint = { ...change.endpoint };
    if (change.persistentKeepaliveInterval !== undefined) peer.persistentKeepaliveInterval = change.persistentKeepaliveInterval;
    if (change.replaceAllowedIps) peer.allowedIps.clear();
    for (const cidr of change.removeAllowedIps ?? []) peer.allowedIps.delete(formatCidr(cidr));
    for (const cidr of change.addAllowedIps ?? []) {
      const text = formatCidr(cidr);
      // A prefix belongs to one peer: adding it here takes it from any other (the trie's rule).
      for (const other of s.peers.values()) if (other !== peer) other.allowedIps.delete(text);
      if (!peer.allowedIps.has(text)) peer.allowedIps.set(text, cidr);
    }
  }
}
