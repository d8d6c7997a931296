import { afterEach, describe, expect, it } from 'vitest';
import { Device } from '../../src/device/device.ts';
import { createBackend } from '../../src/noise/crypto/index.ts';
import { REKEY_TIMEOUT } from '../../src/noise/constants.ts';
import { parseCidr } from '../../src/util/ip.ts';
import { ipv4Packet, MemoryNet, RecordingTun, tunBatch, waitFor } from '../helpers/memory-net.ts';

const backend = createBackend('sodium');
const devices: Device[] = [];

function key(): Uint8Array {
  const k = new Uint8Array(32);
  backend.randomBytes(k);
  return k;
}

function makeDevice(net: MemoryNet, host: string, port: number, now?: () => number) {
  const tun = new RecordingTun();
  const device = new Device({ backend, tun, openTransport: net.factory(host), ...(now ? { now } : {}) });
  device.start(port);
  devices.push(device);
  return { device, tun };
}

async function pair(net = new MemoryNet()) {
  const a = makeDevice(net, '198.18.0.1', 51820);
  const b = makeDevice(net, '198.18.0.2', 51820);
  const ka = key();
  const kb = key();
  await a.device.apply({ privateKey: ka });
  await b.device.apply({ privateKey: kb });
  const pubA = a.device.identity!.publicKey;
  const pubB = b.device.identity!.publicKey;
  await a.device.apply({ peers: [{ publicKey: pubB, endpoint: { host: '198.18.0.2', port: 51820 }, addAllowedIps: [parseCidr('100.64.0.2/32')] }] });
  await b.device.apply({ peers: [{ publicKey: pubA, addAllowedIps: [parseCidr('100.64.0.1/32')] }] });
  return { net, a, b, pubA, pubB };
}

function send(device: Device, packets: Uint8Array[]) {
  const batch = tunBatch(packets);
  device.handleTunPackets(batch.slab, batch.offsets, batch.lengths, batch.count);
}

afterEach(() => {
  for (const d of devices.splice(0)) d.close();
});

