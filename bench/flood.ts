/**
 * Handshake flood: how much handshake work a wgts victim does under a flood of initiations, and
 * how long a legitimate peer then takes to get a session (npm run bench -- flood).
 *
 *   legit  (wgts)          ─┐
 *   legit2 (wireguard-go)  ─┼─ victim (wgts)  ── route 198.18.128.0/17 via the attacker
 *   attacker               ─┘   (every address of it local there: ip route add local … dev lo)
 *
 * Phases, each with a freshly started victim (so its cookie secret is new and no load carries
 * over) and, under a flood, 3 s of it before measuring; each of `rounds` rounds: both legitimate peers drop their session (`wg set … peer remove`
 * and add it back) and ping the victim through the tunnel until a reply comes — the time to it is
 * the handshake latency — while the victim's counters and CPU are read over the same window.
 *
 * - no flood: the baseline latency.
 * - MAC1 only: initiations with a valid MAC1 and no MAC2 from 32,768 spoofed sources. Under load
 *   the victim answers them with cookie replies; X25519 work (handshakes processed) stays near 0.
 * - MAC1 + MAC2, 64 sources: the attacker first collects a cookie for each source (it receives at
 *   them), so its initiations pass the cookie check; the per-source token bucket (20/s, burst 5)
 *   then caps the X25519 work at about 64 × 20/s (plus what passes unchecked in the moments the
 *   victim is not under load: with most of the flood rate-limited cheaply its queue stays short).
 * - MAC1 + MAC2, 4,096 sources: the same with enough sources that the rate limit no longer binds:
 *   X25519 work runs at the victim's capacity, and the queue overflows (the figure is the victim's
 *   handshake-processing throughput).
 *
 * The flood generator is test/netns/helpers/flood.ts, run as a script in the attacker's namespace
 * (spawned by path, not imported, like any other tool the benchmark runs).
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { readStats } from '../src/device/uapi-client.ts';
import { describeEnvironment, environment } from './lib/env.ts';
import { fmt, fmtRange, markdownTable } from './lib/format.ts';
import type { Daemon, Implementation, Tracked } from './lib/netns.ts';
import { Bed, describeSourceState, exec, keyFile, newKeyPair, REPO_ROOT, sourceState, startDaemon, stopDaemon, waitFor } from './lib/netns.ts';
import type { BenchOptions, BenchResult } from './lib/types.ts';
import { readOptions } from './lib/options.ts';

const FLOOD_SCRIPT = join(REPO_ROOT, 'test/netns/helpers/flood.ts');
const PORT = 51820;
const SPOOF_RANGE = '198.18.128.0/17';
const SPOOF_BASE = '198.18.128.0';
const INNER = { victim: '100.64.0.1', legit: '100.64.0.2', legit2: '100.64.0.3' } as const;
const UNDER_LOAD_AFTER_TIME = 1_000;
/** Flood time before the first round. */
const WARM_UP_MS = 3_000;
const CLK_TCK = 100;

const WGTS: Implementation = { id: 'wgts', label: 'wgts', kind: 'wgts', env: { LOG_LEVEL: 'info' } };
const WIREGUARD_GO: Implementation = { id: 'wireguard-go', label: 'wireguard-go', kind: 'wireguard-go', env: { LOG_LEVEL: 'error' } };

interface Settings {
  rounds: number;
  rate: number;
  /** Give up on a legitimate handshake after this long (reported as "> N s"). */
  legitTimeoutMs: number;
  /** Rounds of the 4,096-source MAC2 phase (each may take legitTimeoutMs; cookies last 120 s). */
  mac2ManyRounds: number;
}

function settings(options: BenchOptions): Settings {
  const s: Settings = options.quick
    ? { rounds: 1, rate: 20_000, legitTimeoutMs: 12_000, mac2ManyRounds: 1 }
    : { rounds: 5, rate: 20_000, legitTimeoutMs: 20_000, mac2ManyRounds: 3 };
  readOptions(options.args, '--rounds N, --rate N, --legit-timeout-ms N, --mac2-many-rounds N', (option, value) => {
    if (option === '--rounds') s.rounds = value.positiveInt();
    else if (option === '--rate') s.rate = value.positiveInt();
    else if (option === '--legit-timeout-ms') s.legitTimeoutMs = value.positiveInt();
    else if (option === '--mac2-many-rounds') s.mac2ManyRounds = value.positiveInt();
    else return false;
    return true;
  });
  return s;
}

