/**
 * Makes the data plane's peers match the desired set with the smallest transaction: only
 * peers that differ are touched, so sessions of unchanged peers are never disturbed (an agent
 * restart re-reads the device and changes nothing). Stale peers are removed only once the
 * source has synced, so a half-loaded view never deletes a live peer.
 */
import type { ConfigTransaction, DeviceSnapshot, PeerChange } from '../device/config.ts';
import { formatCidr, formatEndpoint } from '../util/ip.ts';
import type { MeshPeer } from './types.ts';

export interface DesiredDevice {
  readonly privateKey: Uint8Array;
  readonly listenPort: number;
  readonly fwmark: number;
  readonly peers: readonly MeshPeer[];
  /** When false, peers not in `peers` are left alone. */
  readonly removeStale: boolean;
}

export interface PeerDiff {
  readonly added: string[];
  readonly updated: string[];
  readonly removed: string[];
}

const hex = (key: Uint8Array): string => Buffer.from(key).toString('hex');
const equalBytes = (a: Uint8Array | undefined, b: Uint8Array | undefined): boolean =>
  a !== undefined && b !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);

function cidrSet(cidrs: readonly { family: 4 | 6; address: Uint8Array; prefix: number }[]): string {
  return cidrs.map((c) => formatCidr(c)).sort().join(',');
}

/**
 * The transaction that turns `current` into `desired` (undefined when nothing differs), and
 * which peers it adds, updates and removes (by public key, hex).
 */
export function diffDevice(current: DeviceSnapshot, desired: DesiredDevice): { tx: ConfigTransaction | undefined; diff: PeerDiff } {
  const diff: PeerDiff = { added: [], updated: [], removed: [] };
  const peers: PeerChange[] = [];
  const existing = new Map(current.peers.map((p) => [hex(p.publicKey), p]));
  const wanted = new Set<string>();
  for (const peer of desired.peers) {
    const key = hex(peer.publicKey);
    wanted.add(key);
    const have = existing.get(key);
    const keepalive = peer.persistentKeepalive ?? 0;
    if (!have) {
      diff.added.push(key);
      peers.push({
        publicKey: peer.publicKey,
        ...(peer.endpoint ? { endpoint: peer.endpoint } : {}),
        persistentKeepaliveInterval: keepalive,
        replaceAllowedIps: true,
        addAllowedIps: peer.allowedIps,
      });
      continue;
    }
    const change: { -readonly [K in keyof PeerChange]: PeerChange[K] } = { publicKey: peer.publicKey, updateOnly: true };
    let changed = false;
    if (peer.endpoint && (!have.endpoint || formatEndpoint(have.endpoint) !== formatEndpoint(peer.endpoint))) {
      change.endpoint = peer.endpoint;
      changed = true;
    }
    if (have.persistentKeepaliveInterval !== keepalive) {
      change.persistentKeepaliveInterval = keepalive;
      changed = true;
    }
    if (cidrSet(have.allowedIps) !== cidrSet(peer.allowedIps)) {
      change.replaceAllowedIps = true;
      change.addAllowedIps = peer.allowedIps;
      changed = true;
    }
    if (changed) {
      diff.updated.push(key);
      peers.push(change);
    }
  }
  if (desired.removeStale) {
    for (const [key, have] of existing) {
      if (wanted.has(key)) continue;
      diff.removed.push(key);
      // Removals first, so a prefix moving from a stale peer to a new one is never claimed twice.
      peers.unshift({ publicKey: have.publicKey, remove: true });
    }
  }
  const tx: { -readonly [K in keyof ConfigTransaction]: ConfigTransaction[K] } = {};
  if (!equalBytes(current.privateKey, desired.privateKey)) tx.privateKey = desired.privateKey;
  if (current.listenPort !== desired.listenPort) tx.listenPort = desired.listenPort;
  if (current.fwmark !== desired.fwmark) tx.fwmark = desired.fwmark;
  if (peers.length > 0) tx.peers = peers;
  return { tx: Object.keys(tx).length > 0 ? tx : undefined, diff };
}

/** What the Reconciler needs from the data plane: RemoteDevice (UAPI) or a Device in-process. */
export interface DataPlane {
  get(): Promise<DeviceSnapshot>;
  set(tx: ConfigTransaction): Promise<void>;
}

export class Reconciler {
  private readonly plane: DataPlane;

  constructor(plane: DataPlane) {
    this.plane = plane;
  }

  /** Reads the device, applies the difference, returns what changed. */
  async reconcile(desired: DesiredDevice): Promise<PeerDiff & { changed: boolean }> {
    const current = await this.plane.get();
    const { tx, diff } = diffDevice(current, desired);
    if (tx) await this.plane.set(tx);
    return { ...diff, changed: tx !== undefined };
  }
}
