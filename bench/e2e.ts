/**
 * End to end through real tunnels: two namespaces joined by one veth pair (198.18.n.0/24), a
 * WireGuard daemon at each end (the same implementation on both), and iperf3 and ping across the
 * overlay (100.64.0.1 ↔ 100.64.0.2, MTU 1420). Implementations, side by side in one run:
 *
 *   wireguard-go      Debian's wireguard-go (the reference)
 *   wgts-sodium       wgts as it runs by default on this machine: WGTS_CRYPTO=sodium, TUN offload
 *                     on (TSO split on TUN reads, coalesced GSO writes), WGTS_WORKERS=0 (crypto
 *                     inline, the default on 2 CPUs)
 *   wgts-noble        the same with WGTS_CRYPTO=noble
 *   wgts-sodium-w1    the same as wgts-sodium with one crypto worker thread
 *   wgts-no-offload   the same as wgts-sodium with WGTS_TUN_OFFLOAD=0: one packet per TUN read/write
 *
 * Every round runs each implementation once, the order rotating by one each round, and each run
 * brings a fresh tunnel up (new daemons, new keys, first handshake by ping), then measures:
 *
 *   TCP, 1 stream       iperf3 -c B -t D -J            receiver bits/s, sender retransmits
 *   TCP, 4 streams      iperf3 -c B -t D -J -P 4       receiver bits/s, sender retransmits
 *   UDP at 1 Gbit/s     iperf3 -c B -t D -J -u -b 1G -l 1372   delivered bits/s, loss %
 *   ping                ping -c 200 -i 0.01            average, median and p99 of the per-packet RTTs, twice:
 *                       on the idle tunnel (after the first handshake) and after the iperf3 tests
 *   memory              VmRSS (and VmHWM, the peak) of both daemons after the traffic
 *   CPU                 each daemon's CPU time (/proc/<pid>/stat) during each iperf3 test
 *   drops               kernel counters around the TCP 1-stream and UDP tests: A's TUN tx_dropped
 *                       (not read by the daemon in time), B's daemon-socket drops (/proc/net/udp)
 *                       and the rest of B's Udp RcvbufErrors (the iperf3 server's socket)
 *
 * Traffic flows A → B (A runs the iperf3 client and ping). A figure is the median over rounds;
 * the ratio to wireguard-go is the median of the per-round ratios (each wgts run against the
 * wireguard-go run of the same round). Once per run, before the rounds, the same veth without a
 * tunnel is measured as a baseline (TCP 1 stream, UDP at 1 Gbit/s, ping) over 198.18.n.2.
 *
 * Options (after `e2e`): --rounds N (default 3), --duration S (iperf3 seconds, default 10),
 * --pings N (default 200), --only id[,id…] (implementations; wireguard-go is always included),
 * --no-baseline. --quick: 1 round, 3 s tests, 50 pings.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import type { Environment } from './lib/env.ts';
import { describeEnvironment, environment } from './lib/env.ts';
import { fmt, fmtSummary, markdownTable } from './lib/format.ts';
import { stats } from './lib/measure.ts';
import type { Daemon, Implementation, Memory, VethPair } from './lib/netns.ts';
import { Bed, describeSourceState, exec, keyFile, newKeyPair, NODE, processMemory, sourceState, startDaemon, stopDaemon, waitFor, WGTS_CLI } from './lib/netns.ts';
import type { BenchOptions, BenchResult } from './lib/types.ts';
import { readOptions } from './lib/options.ts';

const REFERENCE = 'wireguard-go';

export const IMPLEMENTATIONS: readonly Implementation[] = [
  { id: 'wireguard-go', label: 'wireguard-go', kind: 'wireguard-go', env: { LOG_LEVEL: 'error' } },
  { id: 'wgts-sodium', label: 'wgts sodium', kind: 'wgts', env: { WGTS_CRYPTO: 'sodium', WGTS_WORKERS: '0', WGTS_TUN_OFFLOAD: '1', LOG_LEVEL: 'info' } },
  { id: 'wgts-noble', label: 'wgts noble', kind: 'wgts', env: { WGTS_CRYPTO: 'noble', WGTS_WORKERS: '0', WGTS_TUN_OFFLOAD: '1', LOG_LEVEL: 'info' } },
  { id: 'wgts-sodium-w1', label: 'wgts sodium, 1 worker', kind: 'wgts', env: { WGTS_CRYPTO: 'sodium', WGTS_WORKERS: '1', WGTS_TUN_OFFLOAD: '1', LOG_LEVEL: 'info' } },
  { id: 'wgts-no-offload', label: 'wgts sodium, no TUN offload', kind: 'wgts', env: { WGTS_CRYPTO: 'sodium', WGTS_WORKERS: '0', WGTS_TUN_OFFLOAD: '0', LOG_LEVEL: 'info' } },
];

export const OVERLAY = ['100.64.0.1', '100.64.0.2'] as const;
const MTU = 1420;
const PORT = 51820;
const IPERF_PORT = 5201;
const UDP_RATE = '1G';
const UDP_LENGTH = 1372; // + 8 UDP + 20 IPv4 = 1400 ≤ MTU

interface Settings {
  rounds: number;
  durationS: number;
  pings: number;
  only: string[] | undefined;
  baseline: boolean;
}

function settings(options: BenchOptions): Settings {
  const s: Settings = options.quick
    ? { rounds: 1, durationS: 3, pings: 50, only: undefined, baseline: true }
    : { rounds: 3, durationS: 10, pings: 200, only: undefined, baseline: true };
  readOptions(options.args, '--rounds N, --duration S, --pings N, --only id[,id…], --no-baseline', (option, value) => {
    if (option === '--rounds') s.rounds = value.positiveInt();
    else if (option === '--duration') s.durationS = value.positiveInt();
    else if (option === '--pings') s.pings = value.positiveInt();
    else if (option === '--no-baseline') s.baseline = false;
    else if (option === '--only') s.only = value.ids(IMPLEMENTATIONS.map((m) => m.id));
    else return false;
    return true;
  });
  return s;
}

// ---------------------------------------------------------------------------------------------
// Measurements

interface CpuTimes {
  readonly a: number;
  readonly b: number;
}

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** utime + stime of a process (all its threads), in seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After "pid (comm) ": state is field 3, utime 14, stime 15 → indices 11 and 12 here.
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

export interface IperfResult {
  /** Receiver bits/s (TCP: sum_received; UDP: what the server received). */
  readonly bitsPerSecond: number;
  /** TCP: sender retransmits; UDP: undefined. */
  readonly retransmits: number | undefined;
  /** UDP: offered (sender) bits/s and loss %. */
  readonly sentBitsPerSecond: number;
  readonly lossPercent: number | undefined;
  /** Daemon CPU during the test, in % of one core (undefined for the baseline). */
  readonly cpuPercent: CpuTimes | undefined;
}