// ---------------------------------------------------------------------------------------------
// The flood script (test/netns/helpers/flood.ts): JSON config in argv, JSON events in its log.

interface FloodConfig {
  readonly mode: 'mac1' | 'mac2';
  readonly target: string;
  readonly victimPublicKey: string;
  readonly sourceBase: string;
  readonly sourceCount: number;
  readonly rate: number;
  readonly durationMs: number;
  readonly pool?: number;
}

interface FloodEvent {
  readonly event: string;
  readonly sent?: number;
  readonly rate?: number;
  readonly sources?: number;
  readonly ms?: number;
  readonly unsourced?: number;
  readonly received?: Record<string, number>;
}

class FloodProcess {
  readonly proc: Tracked;

  constructor(proc: Tracked) {
    this.proc = proc;
  }

  events(): FloodEvent[] {
    return this.proc
      .log(1 << 20)
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .flatMap((l) => {
        try {
          return [JSON.parse(l) as FloodEvent];
        } catch {
          return [];
        }
      });
  }

  find(event: string): FloodEvent | undefined {
    return this.events().findLast((e) => e.event === event);
  }

  async stop(bed: Bed): Promise<FloodEvent> {
    await bed.stop(this.proc);
    const done = this.find('done');
    if (!done) throw new Error(`flood ended without a summary:\n${this.proc.log()}`);
    return done;
  }
}

async function startFlood(bed: Bed, ns: string, config: FloodConfig): Promise<FloodProcess> {
  const flood = new FloodProcess(bed.spawn(ns, process.execPath, ['--disable-warning=ExperimentalWarning', FLOOD_SCRIPT, JSON.stringify(config)]));
  await waitFor(
    () => {
      if (flood.find('flooding')) return true;
      if (flood.proc.hasExited()) throw new Error(`flood exited:\n${flood.proc.log()}`);
      return false;
    },
    { timeoutMs: 60_000, intervalMs: 20, what: `the ${config.mode} flood to start` },
  );
  return flood;
}

// ---------------------------------------------------------------------------------------------
// Measurements

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/** Pings target from ns, one echo at a time (1 s wait each), until a reply; ms to it, or undefined after timeoutMs. */
async function firstReplyMs(ns: string, target: string, timeoutMs: number): Promise<number | undefined> {
  const start = performance.now();
  while (performance.now() - start < timeoutMs) {
    const r = await exec(ns, 'ping', ['-n', '-c', '1', '-W', '1', target], { allowFailure: true, timeoutMs: 5_000 });
    if (r.code === 0) return performance.now() - start;
  }
  return undefined;
}

interface Round {
  readonly phase: string;
  readonly round: number;
  readonly seconds: number;
  readonly processedPerSecond: number;
  readonly cookiesPerSecond: number;
  readonly rateLimitedPerSecond: number;
  readonly queueFullPerSecond: number;
  readonly cores: number;
  /** ms to the first ping reply through a fresh session; undefined: none within legitTimeoutMs. */
  readonly legitWgtsMs: number | undefined;
  readonly legitWireguardGoMs: number | undefined;
}

interface Phase {
  readonly id: string;
  readonly title: string;
  readonly sources: number | undefined;
  readonly flood: FloodEvent | undefined;
  readonly cookies: FloodEvent | undefined;
  readonly rounds: Round[];
}

// ---------------------------------------------------------------------------------------------

