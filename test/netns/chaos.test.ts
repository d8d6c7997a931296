/**
 * A bad link (issue 7, item 3): two wgts daemons whose only path to each other is a UDP relay in
 * a middle namespace (helpers/chaos-relay.ts) that drops 5 % of all datagrams and corrupts,
 * duplicates and reorders some of the transport messages — seeded, with counters.
 *
 *   A (198.18.0.1, TUN 100.64.0.1)  ⇄  M: chaos relay :40000  ⇄  B (198.18.1.2, TUN 100.64.0.2)
 *
 * 100 MB of pseudo-random bytes over TCP through the tunnel must arrive with the same SHA-256, and
 * wgts's counters must account for what the relay did, direction by direction:
 *   - every corrupted datagram is a decrypt failure: drop_decrypt = corrupted (minus what the
 *     receiver's kernel itself dropped for a full socket buffer, UDP RcvbufErrors, which wgts
 *     never sees);
 *   - every duplicate is rejected by the replay window: drop_replay ≥ duplicates (same caveat);
 *   - reordered datagrams are accepted: drop_replay ≤ duplicates + tooOld (the relay counts
 *     released datagrams that fell out of the 8128-counter window; with holds of ≤ 4000 that is 0);
 *   - nothing else is dropped (no malformed, unknown-index, source or inner-packet drops).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChaosRelayConfig, ChaosStats, DirectionStats, RelayPath } from './helpers/chaos-relay.ts';
import { ChaosDirection, ChaosRelay, configureThroughRelay, createRelayPath, mulberry32, relayEnds, REPLAY_WINDOW } from './helpers/chaos-relay.ts';
import { NetnsBed, skipUnlessRoot } from './helpers/netns.ts';
import type { KeyPair, WgDaemon } from './helpers/wgts.ts';
import { mbps, newKeyPair, startTransfer, waitForPing, withDiagnostics, WgtsDaemon } from './helpers/wgts.ts';

/** The issue asks for 100 MB; CHAOS_BYTES overrides it (e.g. on a slow machine). */
const TRANSFER_BYTES = Number(process.env.CHAOS_BYTES ?? 100 * 1000 * 1000);
const SEED = Number(process.env.CHAOS_SEED ?? 0x5eed_7c05);
const RELAY_PORT = 40000;
const WG_PORT = 51820;
const RATES = { drop: 0.05, corrupt: 0.005, duplicate: 0.01, reorder: 0.02 } as const;
const TIMEOUT_MS = 85_000;
/**
 * Deepest reordering: up to 4000 later datagrams overtake a held one (log-uniform, so shallow and
 * deep alike). Counters advance faster than the relay forwards (5 % are dropped, some are held),
 * so 4000 overtaking datagrams stay well inside the 8128-counter replay window.
 */
const MAX_HOLD_PACKETS = 4000;

/** The namespace's UDP RcvbufErrors (/proc/net/snmp: datagrams its kernel dropped for a full socket buffer). */
function udpSnmp(bed: NetnsBed, ns: string): Promise<Record<string, number>> {
  return bed.exec(ns, 'cat', ['/proc/net/snmp']).then((r) => {
    const lines = r.stdout.split('\n').filter((l) => l.startsWith('Udp:'));
    const names = lines[0]!.split(/\s+/).slice(1);
    const values = lines[1]!.split(/\s+/).slice(1).map(Number);
    return Object.fromEntries(names.map((n, i) => [n, values[i]!]));
  });
}

function delta(after: Record<string, number>, before: Record<string, number>, key: string): number {
  return (after[key] ?? 0) - (before[key] ?? 0);
}

function directionDelta(after: DirectionStats, before: DirectionStats): DirectionStats {
  const out = { ...after };
  for (const key of Object.keys(after) as Array<keyof DirectionStats>) {
    if (key !== 'maxOvertaken') out[key] = after[key] - before[key];
  }
  return out;
}

/** A transport message of n bytes with this receiver index and counter (the rest is filler). */
function transport(index: number, counter: number, n = 64): Uint8Array {
  const m = new Uint8Array(n);
  const v = new DataView(m.buffer);
  m[0] = 4;
  v.setUint32(4, index, true);
  v.setBigUint64(8, BigInt(counter), true);
  return m;
}

