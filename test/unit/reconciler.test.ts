import { describe, expect, it } from 'vitest';
import { Reconciler } from '../../src/mesh/reconciler.ts';
import type { MeshPeer } from '../../src/mesh/types.ts';
import { parseCidr } from '../../src/util/ip.ts';
import { FakeDevice } from '../helpers/fake-device.ts';

const k = (n: number) => new Uint8Array(32).fill(n);
const peer = (n: number, cidrs: string[], port = 51820): MeshPeer => ({
  name: `n${n}`,
  publicKey: k(n),
  endpoint: { host: `198.18.1.${n}`, port },
  allowedIps: cidrs.map(parseCidr),
});

function setup() {
  const device = new FakeDevice();
  const plane = { get: async () => device.snapshot(), set: (tx: Parameters<FakeDevice['apply']>[0]) => device.apply(tx) };
  return { device, reconciler: new Reconciler(plane) };
}

const base = { privateKey: k(9), listenPort: 51820, fwmark: 0x51820 };

describe('Reconciler', () => {
  it('configures from scratch, then finds nothing to change', async () => {
    const { device, reconciler } = setup();
    const first = await reconciler.reconcile({ ...base, peers: [peer(1, ['100.64.1.0/24']), peer(2, ['100.64.2.0/24', 'fd00:2::/64'])], removeStale: true });
    expect(first.added).toHaveLength(2);
    expect(device.snapshot().peers).toHaveLength(2);
    expect(device.snapshot().fwmark).toBe(0x51820);
    const second = await reconciler.reconcile({ ...base, peers: [peer(1, ['100.64.1.0/24']), peer(2, ['fd00:2::/64', '100.64.2.0/24'])], removeStale: true });
    expect(second.changed).toBe(false);
  });

  it('touches only what differs: an endpoint move updates one peer and leaves the other alone', async () => {
    const { device, reconciler } = setup();
    await reconciler.reconcile({ ...base, peers: [peer(1, ['100.64.1.0/24']), peer(2, ['100.64.2.0/24'])], removeStale: true });
    const before = device.transactions.length;
    const r = await reconciler.reconcile({ ...base, peers: [peer(1, ['100.64.1.0/24']), peer(2, ['100.64.2.0/24'], 52000)], removeStale: true });
    expect(r.updated).toEqual([Buffer.from(k(2)).toString('hex')]);
    const tx = device.transactions.at(-1)!;
    expect(device.transactions.length).toBe(before + 1);
    expect(tx.peers).toHaveLength(1);
    expect(tx.peers![0]!.updateOnly).toBe(true);
    expect(tx.privateKey).toBeUndefined();
  });

  it('removes stale peers only once the source has synced', async () => {
    const { device, reconciler } = setup();
    await reconciler.reconcile({ ...base, peers: [peer(1, ['100.64.1.0/24']), peer(2, ['100.64.2.0/24'])], removeStale: true });
    await reconciler.reconcile({ ...base, peers: [peer(1, ['100.64.1.0/24'])], removeStale: false });
    expect(device.snapshot().peers).toHaveLength(2);
    const r = await reconciler.reconcile({ ...base, peers: [peer(1, ['100.64.1.0/24'])], removeStale: true });
    expect(r.removed).toHaveLength(1);
    expect(device.snapshot().peers).toHaveLength(1);
  });

  it('a replaced key: the old peer goes and the new one takes over its prefixes in one transaction', async () => {
    const { device, reconciler } = setup();
    await reconciler.reconcile({ ...base, peers: [peer(1, ['100.64.1.0/24'])], removeStale: true });
    const moved: MeshPeer = { ...peer(1, ['100.64.1.0/24']), publicKey: k(7) };
    const r = await reconciler.reconcile({ ...base, peers: [moved], removeStale: true });
    expect(r.added).toHaveLength(1);
    expect(r.removed).toHaveLength(1);
    const peers = device.snapshot().peers;
    expect(peers).toHaveLength(1);
    expect(Buffer.from(peers[0]!.publicKey).equals(Buffer.from(k(7)))).toBe(true);
  });

  it('a new private key is set without touching peers', async () => {
    const { device, reconciler } = setup();
    await reconciler.reconcile({ ...base, peers: [peer(1, ['100.64.1.0/24'])], removeStale: true });
    await reconciler.reconcile({ ...base, privateKey: k(10), peers: [peer(1, ['100.64.1.0/24'])], removeStale: true });
    const tx = device.transactions.at(-1)!;
    expect(tx.privateKey).toEqual(k(10));
    expect(tx.peers).toBeUndefined();
  });
});