interface PingResult {
  readonly sent: number;
  readonly received: number;
  readonly avgMs: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

interface IperfJson {
  error?: string;
  end?: {
    sum_sent?: { bits_per_second?: number; retransmits?: number };
    sum_received?: { bits_per_second?: number; lost_percent?: number };
  };
}

/** One iperf3 test from A to server on B (a one-off server, ready when its port listens). */
export async function iperf(
  bed: Bed,
  nsA: string,
  nsB: string,
  server: string,
  durationS: number,
  extra: readonly string[],
  daemons: readonly [Daemon, Daemon] | undefined,
): Promise<IperfResult> {
  const srv = bed.spawn(nsB, 'iperf3', ['-s', '-1', '-p', String(IPERF_PORT)]);
  try {
    await waitFor(
      async () => {
        if (srv.hasExited()) throw new Error(`iperf3 server exited: ${srv.log()}`);
        const r = await exec(nsB, 'ss', ['-Hltn', `sport = :${IPERF_PORT}`]);
        return r.stdout.includes('LISTEN');
      },
      { timeoutMs: 5_000, what: 'iperf3 server listening' },
    );
    const cpu0 = daemons?.map((d) => cpuSeconds(d.pid));
    const t0 = performance.now();
    const r = await exec(nsA, 'iperf3', ['-c', server, '-p', String(IPERF_PORT), '-t', String(durationS), '-J', '--connect-timeout', '5000', ...extra], {
      timeoutMs: (durationS + 30) * 1000,
      allowFailure: true,
    });
    const elapsed = (performance.now() - t0) / 1000;
    const cpu1 = daemons?.map((d) => cpuSeconds(d.pid));
    let json: IperfJson;
    try {
      json = JSON.parse(r.stdout) as IperfJson;
    } catch {
      throw new Error(`iperf3 ${extra.join(' ')}: exit ${r.code}, no JSON\n${r.stdout.slice(0, 2000)}\n${r.stderr}`);
    }
    if (r.code !== 0 || json.error) throw new Error(`iperf3 ${extra.join(' ')}: ${json.error ?? `exit ${r.code}`}`);
    const sent = json.end?.sum_sent;
    const received = json.end?.sum_received;
    if (!sent || !received || received.bits_per_second === undefined) throw new Error(`iperf3 ${extra.join(' ')}: no end.sum_sent/sum_received in its JSON`);
    const udp = extra.includes('-u');
    return {
      bitsPerSecond: received.bits_per_second,
      retransmits: udp ? undefined : sent.retransmits,
      sentBitsPerSecond: sent.bits_per_second ?? NaN,
      lossPercent: udp ? received.lost_percent : undefined,
      cpuPercent: cpu0 && cpu1 ? { a: ((cpu1[0]! - cpu0[0]!) / elapsed) * 100, b: ((cpu1[1]! - cpu0[1]!) / elapsed) * 100 } : undefined,
    };
  } finally {
    await bed.stop(srv, 2_000);
  }
}

/** count pings at 10 ms; RTT average and p99 (nearest rank) over the replies. */
export async function ping(nsA: string, target: string, count: number): Promise<PingResult> {
  const r = await exec(nsA, 'ping', ['-n', '-c', String(count), '-i', '0.01', '-W', '1', target], {
    timeoutMs: count * 10 + 15_000,
    allowFailure: true,
  });
  const times = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1])).sort((x, y) => x - y);
  if (times.length === 0) throw new Error(`ping ${target}: no replies\n${r.stdout}\n${r.stderr}`);
  const avg = times.reduce((s, t) => s + t, 0) / times.length;
  const rank = (q: number): number => times[Math.min(times.length - 1, Math.max(0, Math.ceil(q * times.length) - 1))]!;
  return { sent: count, received: times.length, avgMs: avg, p50Ms: rank(0.5), p99Ms: rank(0.99), maxMs: times[times.length - 1]! };
}

