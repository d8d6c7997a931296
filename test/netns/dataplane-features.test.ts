/**
 * Data-plane features between real daemons in namespaces (wgts, and wireguard-go as the other
 * side where that says something about interop):
 *
 * - IPv6 inside the tunnel (fd00::/8 overlay) over an IPv4 underlay, and both families inside
 *   over an IPv6 underlay (endpoints [fd00:…]:port): pings, TCP with matching SHA-256, and the
 *   endpoints `wg show` reports.
 * - Roaming: the sending side's underlay address changes mid-transfer; the transfer completes
 *   intact and the other side's `wg show` shows the new endpoint.
 * - Allowed-IPs enforcement: packets whose inner source is outside the sender's allowed IPs are
 *   dropped and counted (drop_source_not_allowed), never reach the TUN; legitimate ones pass.
 * - Persistent keepalive: really sent, once a second of silence, and received as keepalives.
 * - `wg setconf` then `wg showconf` round-trips a full configuration (compared parsed and
 *   order-insensitive, with the input and with wireguard-go's answer to the same input).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VethPair } from './helpers/netns.ts';
import { NetnsBed, skipUnlessRoot, waitFor } from './helpers/netns.ts';
import type { WgDaemon, WgImplementation } from './helpers/wgts.ts';
import {
  createTunnelPair,
  newKeyPair,
  NODE,
  ping,
  startTransfer,
  transfer,
  WGTS_CLI,
  wgtsImplementation,
  wireguardGoImplementation,
  withDiagnostics,
} from './helpers/wgts.ts';

const V6_TRANSFER_BYTES = 20 * 1000 * 1000;
const OVERLAY6: readonly [string, string] = ['fd00:64::1', 'fd00:64::2'];

const PAIRINGS: ReadonlyArray<readonly [WgImplementation, WgImplementation]> = [
  [wgtsImplementation, wgtsImplementation],
  [wgtsImplementation, wireguardGoImplementation],
];

const label = (pair: readonly [WgImplementation, WgImplementation]): string => `${pair[0].label} (A) ↔ ${pair[1].label} (B)`;

async function expectTransfer(bed: NetnsBed, from: string, to: string, address: string, bytes: number): Promise<void> {
  const result = await transfer(bed, { from, to, address, bytes });
  expect(result.received.bytes, `bytes received at ${address}`).toBe(bytes);
  expect(result.received.sha256, 'SHA-256 at the receiver equals the sender’s').toBe(result.sent.sha256);
}

/** rx packets of a link as the kernel counts them (for a TUN: packets the daemon wrote into it). */
async function linkRxPackets(bed: NetnsBed, ns: string, ifname: string): Promise<number> {
  const out = await bed.exec(ns, 'ip', ['-s', '-j', 'link', 'show', 'dev', ifname]);
  const [link] = JSON.parse(out.stdout) as Array<{ stats64: { rx: { packets: number } } }>;
  return link!.stats64.rx.packets;
}

