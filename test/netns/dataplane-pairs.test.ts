/**
 * The data plane, end to end: two daemons in two namespaces over a veth pair, real TUNs, real
 * UDP. wgts ↔ wgts and wgts ↔ wireguard-go, with either side sending the first packet:
 *
 *   A (198.18.n.1, TUN 100.64.0.1/24)  ⇄  B (198.18.n.2, TUN 100.64.0.2/24)
 *
 * For each pairing: no handshake before traffic; the very first ping (staged behind the
 * handshake) is answered; the side that sent it is the one that initiated; pings both ways
 * (also full-MTU and fragmented ones);
 * 50 MB of pseudo-random bytes over TCP each way with the same SHA-256 at both ends; and the
 * transfer counters moved accordingly.
 */
import { describe, expect, it } from 'vitest';
import { skipUnlessRoot, vethPairBed } from './helpers/netns.ts';
import type { TunnelEnd, WgImplementation } from './helpers/wgts.ts';
import {
  createTunnelPair,
  mbps,
  ping,
  transfer,
  wgtsImplementation,
  wgtsWithWorkers,
  wireguardGoImplementation,
  withDiagnostics,
} from './helpers/wgts.ts';

const TRANSFER_BYTES = 50 * 1000 * 1000;

/** WireGuard-go's default interface MTU, which `wgts <ifname>` matches (wg-quick sets its own). */
const DEFAULT_MTU = 1420;

const PAIRINGS: ReadonlyArray<readonly [WgImplementation, WgImplementation]> = [
  [wgtsImplementation, wgtsImplementation],
  [wgtsImplementation, wireguardGoImplementation],
  // The crypto worker pool, whatever the default on this machine's CPU count.
  [wgtsWithWorkers(2), wgtsWithWorkers(2)],
];

describe.skipIf(skipUnlessRoot('data plane: daemon pairs'))('data plane: daemon pairs', () => {
  const { bed, link } = vethPairBed('dpp');

  for (const implementations of PAIRINGS) {
    for (const initiator of ['a', 'b'] as const) {
      const [implA, implB] = implementations;
      const title = `${implA.label} (A) ↔ ${implB.label} (B), ${initiator.toUpperCase()} sends first: ping, then 50 MB each way over TCP`;
      it(title, async () => {
        const pair = await createTunnelPair(bed, { link: link(), implementations });
        try {
          await withDiagnostics([pair.a.daemon, pair.b.daemon], async () => {
            const first: TunnelEnd = initiator === 'a' ? pair.a : pair.b;
            const second: TunnelEnd = initiator === 'a' ? pair.b : pair.a;

            for (const end of pair.ends) {
              const mtu = JSON.parse(await end.daemon.ip(['-j', 'link', 'show', 'dev', end.daemon.ifname])) as Array<{ mtu: number }>;
              expect(mtu[0]!.mtu, `${end.daemon.implementation}: a new interface's MTU`).toBe(DEFAULT_MTU);
              const peer = await end.daemon.peer((end === pair.a ? pair.b : pair.a).keys.publicKey);
              expect(peer.latestHandshake, `${end.daemon.implementation} on ${end.ns}: no handshake before any traffic`).toBe(0);
            }

            // The first packet waits for the handshake and must still arrive.
            const firstPing = await ping(bed, first.ns, second.inner4, { count: 1, waitSeconds: 5 });
            expect(firstPing.received, `the very first ping was answered\n${firstPing.stdout}`).toBe(1);

            // The side that sent it initiated; the other only responded.
            for (const end of pair.ends) {
              const other = end === pair.a ? pair.b : pair.a;
              expect((await end.daemon.peer(other.keys.publicKey)).latestHandshake, 'handshake time is set').toBeGreaterThan(0);
              const stats = await end.daemon.stats();
              if (!stats) continue;
              if (end === first) {
                expect(stats.initiations_sent, 'initiator sent an initiation').toBeGreaterThanOrEqual(1);
              } else {
                expect(stats.initiations_sent, 'responder sent no initiation').toBe(0);
                expect(stats.responses_sent, 'responder sent a response').toBeGreaterThanOrEqual(1);
              }
            }

            const forth = await ping(bed, first.ns, second.inner4, { count: 3 });
            const back = await ping(bed, second.ns, first.inner4, { count: 3 });
            expect(forth.received, forth.stdout).toBe(3);
            expect(back.received, back.stdout).toBe(3);
            // A full-MTU packet (1420 bytes inside, don't fragment) and one the kernel must fragment.
            const mtuSized = await ping(bed, first.ns, second.inner4, { count: 2, size: 1420 - 28, dontFragment: true });
            const fragmented = await ping(bed, second.ns, first.inner4, { count: 2, size: 4000 });
            expect(mtuSized.received, `ping -s 1392 -M do\n${mtuSized.stdout}${mtuSized.stderr}`).toBe(2);
            expect(fragmented.received, `ping -s 4000\n${fragmented.stdout}${fragmented.stderr}`).toBe(2);

            const before = await first.daemon.peer(second.keys.publicKey);
            for (const [from, to] of [
              [first, second],
              [second, first],
            ] as const) {
              const result = await transfer(bed, { from: from.ns, to: to.ns, address: to.inner4, bytes: TRANSFER_BYTES });
              expect(result.sent.bytes).toBe(TRANSFER_BYTES);
              expect(result.received.bytes, 'bytes received').toBe(TRANSFER_BYTES);
              expect(result.received.sha256, 'SHA-256 at the receiver equals the sender’s').toBe(result.sent.sha256);
              process.stderr.write(
                `[dataplane] ${title}: ${from.daemon.implementation}→${to.daemon.implementation} ${mbps(result.received)} Mbit/s\n`,
              );
            }
            const after = await first.daemon.peer(second.keys.publicKey);
            expect(after.txBytes - before.txBytes, 'tx counter covers the data sent').toBeGreaterThan(TRANSFER_BYTES);
            expect(after.rxBytes - before.rxBytes, 'rx counter covers the data received').toBeGreaterThan(TRANSFER_BYTES);

            const stats = [await pair.a.daemon.stats(), await pair.b.daemon.stats()];
            for (const s of stats) {
              if (!s) continue;
              expect(s.drop_decrypt, 'no authentication failures').toBe(0);
              expect(s.drop_source_not_allowed, 'no source-address drops').toBe(0);
              expect(s.drop_invalid_packet, 'no invalid inner packets').toBe(0);
            }
          });
        } finally {
          await pair.stop();
        }
      });
    }
  }
});