/**
 * Kernel counters that say where datagrams were lost: in each namespace the UDP MIB
 * (/proc/net/snmp: receive/send buffer overflows) and the TUN's drop counters (tx = packets the
 * kernel queued for the daemon but dropped because it did not read them in time).
 */
interface DropCounters {
  /** Drops counted on the daemon's own UDP socket(s) (port 51820, /proc/net/udp "drops"). */
  readonly daemonSocketDrops: number;
  readonly udpRcvbufErrors: number;
  readonly udpSndbufErrors: number;
  readonly tunTxDropped: number;
  readonly tunRxDropped: number;
}

async function dropCounters(ns: string, tun: string): Promise<DropCounters> {
  const snmp = (await exec(ns, 'cat', ['/proc/net/snmp'])).stdout.split('\n').filter((l) => l.startsWith('Udp:'));
  const names = (snmp[0] ?? '').split(/\s+/);
  const values = (snmp[1] ?? '').split(/\s+/).map(Number);
  const udp = (name: string): number => values[names.indexOf(name)] ?? NaN;
  const link = JSON.parse((await exec(ns, 'ip', ['-j', '-s', 'link', 'show', 'dev', tun])).stdout) as Array<{
    stats64?: { rx?: { dropped?: number }; tx?: { dropped?: number } };
  }>;
  const port = PORT.toString(16).toUpperCase().padStart(4, '0');
  let daemonSocketDrops = 0;
  for (const file of ['/proc/net/udp', '/proc/net/udp6']) {
    for (const line of (await exec(ns, 'cat', [file])).stdout.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[1]?.endsWith(`:${port}`)) daemonSocketDrops += Number(f[f.length - 1]);
    }
  }
  return {
    daemonSocketDrops,
    udpRcvbufErrors: udp('RcvbufErrors'),
    udpSndbufErrors: udp('SndbufErrors'),
    tunTxDropped: link[0]?.stats64?.tx?.dropped ?? NaN,
    tunRxDropped: link[0]?.stats64?.rx?.dropped ?? NaN,
  };
}

function diffCounters(after: DropCounters, before: DropCounters): DropCounters {
  return {
    daemonSocketDrops: after.daemonSocketDrops - before.daemonSocketDrops,
    udpRcvbufErrors: after.udpRcvbufErrors - before.udpRcvbufErrors,
    udpSndbufErrors: after.udpSndbufErrors - before.udpSndbufErrors,
    tunTxDropped: after.tunTxDropped - before.tunTxDropped,
    tunRxDropped: after.tunRxDropped - before.tunRxDropped,
  };
}

// ---------------------------------------------------------------------------------------------
// One implementation, one round

