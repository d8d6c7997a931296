/**
 * Crashes and I/O failures (issue 7, item 4):
 *
 * 1. SIGKILL of the daemon in the middle of a TCP transfer, for `wgts --persist` (the mesh's data
 *    plane: the TUN, its addresses and routes outlive the process) and plain `wgts -f` (as
 *    wireguard-go: the TUN dies with the process). The underlay is captured (tcpdump on A's veth,
 *    whole packets) from before the transfer until after the restart, and every packet between
 *    the two hosts must be WireGuard UDP (a UDP GSO run captured before segmentation counts when
 *    every message in it is a transport message of the same session), with no packet anywhere
 *    carrying an overlay address. Each host has a default route across the underlay, so a
 *    plaintext fallback would have a way out; the test waits until the kernel's retransmission
 *    timer for the cut connection has fired three times (ss: backoff ≥ 3) before restarting.
 *    With --persist those tries go into the ownerless TUN (its tx_dropped counts them); without
 *    it the connection's source address went away with the TUN, so the kernel cannot route them
 *    at all. Restarted on the same interface and reconfigured with `wg set` (plus the address
 *    again when the TUN was new), the interrupted connection resumes and a new one succeeds, with
 *    equal SHA-256 at both ends.
 * 2. A full UDP send buffer (a tbf qdisc that holds everything, so sendmmsg returns EAGAIN) and a
 *    filtered one (nft drops the datagrams on output: EPERM): the daemon stays up, drop_udp_send
 *    rises, and traffic flows again once the link is back.
 * 3. TUN write errors (the receiving TUN is set down: write() answers EIO): the daemon stays up,
 *    drop_tun_write rises, traffic flows again once it is up.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uapiRequest } from '../../src/device/uapi-client.ts';
import type { VerifyContext } from '../../src/mesh/verify.ts';
import { classifyCapture } from '../../src/mesh/verify.ts';
import { parseCidr } from '../../src/util/ip.ts';
import { parsePcap, summarize, wireGuardMessageType } from '../../src/util/pcap.ts';
import type { PacketSummary } from '../../src/util/pcap.ts';
import type { NetnsBed as Bed, TrackedProcess, VethPair } from './helpers/netns.ts';
import { linkState, NetnsBed, skipUnlessRoot, waitFor } from './helpers/netns.ts';
import type { KeyPair, WgDaemon } from './helpers/wgts.ts';
import { configureInterface, mbps, newKeyPair, NODE, ping, startTransfer, waitForPing, WGTS_CLI, withDiagnostics, WgtsDaemon } from './helpers/wgts.ts';

const WG_PORT = 51820;
const MB = 1000 * 1000;

/** `wgts [--persist] -f <ifname>` in ns, tracked by PID; resolves once its UAPI answers (a stale socket file does not count). */
async function startWgts(bed: Bed, ns: string, ifname: string, persist: boolean): Promise<WgtsDaemon> {
  const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'info' };
  const proc = bed.spawn(ns, NODE, [WGTS_CLI, ...(persist ? ['--persist'] : []), '-f', ifname], { env });
  const daemon = new WgtsDaemon(bed, ns, ifname, proc);
  bed.trackPath(daemon.socketPath);
  try {
    await waitFor(
      async () => {
        if (proc.hasExited()) throw new Error(`wgts ${ifname} exited`);
        if (!existsSync(daemon.socketPath) || (await linkState(ns, ifname)) === undefined) return false;
        return (await uapiRequest(ifname, 'get=1\n\n', undefined, 2_000)).errno === 0;
      },
      { timeoutMs: 15_000, intervalMs: 25, what: `wgts ${ifname} ready` },
    );
  } catch (err) {
    await bed.stop(proc);
    throw new Error(`${(err as Error).message}\n${proc.output()}`);
  }
  return daemon;
}