describe('Device over an in-memory underlay', () => {
  it('stages packets, handshakes on demand, delivers them decrypted and in order', async () => {
    const { a, b } = await pair();
    const packets = [10, 100, 1000, 1380].map((n) => ipv4Packet('100.64.0.1', '100.64.0.2', n));
    send(a.device, packets);
    await waitFor(() => b.tun.packets.length === 4, 5000, 'staged packets delivered');
    expect(b.tun.packets.map((p) => Buffer.from(p).toString('hex'))).toEqual(packets.map((p) => Buffer.from(p).toString('hex')));
    const peerAtB = [...b.device.peers.values()][0]!;
    // b learned a's endpoint from the handshake and promoted the session on the first data packet.
    expect(peerAtB.hasEndpoint).toBe(true);
    expect(peerAtB.keypairs.current).toBeDefined();
    expect(peerAtB.lastHandshakeEpochMs).toBeGreaterThan(0);
    // Reply flows back on the same session, no new handshake.
    const before = a.device.counters.initiationsSent + b.device.counters.initiationsSent;
    send(b.device, [ipv4Packet('100.64.0.2', '100.64.0.1', 64)]);
    await waitFor(() => a.tun.packets.length === 1, 2000, 'reply');
    expect(a.device.counters.initiationsSent + b.device.counters.initiationsSent).toBe(before);
    const snapA = a.device.snapshot();
    expect(snapA.peers[0]!.txBytes).toBeGreaterThan(2000);
    expect(snapA.peers[0]!.rxBytes).toBeGreaterThan(0);
  });

  it('drops a decrypted packet whose source is outside the peer allowed IPs, and counts it', async () => {
    const { a, b } = await pair();
    // a routes 100.64.0.2 to b; b only allows 100.64.0.1 from a. Spoof the inner source.
    await a.device.apply({ peers: [{ publicKey: [...a.device.peers.values()][0]!.publicKey, addAllowedIps: [parseCidr('100.64.9.0/24')] }] });
    send(a.device, [ipv4Packet('100.64.0.1', '100.64.0.2', 20)]);
    await waitFor(() => b.tun.packets.length === 1, 5000, 'legit packet');
    send(a.device, [ipv4Packet('100.64.0.66', '100.64.0.2', 20)]);
    await waitFor(() => b.device.counters.dropped('source-not-allowed') === 1, 2000, 'spoof dropped');
    expect(b.tun.packets).toHaveLength(1);
  });

  it('drops a replayed transport message and counts it', async () => {
    const { net, a, b } = await pair();
    send(a.device, [ipv4Packet('100.64.0.1', '100.64.0.2', 20)]);
    await waitFor(() => b.tun.packets.length === 1, 5000, 'first packet');
    const data = net.log.filter((d) => d.bytes[0] === 4 && d.from.startsWith('198.18.0.1') && d.bytes.length > 32).at(-1)!;
    net.inject(data.bytes, '198.18.0.1', 51820, '198.18.0.2:51820');
    await waitFor(() => b.device.counters.dropped('replay') === 1, 2000, 'replay counted');
    expect(b.tun.packets).toHaveLength(1);
  });

  it('roams: an authenticated packet from a new address moves the endpoint', async () => {
    const { net, a, b } = await pair();
    send(a.device, [ipv4Packet('100.64.0.1', '100.64.0.2', 20)]);
    await waitFor(() => b.tun.packets.length === 1, 5000, 'first packet');
    // a's traffic now appears from another address (NAT rebinding).
    net.tap = (bytes, from, to) => {
      if (from === '198.18.0.1:51820') {
        setImmediate(() => net.inject(bytes, '198.18.1.1', 40001, to));
        return [];
      }
      return undefined;
    };
    send(a.device, [ipv4Packet('100.64.0.1', '100.64.0.2', 20)]);
    await waitFor(() => b.tun.packets.length === 2, 2000, 'second packet');
    const snap = b.device.snapshot();
    expect(snap.peers[0]!.endpoint).toEqual({ host: '198.18.1.1', port: 40001 });
  });

  it('ignores garbage without touching state', async () => {
    const { net, b } = await pair();
    for (const junk of [new Uint8Array(0), new Uint8Array(3), Uint8Array.of(9, 0, 0, 0), new Uint8Array(148).fill(1), Uint8Array.of(1, 0, 0, 0, ...new Array(144).fill(0)), Uint8Array.of(4, 0, 0, 0, ...new Array(40).fill(7))]) {
      net.inject(junk, '198.18.0.9', 1234, '198.18.0.2:51820');
    }
    await waitFor(() => (b.device.counters.dropped('malformed') + b.device.counters.dropped('mac1') + b.device.counters.dropped('unknown-index')) === 6, 2000, 'junk counted');
    expect(b.device.counters.handshakesProcessed).toBe(0);
    expect(b.tun.packets).toHaveLength(0);
  });

  it('removes a peer: its routes, sessions and indices go with it', async () => {
    const { a, b, pubA } = await pair();
    send(a.device, [ipv4Packet('100.64.0.1', '100.64.0.2', 20)]);
    await waitFor(() => b.tun.packets.length === 1, 5000, 'first packet');
    expect(b.device.indices.size).toBeGreaterThan(0);
    await b.device.apply({ peers: [{ publicKey: pubA, remove: true }] });
    expect(b.device.peers.size).toBe(0);
    expect(b.device.indices.size).toBe(0);
    expect(b.device.allowedIps.size).toBe(0);
  });

  it('a failing transaction leaves the device exactly as it was', async () => {
    const net = new MemoryNet();
    const { device } = makeDevice(net, '198.18.0.3', 51820);
    const other = makeDevice(net, '198.18.0.3', 51821);
    await device.apply({ privateKey: key(), peers: [{ publicKey: key(), addAllowedIps: [parseCidr('100.64.5.0/24')] }] });
    const before = JSON.stringify(device.snapshot(), (_k, v) => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v));
    await expect(device.apply({ listenPort: other.device.listenPort, peers: [{ publicKey: key() }] })).rejects.toMatchObject({ errno: 98 });
    await expect(device.apply({ peers: [{ publicKey: key() }, { publicKey: new Uint8Array(5) }] })).rejects.toThrow(/public_key/);
    await expect(device.apply({ peers: [{ publicKey: key() }, { publicKey: key(), endpoint: { host: '1.2.3.04', port: 1 } }] })).rejects.toThrow(/not an IP address/);
    const after = JSON.stringify(device.snapshot(), (_k, v) => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v));
    expect(after).toBe(before);
  });
});