interface Sample {
  readonly impl: string;
  readonly round: number;
  /** From bringing the daemons up to the first ping answered (includes the first handshake). */
  readonly setupMs: number;
  /** What the wgts daemon said it runs ("interface up" log line), for the record. */
  readonly daemonInfo: string | undefined;
  /** Pings right after the first handshake, before any bulk traffic. */
  readonly pingIdle: PingResult;
  readonly tcp1: IperfResult;
  /** Kernel drop counters over the TCP 1-stream test, per end. */
  readonly tcp1Drops: { readonly a: DropCounters; readonly b: DropCounters };
  readonly tcp4: IperfResult;
  readonly udp: IperfResult;
  /** Kernel drop counters over the UDP test, per end (A: sender, B: receiver). */
  readonly udpDrops: { readonly a: DropCounters; readonly b: DropCounters };
  readonly ping: PingResult;
  readonly memory: { readonly a: Memory; readonly b: Memory };
  /** `wgts show --json` of both ends after the traffic (wgts only): drops by reason etc. */
  readonly counters: readonly [unknown, unknown] | undefined;
}

interface Failure {
  readonly impl: string;
  readonly round: number;
  readonly error: string;
}

export async function configure(bed: Bed, d: Daemon, key: string, peerPublic: string, peerEndpoint: string, self: string, peer: string): Promise<void> {
  const dir = bed.tempDir();
  const file = keyFile(dir, 'private', key);
  await exec(d.ns, 'wg', ['set', d.ifname, 'listen-port', String(PORT), 'private-key', file, 'peer', peerPublic, 'endpoint', peerEndpoint, 'allowed-ips', `${peer}/32`]);
  await exec(d.ns, 'ip', ['addr', 'add', `${self}/24`, 'dev', d.ifname]);
  await exec(d.ns, 'ip', ['link', 'set', d.ifname, 'mtu', String(MTU), 'up']);
}

/** The "interface up" line of a wgts daemon's log, e.g. "crypto=sodium workers=0 offload=true". */
function wgtsInfo(d: Daemon): string | undefined {
  for (const line of d.process.log(64 * 1024).split('\n')) {
    if (!line.includes('interface up')) continue;
    try {
      const rec = JSON.parse(line) as { crypto?: string; workers?: number; offload?: boolean };
      return `crypto=${rec.crypto} workers=${rec.workers} offload=${rec.offload}`;
    } catch {
      return line.trim();
    }
  }
  return undefined;
}

export async function wgtsCounters(d: Daemon): Promise<unknown> {
  const r = await exec(d.ns, NODE, [WGTS_CLI, 'show', d.ifname, '--json'], { allowFailure: true });
  try {
    return JSON.parse(r.stdout) as unknown;
  } catch {
    return { error: (r.stderr || r.stdout).trim() };
  }
}

/**
 * Brings a fresh tunnel of impl up between link's namespaces — new daemons named prefix…, new
 * keys, the first ping makes the handshake — and runs body with its two ends and how long that
 * took. The daemons are stopped whatever happens; an error carries both daemons' log tails, and
 * a daemon that exited during body is an error.
 */
export async function withTunnel<T>(
  bed: Bed,
  link: VethPair,
  impl: Implementation,
  prefix: string,
  body: (a: Daemon, b: Daemon, setupMs: number) => Promise<T>,
): Promise<T> {
  const t0 = performance.now();
  const daemons: Daemon[] = [];
  try {
    daemons.push(await startDaemon(bed, link.a.ns, impl, bed.ifname(prefix)));
    daemons.push(await startDaemon(bed, link.b.ns, impl, bed.ifname(prefix)));
    const [a, b] = daemons as [Daemon, Daemon];
    const keys = [newKeyPair(), newKeyPair()] as const;
    await configure(bed, a, keys[0].privateKey, keys[1].publicKey, `${link.b.address4}:${PORT}`, OVERLAY[0], OVERLAY[1]);
    await configure(bed, b, keys[1].privateKey, keys[0].publicKey, `${link.a.address4}:${PORT}`, OVERLAY[1], OVERLAY[0]);
    await waitFor(async () => (await exec(a.ns, 'ping', ['-n', '-c', '1', '-W', '1', OVERLAY[1]], { allowFailure: true })).code === 0, {
      timeoutMs: 20_000,
      intervalMs: 50,
      what: `first ping through ${impl.label}`,
    });
    const result = await body(a, b, performance.now() - t0);
    for (const d of daemons) if (d.process.hasExited()) throw new Error(`${impl.label} ${d.ifname} exited during the run:\n${d.process.log()}`);
    return result;
  } catch (err) {
    const logs = daemons.map((d) => `--- ${d.ifname} (${d.ns}) log tail ---\n${d.process.log(2048)}`).join('\n');
    throw new Error(`${(err as Error).message}\n${logs}`);
  } finally {
    for (const d of daemons) await stopDaemon(bed, d);
  }
}