export async function run(options: BenchOptions): Promise<BenchResult> {
  const s = settings(options);
  const env = environment(['sodium-native']);
  const load0 = os.loadavg();
  const out = (line: string): void => void process.stdout.write(line + '\n');
  const note = (line: string): void => void process.stderr.write(line + '\n');
  const source = await sourceState();
  const goVersion = (await exec(undefined, 'wireguard-go', ['--version'], { allowFailure: true })).stdout.split('\n')[0]!.trim();
  out(`wgts handshake flood benchmark${options.quick ? ' (--quick: smoke run, do not quote)' : ''}`);
  out(describeEnvironment(env));
  out(`${goVersion}; kernel ${os.release()}`);
  out(describeSourceState(source));
  out(`${s.rounds} round(s) per phase (${s.mac2ManyRounds} for 4,096 MAC2 sources), floods offered at ${fmt(s.rate)}/s`);
  out('');

  const bed = new Bed('fld');
  const phases: Phase[] = [];
  try {
    await bed.sweepStale();
    const nsV = await bed.namespace('v');
    const nsL = await bed.namespace('l');
    const nsG = await bed.namespace('g');
    const nsX = await bed.namespace('x');
    const toL = await bed.veth(nsV, nsL);
    const toG = await bed.veth(nsV, nsG);
    const toX = await bed.veth(nsV, nsX);
    await exec(nsX, 'ip', ['route', 'add', 'local', SPOOF_RANGE, 'dev', 'lo']);
    await exec(nsX, 'sysctl', ['-q', '-w', 'net.ipv4.conf.all.arp_announce=2']);
    await exec(nsV, 'ip', ['route', 'add', SPOOF_RANGE, 'via', toX.b.address4]);

    const keys = { victim: newKeyPair(), legit: newKeyPair(), legit2: newKeyPair() };
    const dir = bed.tempDir();
    const setUp = async (d: Daemon, self: string, privateKey: string, peers: string[][]): Promise<void> => {
      const args = ['set', d.ifname, 'listen-port', String(PORT), 'private-key', keyFile(dir, `${d.ifname}.key`, privateKey)];
      for (const peer of peers) args.push('peer', ...peer);
      await exec(d.ns, 'wg', args);
      await exec(d.ns, 'ip', ['addr', 'add', `${self}/24`, 'dev', d.ifname]);
      await exec(d.ns, 'ip', ['link', 'set', d.ifname, 'up']);
    };
    const legitPeers = [
      { d: undefined as Daemon | undefined, ns: nsL, impl: WGTS, key: keys.legit, inner: INNER.legit, victimEndpoint: `${toL.a.address4}:${PORT}` },
      { d: undefined as Daemon | undefined, ns: nsG, impl: WIREGUARD_GO, key: keys.legit2, inner: INNER.legit2, victimEndpoint: `${toG.a.address4}:${PORT}` },
    ];
    for (const p of legitPeers) {
      p.d = await startDaemon(bed, p.ns, p.impl, bed.ifname(p.impl.kind === 'wgts' ? 'fl' : 'fg'));
      await setUp(p.d, p.inner, p.key.privateKey, [[keys.victim.publicKey, 'endpoint', p.victimEndpoint, 'allowed-ips', `${INNER.victim}/32`]]);
    }
    let victim: Daemon | undefined;
    const restartVictim = async (): Promise<Daemon> => {
      if (victim) await stopDaemon(bed, victim);
      victim = await startDaemon(bed, nsV, WGTS, bed.ifname('fv'));
      await setUp(victim, INNER.victim, keys.victim.privateKey, [
        [keys.legit.publicKey, 'allowed-ips', `${INNER.legit}/32`],
        [keys.legit2.publicKey, 'allowed-ips', `${INNER.legit2}/32`],
      ]);
      return victim;
    };
    /** Both legitimate peers forget their session (remove the victim and add it back). */
    const resetLegit = async (): Promise<void> => {
      for (const p of legitPeers) {
        await exec(p.ns, 'wg', ['set', p.d!.ifname, 'peer', keys.victim.publicKey, 'remove']);
        await exec(p.ns, 'wg', ['set', p.d!.ifname, 'peer', keys.victim.publicKey, 'endpoint', p.victimEndpoint, 'allowed-ips', `${INNER.victim}/32`]);
      }
    };
    const measureRound = async (phase: string, round: number, v: Daemon): Promise<Round> => {
      await resetLegit();
      const s0 = await readStats(v.ifname);
      const c0 = cpuSeconds(v.pid);
      const t0 = performance.now();
      const [a, b] = await Promise.all(legitPeers.map((p) => firstReplyMs(p.ns, INNER.victim, s.legitTimeoutMs)));
      const seconds = (performance.now() - t0) / 1000;
      const s1 = await readStats(v.ifname);
      const cores = (cpuSeconds(v.pid) - c0) / seconds;
      const per = (key: string): number => ((s1[key] ?? 0) - (s0[key] ?? 0)) / seconds;
      const r: Round = {
        phase,
        round,
        seconds,
        processedPerSecond: per('handshakes_processed'),
        cookiesPerSecond: per('cookie_replies_sent'),
        rateLimitedPerSecond: per('drop_rate_limited'),
        queueFullPerSecond: per('drop_handshake_queue_full'),
        cores,
        legitWgtsMs: a,
        legitWireguardGoMs: b,
      };
      const ms = (x: number | undefined): string => (x === undefined ? `> ${s.legitTimeoutMs / 1000} s` : `${fmt(x)} ms`);
      note(
        `  ${phase} round ${round + 1}: legit wgts ${ms(a)}, wireguard-go ${ms(b)}; processed ${fmt(r.processedPerSecond)}/s, ` +
          `cookies ${fmt(r.cookiesPerSecond)}/s, rate-limited ${fmt(r.rateLimitedPerSecond)}/s, queue full ${fmt(r.queueFullPerSecond)}/s, ${fmt(cores)} cores`,
      );
      return r;
    };
    /** Until the counters stop moving, then past the victim's under-load window. */
    const calm = async (v: Daemon): Promise<void> => {
      let last = '';
      await waitFor(
        async () => {
          const now = JSON.stringify(await readStats(v.ifname));
          const same = now === last;
          last = now;
          return same;
        },
        { timeoutMs: 15_000, intervalMs: 250, what: 'the victim to settle' },
      );
      await new Promise((r) => setTimeout(r, UNDER_LOAD_AFTER_TIME + 250));
    };

    const phase = async (id: string, title: string, flood: Omit<FloodConfig, 'target' | 'victimPublicKey' | 'rate' | 'durationMs'> | undefined, rounds: number): Promise<void> => {
      note(`${title}`);
      const v = await restartVictim();
      let f: FloodProcess | undefined;
      let done: FloodEvent | undefined;
      const list: Round[] = [];
      try {
        if (flood) {
          f = await startFlood(bed, nsX, { ...flood, target: `${toX.a.address4}:${PORT}`, victimPublicKey: keys.victim.publicKey, rate: s.rate, durationMs: 3_600_000 });
          // Under load, or (MAC2) its X25519 work running.
          const s0 = await readStats(v.ifname);
          await waitFor(
            async () => {
              const s1 = await readStats(v.ifname);
              return (s1.cookie_replies_sent ?? 0) + (s1.handshakes_processed ?? 0) > (s0.cookie_replies_sent ?? 0) + (s0.handshakes_processed ?? 0) + 1000;
            },
            { timeoutMs: 10_000, what: 'the victim to work on the flood' },
          );
          // Past the first seconds, while the victim's handshake path is still cold (JIT) and its
          // queue overflows more than it will later (the namespace test saw the same).
          await waitFor(() => (f!.find('progress')?.ms ?? 0) >= WARM_UP_MS, { timeoutMs: WARM_UP_MS + 10_000, intervalMs: 50, what: 'flood warm-up' });
        }
        for (let round = 0; round < rounds; round++) list.push(await measureRound(id, round, v));
      } finally {
        if (f) done = await f.stop(bed);
      }
      phases.push({ id, title, sources: flood?.sourceCount, flood: done, cookies: f?.find('cookies'), rounds: list });
      if (done) note(`  flood: ${fmt(done.sent ?? 0)} sent at ${fmt(done.rate ?? 0)}/s, ${done.unsourced} without their source`);
      await calm(v);
    };

    await phase('none', 'no flood', undefined, s.rounds);
    await phase('mac1', 'MAC1 only (no MAC2)', { mode: 'mac1', sourceBase: SPOOF_BASE, sourceCount: 32_768, pool: 256 }, s.rounds);
    await phase('mac2-64', 'MAC1 + MAC2 (cookies collected)', { mode: 'mac2', sourceBase: SPOOF_BASE, sourceCount: 64 }, s.rounds);
    await phase('mac2-4096', 'MAC1 + MAC2 (cookies collected)', { mode: 'mac2', sourceBase: SPOOF_BASE, sourceCount: 4_096 }, s.mac2ManyRounds);
  } finally {
    await bed.cleanup();
  }
  const load1 = os.loadavg();

  const median = (xs: number[]): number => {
    const v = [...xs].sort((a, b) => a - b);
    const m = v.length >> 1;
    return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
  };
  const summary = (xs: number[]): string => (xs.length === 0 ? '–' : xs.length === 1 ? fmt(xs[0]!) : fmtRange(median(xs), Math.min(...xs), Math.max(...xs)));
  /** Latencies in s: median (min–max); a round without a reply within the timeout counts as the timeout, marked ">". */
  const latency = (xs: (number | undefined)[]): string => {
    const lost = xs.filter((x) => x === undefined).length;
    const limit = s.legitTimeoutMs / 1000;
    if (xs.length === 0) return '–';
    if (lost === xs.length) return `> ${fmt(limit)} (all ${xs.length})`;
    const text = summary(xs.map((x) => (x ?? s.legitTimeoutMs) / 1000));
    return lost === 0 ? text : `${text}; ${lost} of ${xs.length} > ${fmt(limit)}`;
  };
  const header = [
    'Flood',
    'Sources',
    'Achieved rate/s',
    'Processed (X25519)/s',
    'Cookie replies/s',
    'Rate-limited/s',
    'Queue-full drops/s',
    'Victim CPU (cores)',
    'Answered per CPU-s',
    'Legit wgts handshake (s)',
    'Legit wireguard-go handshake (s)',
  ];
  // Without a flood the windows last a few ms (two handshakes): their rates and CPU say nothing.
  const flooded = (p: Phase, cell: () => string): string => (p.flood ? cell() : '–');
  const rows = phases.map((p) => [
    p.title,
    p.sources === undefined ? '–' : p.sources.toLocaleString('en-US'),
    flooded(p, () => fmt(p.flood!.rate ?? 0)),
    flooded(p, () => summary(p.rounds.map((r) => r.processedPerSecond))),
    flooded(p, () => summary(p.rounds.map((r) => r.cookiesPerSecond))),
    flooded(p, () => summary(p.rounds.map((r) => r.rateLimitedPerSecond))),
    flooded(p, () => summary(p.rounds.map((r) => r.queueFullPerSecond))),
    flooded(p, () => summary(p.rounds.map((r) => r.cores))),
    flooded(p, () => summary(p.rounds.map((r) => (r.processedPerSecond + r.cookiesPerSecond + r.rateLimitedPerSecond) / Math.max(r.cores, 1e-3)))),
    latency(p.rounds.map((r) => r.legitWgtsMs)),
    latency(p.rounds.map((r) => r.legitWireguardGoMs)),
  ]);
  out(markdownTable(header, rows, [false, ...header.slice(1).map(() => true)]));
  out('');
  out('Per round: both legitimate peers drop their session and ping the victim through the tunnel until the first reply (the');
  out('handshake latency); the victim’s counters and CPU are read over that same window. Figures: median (min–max) over rounds.');
  out('Answered per CPU-s: (processed + cookie replies + rate-limited) ÷ the victim’s CPU seconds — what one core of it handles,');
  out('less sensitive to how much CPU the shared machine left it than the per-second figures.');
  for (const p of phases) {
    if (p.cookies) out(`${p.title}, ${(p.sources ?? 0).toLocaleString('en-US')} sources: cookies collected for ${(p.cookies.sources ?? 0).toLocaleString('en-US')} of them in ${fmt((p.cookies.ms ?? 0) / 1000)} s.`);
  }
  out(`Load average ${load0.map((x) => x.toFixed(2)).join(' ')} at start, ${load1.map((x) => x.toFixed(2)).join(' ')} at end.`);
  return { environment: env, source, settings: s, loadavgStart: load0, loadavgEnd: load1, phases };
}