describe('Device: initiations that cross', () => {
  interface CrossingOptions {
    /** Where a sends to b (default: b's address). */
    readonly aSeesB?: { host: string; port: number };
    readonly now?: () => number;
    /** Runs after a's packet, before b's; without it both go in the same tick. */
    readonly betweenSends?: (a: Device) => void;
  }

  /** Two devices with a packet for each other: in the same tick, both initiate before either initiation arrives. */
  async function crossing({ aSeesB = { host: '198.18.0.2', port: 51820 }, now, betweenSends }: CrossingOptions = {}) {
    const net = new MemoryNet();
    const a = makeDevice(net, '198.18.0.1', 51820, now);
    const b = makeDevice(net, '198.18.0.2', 51820, now);
    await a.device.apply({ privateKey: key() });
    await b.device.apply({ privateKey: key() });
    await a.device.apply({ peers: [{ publicKey: b.device.identity!.publicKey, endpoint: aSeesB, addAllowedIps: [parseCidr('100.64.0.2/32')] }] });
    await b.device.apply({ peers: [{ publicKey: a.device.identity!.publicKey, endpoint: { host: '198.18.0.1', port: 51820 }, addAllowedIps: [parseCidr('100.64.0.1/32')] }] });
    send(a.device, [ipv4Packet('100.64.0.1', '100.64.0.2', 10)]);
    betweenSends?.(a.device);
    send(b.device, [ipv4Packet('100.64.0.2', '100.64.0.1', 20)]);
    // Deadline below REKEY_TIMEOUT: delivery must not wait for a retransmission.
    await waitFor(() => a.tun.packets.length === 1 && b.tun.packets.length === 1, 4000, 'both packets delivered');
    return { a, b };
  }

  it('each answers the other and keeps its own waiting: both answers complete, no retry', async () => {
    const { a, b } = await crossing();
    for (const d of [a.device, b.device]) {
      expect(d.counters.initiationsSent).toBe(1);
      expect(d.counters.initiationsCrossed).toBe(1);
      expect(d.counters.responsesSent).toBe(1);
      expect(d.counters.dropped('handshake')).toBe(0);
      // Two sessions, one per initiation: current is ours (we initiated it), previous the one we answered.
      const peer = [...d.peers.values()][0]!;
      expect(peer.keypairs.current?.isInitiator).toBe(true);
      expect(peer.keypairs.previous?.isInitiator).toBe(false);
      // The initiation set aside was answered: nothing left pending, and its index now names a session.
      expect(peer.handshake.phase).toBe('none');
    }
    expect(a.device.indices.size).toBe(2);
    expect(b.device.indices.size).toBe(2);
  });

  it('an initiation of ours older than REKEY_TIMEOUT is not kept: theirs is answered the usual way', async () => {
    let clock = 1_000_000;
    const { a } = await crossing({
      aSeesB: { host: '198.18.0.9', port: 51820 }, // a's initiation is lost: nobody there
      now: () => clock,
      betweenSends: (device) => {
        expect(device.counters.initiationsSent).toBe(1);
        clock += REKEY_TIMEOUT;
      },
    });
    expect(a.device.counters.initiationsCrossed).toBe(0);
    const peerAtA = [...a.device.peers.values()][0]!;
    expect(peerAtA.handshake.phase).toBe('none');
    // The stale initiation's index went with it: only the answered session's is left.
    expect(a.device.indices.size).toBe(1);
  });

  it('our initiation lost (stale endpoint), theirs arrives: answered at once, ours left to its retry', async () => {
    const { a, b } = await crossing({ aSeesB: { host: '198.18.0.9', port: 51820 } });
    expect(a.device.counters.initiationsCrossed).toBe(1);
    expect(a.device.counters.responsesSent).toBe(1);
    expect(b.device.counters.responsesSent).toBe(0);
    // a learned b's real address from the initiation it answered.
    const peerAtA = [...a.device.peers.values()][0]!;
    expect(peerAtA.hasEndpoint).toBe(true);
    expect(peerAtA.keypairs.current?.isInitiator).toBe(false);
    // a's own initiation still waits (its index kept), to be replaced or answered later.
    expect(peerAtA.handshake.phase).toBe('initiation-created');
    expect(a.device.indices.get(peerAtA.handshake.localIndex)?.peer).toBe(peerAtA);
  });
});