/** /proc/net/snmp of a namespace, as { 'Tcp.RetransSegs': n, 'Udp.SndbufErrors': n, … }. */
async function snmp(bed: Bed, ns: string): Promise<Record<string, number>> {
  const lines = (await bed.exec(ns, 'cat', ['/proc/net/snmp'])).stdout.split('\n');
  const out: Record<string, number> = {};
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const names = lines[i]!.split(/\s+/);
    const values = lines[i + 1]!.split(/\s+/);
    const proto = names[0]!.replace(':', '');
    names.slice(1).forEach((n, j) => (out[`${proto}.${n}`] = Number(values[j + 1])));
  }
  return out;
}

/** rx/tx counters of a link (`ip -s -j link`). */
async function linkStats(bed: Bed, ns: string, ifname: string): Promise<{ tx_packets: number; tx_dropped: number; rx_packets: number }> {
  const json = JSON.parse((await bed.exec(ns, 'ip', ['-s', '-j', 'link', 'show', 'dev', ifname])).stdout) as Array<{
    stats64: { tx: { packets: number; dropped: number }; rx: { packets: number } };
  }>;
  const s = json[0]!.stats64;
  return { tx_packets: s.tx.packets, tx_dropped: s.tx.dropped, rx_packets: s.rx.packets };
}

interface Capture {
  readonly proc: TrackedProcess;
  readonly file: string;
  /** Stops tcpdump (it flushes) and returns the file and what it said about kernel drops. */
  stop(): Promise<{ file: Uint8Array; droppedByKernel: number }>;
}

/**
 * tcpdump on ifname in ns, every packet whole, into a pcap file. Whole: on veth the capture sees
 * UDP GSO runs unsegmented (up to 64 KB), and each message of a run is checked.
 */
async function startCapture(bed: Bed, ns: string, ifname: string): Promise<Capture> {
  const file = join(bed.tempDir(), 'underlay.pcap');
  const proc = bed.spawn(ns, 'tcpdump', ['-i', ifname, '-n', '-U', '-s', '0', '-B', '65536', '-w', file]);
  await waitFor(() => /listening on/.test(proc.output()) || (proc.hasExited() && Promise.reject(new Error(proc.output()))), {
    timeoutMs: 10_000,
    what: 'tcpdump listening',
  });
  return {
    proc,
    file,
    stop: async () => {
      await bed.stop(proc);
      const dropped = /(\d+) packets? dropped by kernel/.exec(proc.output());
      return { file: new Uint8Array(readFileSync(file)), droppedByKernel: Number(dropped?.[1] ?? NaN) };
    },
  };
}

function inOverlay(address: string): boolean {
  if (address.includes(':')) return /^fd/i.test(address);
  const [a, b] = address.split('.').map(Number) as [number, number];
  return a === 100 && b >= 64 && b < 128;
}

/** Whether an IPv4 ICMP error (type 3) quotes a UDP datagram to or from the WireGuard port. */
function icmpQuotesWireGuard(summary: PacketSummary, frame: Uint8Array): boolean {
  if (summary.protocol !== 'ICMP' || summary.network !== 'IPv4') return false;
  // Find the ICMP header after the outer IPv4 header in the frame (Ethernet: 14 bytes).
  const ip = 14;
  const ihl = (frame[ip]! & 0x0f) * 4;
  const icmp = ip + ihl;
  if (frame[icmp] !== 3) return false;
  const inner = icmp + 8;
  if (frame[inner + 9] !== 17) return false;
  const innerIhl = (frame[inner]! & 0x0f) * 4;
  const udp = inner + innerIhl;
  const sport = (frame[udp]! << 8) | frame[udp + 1]!;
  const dport = (frame[udp + 2]! << 8) | frame[udp + 3]!;
  return sport === WG_PORT || dport === WG_PORT;
}

/**
 * How many WireGuard transport messages a UDP payload holds: 1 for one message, n for a UDP GSO
 * run captured on the sending host before segmentation (equal-size messages, the last one maybe
 * shorter, all with the first one's receiver index and rising counters); undefined when it is not
 * that.
 */
