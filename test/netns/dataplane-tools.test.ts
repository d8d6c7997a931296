/**
 * wgts driven the way people run it, and how it survives being killed:
 *
 * - wg-quick: `wg-quick up wgX.conf` in a namespace falls back to the userspace implementation
 *   (WG_QUICK_USERSPACE_IMPLEMENTATION=wgts, a wrapper first on PATH), which daemonizes; the
 *   interface gets its addresses, routes for the peer's AllowedIPs and MTU; traffic flows to a
 *   wireguard-go peer; `wg-quick down` removes the interface and the daemon exits.
 * - SIGKILL mid-traffic: while a TCP transfer and pings run, one wgts daemon is killed (its TUN
 *   goes, its socket file stays) and restarted with the same keys; pings succeed again within
 *   10 s, the transfer completes intact, and a new handshake happened. Also the survivor's own
 *   recovery when only it sends: its no-reply timer starts a new handshake.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VethPair } from './helpers/netns.ts';
import { linkState, namespacePids, NetnsBed, pidRunning, skipUnlessRoot, waitFor } from './helpers/netns.ts';
import type { TunnelPair, WgDaemon, WgImplementation } from './helpers/wgts.ts';
import {
  createTunnelPair,
  diagnostics,
  newKeyPair,
  ping,
  startTransfer,
  transfer,
  waitForPing,
  wgtsCommandDir,
  WgtsDaemon,
  wgtsImplementation,
  wireguardGoImplementation,
  withDiagnostics,
} from './helpers/wgts.ts';
import { UAPI_DIRECTORY } from './helpers/wireguard-go.ts';

interface IpAddr {
  ifname: string;
  mtu: number;
  flags: string[];
  addr_info: Array<{ local: string; prefixlen: number }>;
}

async function interfaceInfo(bed: NetnsBed, ns: string, ifname: string): Promise<IpAddr> {
  const out = await bed.exec(ns, 'ip', ['-j', 'addr', 'show', 'dev', ifname]);
  return (JSON.parse(out.stdout) as IpAddr[])[0]!;
}

async function routesVia(bed: NetnsBed, ns: string, family: '-4' | '-6', ifname: string): Promise<string[]> {
  const out = await bed.exec(ns, 'ip', [family, '-j', 'route', 'show', 'dev', ifname]);
  return (JSON.parse(out.stdout) as Array<{ dst: string }>).map((r) => r.dst);
}

describe.skipIf(skipUnlessRoot('data plane: wg-quick and restarts'))('data plane: wg-quick and restarts', () => {
  const bed = new NetnsBed('dpt');
  let nsA: string;
  let nsB: string;
  let link: VethPair;

  beforeAll(async () => {
    await bed.sweepStale();
    nsA = await bed.createNamespace('a');
    nsB = await bed.createNamespace('b');
    link = await bed.createVethPair(nsA, nsB);
  });

  afterAll(async () => {
    await bed.cleanup();
  });

  it('wg-quick up brings up wgts with addresses, routes and MTU; traffic flows; wg-quick down removes it and the daemon exits', async () => {
    const ifname = bed.ifname('wgq');
    const dir = bed.tempDir();
    const confPath = join(dir, `${ifname}.conf`);
    const logPath = join(dir, 'wgts.log');
    const keysA = newKeyPair();
    const keysB = newKeyPair();
    writeFileSync(
      confPath,
      [
        '[Interface]',
        'Address = 100.64.1.1/24, fd00:64:1::1/64',
        'ListenPort = 51820',
        `PrivateKey = ${keysA.privateKey}`,
        '',
        '[Peer]',
        `PublicKey = ${keysB.publicKey}`,
        `Endpoint = ${link.b.address4}:51820`,
        'AllowedIPs = 100.64.1.2/32, 100.64.9.0/24, fd00:64:1::2/128, fd00:64:9::/64',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    const env = {
      ...process.env,
      PATH: `${wgtsCommandDir(bed)}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`,
      WG_QUICK_USERSPACE_IMPLEMENTATION: 'wgts',
      WGTS_LOG_FILE: logPath,
    };
    bed.trackPath(join(UAPI_DIRECTORY, `${ifname}.sock`));

    const peer: WgDaemon = await wireguardGoImplementation.start(bed, nsB);
    await peer.configure({
      privateKey: keysB.privateKey,
      listenPort: 51820,
      peers: [{ publicKey: keysA.publicKey, endpoint: `${link.a.address4}:51820`, allowedIps: ['100.64.1.1/32', 'fd00:64:1::1/128'] }],
      addresses: ['100.64.1.2/24', '100.64.9.1/24', 'fd00:64:1::2/64', 'fd00:64:9::1/64'],
    });

    let daemonPid: number | undefined;
    const wgQuickLog: string[] = [];
    const explain = async (): Promise<string> =>
      [
        `--- wg-quick\n${wgQuickLog.join('\n')}`,
        `--- wgts log (${logPath})\n${(() => {
          try {
            return readFileSync(logPath, 'utf8').slice(-4000);
          } catch {
            return '(none)';
          }
        })()}`,
        `--- wg show ${ifname}\n${(await bed.exec(nsA, 'wg', ['show', ifname, 'dump'], { allowFailure: true })).stdout}`,
        await diagnostics([peer]),
      ].join('\n');
    try {
      const up = await bed.exec(nsA, 'wg-quick', ['up', confPath], { env, timeoutMs: 30_000, allowFailure: true });
      wgQuickLog.push(`$ wg-quick up (exit ${up.code})`, up.stderr);
      if (up.code !== 0) throw new Error(`wg-quick up failed:\n${await explain()}`);
      expect(up.stderr, 'wg-quick fell back to the userspace implementation').toMatch(new RegExp(`\\bwgts ${ifname}\\b`));

      // The launcher returned once the daemon was ready; the daemon is what runs in A now.
      const cmdline = (pid: number): string => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        } catch {
          return '';
        }
      };
      const pids = (await namespacePids(nsA)).filter((pid) => cmdline(pid).includes(ifname));
      expect(pids, 'exactly one wgts daemon for the interface runs in A').toHaveLength(1);
      daemonPid = pids[0]!;
      bed.trackPid(daemonPid, `wgts ${ifname} (started by wg-quick)`);

      const info = await interfaceInfo(bed, nsA, ifname);
      expect(info.flags).toContain('UP');
      expect(info.mtu, 'wg-quick set the MTU from the underlay (1500 − 80)').toBe(1420);
      expect(info.addr_info.map((a) => `${a.local}/${a.prefixlen}`)).toEqual(expect.arrayContaining(['100.64.1.1/24', 'fd00:64:1::1/64']));
      expect(await routesVia(bed, nsA, '-4', ifname)).toEqual(expect.arrayContaining(['100.64.1.0/24', '100.64.9.0/24']));
      expect(await routesVia(bed, nsA, '-6', ifname)).toEqual(expect.arrayContaining(['fd00:64:1::/64', 'fd00:64:9::/64']));
      const shown = await bed.exec(nsA, 'wg', ['show', ifname, 'dump']);
      const [head, peerLine] = shown.stdout.trim().split('\n');
      expect(head!.split('\t').slice(0, 3)).toEqual([keysA.privateKey, keysA.publicKey, '51820']);
      expect(peerLine!.split('\t')[0]).toBe(keysB.publicKey);
      expect(peerLine!.split('\t')[3]!.split(',').sort()).toEqual(['100.64.1.2/32', '100.64.9.0/24', 'fd00:64:1::2/128', 'fd00:64:9::/64']);

      for (const target of ['100.64.1.2', '100.64.9.1', 'fd00:64:1::2', 'fd00:64:9::1']) {
        const r = await ping(bed, nsA, target, { count: 2, waitSeconds: 5 });
        if (r.received !== 2) throw new Error(`ping ${target}: ${r.received}/2\n${r.stdout}${r.stderr}\n${await explain()}`);
      }
      const moved = await transfer(bed, { from: nsA, to: nsB, address: '100.64.9.1', bytes: 10_000_000 });
      expect(moved.received.sha256).toBe(moved.sent.sha256);

      const down = await bed.exec(nsA, 'wg-quick', ['down', confPath], { env, timeoutMs: 30_000, allowFailure: true });
      wgQuickLog.push(`$ wg-quick down (exit ${down.code})`, down.stderr);
      if (down.code !== 0) throw new Error(`wg-quick down failed:\n${await explain()}`);
      expect(await linkState(nsA, ifname), 'the interface is gone').toBeUndefined();
      const pid = daemonPid;
      await waitFor(() => !pidRunning(pid), { timeoutMs: 5_000, what: `the wgts daemon (pid ${pid}) to exit after wg-quick down` });
      await waitFor(() => {
        try {
          readFileSync(join(UAPI_DIRECTORY, `${ifname}.sock`));
          return false;
        } catch (err) {
          return (err as NodeJS.ErrnoException).code === 'ENOENT';
        }
      }, { timeoutMs: 5_000, what: 'the UAPI socket to be removed' });
      expect((await bed.exec(nsA, 'ip', ['-4', 'route'])).stdout, 'no overlay route left behind').not.toMatch(/100\.64\./);
      expect((await bed.exec(nsA, 'ip', ['-6', 'route'])).stdout, 'no overlay route left behind').not.toMatch(/fd00:64:/);
      expect((await bed.exec(nsA, 'wg', ['show', 'interfaces'])).stdout.split(/\s+/)).not.toContain(ifname);
    } catch (err) {
      if (err instanceof Error && !err.message.includes('--- wg-quick')) err.message += `\n${await explain()}`;
      throw err;
    } finally {
      await peer.stop();
      // If the test failed before wg-quick down, take the interface down the same way.
      if ((await linkState(nsA, ifname)) !== undefined) {
        await bed.exec(nsA, 'wg-quick', ['down', confPath], { env, timeoutMs: 30_000, allowFailure: true });
      }
    }
  });

  describe('SIGKILL and restart', () => {
    /** Restarts B's wgts under the same name (its stale socket file still there) and reconfigures it as before. */
    async function restart(pair: TunnelPair): Promise<WgDaemon> {
      const old = pair.b.daemon;
      const daemon = await WgtsDaemon.start(bed, old.ns, { ifname: old.ifname });
      await daemon.configure({
        privateKey: pair.b.keys.privateKey,
        listenPort: pair.b.listenPort,
        peers: [{ publicKey: pair.a.keys.publicKey, endpoint: pair.a.endpoint, allowedIps: [`${pair.a.inner4}/32`] }],
        addresses: [`${pair.b.inner4}/24`],
      });
      return daemon;
    }

    for (const survivor of [wgtsImplementation, wireguardGoImplementation] as WgImplementation[]) {
      it(`${survivor.label} (A) ↔ wgts (B): B is SIGKILLed during a transfer from B and pings from A, restarts; traffic resumes`, async () => {
        const pair = await createTunnelPair(bed, { link, implementations: [survivor, wgtsImplementation] });
        let b: WgDaemon = pair.b.daemon;
        try {
          await withDiagnostics(() => [pair.a.daemon, b], async () => {
            const warm = await ping(bed, nsA, pair.b.inner4, { count: 1, waitSeconds: 5 });
            expect(warm.received).toBe(1);
            const handshake0 = (await pair.a.daemon.peer(pair.b.keys.publicKey)).latestHandshake;
            const stats0 = await pair.a.daemon.stats();

            const bytes = 30 * 1000 * 1000;
            const t = await startTransfer(bed, { from: nsB, to: nsA, address: pair.a.inner4, bytes, rateBytesPerSecond: 5_000_000 });
            const pinger = bed.spawn(nsA, 'ping', ['-n', '-i', '0.1', '-W', '1', pair.b.inner4]);
            const replies = (): number => (pinger.output().match(/bytes from/g) ?? []).length;
            try {
              await waitFor(() => t.received() >= 4 << 20 && replies() >= 3, { timeoutMs: 20_000, what: 'transfer and pings under way' });
              // Handshake times have one-second resolution: make "a new handshake" observable.
              await waitFor(() => Date.now() / 1000 >= handshake0 + 1.05, { timeoutMs: 3_000, intervalMs: 20, what: 'a second to pass' });

              await b.kill();
              await waitFor(async () => (await linkState(nsB, b.ifname)) === undefined, { timeoutMs: 5_000, what: 'the killed daemon’s TUN to go' });
              const killedAt = t.received();
              b = await restart(pair);
              const repliesBefore = replies();

              const resumedMs = await waitForPing(bed, nsB, pair.a.inner4, 10_000);
              await waitFor(() => replies() > repliesBefore, { timeoutMs: 10_000, what: 'the pings from A to be answered again' });
              process.stderr.write(`[dataplane] ${survivor.label} ↔ restarted wgts: pings answered again after ${resumedMs.toFixed(0)} ms\n`);

              const result = await t.done();
              expect(killedAt, 'the kill came mid-transfer').toBeLessThan(bytes - (4 << 20));
              expect(result.received.bytes).toBe(bytes);
              expect(result.received.sha256, 'SHA-256 at the receiver equals the sender’s').toBe(result.sent.sha256);
            } finally {
              await bed.stop(pinger);
            }

            expect((await pair.a.daemon.peer(pair.b.keys.publicKey)).latestHandshake, 'A completed a new handshake').toBeGreaterThan(handshake0);
            expect((await b.peer(pair.a.keys.publicKey)).latestHandshake, 'the restarted B has a handshake').toBeGreaterThan(0);
            const stats1 = await pair.a.daemon.stats();
            if (stats0 && stats1) expect(stats1.handshakes_processed, 'A processed the new handshake').toBeGreaterThan(stats0.handshakes_processed!);
          });
        } finally {
          await pair.a.daemon.stop();
          await b.stop();
        }
      });
    }

    it('wgts (A) ↔ wgts (B): B restarts while only A sends; A gets no reply and starts a new handshake itself', async () => {
      const pair = await createTunnelPair(bed, { link, implementations: [wgtsImplementation, wgtsImplementation] });
      let b: WgDaemon = pair.b.daemon;
      try {
        await withDiagnostics(() => [pair.a.daemon, b], async () => {
          const warm = await ping(bed, nsA, pair.b.inner4, { count: 1, waitSeconds: 5 });
          expect(warm.received).toBe(1);
          const a = pair.a.daemon;
          const stats0 = (await a.stats())!;
          await b.kill();
          b = await restart(pair);
          // Only A sends. Its old session is useless to B, which cannot tell A anything; after
          // KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (15 s) without an answer, A must re-handshake.
          const resumedMs = await waitForPing(bed, nsA, pair.b.inner4, 25_000);
          process.stderr.write(`[dataplane] wgts survivor recovered alone after ${resumedMs.toFixed(0)} ms\n`);
          const stats1 = (await a.stats())!;
          expect(stats1.initiations_sent, 'A initiated the new handshake').toBeGreaterThan(stats0.initiations_sent!);
          expect((await b.stats())!.initiations_sent, 'B never needed to initiate').toBe(0);
          expect(resumedMs, 'not before the no-reply timer could fire').toBeGreaterThan(10_000);
        });
      } finally {
        await pair.a.daemon.stop();
        await b.stop();
      }
    }, 90_000);
  });
});
