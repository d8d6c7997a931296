/**
 * TUN offload with real kernels: wgts with offload on ↔ wgts with offload on, and ↔ wireguard-go
 * (Debian's, no TUN offload), each 50 MB over TCP each way, over the IPv4 and the IPv6 overlay,
 * with the same SHA-256 at both ends. wgts's counters must show that it really split TCP
 * super-packets read from its TUN (sending side) and wrote coalesced ones (receiving side) during
 * each transfer — so the suite fails if offload silently stayed off — and that the kernel took
 * every coalesced write.
 */
import { describe, expect, it } from 'vitest';
import type { NetnsBed as Bed } from './helpers/netns.ts';
import { skipUnlessRoot, vethPairBed } from './helpers/netns.ts';
import type { TunnelEnd, WgImplementation } from './helpers/wgts.ts';
import { createTunnelPair, mbps, ping, transfer, wgtsWithOffload, wireguardGoImplementation, withDiagnostics } from './helpers/wgts.ts';

const TRANSFER_BYTES = 50 * 1000 * 1000;
const OVERLAY6 = ['fd00:64::1', 'fd00:64::2'] as const;

const wgtsOffload = wgtsWithOffload(true);
const PAIRINGS: ReadonlyArray<readonly [WgImplementation, WgImplementation]> = [
  [wgtsOffload, wgtsOffload],
  [wgtsOffload, wireguardGoImplementation],
];

/** TCP segments the namespace's kernel retransmitted so far (IPv4 and IPv6 share the MIB). */
async function retransmits(bed: Bed, ns: string): Promise<number> {
  const snmp = (await bed.exec(ns, 'cat', ['/proc/net/snmp'])).stdout.split('\n').filter((l) => l.startsWith('Tcp:'));
  const names = snmp[0]!.split(/\s+/);
  const values = snmp[1]!.split(/\s+/);
  return Number(values[names.indexOf('RetransSegs')]);
}

async function offloadStats(end: TunnelEnd): Promise<Record<string, number> | undefined> {
  return end.daemon.stats();
}

describe.skipIf(skipUnlessRoot('TUN offload'))('TUN offload', () => {
  const { bed, link } = vethPairBed('tso');

  for (const implementations of PAIRINGS) {
    const [implA, implB] = implementations;
    const title = `${implA.label} (A) ↔ ${implB.label} (B): 50 MB each way over TCP, IPv4 and IPv6 overlay`;
    it(title, async () => {
      const pair = await createTunnelPair(bed, { link: link(), implementations, overlay6: OVERLAY6 });
      try {
        await withDiagnostics([pair.a.daemon, pair.b.daemon], async () => {
          for (const end of pair.ends) {
            const stats = await offloadStats(end);
            if (stats) expect(stats.tun_offload, `${end.daemon.implementation} on ${end.ns}: the kernel granted TUN offload`).toBe(1);
          }
          const first = await ping(bed, pair.a.ns, pair.b.inner4, { count: 1, waitSeconds: 5 });
          expect(first.received, first.stdout).toBe(1);

          for (const family of [4, 6] as const) {
            for (const [from, to] of [
              [pair.a, pair.b],
              [pair.b, pair.a],
            ] as const) {
              const address = family === 4 ? to.inner4 : to.inner6!;
              const [senderBefore, receiverBefore, retransBefore] = [await offloadStats(from), await offloadStats(to), await retransmits(bed, from.ns)];
              const result = await transfer(bed, { from: from.ns, to: to.ns, address, bytes: TRANSFER_BYTES });
              const [senderAfter, receiverAfter, retransAfter] = [await offloadStats(from), await offloadStats(to), await retransmits(bed, from.ns)];
              expect(result.received.bytes, 'bytes received').toBe(TRANSFER_BYTES);
              expect(result.received.sha256, 'SHA-256 at the receiver equals the sender’s').toBe(result.sent.sha256);
              const what = `IPv${family} ${from.daemon.implementation}→${to.daemon.implementation}`;
              if (senderBefore && senderAfter) {
                const packets = senderAfter.tun_tso_packets! - senderBefore.tun_tso_packets!;
                const segments = senderAfter.tun_tso_segments! - senderBefore.tun_tso_segments!;
                expect(packets, `${what}: the sender split TCP super-packets read from its TUN`).toBeGreaterThan(0);
                expect(segments, `${what}: into several segments each`).toBeGreaterThan(2 * packets);
              }
              if (receiverBefore && receiverAfter) {
                const writes = receiverAfter.tun_coalesced_writes! - receiverBefore.tun_coalesced_writes!;
                const segments = receiverAfter.tun_coalesced_segments! - receiverBefore.tun_coalesced_segments!;
                expect(writes, `${what}: the receiver wrote coalesced packets to its TUN`).toBeGreaterThan(0);
                expect(segments, `${what}: of several segments each`).toBeGreaterThan(2 * writes);
              }
              process.stderr.write(`[offload] ${what}: ${mbps(result.received)} Mbit/s, ${retransAfter - retransBefore} retransmitted segments\n`);
            }
          }

          for (const end of pair.ends) {
            const s = await offloadStats(end);
            if (!s) continue;
            expect(s.tun_coalescing, 'coalescing still on').toBe(1);
            expect(s.tun_coalescing_refused, 'the kernel took every coalesced write').toBe(0);
            expect(s.tun_offload_read_dropped, 'no malformed TUN reads').toBe(0);
            expect(s.drop_tun_write, 'no TUN write drops').toBe(0);
            expect(s.drop_invalid_packet, 'no invalid inner packets').toBe(0);
            expect(s.drop_decrypt, 'no authentication failures').toBe(0);
          }
        });
      } finally {
        await pair.stop();
      }
    });
  }
});
