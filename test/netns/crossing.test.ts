/**
 * Crossed initiations for real: two peers whose only path is a relay that holds every handshake
 * message HANDSHAKE_DELAY_MS (helpers/chaos-relay.ts, nothing dropped), and a ping started from
 * each side at once — so each initiation is sent before the other arrives:
 *
 *   A: wgts (198.18.0.1)  ⇄  M: relay  ⇄  B: wgts or wireguard-go (198.18.1.2)
 *
 * Left to the whitepaper's rules both sides consume the other's initiation (overwriting their
 * own), answer it, and reject the answer they get: nothing flows until a retry 5 s later — what
 * two wireguard-go peers do. wgts answers the peer's initiation and keeps its own waiting, so the
 * peer's answer to it completes a session. Checked: both pings answered within a wait shorter
 * than that retry, exactly one initiation and one response each way on the wire (no retry), and
 * A counted the crossing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RelayPath } from './helpers/chaos-relay.ts';
import { ChaosRelay, configureThroughRelay, createRelayPath, relayEnds } from './helpers/chaos-relay.ts';
import { NetnsBed, skipUnlessRoot } from './helpers/netns.ts';
import type { WgDaemon, WgImplementation } from './helpers/wgts.ts';
import { newKeyPair, ping, wgtsImplementation, wireguardGoImplementation, withDiagnostics } from './helpers/wgts.ts';

const WG_PORT = 51820;
const RELAY_PORT = 40000;
const HANDSHAKE_DELAY_MS = 400;
/** Below REKEY_TIMEOUT (5 s): an answer in this wait came without a retransmission. */
const PING_WAIT_SECONDS = 4;

describe.skipIf(skipUnlessRoot('crossed initiations'))('crossed initiations through a slow handshake path', () => {
  const bed = new NetnsBed('cross');
  let path: RelayPath;

  beforeAll(async () => {
    await bed.sweepStale();
    path = await createRelayPath(bed);
  });

  afterAll(async () => {
    await bed.cleanup();
  });

  for (const other of [wgtsImplementation, wireguardGoImplementation] as readonly WgImplementation[]) {
    it(`wgts ↔ ${other.label}: one initiation and one response each way, both pings answered without a retry`, async () => {
      const { nsA, nsM, nsB } = path;
      const relay = await ChaosRelay.start(bed, nsM, {
        seed: 1,
        port: RELAY_PORT,
        ...relayEnds(path, WG_PORT),
        drop: 0,
        corrupt: 0,
        duplicate: 0,
        reorder: 0,
        handshakeDelayMs: HANDSHAKE_DELAY_MS,
      });
      const daemons: WgDaemon[] = [];
      try {
        daemons.push(await wgtsImplementation.start(bed, nsA), await other.start(bed, nsB));
        const [a, b] = daemons as [WgDaemon, WgDaemon];
        await withDiagnostics(daemons, async () => {
          await configureThroughRelay(path, relay.port, WG_PORT, [a, b], [newKeyPair(), newKeyPair()]);
          const [fromA, fromB] = await Promise.all([
            ping(bed, nsA, '100.64.0.2', { count: 1, waitSeconds: PING_WAIT_SECONDS }),
            ping(bed, nsB, '100.64.0.1', { count: 1, waitSeconds: PING_WAIT_SECONDS }),
          ]);
          const relayStats = await relay.stats();
          const statsA = (await a.stats())!;
          const detail = `relay ${JSON.stringify(relayStats)}\nA ${JSON.stringify(statsA)}\n${fromA.stdout}${fromB.stdout}`;
          const rtt = (r: { stdout: string }) => /time=([\d.]+) ms/.exec(r.stdout)?.[1] ?? '-';
          process.stdout.write(`[crossing] wgts ↔ ${other.label}: first ping answered after ${rtt(fromA)} ms (A→B), ${rtt(fromB)} ms (B→A); handshakes held ${HANDSHAKE_DELAY_MS} ms each way\n`);
          expect(fromA.received, `A → B\n${detail}`).toBe(1);
          expect(fromB.received, `B → A\n${detail}`).toBe(1);
          // They crossed (A says so), each answered the other, and nobody had to retry.
          expect(statsA.initiations_crossed, detail).toBe(1);
          expect(relayStats.aToB.receivedInitiations, detail).toBe(1);
          expect(relayStats.bToA.receivedInitiations, detail).toBe(1);
          expect(relayStats.aToB.receivedResponses, detail).toBe(1);
          expect(relayStats.bToA.receivedResponses, detail).toBe(1);
        });
      } finally {
        for (const d of daemons) await d.stop();
        await relay.close();
      }
    }, 30_000);
  }
});