async function runOne(bed: Bed, link: VethPair, impl: Implementation, round: number, s: Settings): Promise<Sample> {
  return withTunnel(bed, link, impl, 'wb', async (a, b, setupMs) => {
    let daemonInfo: string | undefined;
    if (impl.kind === 'wgts') {
      daemonInfo = wgtsInfo(a);
      const want = `crypto=${impl.env.WGTS_CRYPTO} workers=${impl.env.WGTS_WORKERS} offload=${impl.env.WGTS_TUN_OFFLOAD !== '0'}`;
      if (daemonInfo !== want) throw new Error(`${impl.label}: the daemon reports "${daemonInfo}", expected "${want}"`);
    }
    const pair = [a, b] as const;
    process.stderr.write(`    ${s.pings} pings on the idle tunnel…`);
    const pingIdle = await ping(a.ns, OVERLAY[1], s.pings);
    process.stderr.write(` avg ${fmt(pingIdle.avgMs)} ms, median ${fmt(pingIdle.p50Ms)} ms, p99 ${fmt(pingIdle.p99Ms)} ms, ${pingIdle.received}/${pingIdle.sent} answered\n`);
    const step = (what: string): void => void process.stderr.write(`    ${what}…`);
    const done = (text: string): void => void process.stderr.write(` ${text}\n`);
    step('TCP 1 stream');
    const beforeTcp = [await dropCounters(a.ns, a.ifname), await dropCounters(b.ns, b.ifname)] as const;
    const tcp1 = await iperf(bed, a.ns, b.ns, OVERLAY[1], s.durationS, [], pair);
    const tcp1Drops = {
      a: diffCounters(await dropCounters(a.ns, a.ifname), beforeTcp[0]),
      b: diffCounters(await dropCounters(b.ns, b.ifname), beforeTcp[1]),
    };
    done(
      `${fmt(tcp1.bitsPerSecond / 1e6)} Mbit/s, ${tcp1.retransmits} retransmits; ` +
        `A: TUN tx_dropped ${tcp1Drops.a.tunTxDropped}, B: daemon socket drops ${tcp1Drops.b.daemonSocketDrops}`,
    );
    step('TCP 4 streams');
    const tcp4 = await iperf(bed, a.ns, b.ns, OVERLAY[1], s.durationS, ['-P', '4'], pair);
    done(`${fmt(tcp4.bitsPerSecond / 1e6)} Mbit/s, ${tcp4.retransmits} retransmits`);
    step(`UDP at ${UDP_RATE}bit/s`);
    const before = [await dropCounters(a.ns, a.ifname), await dropCounters(b.ns, b.ifname)] as const;
    const udp = await iperf(bed, a.ns, b.ns, OVERLAY[1], s.durationS, ['-u', '-b', UDP_RATE, '-l', String(UDP_LENGTH)], pair);
    const udpDrops = {
      a: diffCounters(await dropCounters(a.ns, a.ifname), before[0]),
      b: diffCounters(await dropCounters(b.ns, b.ifname), before[1]),
    };
    done(
      `${fmt(udp.bitsPerSecond / 1e6)} Mbit/s delivered (${fmt(udp.sentBitsPerSecond / 1e6)} sent), ${fmt(udp.lossPercent ?? NaN)} % lost; ` +
        `A: TUN tx_dropped ${udpDrops.a.tunTxDropped}, B: daemon socket drops ${udpDrops.b.daemonSocketDrops} of UDP RcvbufErrors ${udpDrops.b.udpRcvbufErrors}`,
    );
    step(`${s.pings} pings after the traffic`);
    const pingResult = await ping(a.ns, OVERLAY[1], s.pings);
    done(`avg ${fmt(pingResult.avgMs)} ms, median ${fmt(pingResult.p50Ms)} ms, p99 ${fmt(pingResult.p99Ms)} ms, ${pingResult.received}/${pingResult.sent} answered`);
    const memory = { a: processMemory(a.pid), b: processMemory(b.pid) };
    const counters = impl.kind === 'wgts' ? ([await wgtsCounters(a), await wgtsCounters(b)] as const) : undefined;
    return { impl: impl.id, round, setupMs, daemonInfo, pingIdle, tcp1, tcp1Drops, tcp4, udp, udpDrops, ping: pingResult, memory, counters };
  });
}

