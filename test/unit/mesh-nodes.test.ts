import type { V1Node } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { desiredFromNodes, interfaceAddressesFor, nodeFacts } from '../../src/mesh/nodes.ts';
import { ANNOTATIONS } from '../../src/mesh/types.ts';
import { formatCidr } from '../../src/util/ip.ts';

const key = (n: number) => Buffer.alloc(32, n).toString('base64');

function node(name: string, opts: { ip: string; pods: string[]; key?: string; endpoint?: string; ifaddr?: string }): V1Node {
  const annotations: Record<string, string> = {};
  if (opts.key) annotations[ANNOTATIONS.publicKey] = opts.key;
  if (opts.endpoint) annotations[ANNOTATIONS.endpoint] = opts.endpoint;
  if (opts.ifaddr) annotations[ANNOTATIONS.interfaceAddress] = opts.ifaddr;
  return {
    metadata: { name, annotations },
    spec: { podCIDRs: opts.pods, podCIDR: opts.pods[0] },
    status: { addresses: [{ type: 'InternalIP', address: opts.ip }, { type: 'Hostname', address: name }] },
  };
}

const nodes = [
  node('n1', { ip: '198.18.1.1', pods: ['100.64.1.0/24', 'fd00:1::/64'], key: key(1) }),
  node('n2', { ip: '198.18.1.2', pods: ['100.64.2.0/24'], key: key(2), endpoint: '198.18.9.2:51999', ifaddr: '100.64.2.0' }),
  node('n3', { ip: '198.18.1.3', pods: ['100.64.3.0/24'] }),
  node('n4', { ip: '198.18.1.4', pods: ['100.64.4.0/24'], key: key(4) }),
];

describe('nodes → mesh peers', () => {
  it('peers are the other nodes with a key; allowed IPs are pod CIDRs and tunnel addresses; endpoint from the annotation or InternalIP', () => {
    const d = desiredFromNodes(nodes, 'n1', { hostEncryption: false, defaultPort: 51820 }, true);
    expect(d.peers.map((p) => p.name)).toEqual(['n2', 'n4']);
    const n2 = d.peers[0]!;
    expect(n2.endpoint).toEqual({ host: '198.18.9.2', port: 51999 });
    expect(n2.allowedIps.map(formatCidr)).toEqual(['100.64.2.0/24', '100.64.2.0/32']);
    expect(d.peers[1]!.endpoint).toEqual({ host: '198.18.1.4', port: 51820 });
    expect(d.unencrypted.map((u) => u.name)).toEqual(['n3']);
    expect(d.unencrypted[0]!.prefixes.map(formatCidr)).toEqual(['100.64.3.0/24', '198.18.1.3/32']);
    expect(d.self?.podCidrs.map(formatCidr)).toEqual(['100.64.1.0/24', 'fd00:1::/64']);
  });

  it('host encryption adds each peer node InternalIP', () => {
    const d = desiredFromNodes(nodes, 'n1', { hostEncryption: true, defaultPort: 51820 }, true);
    expect(d.peers[1]!.allowedIps.map(formatCidr)).toEqual(['100.64.4.0/24', '198.18.1.4/32']);
  });

  it('two nodes with one key: neither is a peer, their prefixes are black-holed, the conflict is reported', () => {
    const dup = [...nodes, node('n5', { ip: '198.18.1.5', pods: ['100.64.5.0/24'], key: key(4) })];
    const d = desiredFromNodes(dup, 'n1', { hostEncryption: false, defaultPort: 51820 }, true);
    expect(d.peers.map((p) => p.name)).toEqual(['n2']);
    expect(d.duplicates).toEqual([['n4', 'n5']]);
    expect(d.blackholed.map(formatCidr).sort()).toEqual(['100.64.4.0/24', '100.64.5.0/24']);
  });

  it('bad annotations are ignored with a reason, never thrown', () => {
    const f = nodeFacts(node('bad', { ip: '198.18.1.9', pods: ['100.64.9.0/24'], key: 'not-a-key', endpoint: 'nowhere', ifaddr: '1.2.3' }));
    expect(f.publicKey).toBeUndefined();
    expect(f.endpoint).toBeUndefined();
    expect(f.problems).toHaveLength(3);
    const zero = nodeFacts(node('z', { ip: '198.18.1.8', pods: [], key: Buffer.alloc(32).toString('base64') }));
    expect(zero.publicKey).toBeUndefined();
  });

  it('tunnel addresses are the pod CIDR network addresses', () => {
    expect(interfaceAddressesFor(nodeFacts(nodes[0]!).podCidrs).map(formatCidr)).toEqual(['100.64.1.0/32', 'fd00:1::/128']);
  });
});