describe('chaos relay core (sans-I/O)', () => {
  function run(seed: number, count: number, maxHold: number): { stats: ChaosDirection['stats']; out: Uint8Array[] } {
    const direction = new ChaosDirection(mulberry32(seed), RATES, maxHold, 1e9);
    const out: Uint8Array[] = [];
    for (let c = 0; c < count; c++) {
      const batch: Uint8Array[] = [];
      direction.push(transport(7, c), 0, batch);
      out.push(...batch.map((b) => Uint8Array.from(b)));
    }
    const rest: Uint8Array[] = [];
    direction.releaseAll(rest);
    out.push(...rest);
    return { stats: direction.stats, out };
  }

  it('applies each fault at about its rate, reproducibly for a seed, and accounts for every datagram', () => {
    const a = run(42, 100_000, 64);
    const b = run(42, 100_000, 64);
    expect(b.stats).toEqual(a.stats);
    const s = a.stats;
    expect(s.received).toBe(100_000);
    expect(s.dropped / s.received).toBeCloseTo(RATES.drop, 2);
    expect(s.corrupted / s.received).toBeCloseTo(RATES.corrupt, 2);
    expect(s.duplicated / s.received).toBeCloseTo(RATES.duplicate, 2);
    expect((s.reordered + s.delayed) / s.received).toBeCloseTo(RATES.reorder, 2);
    // Every datagram not dropped leaves once, duplicates twice.
    expect(s.forwarded).toBe(s.received - s.dropped + s.duplicated);
    expect(a.out).toHaveLength(s.forwarded);
    expect(s.maxOvertaken).toBeLessThanOrEqual(64);
    expect(s.tooOld).toBe(0);
    // Corruption never touches the 16-byte header: every output still names index 7.
    expect(a.out.filter((m) => new DataView(m.buffer).getUint32(4, true) !== 7)).toHaveLength(0);
  });

  it('counts a held datagram released past the replay window as too old', () => {
    const s = run(7, 60_000, 3 * REPLAY_WINDOW).stats;
    expect(s.maxOvertaken).toBeGreaterThan(REPLAY_WINDOW);
    expect(s.tooOld).toBeGreaterThan(0);
  });
});