// ---------------------------------------------------------------------------------------------
// Report

interface Metric {
  readonly title: string;
  readonly unit: string;
  readonly get: (s: Sample) => number | undefined;
  /** Whether more is better (for reading the ratio). */
  readonly higherIsBetter: boolean;
  /** Show a ratio column value (false for counts that are often 0). */
  readonly ratio: boolean;
}

/** MB = 10^6 bytes; /proc reports KiB. */
const MB = (kib: number): number => (kib * 1024) / 1e6;
const METRICS: readonly Metric[] = [
  { title: 'TCP, 1 stream', unit: 'Mbit/s', get: (s) => s.tcp1.bitsPerSecond / 1e6, higherIsBetter: true, ratio: true },
  { title: 'TCP, 1 stream: retransmits', unit: 'segments', get: (s) => s.tcp1.retransmits, higherIsBetter: false, ratio: false },
  { title: 'TCP, 1 stream: dropped at A\'s TUN queue', unit: 'packets', get: (s) => s.tcp1Drops.a.tunTxDropped, higherIsBetter: false, ratio: false },
  { title: 'TCP, 1 stream: dropped at B\'s daemon socket', unit: 'packets', get: (s) => s.tcp1Drops.b.daemonSocketDrops, higherIsBetter: false, ratio: false },
  { title: 'TCP, 4 streams', unit: 'Mbit/s', get: (s) => s.tcp4.bitsPerSecond / 1e6, higherIsBetter: true, ratio: true },
  { title: 'TCP, 4 streams: retransmits', unit: 'segments', get: (s) => s.tcp4.retransmits, higherIsBetter: false, ratio: false },
  { title: 'UDP offered at 1 Gbit/s: delivered', unit: 'Mbit/s', get: (s) => s.udp.bitsPerSecond / 1e6, higherIsBetter: true, ratio: true },
  { title: 'UDP offered at 1 Gbit/s: lost', unit: '%', get: (s) => s.udp.lossPercent, higherIsBetter: false, ratio: false },
  { title: 'UDP: sent by iperf3 (of 1 Gbit/s offered)', unit: 'Mbit/s', get: (s) => s.udp.sentBitsPerSecond / 1e6, higherIsBetter: true, ratio: false },
  { title: 'UDP: dropped at A\'s TUN queue (daemon too slow)', unit: 'packets', get: (s) => s.udpDrops.a.tunTxDropped, higherIsBetter: false, ratio: false },
  { title: 'UDP: dropped at B\'s daemon socket (receive buffer full)', unit: 'packets', get: (s) => s.udpDrops.b.daemonSocketDrops, higherIsBetter: false, ratio: false },
  { title: 'UDP: dropped at B\'s iperf3 socket (receive buffer full)', unit: 'packets', get: (s) => s.udpDrops.b.udpRcvbufErrors - s.udpDrops.b.daemonSocketDrops, higherIsBetter: false, ratio: false },
  { title: 'ping, idle tunnel: average', unit: 'ms', get: (s) => s.pingIdle.avgMs, higherIsBetter: false, ratio: true },
  { title: 'ping, idle tunnel: median', unit: 'ms', get: (s) => s.pingIdle.p50Ms, higherIsBetter: false, ratio: true },
  { title: 'ping, idle tunnel: p99', unit: 'ms', get: (s) => s.pingIdle.p99Ms, higherIsBetter: false, ratio: true },
  { title: 'ping, after the traffic: average', unit: 'ms', get: (s) => s.ping.avgMs, higherIsBetter: false, ratio: true },
  { title: 'ping, after the traffic: median', unit: 'ms', get: (s) => s.ping.p50Ms, higherIsBetter: false, ratio: true },
  { title: 'ping, after the traffic: p99', unit: 'ms', get: (s) => s.ping.p99Ms, higherIsBetter: false, ratio: true },
  { title: 'RSS after traffic, A (sender)', unit: 'MB', get: (s) => MB(s.memory.a.rssKiB), higherIsBetter: false, ratio: true },
  { title: 'RSS after traffic, B (receiver)', unit: 'MB', get: (s) => MB(s.memory.b.rssKiB), higherIsBetter: false, ratio: true },
  { title: 'peak RSS (VmHWM), max of A and B', unit: 'MB', get: (s) => MB(Math.max(s.memory.a.hwmKiB, s.memory.b.hwmKiB)), higherIsBetter: false, ratio: true },
  { title: 'tunnel up: daemons started to first ping', unit: 'ms', get: (s) => s.setupMs, higherIsBetter: false, ratio: true },
  { title: 'daemon CPU in TCP 1 stream, A + B', unit: '% of a core', get: (s) => (s.tcp1.cpuPercent ? s.tcp1.cpuPercent.a + s.tcp1.cpuPercent.b : undefined), higherIsBetter: false, ratio: true },
  { title: 'daemon CPU in UDP 1 Gbit/s, A + B', unit: '% of a core', get: (s) => (s.udp.cpuPercent ? s.udp.cpuPercent.a + s.udp.cpuPercent.b : undefined), higherIsBetter: false, ratio: true },
];