describe('Device under load', () => {
  it('answers a flood with cookie replies, does no X25519 work for bad MAC1, and a legitimate peer still connects', async () => {
    const { net, a, b } = await pair();
    const { createHandshakeState, createInitiation, createPeerKeys, createStaticIdentity } = await import('../../src/noise/handshake.ts');
    const { CookieGenerator } = await import('../../src/noise/cookie.ts');
    const { tai64nFromUnixMs } = await import('../../src/noise/crypto/tai64n.ts');
    const pubB = b.device.identity!.publicKey;
    // An attacker who knows b's public key (so MAC1 is valid) floods initiations from many sources.
    const attacker = createStaticIdentity(backend, key());
    const attackerKeys = createPeerKeys(backend, attacker, pubB);
    const cookies = new CookieGenerator(backend, attackerKeys.mac1Key, attackerKeys.cookieKey);
    for (let i = 0; i < 400; i++) {
      const msg = new Uint8Array(148);
      createInitiation(backend, attacker, attackerKeys, createHandshakeState(), { ephemeralPrivate: key(), timestamp: tai64nFromUnixMs(new Uint8Array(12), Date.now()), senderIndex: i }, msg);
      cookies.addMacs(msg, 1, 0);
      net.inject(msg, `198.18.${10 + (i >> 8)}.${i & 0xff}`, 1000 + i, '198.18.0.2:51820');
    }
    // And junk with a bad MAC1 from another batch of sources.
    for (let i = 0; i < 200; i++) net.inject(Uint8Array.of(1, 0, 0, 0, ...new Array(144).fill(i & 0xff)), '198.18.20.1', 2000 + i, '198.18.0.2:51820');
    await waitFor(() => b.device.counters.dropped('mac1') === 200, 5000, 'bad MAC1 dropped');
    await waitFor(() => b.device.counters.cookieRepliesSent > 0, 5000, 'cookie replies under load');
    // Bad-MAC1 messages never reach the Noise work; unknown-peer initiations do, but only before load is detected.
    expect(b.device.counters.handshakesProcessed).toBeLessThan(400);
    // The legitimate peer's first initiation gets a cookie reply; its retry carries MAC2 and completes.
    send(a.device, [ipv4Packet('100.64.0.1', '100.64.0.2', 32)]);
    await waitFor(() => a.device.counters.cookieRepliesReceived > 0 || b.tun.packets.length > 0, 5000, 'cookie at the initiator');
    const peerAtA = [...a.device.peers.values()][0]!;
    // Fast-forward the retransmission instead of waiting REKEY_TIMEOUT.
    peerAtA.timers.lastInitiationSentAt = -Infinity;
    a.device.timerEvent(peerAtA, 'want-handshake');
    await waitFor(() => b.tun.packets.length === 1, 5000, 'legitimate packet through under load');
    // It got through because it proved its address with the cookie (MAC2), not because load passed.
    expect(a.device.counters.cookieRepliesReceived).toBeGreaterThan(0);
  });
});