describe.skipIf(skipUnlessRoot('chaos link'))('chaos link: drop, corrupt, duplicate, reorder between two wgts peers', () => {
  const bed = new NetnsBed('chaos');
  let path: RelayPath;

  beforeAll(async () => {
    await bed.sweepStale();
    path = await createRelayPath(bed);
  });

  afterAll(async () => {
    await bed.cleanup();
  });

  // Inline crypto and the worker pool (whose batches finish asynchronously: the replay window is
  // applied in arrival order after decryption either way).
  for (const workers of [0, 2]) {
    it(
      `${TRANSFER_BYTES / 1e6} MB over TCP through a link that drops ${RATES.drop * 100} %, corrupts, duplicates and reorders (${workers} crypto workers): same SHA-256, every fault accounted for`,
      async () => {
        const config: ChaosRelayConfig = {
          seed: SEED,
          port: RELAY_PORT,
          ...relayEnds(path, WG_PORT),
          maxHoldPackets: MAX_HOLD_PACKETS,
          maxHoldMs: 250,
          ...RATES,
        };
        const { nsA, nsM, nsB } = path;
        const relay = await ChaosRelay.start(bed, nsM, config);
        const keys: [KeyPair, KeyPair] = [newKeyPair(), newKeyPair()];
        const daemons: WgDaemon[] = [];
        daemons.push(await WgtsDaemon.start(bed, nsA, { workers }), await WgtsDaemon.start(bed, nsB, { workers }));
        const [a, b] = daemons as [WgDaemon, WgDaemon];
        try {
          await withDiagnostics(daemons, async () => {
            await configureThroughRelay(path, relay.port, WG_PORT, [a, b], keys);
            // The handshake goes through the lossy link too (an initiation may be dropped: retried after 5 s).
            const handshakeMs = await waitForPing(bed, nsA, '100.64.0.2', 30_000);

            const statsBefore = [(await a.stats())!, (await b.stats())!];
            const snmpBefore = [await udpSnmp(bed, nsA), await udpSnmp(bed, nsB), await udpSnmp(bed, nsM)];
            const relayBefore = await relay.stats();
            const started = performance.now();
            const t = await startTransfer(bed, { from: nsA, to: nsB, address: '100.64.0.2', bytes: TRANSFER_BYTES, timeoutMs: TIMEOUT_MS });
            const result = await t.done();
            const seconds = (performance.now() - started) / 1000;
            // Let held datagrams and the last ACKs settle before reading counters.
            await new Promise((resolve) => setTimeout(resolve, 100));
            const relayAfter: ChaosStats = await relay.close();
            const statsAfter = [(await a.stats())!, (await b.stats())!];
            const snmpAfter = [await udpSnmp(bed, nsA), await udpSnmp(bed, nsB), await udpSnmp(bed, nsM)];

            const dirs = { aToB: directionDelta(relayAfter.aToB, relayBefore.aToB), bToA: directionDelta(relayAfter.bToA, relayBefore.bToA) };
            const wg = [0, 1].map((i) => ({
              decrypt: delta(statsAfter[i]!, statsBefore[i]!, 'drop_decrypt'),
              replay: delta(statsAfter[i]!, statsBefore[i]!, 'drop_replay'),
              malformed: delta(statsAfter[i]!, statsBefore[i]!, 'drop_malformed'),
              unknownIndex: delta(statsAfter[i]!, statsBefore[i]!, 'drop_unknown_index'),
              sourceNotAllowed: delta(statsAfter[i]!, statsBefore[i]!, 'drop_source_not_allowed'),
              invalidPacket: delta(statsAfter[i]!, statsBefore[i]!, 'drop_invalid_packet'),
              expired: delta(statsAfter[i]!, statsBefore[i]!, 'drop_expired'),
              rcvbufErrors: delta(snmpAfter[i]!, snmpBefore[i]!, 'RcvbufErrors'),
            }));
            const relayKernelDrops = delta(snmpAfter[2]!, snmpBefore[2]!, 'RcvbufErrors');
            const summary = {
              workers,
              seed: SEED,
              bytes: result.received.bytes,
              seconds: Number(seconds.toFixed(1)),
              mbitPerSecond: Number(mbps(result.received)),
              handshakeMs: Math.round(handshakeMs),
              relay: dirs,
              relayKernelRcvbufErrors: relayKernelDrops,
              relaySendErrors: relayAfter.sendErrors,
              wgtsA: wg[0],
              wgtsB: wg[1],
            };
            process.stderr.write(`[chaos] ${JSON.stringify(summary)}\n`);

            expect(result.sent.bytes).toBe(TRANSFER_BYTES);
            expect(result.received.bytes, 'bytes received').toBe(TRANSFER_BYTES);
            expect(result.received.sha256, 'SHA-256 at the receiver equals the sender’s').toBe(result.sent.sha256);

            // The relay really did all four things, at about the rates asked for.
            for (const [name, d] of Object.entries(dirs)) {
              expect(d.received, `${name}: datagrams through the relay`).toBeGreaterThan(1000);
              expect(d.dropped / d.received, `${name}: drop rate`).toBeGreaterThan(RATES.drop * 0.7);
              expect(d.dropped / d.received, `${name}: drop rate`).toBeLessThan(RATES.drop * 1.3);
              expect(d.tooOld, `${name}: no datagram was held past the replay window`).toBe(0);
            }
            // Data flows A → B; ACKs B → A: both directions carry transport messages to corrupt etc.
            for (const d of [dirs.aToB, dirs.bToA]) {
              expect(d.corrupted, 'corrupted datagrams').toBeGreaterThan(0);
              expect(d.duplicated, 'duplicated datagrams').toBeGreaterThan(0);
              expect(d.reordered, 'reordered datagrams').toBeGreaterThan(0);
            }
            expect(relayAfter.sendErrors, 'the relay’s socket refused nothing').toBe(0);

            // What each receiver saw: B gets A → B, A gets B → A.
            for (const [receiver, d, label] of [
              [wg[1]!, dirs.aToB, 'B (A → B)'],
              [wg[0]!, dirs.bToA, 'A (B → A)'],
            ] as const) {
              const lost = receiver.rcvbufErrors; // datagrams the receiver's kernel dropped before wgts saw them
              expect(receiver.decrypt, `${label}: drop_decrypt ≤ corrupted`).toBeLessThanOrEqual(d.corrupted);
              expect(receiver.decrypt, `${label}: drop_decrypt ≥ corrupted − kernel drops (${lost})`).toBeGreaterThanOrEqual(d.corrupted - lost);
              expect(receiver.replay, `${label}: drop_replay ≥ duplicates − kernel drops (${lost})`).toBeGreaterThanOrEqual(d.duplicated - lost);
              expect(receiver.replay, `${label}: drop_replay ≤ duplicates + too old: reordered datagrams were accepted`).toBeLessThanOrEqual(
                d.duplicated + d.tooOld,
              );
              expect(receiver.malformed, `${label}: no malformed`).toBe(0);
              expect(receiver.unknownIndex, `${label}: no unknown index`).toBe(0);
              expect(receiver.sourceNotAllowed, `${label}: no source-not-allowed`).toBe(0);
              expect(receiver.invalidPacket, `${label}: no invalid inner packet`).toBe(0);
              expect(receiver.expired, `${label}: no expired keypair`).toBe(0);
            }
          });
        } finally {
          if (!relay.process.hasExited()) await relay.close().catch(() => {});
          await Promise.all(daemons.map((d) => d.stop().catch(() => {})));
        }
      },
      150_000,
    );
  }
});