/** Median over rounds of impl's figure / wireguard-go's figure in the same round. */
function medianRatio(samples: readonly Sample[], impl: string, metric: Metric): number | undefined {
  const ratios: number[] = [];
  for (const s of samples) {
    if (s.impl !== impl) continue;
    const ref = samples.find((r) => r.impl === REFERENCE && r.round === s.round);
    const x = metric.get(s);
    const y = ref === undefined ? undefined : metric.get(ref);
    if (x !== undefined && y !== undefined && y !== 0 && Number.isFinite(x / y)) ratios.push(x / y);
  }
  return ratios.length === 0 ? undefined : stats(ratios).median;
}

interface Goal {
  readonly text: string;
  readonly impl: string;
  readonly ratio: number | undefined;
  readonly met: boolean | undefined;
}

export async function run(options: BenchOptions): Promise<BenchResult> {
  const s = settings(options);
  const impls = IMPLEMENTATIONS.filter((m) => m.id === REFERENCE || s.only === undefined || s.only.includes(m.id));
  const env: Environment = environment(['sodium-native', '@noble/ciphers', '@noble/curves']);
  const load0 = os.loadavg();
  const out = (line: string): void => void process.stdout.write(line + '\n');
  const tools = {
    iperf3: (await exec(undefined, 'iperf3', ['--version'], { allowFailure: true })).stdout.split('\n')[0]!.trim(),
    'wireguard-go': (await exec(undefined, 'wireguard-go', ['--version'], { allowFailure: true })).stdout.split('\n')[0]!.trim(),
    kernel: os.release(),
  };
  out(`wgts end-to-end benchmark${options.quick ? ' (--quick: smoke run, do not quote)' : ''}`);
  out(describeEnvironment(env));
  const source = await sourceState();
  out(`${tools.iperf3}; ${tools['wireguard-go']}`);
  out(describeSourceState(source));
  out(`${s.rounds} round(s) × ${impls.length} implementations, iperf3 ${s.durationS} s per test, ${s.pings} pings; order rotates each round`);
  out('');

  const bed = new Bed('e2e');
  const samples: Sample[] = [];
  const failures: Failure[] = [];
  let baseline: { tcp1: IperfResult; udp: IperfResult; ping: PingResult } | undefined;
  try {
    await bed.sweepStale();
    const nsA = await bed.namespace('a');
    const nsB = await bed.namespace('b');
    const link = await bed.veth(nsA, nsB);
    if (s.baseline) {
      process.stderr.write(`baseline: the veth without a tunnel (${link.a.address4} → ${link.b.address4})\n`);
      const tcp1 = await iperf(bed, nsA, nsB, link.b.address4, s.durationS, [], undefined);
      process.stderr.write(`    TCP 1 stream: ${fmt(tcp1.bitsPerSecond / 1e6)} Mbit/s, ${tcp1.retransmits} retransmits\n`);
      const udp = await iperf(bed, nsA, nsB, link.b.address4, s.durationS, ['-u', '-b', UDP_RATE, '-l', String(UDP_LENGTH)], undefined);
      process.stderr.write(`    UDP: ${fmt(udp.bitsPerSecond / 1e6)} Mbit/s delivered, ${fmt(udp.lossPercent ?? NaN)} % lost\n`);
      const p = await ping(nsA, link.b.address4, s.pings);
      process.stderr.write(`    ping: avg ${fmt(p.avgMs)} ms, median ${fmt(p.p50Ms)} ms, p99 ${fmt(p.p99Ms)} ms\n`);
      baseline = { tcp1, udp, ping: p };
    }
    for (let round = 0; round < s.rounds; round++) {
      for (let i = 0; i < impls.length; i++) {
        const impl = impls[(i + round) % impls.length]!;
        process.stderr.write(`round ${round + 1}/${s.rounds}: ${impl.label}\n`);
        try {
          samples.push(await runOne(bed, link, impl, round, s));
        } catch (err) {
          if (bed.interrupted) throw err;
          const error = (err as Error).message;
          failures.push({ impl: impl.id, round, error });
          process.stderr.write(`\n  FAILED: ${error}\n`);
        }
      }
    }
  } finally {
    await bed.cleanup();
  }
  const load1 = os.loadavg();

  // The table: one row per metric, one column per implementation (+ its ratio to wireguard-go).
  const others = impls.filter((m) => m.id !== REFERENCE);
  const ref = impls.find((m) => m.id === REFERENCE)!;
  const header = ['Measurement', 'Unit', ref.label, ...others.flatMap((m) => [m.label, '×wg-go'])];
  const right = [false, false, true, ...others.flatMap(() => [true, true])];
  const rows = METRICS.map((metric) => {
    const col = (impl: string): string => fmtSummary(samples.filter((x) => x.impl === impl).map(metric.get));
    return [
      metric.title,
      metric.unit,
      col(REFERENCE),
      ...others.flatMap((m) => {
        const r = metric.ratio ? medianRatio(samples, m.id, metric) : undefined;
        return [col(m.id), r === undefined ? '–' : `${fmt(r)}×`];
      }),
    ];
  });
  const table = markdownTable(header, rows, right);

  const tcpRatio = (id: string): number | undefined => medianRatio(samples, id, METRICS[0]!);
  const metric = (title: string): Metric => METRICS.find((m) => m.title === title)!;
  const goals: Goal[] = [];
  for (const id of ['wgts-sodium', 'wgts-sodium-w1']) {
    if (!impls.some((m) => m.id === id)) continue;
    const label = impls.find((m) => m.id === id)!.label;
    const t = tcpRatio(id);
    goals.push({ text: `${label}: TCP 1 stream ≥ 1.0× wireguard-go (aim 1.5×)`, impl: id, ratio: t, met: t === undefined ? undefined : t >= 1.0 });
    for (const [when, title] of [['idle tunnel', 'ping, idle tunnel: average'], ['after the traffic', 'ping, after the traffic: average']] as const) {
      const p = medianRatio(samples, id, metric(title));
      goals.push({ text: `${label}: ping average (${when}) ≤ wireguard-go's`, impl: id, ratio: p, met: p === undefined ? undefined : p <= 1.0 });
    }
  }

  out('');
  out(table);
  out('');
  out(`Figures: median (min–max) over ${s.rounds} round(s). ×wg-go: the median over rounds of (implementation ÷ wireguard-go in the same round);`);
  out('above 1 is better for Mbit/s, below 1 is better for ms, MB and CPU. MB = 10^6 bytes.');
  if (baseline) {
    out('');
    out(`Baseline, the same veth without a tunnel (once, before the rounds): TCP 1 stream ${fmt(baseline.tcp1.bitsPerSecond / 1e6)} Mbit/s ` +
      `(${baseline.tcp1.retransmits} retransmits); UDP at 1 Gbit/s ${fmt(baseline.udp.bitsPerSecond / 1e6)} Mbit/s delivered, ` +
      `${fmt(baseline.udp.lossPercent ?? NaN)} % lost; ping average ${fmt(baseline.ping.avgMs)} ms, median ${fmt(baseline.ping.p50Ms)} ms, p99 ${fmt(baseline.ping.p99Ms)} ms.`);
  }
  out('');
  out('Goals (judged on the median of per-round ratios to wireguard-go):');
  for (const g of goals) out(`  ${g.met === undefined ? '–      ' : g.met ? 'met    ' : 'NOT met'}  ${g.text}${g.ratio === undefined ? ' (not measured)' : `: ${fmt(g.ratio)}×`}`);
  if (failures.length > 0) {
    out('');
    out(`${failures.length} run(s) FAILED:`);
    for (const f of failures) out(`  round ${f.round + 1}, ${f.impl}: ${f.error.split('\n')[0]}`);
  }
  const la = (l: number[]): string => l.map((x) => x.toFixed(2)).join(' / ');
  out('');
  out(`load average (1 / 5 / 15 min) ${la(load0)} at start, ${la(load1)} at end`);

  return { environment: env, tools, source, settings: s, loadavgAtStart: load0, loadavgAtEnd: load1, baseline, samples, failures, goals, table };
}
