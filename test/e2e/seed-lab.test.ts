/**
 * The seed lab (issue 5, item 4): three nodes with two pods each on one underlay L2, a fake
 * Kubernetes API server, host-gw routing as the baseline CNI — then wgts on every node, and
 * what the mesh promises, checked on the wire (tcpdump on the underlay switch):
 *
 * 1. before the mesh, pod-to-pod HTTP across nodes shows its secrets on the underlay;
 * 2. with the data plane and `wgts mesh` on every node, none of them — only WireGuard between
 *    node addresses — while the requests still succeed (and `wgts verify` on n1 agrees);
 * 3. same-node pod traffic never enters the tunnel;
 * 4. --host-encryption: node-to-node traffic is encrypted too, the API server stays reachable;
 * 5. a node joining and leaving: peers and routes follow within 2 s;
 * 6. key rotation: a long-lived TCP connection survives, and no stale peer remains;
 * 7. agent SIGKILL and data-plane restart: never a plaintext packet, traffic carries on.
 *
 * The tests share one lab and run in order; each leaves the mesh as the next expects it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyToBase64 } from '../../src/util/hex.ts';
import { runVerify } from '../../src/mesh/verify.ts';
import { NetnsBed, skipUnlessRoot, waitFor } from '../netns/helpers/netns.ts';
import type { LabNode, LoopResult, NodeEvent, StreamStatus } from './lab.ts';
import { ECHO_PORT, HTTP_PORT, Lab, NODE_ECHO_PORT, summary } from './lab.ts';

const log = (line: string): void => void process.stderr.write(`[seed-lab] ${line}\n`);

describe.skipIf(skipUnlessRoot('seed lab'))('seed lab: a Kubernetes mesh in namespaces', () => {
  const lab = new Lab(new NetnsBed('seed'));
  let n1: LabNode;
  let n2: LabNode;
  let n3: LabNode;
  const started = performance.now();
  /** Flags every (re)started agent gets from test 4 on. */
  let hostEncryption = false;

  beforeAll(async () => {
    const t0 = performance.now();
    await lab.build(3);
    [n1, n2, n3] = [lab.node('n1'), lab.node('n2'), lab.node('n3')];
    // Baseline connectivity through the host-gw routes, before anything else.
    for (const [from, to] of [['n1a', 'n2a'], ['n2b', 'n3a'], ['n3b', 'n1b']] as const) {
      await waitFor(async () => (await lab.request(lab.pod(from), lab.pod(to).address)).status === 200, {
        timeoutMs: 10_000,
        intervalMs: 100,
        what: `${from} → ${to} over host-gw`,
      });
    }
    log(`lab built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }, 90_000);

  afterAll(async () => {
    await lab.cleanup();
    log(`whole file ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }, 60_000);

  /** Requests from → to (pod names), n times; every status. */
  async function requests(pairs: ReadonlyArray<readonly [string, string]>, n: number): Promise<number[]> {
    const statuses: number[] = [];
    for (let i = 0; i < n; i++) {
      for (const [from, to] of pairs) statuses.push((await lab.request(lab.pod(from), lab.pod(to).address)).status);
    }
    return statuses;
  }

  /**
   * Until every peer has a handshake: the agents start one as they add a peer; a ping from each
   * node to the pod gateways of the nodes after it (one direction only: initiations that cross
   * cost a 5 s retry) makes up for any that failed.
   */
  async function handshakeAll(nodes: readonly LabNode[]): Promise<void> {
    await waitFor(
      async () => {
        const problem = await lab.meshProblem(nodes, { handshakes: true });
        if (problem === undefined) return true;
        await Promise.all(nodes.flatMap((a, i) => nodes.slice(i + 1).map((b) => lab.ping(a.ns, `100.64.${b.index}.1`))));
        return false;
      },
      { timeoutMs: 15_000, intervalMs: 50, what: 'every node with a handshake with every other' },
    );
  }

  it('1. before the mesh: the secrets cross the underlay in the clear', async () => {
    const capture = await lab.startCapture('baseline');
    const statuses = await requests([['n1a', 'n2a'], ['n2b', 'n3a']], 3);
    const a = await capture.stop();
    log(`baseline: ${summary(a)}`);
    expect(statuses.every((s) => s === 200)).toBe(true);
    const s = lab.secrets;
    expect(a.secretsFound.sort()).toEqual([s.token, s.apiKey, s.password].sort());
    expect(a.clear.some((f) => f.includes(`${lab.pod('n1a').address}:`) && f.includes(`${lab.pod('n2a').address}:${HTTP_PORT}`))).toBe(true);
  }, 30_000);

  it('2. with wgts on every node: only WireGuard between the nodes, and requests still succeed', async () => {
    await lab.withDiagnostics(async () => {
      const t0 = performance.now();
      await Promise.all([n1, n2, n3].map((n) => lab.startDataPlane(n)));
      const tPlane = performance.now();
      await Promise.all([n1, n2, n3].map((n) => lab.startAgent(n)));
      const tAgents = performance.now();
      await waitFor(async () => (await lab.meshProblem([n1, n2, n3])) === undefined, { timeoutMs: 10_000, intervalMs: 50, what: 'every node peered with the others' });
      await handshakeAll([n1, n2, n3]);
      log(
        `data planes up in ${((tPlane - t0) / 1000).toFixed(1)} s, agents ready in ${((tAgents - tPlane) / 1000).toFixed(1)} s, ` +
          `peered with handshakes ${((performance.now() - tAgents) / 1000).toFixed(1)} s later`,
      );
      for (const n of [n1, n2, n3]) {
        const table = await lab.table(n);
        for (const o of [n1, n2, n3].filter((x) => x !== n)) expect(table.get(o.podCidr), `${n.name} table 51820 ${o.podCidr}`).toBe(`dev ${n.ifname}`);
        expect(table.get(n.podCidr), `${n.name} throws its own pod CIDR`).toBe('throw');
      }

      // wgts verify on n1 runs alongside the switch capture.
      const verifyLines: string[] = [];
      const abort = new AbortController();
      const verify = runVerify({ interface: 'eth0', seconds: 20, wgInterface: n1.ifname, netns: n1.ns, log: (l) => verifyLines.push(l), signal: abort.signal });
      await waitFor(() => verifyLines.some((l) => l.startsWith('capturing on')) || undefined, { timeoutMs: 10_000, what: 'wgts verify capturing' });
      const capture = await lab.startCapture('mesh');
      const statuses = await requests([['n1a', 'n2a'], ['n2b', 'n3a'], ['n3b', 'n1b'], ['n2a', 'n1a']], 3);
      const a = await capture.stop();
      abort.abort();
      const verdict = await verify;
      log(`mesh: ${summary(a)}`);
      log(`wgts verify on n1 (exit ${verdict}):\n  ${verifyLines.join('\n  ')}`);
      expect(statuses.every((s) => s === 200), `statuses ${statuses.join(',')}`).toBe(true);
      expect(a.secretsFound).toEqual([]);
      expect(a.clear).toEqual([]);
      expect(a.icmpWireGuard).toBe(0);
      for (const pair of ['198.18.50.1-198.18.50.2', '198.18.50.2-198.18.50.3', '198.18.50.1-198.18.50.3']) {
        expect(a.wgData.get(pair) ?? 0, `WireGuard data between ${pair}`).toBeGreaterThan(0);
      }
      expect(verdict).toBe(0);
    });
  }, 60_000);

  it('3. same-node pod traffic never enters the tunnel', async () => {
    await lab.withDiagnostics(async () => {
      const before = await lab.linkCounters(n1);
      const capture = await lab.startCapture('same-node');
      const statuses = await requests([['n1a', 'n1b'], ['n1b', 'n1a']], 5);
      expect(await lab.ping(lab.pod('n1a').ns, lab.pod('n1b').address)).toBe(true);
      const a = await capture.stop();
      const after = await lab.linkCounters(n1);
      log(`same node: ${n1.ifname} rx/tx ${before.rx}/${before.tx} → ${after.rx}/${after.tx}; underlay ${summary(a)}`);
      expect(statuses.every((s) => s === 200)).toBe(true);
      expect(after).toEqual(before);
      expect(a.secretsFound).toEqual([]);
      expect(a.clear).toEqual([]);
      expect([...a.wgData.keys()].filter((pair) => pair.includes(n1.address))).toEqual([]);
    });
  }, 30_000);

  it('4. --host-encryption: node-to-node traffic is encrypted, the API server stays reachable', async () => {
    await lab.withDiagnostics(async () => {
      hostEncryption = true;
      const t0 = performance.now();
      await Promise.all([n1, n2, n3].map((n) => lab.stopAgent(n)));
      const tStopped = performance.now();
      await Promise.all([n1, n2, n3].map((n) => lab.startAgent(n, { hostEncryption })));
      const tStarted = performance.now();
      await waitFor(
        async () => {
          for (const n of [n1, n2, n3]) {
            const table = await lab.table(n);
            if (table.get('198.18.50.254/32') !== 'throw') return false;
            for (const o of [n1, n2, n3]) if (o !== n && table.get(`${o.address}/32`) !== `dev ${n.ifname}`) return false;
          }
          return true;
        },
        { timeoutMs: 10_000, intervalMs: 50, what: 'node addresses routed into the tunnel, the API server thrown' },
      );
      for (const n of [n1, n2, n3]) {
        const dev = await lab.device(n);
        for (const p of dev.peers) expect(p.allowedIps.map((c) => `${c.address.join('.')}/${c.prefix}`)).toContain(`${p.endpoint?.host}/32`);
      }
      log(
        `agents stopped in ${((tStopped - t0) / 1000).toFixed(1)} s, restarted with --host-encryption and ready in ${((tStarted - tStopped) / 1000).toFixed(1)} s, ` +
          `routes in place ${((performance.now() - tStarted) / 1000).toFixed(1)} s later`,
      );

      const hostSecret = `host-secret-${keyToBase64(crypto.getRandomValues(new Uint8Array(12)))}`;
      const capture = await lab.startCapture('host');
      const echoes = [];
      for (const [from, to] of [[n1, n2], [n3, n1], [n2, n3]] as const) {
        echoes.push(await from.tool.call<{ echoed: string; localAddress: string }>('tcpOnce', { host: to.address, port: NODE_ECHO_PORT, localAddress: from.address, data: `${hostSecret} ${from.name}` }));
      }
      // The agents still reach the API server (exempt from the tunnel): a new Node reaches every agent.
      await lab.api.call('upsertNode', { node: { metadata: { name: 'plain' }, spec: { podCIDRs: ['100.64.99.0/24'] }, status: { addresses: [{ type: 'InternalIP', address: '198.18.50.99' }] } } });
      for (const n of [n1, n2, n3]) {
        await waitFor(async () => /^wgts_nodes_unencrypted 1$/m.test(await lab.metrics(n)), { timeoutMs: 5_000, intervalMs: 50, what: `${n.name} sees the new Node` });
      }
      await lab.api.call('deleteNode', { name: 'plain' });
      for (const n of [n1, n2, n3]) {
        await waitFor(async () => /^wgts_nodes_unencrypted 0$/m.test(await lab.metrics(n)), { timeoutMs: 5_000, intervalMs: 50, what: `${n.name} sees the Node go` });
      }
      const a = await capture.stop([hostSecret]);
      log(`host encryption: ${summary(a)}`);
      for (const e of echoes) expect(e.echoed.startsWith(hostSecret)).toBe(true);
      expect(a.secretsFound).toEqual([]);
      expect(a.clear).toEqual([]);
      expect(a.api).toBeGreaterThan(0);
      expect(a.wgData.get('198.18.50.1-198.18.50.2') ?? 0).toBeGreaterThan(0);
      for (const n of [n1, n2, n3]) expect(await lab.readyz(n)).toBe(200);
    });
  }, 60_000);

  it('5. a node joins and leaves: peers and routes follow within 2 s', async () => {
    await lab.withDiagnostics(async () => {
      const others = [n1, n2, n3];
      const n4 = await lab.addNode(4, { pods: 0 });
      await lab.startDataPlane(n4);
      const seen = new Map<string, number>();
      let published: NodeEvent | undefined;
      let watching = true;
      // From the moment n4's key appears on its Node, watch the others' devices every 20 ms.
      const watcher = (async () => {
        while (watching) {
          published ??= lab.events.find((e) => e.name === 'n4' && !!e.annotations?.['wgts.io/public-key']);
          const key = published?.annotations?.['wgts.io/public-key'];
          if (key !== undefined) {
            for (const n of others) {
              if (seen.has(n.name)) continue;
              const dev = await lab.device(n);
              if (dev.peers.some((p) => keyToBase64(p.publicKey) === key)) seen.set(n.name, Date.now());
            }
          }
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      try {
        await lab.startAgent(n4, { hostEncryption });
        await waitFor(() => seen.size === others.length, { timeoutMs: 5_000, intervalMs: 10, what: 'every node peered with n4' });
      } finally {
        watching = false;
        await watcher;
      }
      const key = published!.annotations!['wgts.io/public-key'];
      const publishedAt = published!.time;
      const delays = others.map((n) => seen.get(n.name)! - publishedAt);
      log(`n4 joined: peer on ${others.map((n, i) => `${n.name} +${delays[i]} ms`).join(', ')} after its annotation`);
      expect(Math.max(...delays)).toBeLessThan(2_000);
      for (const n of others) {
        await waitFor(async () => (await lab.table(n)).get(n4.podCidr) === `dev ${n.ifname}`, { timeoutMs: 2_000, intervalMs: 20, what: `${n.name} routes ${n4.podCidr}` });
      }
      await waitFor(async () => (await lab.meshProblem([n1, n2, n3, n4])) === undefined, { timeoutMs: 5_000, intervalMs: 50, what: 'n4 meshed' });
      // n4 works both ways: its host reaches pods on the others, and their pods reach its pod CIDR.
      const tPing = performance.now();
      await Promise.all([
        ...['n1a', 'n2a', 'n3a'].map((p) => waitFor(() => lab.ping(n4.ns, lab.pod(p).address), { timeoutMs: 8_000, intervalMs: 20, what: `n4 → ${p}` })),
        ...['n1b', 'n2b', 'n3b'].map((p) => waitFor(() => lab.ping(lab.pod(p).ns, '100.64.4.1'), { timeoutMs: 8_000, intervalMs: 20, what: `${p} → n4` })),
      ]);
      log(`n4 reachable both ways ${Math.round(performance.now() - tPing)} ms after it was meshed`);

      const deletedAt = Date.now();
      await lab.api.call('deleteNode', { name: 'n4' });
      const gone = new Map<string, number>();
      await waitFor(
        async () => {
          for (const n of others) {
            if (gone.has(n.name)) continue;
            const dev = await lab.device(n);
            const table = await lab.table(n);
            if (!dev.peers.some((p) => keyToBase64(p.publicKey) === key) && !table.has(n4.podCidr) && !table.has(`${n4.address}/32`)) gone.set(n.name, Date.now());
          }
          return gone.size === others.length;
        },
        { timeoutMs: 5_000, intervalMs: 20, what: "n4's peer and routes gone everywhere" },
      );
      log(`n4 left: peer and routes gone on ${others.map((n) => `${n.name} +${gone.get(n.name)! - deletedAt} ms`).join(', ')} after the delete`);
      expect(Math.max(...others.map((n) => gone.get(n.name)! - deletedAt))).toBeLessThan(2_000);
      expect(await lab.meshProblem(others)).toBeUndefined();
      await lab.stopAgent(n4);
      await lab.killDataPlane(n4);
      lab.nodes.splice(lab.nodes.indexOf(n4), 1);
    });
  }, 60_000);

  it('6. key rotation: a long-lived TCP connection survives and no stale peer remains', async () => {
    await lab.withDiagnostics(async () => {
      const n1a = lab.pod('n1a');
      const n3a = lab.pod('n3a');
      const oldKey = await lab.publishedKey('n3');
      await n1a.tool.call('streamStart', { name: 'rot', host: n3a.address, port: ECHO_PORT, intervalMs: 50 });
      const from = lab.events.length;
      await lab.stopAgent(n3);
      await lab.startAgent(n3, { hostEncryption, rotateKeys: '2s' });
      // Two rotations: two new keys published by n3.
      const rotated = await waitFor(
        () => {
          const keys = new Set(lab.events.slice(from).filter((e) => e.name === 'n3').map((e) => e.annotations?.['wgts.io/public-key']).filter((k) => k !== undefined && k !== oldKey));
          return keys.size >= 2 ? keys : undefined;
        },
        { timeoutMs: 15_000, intervalMs: 20, what: 'n3 to rotate its key twice' },
      );
      // Stop rotating (the key file holds the current key), then everything must agree on the keys.
      await lab.stopAgent(n3);
      await lab.startAgent(n3, { hostEncryption });
      await waitFor(async () => (await lab.meshProblem([n1, n2, n3])) === undefined, { timeoutMs: 5_000, intervalMs: 50, what: 'every node on the current keys' });
      const current = await lab.publishedKey('n3');
      expect([...rotated]).toContain(current);
      expect(lab.fileKey(n3)).toBe(current);
      for (const n of [n1, n2]) {
        const keys = (await lab.device(n)).peers.map((p) => keyToBase64(p.publicKey));
        expect(keys).not.toContain(oldKey);
        expect(keys.filter((k) => rotated.has(k))).toEqual([current]);
      }
      // The connection keeps exchanging data after the last rotation.
      const s1 = await n1a.tool.call<StreamStatus>('streamStatus', { name: 'rot' });
      await waitFor(async () => (await n1a.tool.call<StreamStatus>('streamStatus', { name: 'rot' })).received >= s1.received + 10, {
        timeoutMs: 5_000,
        intervalMs: 50,
        what: 'the stream to keep echoing',
      });
      const s = await n1a.tool.call<StreamStatus>('streamStop', { name: 'rot' });
      log(`rotation: ${rotated.size} new keys for n3; stream sent ${s.sent}, echoed ${s.received}, longest gap ${s.maxGapMs} ms, error ${s.error}`);
      expect(s.error).toBeNull();
      expect(s.closed).toBe(false);
    });
  }, 60_000);

  it('7. agent SIGKILL and data-plane restart: never plaintext, traffic carries on', async () => {
    await lab.withDiagnostics(async () => {
      const n1a = lab.pod('n1a');
      const n3a = lab.pod('n3a');
      const nodes = [n1, n2, n3];
      const capture = await lab.startCapture('restarts');
      await n1a.tool.call('httpLoopStart', { name: 'loop', url: `http://${n3a.address}:${HTTP_PORT}/login`, secrets: lab.secrets, intervalMs: 50, timeoutMs: 2_000 });
      const peek = (fromIndex = 0): Promise<LoopResult[]> => n1a.tool.call<LoopResult[]>('httpLoopPeek', { name: 'loop', from: fromIndex });
      await waitFor(async () => (await peek()).filter((r) => r.status === 200).length >= 10, { timeoutMs: 5_000, intervalMs: 50, what: 'requests flowing' });
      const handshakes = async (): Promise<number[]> => {
        const out: number[] = [];
        for (const [a, b] of [[n1, n3], [n3, n1]] as const) {
          const key = await lab.publishedKey(b.name);
          out.push((await lab.device(a)).peers.find((p) => keyToBase64(p.publicKey) === key)!.lastHandshakeEpochMs);
        }
        return out;
      };
      const handshakesBefore = await handshakes();

      // Agents killed: nothing changes on the wire.
      const killedAt = Date.now();
      await Promise.all(nodes.map((n) => lab.stopAgent(n, 'SIGKILL')));
      await waitFor(async () => (await peek()).filter((r) => r.start > killedAt + 2_000).length >= 3, { timeoutMs: 10_000, intervalMs: 50, what: '2 s of requests after the kill' });
      const afterKill = (await peek()).filter((r) => r.start >= killedAt);
      expect(afterKill.filter((r) => r.status !== 200), 'requests after the agents were killed').toEqual([]);
      expect(await handshakes(), 'no new handshake').toEqual(handshakesBefore);
      await Promise.all(nodes.map((n) => lab.startAgent(n, { hostEncryption })));
      expect(await lab.meshProblem(nodes)).toBeUndefined();
      log(`agents SIGKILLed: ${afterKill.length} requests in the next ${((Date.now() - killedAt) / 1000).toFixed(1)} s, all 200, no new handshake`);

      // The data plane of n3 (serving the backend) killed and started again.
      const planeKilledAt = Date.now();
      await lab.killDataPlane(n3);
      await lab.startDataPlane(n3);
      const upAt = Date.now();
      const probe = await n1a.tool.call<{ firstOk: { start: number; end: number } | null; attempts: number }>(
        'httpProbe',
        { url: `http://${n3a.address}:${HTTP_PORT}/login`, secrets: lab.secrets, everyMs: 50, timeoutMs: 3_000, deadlineMs: 20_000 },
        30_000,
      );
      expect(probe.firstOk, 'a request to succeed after the data plane came back').not.toBeNull();
      const resumedAt = probe.firstOk!.end;
      const resumeMs = resumedAt - upAt;
      await waitFor(async () => (await peek()).filter((r) => r.start > resumedAt + 200 && r.status === 200).length >= 10, { timeoutMs: 5_000, intervalMs: 50, what: 'requests to keep succeeding' });
      const results = await n1a.tool.call<LoopResult[]>('httpLoopStop', { name: 'loop' });
      const a = await capture.stop();
      const failed = results.filter((r) => r.status !== 200);
      log(
        `data plane of n3 down ${upAt - planeKilledAt} ms; first request through ${resumeMs} ms after it was up (probe ${probe.attempts} attempts); ` +
          `${results.length} requests, ${failed.length} failed (${failed.map((r) => r.error ?? r.status).slice(0, 3).join('; ')}); capture ${summary(a)}`,
      );
      expect(a.secretsFound).toEqual([]);
      expect(a.clear).toEqual([]);
      expect(resumeMs).toBeLessThan(2_000);
      expect(results.filter((r) => r.start > resumedAt + 200).filter((r) => r.status !== 200), 'requests after traffic resumed').toEqual([]);
      await waitFor(async () => (await lab.meshProblem(nodes)) === undefined, { timeoutMs: 5_000, intervalMs: 50, what: 'the mesh whole again' });
    });
  }, 90_000);
});
