/**
 * From Kubernetes Node objects to mesh peers — pure functions, no API calls. A node is a peer
 * when it publishes a valid key; nodes without one are unencrypted (mixed clusters); nodes that
 * claim the same key are both left out of the peers (neither gets the traffic) and reported.
 */
import type { V1Node } from '@kubernetes/client-node';
import type { Cidr, EndpointAddress } from '../device/config.ts';
import { keyFromBase64 } from '../util/hex.ts';
import { formatIp, parseCidr, parseEndpoint, parseIp } from '../util/ip.ts';
import type { DesiredPeers, MeshPeer, UnencryptedNode } from './types.ts';
import { ANNOTATIONS } from './types.ts';

export interface NodeFacts {
  readonly name: string;
  readonly internalIps: readonly string[];
  readonly podCidrs: readonly Cidr[];
  readonly publicKey: Uint8Array | undefined;
  readonly endpoint: EndpointAddress | undefined;
  readonly interfaceAddresses: readonly Cidr[];
  /** Why an annotation was ignored, if one was. */
  readonly problems: readonly string[];
}

function hostPrefix(address: string): Cidr {
  const ip = parseIp(address);
  return { family: ip.family, address: ip.bytes, prefix: ip.family === 4 ? 32 : 128 };
}

export function nodeFacts(node: V1Node): NodeFacts {
  const name = node.metadata?.name ?? '';
  const annotations = node.metadata?.annotations ?? {};
  const problems: string[] = [];
  // Only addresses that parse: each one becomes a host prefix and may become a peer's endpoint.
  const internalIps: string[] = [];
  for (const a of node.status?.addresses ?? []) {
    if (a.type !== 'InternalIP') continue;
    try {
      internalIps.push(formatIp(parseIp(a.address).bytes));
    } catch (err) {
      problems.push(`InternalIP ${(err as Error).message}`);
    }
  }
  const podCidrText = node.spec?.podCIDRs?.length ? node.spec.podCIDRs : node.spec?.podCIDR ? [node.spec.podCIDR] : [];
  const podCidrs: Cidr[] = [];
  for (const text of podCidrText) {
    try {
      podCidrs.push(parseCidr(text));
    } catch (err) {
      problems.push(`podCIDR ${(err as Error).message}`);
    }
  }
  let publicKey: Uint8Array | undefined;
  const keyText = annotations[ANNOTATIONS.publicKey];
  if (keyText !== undefined) {
    try {
      publicKey = keyFromBase64(keyText);
      if (publicKey.every((b) => b === 0)) {
        publicKey = undefined;
        problems.push(`${ANNOTATIONS.publicKey} is the all-zero key`);
      }
    } catch (err) {
      problems.push(`${ANNOTATIONS.publicKey}: ${(err as Error).message}`);
    }
  }
  let endpoint: EndpointAddress | undefined;
  const endpointText = annotations[ANNOTATIONS.endpoint];
  if (endpointText !== undefined) {
    try {
      endpoint = parseEndpoint(endpointText);
    } catch (err) {
      problems.push(`${ANNOTATIONS.endpoint}: ${(err as Error).message}`);
    }
  }
  const interfaceAddresses: Cidr[] = [];
  for (const text of (annotations[ANNOTATIONS.interfaceAddress] ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    try {
      interfaceAddresses.push(hostPrefix(text));
    } catch (err) {
      problems.push(`${ANNOTATIONS.interfaceAddress}: ${(err as Error).message}`);
    }
  }
  return { name, internalIps, podCidrs, publicKey, endpoint, interfaceAddresses, problems };
}

/** The tunnel addresses a node uses: the network address of each pod CIDR (as flannel does for its VXLAN device). */
export function interfaceAddressesFor(podCidrs: readonly Cidr[]): Cidr[] {
  return podCidrs.map((c) => ({ family: c.family, address: c.address, prefix: c.family === 4 ? 32 : 128 }));
}

export interface MeshOptions {
  readonly hostEncryption: boolean;
  readonly defaultPort: number;
}

export interface DesiredFromNodes extends DesiredPeers {
  /** Node names that share one public key, per key. */
  readonly duplicates: readonly (readonly string[])[];
  /** Prefixes of nodes left out for sharing a key: routed into the tunnel with no peer, so dropped, not sent in the clear. */
  readonly blackholed: readonly Cidr[];
  readonly self: NodeFacts | undefined;
}

function prefixesOf(facts: NodeFacts, options: MeshOptions): Cidr[] {
  const out = [...facts.podCidrs, ...facts.interfaceAddresses];
  if (options.hostEncryption) out.push(...facts.internalIps.map(hostPrefix));
  return out;
}

export function desiredFromNodes(nodes: readonly V1Node[], selfName: string, options: MeshOptions, synced: boolean): DesiredFromNodes {
  const all = nodes.map(nodeFacts);
  const self = all.find((f) => f.name === selfName);
  const others = all.filter((f) => f.name !== selfName);
  const byKey = new Map<string, NodeFacts[]>();
  for (const f of all) {
    if (!f.publicKey) continue;
    const key = Buffer.from(f.publicKey).toString('hex');
    byKey.set(key, [...(byKey.get(key) ?? []), f]);
  }
  const duplicates = [...byKey.values()].filter((group) => group.length > 1).map((group) => group.map((f) => f.name).sort());
  const duplicated = new Set(duplicates.flat());
  const peers: MeshPeer[] = [];
  const unencrypted: UnencryptedNode[] = [];
  const blackholed: Cidr[] = [];
  for (const f of others) {
    const prefixes = prefixesOf(f, options);
    if (duplicated.has(f.name)) {
      blackholed.push(...prefixes);
      continue;
    }
    if (!f.publicKey) {
      unencrypted.push({ name: f.name, prefixes: [...f.podCidrs, ...f.internalIps.map(hostPrefix)] });
      continue;
    }
    const endpoint = f.endpoint ?? (f.internalIps[0] ? { host: f.internalIps[0], port: options.defaultPort } : undefined);
    peers.push({ name: f.name, publicKey: f.publicKey, endpoint, allowedIps: prefixes });
  }
  peers.sort((a, b) => a.name.localeCompare(b.name));
  return { peers, unencrypted, synced, duplicates, blackholed, self };
}
