/**
 * Device memory and configuration time with many peers: one daemon in a namespace of its own,
 * N peers configured by one `wg setconf` (each with a real X25519 public key, an endpoint in
 * 198.18.0.0/15 and a /32 in 100.64.0.0/10), then:
 *
 *   RSS before       VmRSS of the freshly started daemon (no key, no peers)
 *   wg setconf       wall time of `wg setconf <if> <file>` with N peers
 *   RSS after        VmRSS right after setconf returned, and after `wg show dump`
 *   wg show dump     wall time (and a check that it lists N peers)
 *   peak RSS         VmHWM at the end
 *
 * for N = 1,000 and 10,000 (the default), each round on a fresh daemon, the order of the
 * (N, implementation) runs rotating each round. Implementations:
 *
 *   wgts          node src/cli.ts: the TypeScript sources through Node's type stripping (how the
 *                 tests and the other benchmarks run it)
 *   wgts-dist     the same code compiled by tsc first (tsconfig.build.json, into a temporary
 *                 directory; what `npm run build` ships as the `wgts` bin): no type stripping
 *   wireguard-go  the same configuration, as a reference
 *
 * wgts runs with WGTS_CRYPTO=sodium, WGTS_WORKERS=0 (the default on a 2-CPU machine).
 *
 * Options (after `scale-peers`): --rounds N (default 3), --peers N[,N…] (default 1000,10000),
 * --only wgts,wgts-dist,wireguard-go. --quick: 1 round, 100 and 1,000 peers.
 */
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import type { Environment } from './lib/env.ts';
import { describeEnvironment, environment } from './lib/env.ts';
import { fmt, markdownTable } from './lib/format.ts';
import { stats } from './lib/measure.ts';
import type { Daemon, Implementation, KeyPair } from './lib/netns.ts';
import { Bed, buildWgts, describeSourceState, exec, newKeyPair, processMemory, sourceState, startDaemon, stopDaemon } from './lib/netns.ts';
import type { BenchOptions, BenchResult } from './lib/types.ts';
import { readOptions } from './lib/options.ts';
import { UsageError } from './lib/types.ts';

const WGTS_ENV = { WGTS_CRYPTO: 'sodium', WGTS_WORKERS: '0', LOG_LEVEL: 'info' } as const;
const IMPLEMENTATIONS: readonly Implementation[] = [
  { id: 'wgts', label: 'wgts, src/cli.ts', kind: 'wgts', env: WGTS_ENV },
  /** The same code compiled by tsc (as `npm run build` ships it): no type stripping at run time. cli is set once built. */
  { id: 'wgts-dist', label: 'wgts, compiled dist/cli.js', kind: 'wgts', env: WGTS_ENV },
  { id: 'wireguard-go', label: 'wireguard-go', kind: 'wireguard-go', env: { LOG_LEVEL: 'error' } },
];

/** The benchmark's goal: wgts with 1,000 peers resident in at most 100 MB (10^6 bytes). */
const GOAL = { peers: 1000, maxMB: 100 } as const;

interface Settings {
  rounds: number;
  peers: number[];
  only: string[] | undefined;
}

const ONLY_HELP = IMPLEMENTATIONS.map((m) => m.id).join('|');

function settings(options: BenchOptions): Settings {
  const s: Settings = options.quick ? { rounds: 1, peers: [100, 1000], only: undefined } : { rounds: 3, peers: [1000, 10000], only: undefined };
  readOptions(options.args, `--rounds N, --peers N[,N…], --only ${ONLY_HELP}[,…]`, (option, value) => {
    if (option === '--rounds') s.rounds = value.positiveInt();
    else if (option === '--peers') {
      s.peers = value.text().split(',').map((x) => {
        const n = Number(x.trim());
        if (!Number.isInteger(n) || n <= 0 || n > 100_000) throw new UsageError(`--peers: expected whole numbers from 1 to 100,000, got "${x}"`);
        return n;
      });
    } else if (option === '--only') s.only = value.ids(IMPLEMENTATIONS.map((m) => m.id));
    else return false;
    return true;
  });
  return s;
}