function transportMessages(p: Uint8Array): number | undefined {
  const isHeader = (at: number): boolean => p[at] === 4 && p[at + 1] === 0 && p[at + 2] === 0 && p[at + 3] === 0;
  if (p.length < 32 || !isHeader(0)) return undefined;
  const view = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const index = view.getUint32(4, true);
  const counterAt = (at: number): bigint => view.getBigUint64(at + 8, true);
  const follows = (at: number, after: bigint): boolean => at + 32 <= p.length && isHeader(at) && view.getUint32(at + 4, true) === index && counterAt(at) > after;
  let size = 0;
  for (let s = 32; s + 32 <= p.length; s++) {
    if (follows(s, counterAt(0))) {
      size = s;
      break;
    }
  }
  if (size === 0) return 1;
  let n = 1;
  let at = size;
  for (; at + size <= p.length; at += size, n++) if (!follows(at, counterAt(at - size))) return undefined;
  if (at < p.length) {
    if (!follows(at, counterAt(at - size))) return undefined;
    n++;
  }
  return n;
}

interface UnderlayVerdict {
  packets: number;
  wireGuard: Record<string, number>;
  /** Transport messages in those packets (a GSO run counts each message). */
  transportMessages: number;
  /** Packets that were GSO runs of several messages. */
  gsoRuns: number;
  icmpAboutWireGuard: number;
  /** Packets with an overlay address on the underlay: plaintext. */
  overlay: number;
  /** Other packets between the two hosts (neither WireGuard nor an ICMP error about it). */
  otherBetweenHosts: number;
  /** Packets not between the two hosts (ARP, IPv6 link-local chatter). */
  unrelated: number;
  examples: string[];
  /** Packets captured after the kill. */
  afterKill: number;
}

function judgeCapture(file: Uint8Array, hosts: readonly [string, string], killedAt: number): UnderlayVerdict {
  const pcap = parsePcap(file);
  const v: UnderlayVerdict = { packets: 0, wireGuard: {}, transportMessages: 0, gsoRuns: 0, icmpAboutWireGuard: 0, overlay: 0, otherBetweenHosts: 0, unrelated: 0, examples: [], afterKill: 0 };
  for (const record of pcap.records) {
    v.packets++;
    if (record.time * 1000 >= killedAt) v.afterKill++;
    const s = summarize(record.data, pcap.linkType);
    const describe = `${s.protocol} ${s.source}:${s.sourcePort ?? ''} → ${s.destination}:${s.destinationPort ?? ''} (${record.originalLength} B)`;
    if (!s.source || !s.destination) {
      v.unrelated++;
      continue;
    }
    if (inOverlay(s.source) || inOverlay(s.destination)) {
      v.overlay++;
      if (v.examples.length < 10) v.examples.push(`plaintext: ${describe}`);
      continue;
    }
    const between = hosts.includes(s.source) && hosts.includes(s.destination);
    if (!between) {
      v.unrelated++;
      continue;
    }
    if (record.data.length < record.originalLength) throw new Error('capture truncated a packet: use a larger snap length');
    const wgPorts = s.protocol === 'UDP' && s.payload !== undefined && s.sourcePort === WG_PORT && s.destinationPort === WG_PORT;
    const kind = wgPorts ? wireGuardMessageType(s.payload!) : undefined;
    const messages = kind === 'data' ? transportMessages(s.payload!) : kind ? 1 : undefined;
    if (kind && messages !== undefined) {
      v.wireGuard[kind] = (v.wireGuard[kind] ?? 0) + 1;
      if (kind === 'data') v.transportMessages += messages;
      if (messages > 1) v.gsoRuns++;
    } else if (icmpQuotesWireGuard(s, record.data)) {
      v.icmpAboutWireGuard++;
    } else {
      v.otherBetweenHosts++;
      if (v.examples.length < 10) v.examples.push(`between hosts, not WireGuard: ${describe}`);
    }
  }
  return v;
}

interface Host {
  readonly ns: string;
  readonly keys: KeyPair;
  readonly underlay: string;
  readonly overlay: string;
  readonly ifname: string;
  daemon: WgtsDaemon;
}

