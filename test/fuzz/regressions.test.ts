/**
 * Fuzz findings, each pinned by a direct test, and every input in test/fuzz/crashes/ replayed
 * in a fresh target (a crash file is committed together with the fix it proved necessary).
 */
import { readdirSync, readFileSync } from 'node:fs';
import type { V1Node } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { desiredFromNodes, nodeFacts } from '../../src/mesh/nodes.ts';
import { ANNOTATIONS } from '../../src/mesh/types.ts';
import { formatCidr } from '../../src/util/ip.ts';
import { CRASH_DIR, factoryFor, replayOnce } from './runner.ts';

let nextKey = 1;

function node(name: string, internalIp: string, withKey: boolean): V1Node {
  const key = Buffer.alloc(32, nextKey++).toString('base64');
  return {
    metadata: { name, annotations: withKey ? { [ANNOTATIONS.publicKey]: key } : {} },
    spec: { podCIDRs: ['100.64.2.0/24'] },
    status: { addresses: [{ type: 'InternalIP', address: internalIp }, { type: 'Hostname', address: name }] },
  };
}

describe('fuzz regressions', () => {
  // Found by the "nodes" target (14th input of its first run): an InternalIP that is not an IP
  // address went unchecked into NodeFacts.internalIps. desiredFromNodes then threw from
  // hostPrefix() for any such node without a key (or with host encryption) — from
  // KubernetesSource.current(), in the informer callback and in the agent's reconcile, so one
  // malformed Node object stopped the mesh agent — and a node with a key got the text as its
  // peer endpoint ("1.2.3.04:51820"), which the data plane rejects, failing the whole set.
  it('nodes: an InternalIP that is not an IP address is reported, never thrown on, never an endpoint', () => {
    for (const address of ['bogus', '1.2.3.04', '1.2.3.4:51820', '', 'fe80::1%', '10.0.0.0/8']) {
      for (const hostEncryption of [false, true]) {
        const nodes = [node('self', '198.18.1.1', true), node('plain', address, false), node('keyed', address, true)];
        const d = desiredFromNodes(nodes, 'self', { hostEncryption, defaultPort: 51820 }, true);
        expect(d.unencrypted.map((u) => u.name)).toEqual(['plain']);
        expect(d.unencrypted[0]!.prefixes.map(formatCidr)).toEqual(['100.64.2.0/24']);
        expect(d.peers).toHaveLength(1);
        expect(d.peers[0]!.endpoint).toBeUndefined();
        expect(d.peers[0]!.allowedIps.map(formatCidr)).toEqual(['100.64.2.0/24']);
      }
      const facts = nodeFacts(node('keyed', address, true));
      expect(facts.internalIps).toEqual([]);
      expect(facts.problems.some((p) => p.startsWith('InternalIP'))).toBe(true);
    }
    // Valid addresses still count, in canonical form (a zone or upper case does not survive).
    expect(nodeFacts(node('n', 'FD00::0001', true)).internalIps).toEqual(['fd00::1']);
    expect(nodeFacts(node('n', 'fe80::1%eth0', true)).internalIps).toEqual(['fe80::1']);
  });

  const files = readdirSync(CRASH_DIR).filter((f) => f.endsWith('.bin')).sort();
  for (const file of files) {
    it(`replays ${file} without a failure`, async () => {
      const target = file.replace(/-[0-9a-f]+\.bin$/, '');
      const error = await replayOnce(factoryFor(target), new Uint8Array(readFileSync(`${CRASH_DIR}/${file}`)));
      expect(error, String((error as Error)?.stack ?? error)).toBeUndefined();
    }, 60_000);
  }
});