/** The i-th address (0-based) counting up from a.b.c.d. */
function ipv4(base: readonly [number, number, number, number], i: number): string {
  const n = ((base[0] << 24) | (base[1] << 16) | (base[2] << 8) | base[3]) + i;
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** A `wg setconf` file: the device's key and port, then n peers (endpoint 198.18.0.1+i, allowed 100.64.0.2+i/32). */
function configText(device: KeyPair, peers: readonly KeyPair[]): string {
  const lines = ['[Interface]', `PrivateKey = ${device.privateKey}`, 'ListenPort = 51820', ''];
  peers.forEach((p, i) => {
    lines.push('[Peer]', `PublicKey = ${p.publicKey}`, `Endpoint = ${ipv4([198, 18, 0, 1], i)}:51820`, `AllowedIPs = ${ipv4([100, 64, 0, 2], i)}/32`, '');
  });
  return lines.join('\n');
}

interface Sample {
  readonly impl: string;
  readonly peers: number;
  readonly round: number;
  readonly rssBeforeKiB: number;
  readonly setconfMs: number;
  readonly rssAfterSetconfKiB: number;
  readonly dumpMs: number;
  readonly dumpPeers: number;
  readonly rssAfterDumpKiB: number;
  readonly hwmKiB: number;
}

const MB = (kib: number): number => (kib * 1024) / 1e6;

async function runOne(bed: Bed, ns: string, impl: Implementation, peers: number, file: string, round: number): Promise<Sample> {
  let d: Daemon | undefined;
  try {
    d = await startDaemon(bed, ns, impl, bed.ifname('sp'));
    const rssBefore = processMemory(d.pid).rssKiB;
    let t = performance.now();
    await exec(ns, 'wg', ['setconf', d.ifname, file], { timeoutMs: 300_000 });
    const setconfMs = performance.now() - t;
    const afterSetconf = processMemory(d.pid).rssKiB;
    await exec(ns, 'ip', ['addr', 'add', '100.64.0.1/10', 'dev', d.ifname]);
    await exec(ns, 'ip', ['link', 'set', d.ifname, 'mtu', '1420', 'up']);
    t = performance.now();
    const dump = await exec(ns, 'wg', ['show', d.ifname, 'dump'], { timeoutMs: 300_000 });
    const dumpMs = performance.now() - t;
    const dumpPeers = dump.stdout.split('\n').filter(Boolean).length - 1;
    if (dumpPeers !== peers) throw new Error(`${impl.label}: wg show dump lists ${dumpPeers} peers, configured ${peers}`);
    const end = processMemory(d.pid);
    if (d.process.hasExited()) throw new Error(`${impl.label} exited:\n${d.process.log()}`);
    return { impl: impl.id, peers, round, rssBeforeKiB: rssBefore, setconfMs, rssAfterSetconfKiB: afterSetconf, dumpMs, dumpPeers, rssAfterDumpKiB: end.rssKiB, hwmKiB: end.hwmKiB };
  } catch (err) {
    throw new Error(`${(err as Error).message}${d ? `\n--- ${d.ifname} log tail ---\n${d.process.log(2048)}` : ''}`);
  } finally {
    if (d) await stopDaemon(bed, d);
  }
}

function summary(values: readonly number[]): string {
  if (values.length === 0) return '–';
  const st = stats([...values]);
  return values.length === 1 ? fmt(st.median) : `${fmt(st.median)} (${fmt(st.min)}–${fmt(st.max)})`;
}

export async function run(options: BenchOptions): Promise<BenchResult> {
  const s = settings(options);
  let impls = IMPLEMENTATIONS.filter((m) => s.only === undefined || s.only.includes(m.id));
  const env: Environment = environment(['sodium-native']);
  const load0 = os.loadavg();
  const out = (line: string): void => void process.stdout.write(line + '\n');
  out(`wgts peer-scale benchmark${options.quick ? ' (--quick: smoke run, do not quote)' : ''}`);
  out(describeEnvironment(env));
  const source = await sourceState();
  out(describeSourceState(source));
  out(`${s.rounds} round(s) × peers ${s.peers.map(fmt).join(', ')} × ${impls.map((m) => m.label).join(', ')}; a fresh daemon each time`);
  out('');

  const bed = new Bed('scale');
  const samples: Sample[] = [];
  try {
    await bed.sweepStale();
    const ns = await bed.namespace('a');
    const dir = bed.tempDir();
    if (impls.some((m) => m.id === 'wgts-dist')) {
      const t = performance.now();
      const cli = await buildWgts(dir);
      impls = impls.map((m) => (m.id === 'wgts-dist' ? { ...m, cli } : m));
      process.stderr.write(`compiled wgts with tsc (tsconfig.build.json) in ${fmt(performance.now() - t)} ms\n`);
    }
    const files = new Map<number, string>();
    for (const n of s.peers) {
      const t = performance.now();
      const peers = Array.from({ length: n }, () => newKeyPair());
      const file = join(dir, `peers-${n}.conf`);
      writeFileSync(file, configText(newKeyPair(), peers), { mode: 0o600 });
      files.set(n, file);
      process.stderr.write(`${fmt(n)} peer keys generated in ${fmt(performance.now() - t)} ms\n`);
    }
    const jobs = s.peers.flatMap((n) => impls.map((impl) => ({ n, impl })));
    for (let round = 0; round < s.rounds; round++) {
      for (let i = 0; i < jobs.length; i++) {
        const { n, impl } = jobs[(i + round) % jobs.length]!;
        process.stderr.write(`round ${round + 1}/${s.rounds}: ${impl.label}, ${fmt(n)} peers… `);
        const sample = await runOne(bed, ns, impl, n, files.get(n)!, round);
        samples.push(sample);
        process.stderr.write(
          `setconf ${fmt(sample.setconfMs)} ms, dump ${fmt(sample.dumpMs)} ms, RSS ${fmt(MB(sample.rssBeforeKiB))} → ${fmt(MB(sample.rssAfterDumpKiB))} MB (peak ${fmt(MB(sample.hwmKiB))})\n`,
        );
      }
    }
  } finally {
    await bed.cleanup();
  }
  const load1 = os.loadavg();

  const header = ['Implementation', 'Peers', 'RSS empty (MB)', 'RSS after setconf (MB)', 'RSS after dump (MB)', 'peak RSS (MB)', 'per peer (KB)', 'wg setconf (ms)', 'wg show dump (ms)'];
  const right = [false, true, true, true, true, true, true, true, true];
  const rows: string[][] = [];
  for (const impl of impls) {
    for (const n of s.peers) {
      const xs = samples.filter((x) => x.impl === impl.id && x.peers === n);
      rows.push([
        impl.label,
        fmt(n),
        summary(xs.map((x) => MB(x.rssBeforeKiB))),
        summary(xs.map((x) => MB(x.rssAfterSetconfKiB))),
        summary(xs.map((x) => MB(x.rssAfterDumpKiB))),
        summary(xs.map((x) => MB(x.hwmKiB))),
        summary(xs.map((x) => (MB(x.rssAfterDumpKiB - x.rssBeforeKiB) * 1000) / n)),
        summary(xs.map((x) => x.setconfMs)),
        summary(xs.map((x) => x.dumpMs)),
      ]);
    }
  }
  const table = markdownTable(header, rows, right);
  out('');
  out(table);
  out('');
  out(`Figures: median (min–max) over ${s.rounds} round(s). MB = 10^6 bytes (VmRSS/VmHWM from /proc/<pid>/status); per peer = (RSS after dump − RSS empty) / peers.`);

  out('');
  out('Goal (judged on the median of the larger of RSS after setconf and after dump):');
  const goals = impls
    .filter((m) => m.kind === 'wgts')
    .map((m) => {
      const xs = samples.filter((x) => x.impl === m.id && x.peers === GOAL.peers);
      const median = xs.length === 0 ? undefined : stats(xs.map((x) => MB(Math.max(x.rssAfterSetconfKiB, x.rssAfterDumpKiB)))).median;
      const met = median === undefined ? undefined : median <= GOAL.maxMB;
      const text = `${m.label}: RSS ≤ ${GOAL.maxMB} MB with ${fmt(GOAL.peers)} peers`;
      out(`  ${met === undefined ? '–      ' : met ? 'met    ' : 'NOT met'}  ${text}${median === undefined ? ' (not measured)' : `: ${fmt(median)} MB`}`);
      return { impl: m.id, text, ...GOAL, median, met };
    });
  const la = (l: number[]): string => l.map((x) => x.toFixed(2)).join(' / ');
  out('');
  out(`load average (1 / 5 / 15 min) ${la(load0)} at start, ${la(load1)} at end`);

  return { environment: env, source, settings: s, loadavgAtStart: load0, loadavgAtEnd: load1, samples, goals, table };
}