async function configureHost(bed: Bed, self: Host, other: Host, withAddress: boolean): Promise<void> {
  await configureInterface(bed, self.ns, self.ifname, {
    privateKey: self.keys.privateKey,
    listenPort: WG_PORT,
    peers: [{ publicKey: other.keys.publicKey, endpoint: `${other.underlay}:${WG_PORT}`, allowedIps: [`${other.overlay}/32`] }],
    addresses: withAddress ? [`${self.overlay}/24`] : [],
  });
}

function nonZero(stats: Record<string, number> | undefined): Record<string, number> {
  return Object.fromEntries(Object.entries(stats ?? {}).filter(([, v]) => v !== 0));
}

describe.skipIf(skipUnlessRoot('crashes'))('crashes: SIGKILL mid-transfer, full send buffer, TUN write errors', () => {
  const bed = new NetnsBed('crash');
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

  async function hosts(persistA: boolean): Promise<[Host, Host]> {
    const a: Host = { ns: nsA, keys: newKeyPair(), underlay: link.a.address4, overlay: '100.64.0.1', ifname: bed.ifname('crsh'), daemon: undefined! };
    const b: Host = { ns: nsB, keys: newKeyPair(), underlay: link.b.address4, overlay: '100.64.0.2', ifname: bed.ifname('crsh'), daemon: undefined! };
    a.daemon = await startWgts(bed, nsA, a.ifname, persistA);
    b.daemon = await startWgts(bed, nsB, b.ifname, false);
    await configureHost(bed, a, b, true);
    await configureHost(bed, b, a, true);
    return [a, b];
  }

  async function teardown(a: Host, b: Host): Promise<void> {
    for (const h of [a, b]) {
      await bed.stop(h.daemon.process).catch(() => {});
      // A persistent TUN outlives its daemon: delete it (ignore "Cannot find device").
      await bed.exec(h.ns, 'ip', ['link', 'delete', h.ifname], { allowFailure: true });
    }
  }

  for (const persist of [true, false] as const) {
    const mode = persist ? 'wgts --persist: the TUN outlives the daemon' : 'wgts -f: the TUN dies with the daemon';
    it(
      `SIGKILL mid-transfer (${mode}): zero plaintext on the underlay; restarted and reconfigured, connections succeed`,
      async () => {
        const [a, b] = await hosts(persist);
        const daemons = (): WgDaemon[] => [a.daemon, b.daemon];
        // The tempting escape route: each host's default route points across the underlay.
        await bed.exec(nsA, 'ip', ['route', 'add', 'default', 'via', link.b.address4]);
        await bed.exec(nsB, 'ip', ['route', 'add', 'default', 'via', link.a.address4]);
        try {
          await withDiagnostics(daemons, async () => {
            await waitForPing(bed, nsA, b.overlay, 10_000);
            const capture = await startCapture(bed, nsA, link.a.ifname);
            // 60 MB at 12 MB/s: the kill lands at ~10 MB, the rest flows after the restart.
            const total = 60 * MB;
            const t = await startTransfer(bed, { from: nsA, to: nsB, address: b.overlay, bytes: total, rateBytesPerSecond: 12 * MB, timeoutMs: 90_000 });
            await waitFor(() => t.received() >= 10 * MB || (t.receiver.hasExited() && Promise.reject(new Error(t.receiver.output()))), {
              timeoutMs: 20_000,
              what: '10 MB through the tunnel',
            });
            const snmpBefore = await snmp(bed, nsA);
            const killedAt = Date.now();
            await a.daemon.kill();
            const tunAfterKill = await linkState(nsA, a.ifname);
            if (persist) {
              expect(tunAfterKill, 'the persistent TUN survives its daemon').not.toBe(undefined);
            } else {
              await waitFor(async () => (await linkState(nsA, a.ifname)) === undefined, { what: 'the TUN gone with its daemon' });
            }
            const tunBefore = persist ? await linkStats(bed, nsA, a.ifname) : undefined;
            // The kernel keeps trying to send the cut connection's data: wait until its
            // retransmission timer has fired three times (ss: backoff ≥ 3). Each try goes into the
            // dead TUN (persist) or finds its source address gone with the TUN (no persist).
            const backoff = await waitFor(
              async () => {
                const ss = await bed.exec(nsA, 'ss', ['-tin', 'dst', b.overlay]);
                const n = Number(/backoff:(\d+)/.exec(ss.stdout)?.[1] ?? 0);
                return n >= 3 && n;
              },
              { timeoutMs: 10_000, intervalMs: 100, what: 'three retransmission timeouts after the kill' },
            );
            const retrans = (await snmp(bed, nsA))['Tcp.RetransSegs']! - snmpBefore['Tcp.RetransSegs']!;
            const tunAfter = persist ? await linkStats(bed, nsA, a.ifname) : undefined;

            // Restart on the same interface; configure it again as an operator (or the mesh agent) would.
            a.daemon = await startWgts(bed, nsA, a.ifname, persist);
            await configureHost(bed, a, b, !persist);
            const restartedAt = Date.now();

            // The interrupted connection resumes (persist: routes never went away) and completes.
            let interrupted: { ok: boolean; detail: string };
            try {
              const r = await t.done();
              interrupted = { ok: r.received.sha256 === r.sent.sha256 && r.received.bytes === total, detail: `${r.received.bytes} B, ${mbps(r.received)} Mbit/s` };
            } catch (err) {
              interrupted = { ok: false, detail: (err as Error).message.split('\n')[0]! };
            }
            // The next connection succeeds.
            const next = await startTransfer(bed, { from: nsA, to: nsB, address: b.overlay, bytes: 20 * MB, timeoutMs: 60_000 });
            const result = await next.done();
            const { file, droppedByKernel } = await capture.stop();
            const verdict = judgeCapture(file, [a.underlay, b.underlay], killedAt);

            // The same capture through `wgts verify`'s classifier, from A's point of view.
            const context: VerifyContext = {
              localAddresses: [a.underlay],
              localPrefixes: [parseCidr(`${a.overlay}/32`)],
              exempt: [],
              listenPort: WG_PORT,
              peers: [{ publicKey: b.keys.publicKey, node: b.underlay, port: WG_PORT, allowedIps: [parseCidr(`${b.overlay}/32`)] }],
            };
            const report = classifyCapture(file, context);
            const summary = {
              mode,
              retransmissionTimeoutsAfterKill: backoff,
              retransmittedSegments: retrans,
              tunTxDroppedWhileDead: tunAfter && tunBefore ? tunAfter.tx_dropped - tunBefore.tx_dropped : undefined,
              restartMs: restartedAt - killedAt,
              interrupted,
              next: `${result.received.bytes} B, ${mbps(result.received)} Mbit/s`,
              capture: { ...verdict, droppedByKernel },
              verify: { ok: report.ok, encrypted: report.peers[0]!.encrypted, clear: report.peers[0]!.clear.packets, other: report.other },
              statsA: nonZero(await a.daemon.stats()),
              statsB: nonZero(await b.daemon.stats()),
            };
            process.stderr.write(`[crash] ${JSON.stringify(summary)}\n`);

            expect(droppedByKernel, 'tcpdump saw every packet').toBe(0);
            expect(verdict.packets, 'the capture holds the transfers').toBeGreaterThan(1000);
            expect(verdict.overlay, `no overlay address on the underlay\n${verdict.examples.join('\n')}`).toBe(0);
            expect(verdict.otherBetweenHosts, `every packet between the hosts is WireGuard\n${verdict.examples.join('\n')}`).toBe(0);
            expect(report.ok, 'wgts verify: no clear packets for the peer').toBe(true);
            expect(result.received.sha256, 'the next connection: SHA-256 equal').toBe(result.sent.sha256);
            expect(result.received.bytes).toBe(20 * MB);
            expect(interrupted.ok, `the interrupted connection resumed: ${interrupted.detail}`).toBe(true);
          });
        } finally {
          await bed.exec(nsA, 'ip', ['route', 'del', 'default'], { allowFailure: true });
          await bed.exec(nsB, 'ip', ['route', 'del', 'default'], { allowFailure: true });
          await teardown(a, b);
        }
      },
      120_000,
    );
  }

  it('a full UDP send buffer (EAGAIN) and filtered sends (EPERM) never kill the daemon: drop_udp_send rises, traffic recovers', async () => {
    const [a, b] = await hosts(false);
    const veth = link.a.ifname;
    try {
      await withDiagnostics([a.daemon, b.daemon], async () => {
        await waitForPing(bed, nsA, b.overlay, 10_000);
        const before = (await a.daemon.stats())!;

        // EAGAIN: a token bucket that lets almost nothing through and queues up to 1 GB, so every
        // datagram sent stays charged to the socket until its buffer is full.
        await bed.exec(nsA, 'tc', ['qdisc', 'add', 'dev', veth, 'root', 'tbf', 'rate', '1mbit', 'burst', '16kb', 'limit', '1000mb']);
        const flooding = startFlood(bed, nsA, b.overlay);
        const full = await waitFor(
          async () => {
            const now = (await a.daemon.stats())!;
            return now.drop_udp_send! > before.drop_udp_send! + 1000 && now;
          },
          { timeoutMs: 15_000, intervalMs: 100, what: 'sendmmsg to find the socket buffer full (drop_udp_send)' },
        );
        await bed.stop(flooding);
        const flood = 'until drop_udp_send > 1000';
        const snmpA = await snmp(bed, nsA);
        await bed.exec(nsA, 'tc', ['qdisc', 'del', 'dev', veth, 'root']);
        expect(a.daemon.hasExited(), 'daemon alive after EAGAIN').toBe(false);
        const eagainDrops = full.drop_udp_send! - before.drop_udp_send!;
        await waitForPing(bed, nsA, b.overlay, 10_000);

        // EPERM: nft drops our WireGuard datagrams on output.
        await bed.exec(nsA, 'nft', ['-f', '-'], {
          input: 'table inet wgtscrash {\n  chain out {\n    type filter hook output priority 0;\n    udp dport 51820 drop\n  }\n}\n',
        });
        const flood2 = await udpFlood(bed, nsA, b.overlay, 5 * MB);
        const filtered = (await a.daemon.stats())!;
        await bed.exec(nsA, 'nft', ['delete', 'table', 'inet', 'wgtscrash']);
        expect(a.daemon.hasExited(), 'daemon alive after EPERM').toBe(false);
        const epermDrops = filtered.drop_udp_send! - full.drop_udp_send!;

        // Recovery: pings and a TCP transfer with equal hashes.
        await waitForPing(bed, nsA, b.overlay, 10_000);
        const r = await startTransfer(bed, { from: nsA, to: nsB, address: b.overlay, bytes: 10 * MB, timeoutMs: 30_000 }).then((t) => t.done());
        process.stderr.write(
          `[crash] send buffer: ${JSON.stringify({ flood, eagainDrops, flood2, epermDrops, sndbufErrors: snmpA['Udp.SndbufErrors'], recovered: `${r.received.bytes} B ${mbps(r.received)} Mbit/s`, statsA: nonZero(await a.daemon.stats()) })}\n`,
        );
        expect(eagainDrops, 'drop_udp_send rose while the socket buffer was full').toBeGreaterThan(0);
        expect(epermDrops, 'drop_udp_send rose while sends were filtered').toBeGreaterThan(0);
        expect(r.received.sha256).toBe(r.sent.sha256);
        expect(a.daemon.hasExited()).toBe(false);
      });
    } finally {
      await bed.exec(nsA, 'tc', ['qdisc', 'del', 'dev', veth, 'root'], { allowFailure: true });
      await bed.exec(nsA, 'nft', ['delete', 'table', 'inet', 'wgtscrash'], { allowFailure: true });
      await teardown(a, b);
    }
  }, 90_000);

  it('TUN write errors (the receiving TUN set down: EIO) never kill the daemon: drop_tun_write rises, traffic recovers', async () => {
    const [a, b] = await hosts(false);
    try {
      await withDiagnostics([a.daemon, b.daemon], async () => {
        await waitForPing(bed, nsA, b.overlay, 10_000);
        const before = (await b.daemon.stats())!;
        await bed.exec(nsB, 'ip', ['link', 'set', b.ifname, 'down']);
        // A still has the route and the session: its packets reach B's daemon, which cannot write them.
        const flood = await udpFlood(bed, nsA, b.overlay, 2 * MB);
        const lost = await ping(bed, nsA, b.overlay, { count: 5, intervalSeconds: 0.05, waitSeconds: 1 });
        const during = (await b.daemon.stats())!;
        expect(b.daemon.hasExited(), 'daemon alive while its TUN refuses writes').toBe(false);
        expect(lost.received, 'no replies while B’s TUN is down').toBe(0);
        await bed.exec(nsB, 'ip', ['link', 'set', b.ifname, 'up']);
        // Setting a link down flushes its addresses' routes on some kernels; make sure the address is back.
        await bed.exec(nsB, 'ip', ['addr', 'replace', `${b.overlay}/24`, 'dev', b.ifname]);
        await waitForPing(bed, nsA, b.overlay, 10_000);
        const r = await startTransfer(bed, { from: nsA, to: nsB, address: b.overlay, bytes: 10 * MB, timeoutMs: 30_000 }).then((t) => t.done());
        const tunDrops = during.drop_tun_write! - before.drop_tun_write!;
        process.stderr.write(
          `[crash] TUN write: ${JSON.stringify({ flood, tunDrops, recovered: `${r.received.bytes} B ${mbps(r.received)} Mbit/s`, statsB: nonZero(await b.daemon.stats()) })}\n`,
        );
        expect(tunDrops, 'drop_tun_write rose').toBeGreaterThan(100);
        expect(r.received.sha256).toBe(r.sent.sha256);
        expect(b.daemon.hasExited()).toBe(false);
      });
    } finally {
      await teardown(a, b);
    }
  }, 60_000);
});

