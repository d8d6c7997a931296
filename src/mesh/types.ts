/**
 * What the mesh agent works with: peers a PeerSource wants, and the host state that routes
 * traffic into the tunnel. Sources (Kubernetes Nodes, a peers file) produce these; the
 * Reconciler applies the peers to the data plane over UAPI and HostNetwork applies the rest.
 */
import type { Cidr, EndpointAddress } from '../device/config.ts';

export interface MeshPeer {
  /** Node or host name, for logs and metrics. */
  readonly name: string;
  readonly publicKey: Uint8Array;
  readonly endpoint: EndpointAddress | undefined;
  /** Everything that peer may send from and we route to it: pod CIDRs, tunnel address, (host-encryption) its node IP. */
  readonly allowedIps: readonly Cidr[];
  /** Seconds; 0 or undefined is off. */
  readonly persistentKeepalive?: number;
}

/** A node that runs no wgts (mixed cluster): reachable in the clear unless --strict. */
export interface UnencryptedNode {
  readonly name: string;
  /** Its pod CIDRs and node addresses. */
  readonly prefixes: readonly Cidr[];
}

export interface DesiredPeers {
  readonly peers: readonly MeshPeer[];
  readonly unencrypted: readonly UnencryptedNode[];
  /** False until the source has seen the whole set once: no garbage collection before. */
  readonly synced: boolean;
}

/** The desired peers plus what must never travel in the clear even without a peer. */
export interface MeshState extends DesiredPeers {
  /** Prefixes routed into the tunnel with no peer (e.g. nodes sharing a key): dropped, not leaked. */
  readonly blackholed: readonly Cidr[];
}

/** Who this host is in the mesh, as its source describes it. */
export interface SelfFacts {
  readonly name: string;
  /** The underlay address peers reach us on (its interface gives the MTU). */
  readonly underlayAddress: string;
  /** Tunnel interface addresses. */
  readonly interfaceAddresses: readonly Cidr[];
  /** Local prefixes that must stay off the tunnel (e.g. this node's pod CIDRs). */
  readonly localPrefixes: readonly Cidr[];
}

/**
 * Where peers come from (Kubernetes Nodes, a peers file). The agent reconciles whenever
 * onChange fires and on its own schedule; current() must be cheap.
 */
export interface MeshSource {
  /** Starts watching; resolves once self() is known. */
  start(onChange: () => void): Promise<void>;
  current(): MeshState;
  self(): SelfFacts;
  /** Tells the other hosts our public key and endpoint, where the source can (Kubernetes: annotations). */
  publish(publicKey: Uint8Array, listenPort: number): Promise<void>;
  /** Control-plane addresses that --strict and host encryption must never cut off. */
  exemptions(): readonly StrictExemption[];
  stop(): Promise<void>;
}

/** Traffic that --strict never drops, so a node is never locked out of its control plane. */
export interface StrictExemption {
  readonly address: Cidr;
  /** undefined: every protocol. */
  readonly protocol?: 'tcp' | 'udp';
  /** undefined: every port. */
  readonly port?: number;
}

/** The host side of the mesh, applied idempotently by HostNetwork. */
export interface HostConfig {
  /** The WireGuard interface (created by the data plane). */
  readonly ifname: string;
  /** Addresses on the interface (e.g. the node's pod CIDR network address as /32 and /128). */
  readonly addresses: readonly Cidr[];
  /** Interface MTU; undefined leaves it. */
  readonly mtu?: number;
  /** Policy routing table holding routes into the tunnel (default 51820). */
  readonly table: number;
  /** Priority of the `not fwmark <mark>/<mask> lookup <table>` rule (default 99). */
  readonly rulePriority: number;
  /** The data plane marks its encrypted UDP with this; marked packets skip the table. */
  readonly fwmark: number;
  readonly fwmarkMask: number;
  /** Remote prefixes routed into the tunnel (dev ifname) in the table. */
  readonly routes: readonly Cidr[];
  /** Local prefixes given `throw` routes in the table, so same-node traffic stays off the tunnel. */
  readonly throws: readonly Cidr[];
  /** --strict: prefixes of nodes that are not encrypted; traffic to and from them is dropped, except exemptions. */
  readonly strict?: {
    readonly drop: readonly Cidr[];
    readonly exempt: readonly StrictExemption[];
  };
}

export const MESH_DEFAULTS = {
  ifname: 'wgts0',
  listenPort: 51820,
  table: 51820,
  rulePriority: 99,
  fwmark: 0x51820,
  fwmarkMask: 0xfffff,
  keyFile: '/var/lib/wgts/private.key',
} as const;

export const ANNOTATIONS = {
  publicKey: 'wgts.io/public-key',
  endpoint: 'wgts.io/endpoint',
  interfaceAddress: 'wgts.io/interface-address',
} as const;