describe.skipIf(skipUnlessRoot('data plane: features'))('data plane: features', () => {
  const bed = new NetnsBed('dpf');
  let nsA: string;
  let nsB: string;
  let link: VethPair;

  beforeAll(async () => {
    await bed.sweepStale();
    nsA = await bed.createNamespace('a');
    nsB = await bed.createNamespace('b');
    link = await bed.createVethPair(nsA, nsB, { ipv6: true });
  });

  afterAll(async () => {
    await bed.cleanup();
  });

  describe('IPv6', () => {
    for (const implementations of PAIRINGS) {
      it(`${label(implementations)}: IPv6 inside the tunnel over an IPv4 underlay`, async () => {
        const pair = await createTunnelPair(bed, { link, implementations, overlay6: OVERLAY6 });
        try {
          await withDiagnostics([pair.a.daemon, pair.b.daemon], async () => {
            // The first packet of all is IPv6: it alone triggers the handshake.
            const first = await ping(bed, nsA, OVERLAY6[1], { count: 1, waitSeconds: 5 });
            expect(first.received, `first ping -6\n${first.stdout}${first.stderr}`).toBe(1);
            const forth = await ping(bed, nsA, OVERLAY6[1], { count: 3 });
            const back = await ping(bed, nsB, OVERLAY6[0], { count: 3 });
            expect(forth.received, forth.stdout).toBe(3);
            expect(back.received, back.stdout).toBe(3);
            await expectTransfer(bed, nsA, nsB, OVERLAY6[1], V6_TRANSFER_BYTES);
            await expectTransfer(bed, nsB, nsA, OVERLAY6[0], V6_TRANSFER_BYTES);
            expect((await pair.a.daemon.peer(pair.b.keys.publicKey)).endpoint).toBe(`${link.b.address4}:51820`);
          });
        } finally {
          await pair.stop();
        }
      });

      it(`${label(implementations)}: IPv4 and IPv6 inside the tunnel over an IPv6 underlay`, async () => {
        const pair = await createTunnelPair(bed, { link, implementations, overlay6: OVERLAY6, underlay: 6 });
        try {
          await withDiagnostics([pair.a.daemon, pair.b.daemon], async () => {
            const first = await ping(bed, nsB, pair.a.inner4, { count: 1, waitSeconds: 5 });
            expect(first.received, `first ping\n${first.stdout}${first.stderr}`).toBe(1);
            const v4 = await ping(bed, nsA, pair.b.inner4, { count: 3 });
            const v6 = await ping(bed, nsA, OVERLAY6[1], { count: 3 });
            expect(v4.received, v4.stdout).toBe(3);
            expect(v6.received, v6.stdout).toBe(3);
            await expectTransfer(bed, nsA, nsB, pair.b.inner4, V6_TRANSFER_BYTES);
            await expectTransfer(bed, nsB, nsA, OVERLAY6[0], V6_TRANSFER_BYTES);
            // Both sides talk over the IPv6 underlay: what each one shows is the other's [v6]:port.
            expect((await pair.a.daemon.peer(pair.b.keys.publicKey)).endpoint).toBe(`[${link.b.address6}]:51820`);
            expect((await pair.b.daemon.peer(pair.a.keys.publicKey)).endpoint).toBe(`[${link.a.address6}]:51820`);
          });
        } finally {
          await pair.stop();
        }
      });
    }
  });

  describe('roaming', () => {
    // [observer A, mover B]: B streams to A and its underlay address changes mid-transfer.
    const ROAMING: ReadonlyArray<readonly [WgImplementation, WgImplementation]> = [
      [wgtsImplementation, wgtsImplementation],
      [wireguardGoImplementation, wgtsImplementation],
      [wgtsImplementation, wireguardGoImplementation],
    ];
    ROAMING.forEach((implementations, index) => {
      it(`${label(implementations)}: B's underlay address moves during a TCP transfer from B; A follows`, async () => {
        const ra = await bed.createNamespace(`r${index}a`);
        const rb = await bed.createNamespace(`r${index}b`);
        const roamLink = await bed.createVethPair(ra, rb);
        const pair = await createTunnelPair(bed, { link: roamLink, implementations });
        try {
          await withDiagnostics([pair.a.daemon, pair.b.daemon], async () => {
            const oldAddress = roamLink.b.address4;
            const newAddress = oldAddress.replace(/\.2$/, '.3');
            // Keep the new (secondary) address when the old primary one goes.
            await bed.exec(rb, 'sysctl', ['-qw', `net.ipv4.conf.${roamLink.b.ifname}.promote_secondaries=1`]);

            const bytes = 24 * 1000 * 1000;
            const t = await startTransfer(bed, { from: rb, to: ra, address: pair.a.inner4, bytes, rateBytesPerSecond: 6_000_000 });
            await waitFor(() => t.received() >= 4 << 20, { timeoutMs: 20_000, what: 'the first 4 MiB at A' });
            expect((await pair.a.daemon.peer(pair.b.keys.publicKey)).endpoint).toBe(`${oldAddress}:51820`);

            await bed.exec(rb, 'ip', ['addr', 'add', `${newAddress}/24`, 'dev', roamLink.b.ifname]);
            await bed.exec(rb, 'ip', ['addr', 'del', `${oldAddress}/24`, 'dev', roamLink.b.ifname]);
            const movedAt = t.received();
            // A wgts mover drops its sticky source address once it is gone and keeps sending from
            // the new one: A follows within moments. (wireguard-go 0.0.20220316 as the mover stays
            // silent until its 15 s no-reply timer starts a new handshake from the new address.)
            const followMs = implementations[1].name === 'wgts' ? 3_000 : 25_000;
            await waitFor(async () => (await pair.a.daemon.peer(pair.b.keys.publicKey)).endpoint === `${newAddress}:51820`, {
              timeoutMs: followMs,
              intervalMs: 50,
              what: `A to show B's new endpoint ${newAddress}:51820`,
            });

            const result = await t.done();
            expect(movedAt, 'the address moved while the transfer was under way').toBeLessThan(bytes - (4 << 20));
            expect(result.received.bytes).toBe(bytes);
            expect(result.received.sha256, 'SHA-256 at the receiver equals the sender’s').toBe(result.sent.sha256);
            expect((await pair.a.daemon.peer(pair.b.keys.publicKey)).endpoint, 'A shows B’s new endpoint').toBe(`${newAddress}:51820`);
            // And traffic A → B now reaches B at its new address.
            const back = await ping(bed, ra, pair.b.inner4, { count: 2 });
            expect(back.received, back.stdout).toBe(2);
          });
        } finally {
          await pair.stop();
        }
      }, 90_000);
    });
  });

  describe('allowed IPs', () => {
    for (const sender of [wgtsImplementation, wireguardGoImplementation]) {
      it(`${sender.label} (A) → wgts (B): an inner source outside A's allowed IPs is dropped and counted, a legitimate one passes`, async () => {
        const pair = await createTunnelPair(bed, { link, implementations: [sender, wgtsImplementation], overlay6: OVERLAY6 });
        const b: WgDaemon = pair.b.daemon;
        try {
          await withDiagnostics([pair.a.daemon, b], async () => {
            // Addresses on A's interface that B does not allow for A (B allows 100.64.0.1/32 and fd00:64::1/128).
            await pair.a.daemon.ip(['addr', 'add', '100.64.0.99/32', 'dev', pair.a.daemon.ifname]);
            await pair.a.daemon.ip(['addr', 'add', 'fd00:64::99/128', 'dev', pair.a.daemon.ifname, 'nodad']);

            const legit4 = await ping(bed, nsA, pair.b.inner4, { count: 2, source: pair.a.inner4 });
            const legit6 = await ping(bed, nsA, OVERLAY6[1], { count: 2, source: OVERLAY6[0] });
            expect(legit4.received, `legitimate ping\n${legit4.stdout}`).toBe(2);
            expect(legit6.received, `legitimate ping -6\n${legit6.stdout}`).toBe(2);

            const stats0 = (await b.stats())!;
            const rx0 = await linkRxPackets(bed, nsB, b.ifname);
            const spoofed4 = await ping(bed, nsA, pair.b.inner4, { count: 3, waitSeconds: 1, source: '100.64.0.99' });
            const spoofed6 = await ping(bed, nsA, OVERLAY6[1], { count: 3, waitSeconds: 1, source: 'fd00:64::99' });
            expect(spoofed4.transmitted, spoofed4.stdout + spoofed4.stderr).toBe(3);
            expect(spoofed6.transmitted, spoofed6.stdout + spoofed6.stderr).toBe(3);
            expect(spoofed4.received, 'spoofed IPv4 pings get no reply').toBe(0);
            expect(spoofed6.received, 'spoofed IPv6 pings get no reply').toBe(0);
            const stats1 = (await b.stats())!;
            expect(stats1.drop_source_not_allowed! - stats0.drop_source_not_allowed!, 'every spoofed packet counted at B').toBe(6);
            expect(await linkRxPackets(bed, nsB, b.ifname), 'no spoofed packet reached B’s TUN').toBe(rx0);
            // They were decrypted fine: not counted as anything else.
            expect(stats1.drop_decrypt).toBe(stats0.drop_decrypt);

            // Legitimate traffic still passes, both families, and the CLI shows the counter.
            // (With an explicit source: fd00:64::99/128 would win Linux's source selection.)
            const after4 = await ping(bed, nsA, pair.b.inner4, { count: 2, source: pair.a.inner4 });
            const after6 = await ping(bed, nsA, OVERLAY6[1], { count: 2, source: OVERLAY6[0] });
            expect(after4.received, after4.stdout).toBe(2);
            expect(after6.received, after6.stdout).toBe(2);
            const shown = await bed.exec(undefined, NODE, [WGTS_CLI, 'show', b.ifname]);
            expect(shown.stdout).toMatch(new RegExp(`^drop_source_not_allowed: ${stats1.drop_source_not_allowed}$`, 'm'));
          });
        } finally {
          await pair.stop();
        }
      });
    }
  });

  describe('persistent keepalive', () => {
    for (const receiver of [wgtsImplementation, wireguardGoImplementation]) {
      it(`wgts (A) → ${receiver.label} (B): with no traffic at all, a 1 s keepalive sets up a session and keeps arriving`, async () => {
        const pair = await createTunnelPair(bed, { link, implementations: [wgtsImplementation, receiver] });
        try {
          await withDiagnostics([pair.a.daemon, pair.b.daemon], async () => {
            const a = pair.a.daemon;
            const b = pair.b.daemon;
            await a.wg(['set', a.ifname, 'peer', pair.b.keys.publicKey, 'persistent-keepalive', '1']);
            // Setting it sends one right away, which needs (and so starts) a handshake.
            const session = await waitFor(
              async () => {
                const peer = await b.peer(pair.a.keys.publicKey);
                return peer.latestHandshake > 0 && peer.rxBytes > 0 ? peer : undefined;
              },
              { timeoutMs: 5_000, intervalMs: 50, what: 'B to hear from A' },
            );
            const sent0 = (await a.stats())!.keepalives_sent!;
            const received0 = (await b.stats())?.keepalives_received;
            // Then one per second of silence: three more within five seconds.
            await waitFor(async () => (await a.stats())!.keepalives_sent! >= sent0 + 3, { timeoutMs: 5_000, intervalMs: 100, what: 'A to send 3 keepalives' });
            await waitFor(async () => (await b.peer(pair.a.keys.publicKey)).rxBytes >= session.rxBytes + 3 * 32, {
              timeoutMs: 2_000,
              intervalMs: 50,
              what: 'B to receive them (32 bytes each)',
            });
            if (received0 !== undefined) expect((await b.stats())!.keepalives_received).toBeGreaterThanOrEqual(received0 + 3);
            // Nothing but keepalives went through: the TUN on B saw no packet.
            expect(await linkRxPackets(bed, nsB, b.ifname)).toBe(0);
          });
        } finally {
          await pair.stop();
        }
      });
    }
  });

  describe('wg setconf / wg showconf', () => {
    interface ParsedConf {
      interface: Record<string, string>;
      peers: Record<string, Record<string, string | string[]>>;
    }

    /** Parses a wg config: keys lowercased, AllowedIPs merged and sorted, FwMark as a number, peers by public key. */
    function parseConf(text: string): ParsedConf {
      const out: ParsedConf = { interface: {}, peers: {} };
      let section: Record<string, string | string[]> | undefined;
      let pending: Record<string, string | string[]> | undefined;
      for (const raw of text.split('\n')) {
        const line = raw.replace(/#.*/, '').trim();
        if (line === '') continue;
        if (/^\[interface\]$/i.test(line)) {
          section = out.interface;
          continue;
        }
        if (/^\[peer\]$/i.test(line)) {
          pending = { allowedips: [] };
          section = pending;
          continue;
        }
        const eq = line.indexOf('=');
        const key = line.slice(0, eq).trim().toLowerCase();
        let value = line.slice(eq + 1).trim();
        if (!section) throw new Error(`key outside a section: ${line}`);
        if (key === 'fwmark') value = value === 'off' ? '0' : String(Number(value));
        if (key === 'allowedips') {
          const list = section.allowedips as string[];
          list.push(...value.split(',').map((s) => s.trim()).filter(Boolean));
          list.sort();
        } else {
          section[key] = value;
        }
        if (key === 'publickey' && pending) out.peers[value] = pending;
      }
      if (out.interface.fwmark === '0') delete out.interface.fwmark;
      return out;
    }

    function render(conf: { privateKey: string; listenPort: number; fwmark?: string; peers: Array<Record<string, string>> }): string {
      const lines = ['[Interface]', `PrivateKey = ${conf.privateKey}`, `ListenPort = ${conf.listenPort}`];
      if (conf.fwmark !== undefined) lines.push(`FwMark = ${conf.fwmark}`);
      for (const peer of conf.peers) {
        lines.push('', '[Peer]');
        for (const [k, v] of Object.entries(peer)) lines.push(`${k} = ${v}`);
      }
      return lines.join('\n') + '\n';
    }

    it('wgts shows what wg setconf set (and what wireguard-go shows for the same input), then replaces it all', async () => {
      // One namespace each: both listen on the same ports.
      const namespaces = [await bed.createNamespace('conf1'), await bed.createNamespace('conf2')];
      const keys = Array.from({ length: 5 }, () => newKeyPair());
      const psk = () => newKeyPair().privateKey;
      const first = render({
        privateKey: keys[0]!.privateKey,
        listenPort: 51999,
        fwmark: '0x1234',
        peers: [
          {
            PublicKey: keys[1]!.publicKey,
            PresharedKey: psk(),
            Endpoint: '198.18.200.1:51820',
            AllowedIPs: '100.64.10.0/24, 100.64.11.1/32, fd00:10::/64',
            PersistentKeepalive: '25',
          },
          { PublicKey: keys[2]!.publicKey, Endpoint: '[fd00:200::2]:51821', AllowedIPs: 'fd00:20::/48, 100.64.20.0/24, fd00:21::1/128' },
          { PublicKey: keys[3]!.publicKey, AllowedIPs: '100.64.30.0/30', PersistentKeepalive: '1' },
          { PublicKey: keys[4]!.publicKey, PresharedKey: psk() },
        ],
      });
      const second = render({
        privateKey: keys[1]!.privateKey,
        listenPort: 52000,
        fwmark: '0x51820',
        peers: [
          { PublicKey: keys[2]!.publicKey, Endpoint: '198.18.201.9:60000', AllowedIPs: '100.64.40.0/22, fd00:40::/56' },
          { PublicKey: keys[0]!.publicKey, PresharedKey: psk(), AllowedIPs: '0.0.0.0/0, ::/0', PersistentKeepalive: '60' },
        ],
      });
      const dir = bed.tempDir();
      const files = [first, second].map((text, i) => {
        const path = join(dir, `conf${i}.conf`);
        writeFileSync(path, text, { mode: 0o600 });
        return path;
      });

      const daemons: WgDaemon[] = [];
      try {
        await withDiagnostics(daemons, async () => {
          daemons.push(await wgtsImplementation.start(bed, namespaces[0]!));
          daemons.push(await wireguardGoImplementation.start(bed, namespaces[1]!));
          const [wgts, reference] = daemons as [WgDaemon, WgDaemon];
          for (const file of files) {
            const expected = parseConf(readFileSync(file, 'utf8'));
            for (const d of daemons) await d.wg(['setconf', d.ifname, file]);
            const shown = parseConf(await wgts.wg(['showconf', wgts.ifname]));
            expect(shown, `wgts showconf after setconf ${file}`).toEqual(expected);
            expect(shown, 'wgts and wireguard-go show the same').toEqual(parseConf(await reference.wg(['showconf', reference.ifname])));
            // Re-applying what showconf printed changes nothing.
            const again = join(dir, 'again.conf');
            writeFileSync(again, await wgts.wg(['showconf', wgts.ifname]), { mode: 0o600 });
            await wgts.wg(['setconf', wgts.ifname, again]);
            expect(parseConf(await wgts.wg(['showconf', wgts.ifname])), 'setconf of showconf is a fixed point').toEqual(expected);
          }
        });
      } finally {
        for (const d of daemons) await d.stop();
      }
    });
  });
});