/** Sends bytes of 1400-byte UDP datagrams to address:9 from ns as fast as the kernel takes them; resolves with datagrams sent. */
async function udpFlood(bed: Bed, ns: string, address: string, bytes: number): Promise<number> {
  const script = String.raw`
    const dgram = require('node:dgram');
    const s = dgram.createSocket('udp4');
    const buf = Buffer.alloc(1400, 0x5a);
    const total = Number(process.argv[2]);
    let sent = 0, inflight = 0, errors = 0;
    const pump = () => {
      while (sent * 1400 < total && inflight < 256) {
        inflight++; sent++;
        s.send(buf, 9, process.argv[1], (err) => { inflight--; if (err) errors++; if (sent * 1400 >= total && inflight === 0) { console.log(JSON.stringify({ sent, errors })); s.close(); } else pump(); });
      }
    };
    pump();`;
  const r = await bed.exec(ns, NODE, ['-e', script, address, String(bytes)], { timeoutMs: 30_000 });
  return (JSON.parse(r.stdout) as { sent: number }).sent;
}

/**
 * 1400-byte UDP datagrams to address:9 from ns, as fast as node:dgram queues them, until
 * stopped (or maxSeconds): a flood through the tunnel, for as long as the caller polls for its effect.
 */
function startFlood(bed: Bed, ns: string, address: string, maxSeconds = 20): TrackedProcess {
  const script = String.raw`
    const s = require('node:dgram').createSocket('udp4');
    const buf = Buffer.alloc(1400, 0x5a);
    const end = Date.now() + Number(process.argv[2]) * 1000;
    const tick = () => {
      for (let i = 0; i < 256; i++) s.send(buf, 9, process.argv[1]);
      if (Date.now() < end) setImmediate(tick); else process.exit(0);
    };
    s.on('error', () => {});
    tick();`;
  return bed.spawn(ns, NODE, ['-e', script, address, String(maxSeconds)]);
}
