/**
 * Cryptokey routing at scale: AllowedIps (src/device/allowed-ips.ts) with 10,000 and 100,000
 * prefixes.
 *
 *   random-N   N random prefixes, 90% IPv4 of lengths 8–32 and 10% IPv6 of lengths 16–128
 *              (in 2000::/3), spread over 1,000 peers; destinations inside a random inserted
 *              prefix (95%) or anywhere (5%).
 *   mesh-100k  a 90,000-peer mesh: each peer one /32 in 100.64.0.0/10, the first 10,000 also a
 *              /128 in fd00::/8; destinations are peers' addresses. All prefixes share their
 *              first 10 (or 8) bits, so this is where a table indexed by the top bits would fail.
 *
 * Lookups: lookupDestination over a pre-built array of 65,536 packet headers (no allocation
 * in the loop), with jump tables (the default) and without (the plain path-compressed trie),
 * interleaved round by round; a figure is the median over rounds. Also: inserts/s building the
 * table, removeValue of every peer (prefixes/s), and the heap the table holds (V8 heap and
 * typed arrays, after GC, minus what existed before it was built).
 *
 * Standalone: node bench/scale-allowed-ips.ts [--quick] [--rounds N] [--min-time-ms MS] [--only id[,id…]]
 */
import { pathToFileURL } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import { AllowedIps } from '../src/device/allowed-ips.ts';
import type { Cidr } from '../src/device/config.ts';
import type { Environment } from './lib/env.ts';
import { describeEnvironment, environment } from './lib/env.ts';
import { fmt, fmtRange, markdownTable } from './lib/format.ts';
import type { Stats, Workload } from './lib/measure.ts';
import { compare, stats } from './lib/measure.ts';
import type { BenchOptions, BenchResult } from './lib/types.ts';
import { readOptions } from './lib/options.ts';
import { UsageError } from './lib/types.ts';

/** The benchmark's goal (not a test's): single-threaded, i.e. per core. */
const GOAL = { caseId: 'random-100k', atLeast: 5e6, text: 'lookups ≥ 5 M/s with 100,000 prefixes, one core' } as const;

const PACKETS = 1 << 16;

interface Peer {
  readonly id: number;
}

interface Scenario {
  readonly id: string;
  readonly title: string;
  readonly build: (random: () => number) => { prefixes: Cidr[]; owners: Peer[]; peers: Peer[]; packets: Uint8Array[] };
}

/** mulberry32: a seeded PRNG, so that every run measures the same tables. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(random: () => number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = Math.floor(random() * 256);
  return out;
}

/** address with the bits past prefix cleared (a copy). */
function masked(address: Uint8Array, prefix: number): Uint8Array {
  const out = Uint8Array.from(address);
  for (let i = 0; i < out.length; i++) out[i]! &= (0xff << (8 - Math.max(0, Math.min(8, prefix - i * 8)))) & 0xff;
  return out;
}

/** A random address inside cidr (host bits random). */
function inside(random: () => number, cidr: Cidr): Uint8Array {
  const out = randomBytes(random, cidr.address.length);
  for (let i = 0; i < out.length; i++) {
    const keep = Math.max(0, Math.min(8, cidr.prefix - i * 8));
    const mask = (0xff << (8 - keep)) & 0xff;
    out[i] = (cidr.address[i]! & mask) | (out[i]! & ~mask & 0xff);
  }
  return out;
}

/** A bare IPv4 or IPv6 header with the given destination. */
function packetTo(destination: Uint8Array): Uint8Array {
  if (destination.length === 4) {
    const p = new Uint8Array(20);
    p[0] = 0x45;
    p.set(destination, 16);
    return p;
  }
  const p = new Uint8Array(40);
  p[0] = 0x60;
  p.set(destination, 24);
  return p;
}

function randomScenario(count: number, label: string): Scenario {
  return {
    id: `random-${label}`,
    title: `${label} random prefixes (90% v4 /8–/32, 10% v6 /16–/128)`,
    build(random) {
      const peers = Array.from({ length: 1000 }, (_, id) => ({ id }));
      const prefixes: Cidr[] = [];
      const owners: Peer[] = [];
      const seen = new Set<string>();
      while (prefixes.length < count) {
        const v6 = random() < 0.1;
        const prefix = v6 ? 16 + Math.floor(random() * 113) : 8 + Math.floor(random() * 25);
        const address = inside(random, { family: v6 ? 6 : 4, address: new Uint8Array(v6 ? 16 : 4), prefix: 0 });
        if (v6) address[0] = 0x20 | (address[0]! & 0x1f); // 2000::/3
        const cidr: Cidr = { family: v6 ? 6 : 4, address: masked(address, prefix), prefix };
        const key = `${cidr.address.join('.')}/${prefix}`;
        if (seen.has(key)) continue; // distinct prefixes, so that the table holds exactly count
        seen.add(key);
        prefixes.push(cidr);
        owners.push(peers[Math.floor(random() * peers.length)]!);
      }
      const v4 = prefixes.filter((c) => c.family === 4);
      const v6 = prefixes.filter((c) => c.family === 6);
      const packets = Array.from({ length: PACKETS }, () => {
        const family = random() < 0.9 ? v4 : v6;
        const destination = random() < 0.95 ? inside(random, family[Math.floor(random() * family.length)]!) : randomBytes(random, family === v4 ? 4 : 16);
        return packetTo(destination);
      });
      return { prefixes, owners, peers, packets };
    },
  };
}

const meshScenario: Scenario = {
  id: 'mesh-100k',
  title: '90,000-peer mesh: /32s in 100.64.0.0/10, 10,000 /128s in fd00::/8',
  build(random) {
    const peers = Array.from({ length: 90_000 }, (_, id) => ({ id }));
    const prefixes: Cidr[] = [];
    const owners: Peer[] = [];
    const used = new Set<number>();
    for (const p of peers) {
      let host: number;
      do host = Math.floor(random() * (1 << 22));
      while (used.has(host));
      used.add(host);
      const a = (100 << 24) | (64 << 16) | host;
      prefixes.push({ family: 4, address: Uint8Array.of(a >>> 24, (a >>> 16) & 0xff, (a >>> 8) & 0xff, a & 0xff), prefix: 32 });
      owners.push(p);
      if (p.id < 10_000) {
        const address = randomBytes(random, 16);
        address[0] = 0xfd;
        prefixes.push({ family: 6, address, prefix: 128 });
        owners.push(p);
      }
    }
    const packets = Array.from({ length: PACKETS }, () => packetTo(prefixes[Math.floor(random() * prefixes.length)]!.address));
    return { prefixes, owners, peers, packets };
  },
};

const SCENARIOS: readonly Scenario[] = [randomScenario(10_000, '10k'), randomScenario(100_000, '100k'), meshScenario];

export interface AllowedIpsBenchOptions {
  /** A short smoke run: few rounds, little time per sample. Figures are not meant to be quoted. */
  readonly quick?: boolean;
  readonly rounds?: number;
  readonly minTimeMs?: number;
  /** Scenario ids to run (default all). */
  readonly only?: readonly string[];
  /** Print the report (default true). */
  readonly print?: boolean;
}

export interface AllowedIpsCaseResult {
  readonly id: string;
  readonly title: string;
  readonly prefixes: number;
  readonly v4: number;
  readonly v6: number;
  readonly peers: number;
  /** Trie records: prefixes plus intermediates. */
  readonly nodes: number;
  /** lookupDestination per second: with jump tables (the default) and without. */
  readonly lookups: { readonly tables: Stats; readonly plain: Stats };
  /** Share of the benchmark's destinations that found a peer. */
  readonly hitRate: number;
  readonly insertsPerSec: { readonly tables: Stats; readonly plain: Stats };
  /** removeValue of every peer, in prefixes removed per second. */
  readonly removesPerSec: number;
  /** V8 heap + ArrayBuffers held by the table after GC (undefined when GC could not be forced). */
  readonly heapBytes: number | undefined;
  /** Typed arrays of the tries, and of the jump tables among them. */
  readonly typedArrayBytes: number;
  readonly tableBytes: number;
}

export interface AllowedIpsBenchResult extends BenchResult {
  readonly environment: Environment;
  readonly settings: { readonly rounds: number; readonly minTimeMs: number; readonly builds: number };
  readonly cases: AllowedIpsCaseResult[];
  readonly goal: { readonly text: string; readonly atLeast: number; readonly median: number | undefined; readonly met: boolean | undefined };
  readonly loadavg1AtEnd: number;
}

/** Forces a full GC where possible (the flag can be set at run time; vm exposes the function). */
function gcFunction(): (() => void) | undefined {
  try {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as unknown;
    return typeof gc === 'function' ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  }
}

function heapNow(gc: (() => void) | undefined): number | undefined {
  if (gc === undefined) return undefined;
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/** Where lookups put their results (module state: the JIT cannot drop the work). */
let sink = 0;

function lookupWorkload(table: AllowedIps<Peer>, packets: readonly Uint8Array[]): Workload {
  let i = 0;
  const mask = packets.length - 1;
  return {
    run(n: number) {
      let hits = 0;
      for (let k = 0; k < n; k++) {
        if (table.lookupDestination(packets[i]!) !== undefined) hits++;
        i = (i + 1) & mask;
      }
      sink += hits;
    },
  };
}

function build(prefixes: readonly Cidr[], owners: readonly Peer[], jumpTables: boolean): { table: AllowedIps<Peer>; seconds: number } {
  const table = new AllowedIps<Peer>({ jumpTables });
  const start = process.hrtime.bigint();
  for (let i = 0; i < prefixes.length; i++) table.insert(prefixes[i]!, owners[i]!);
  return { table, seconds: Number(process.hrtime.bigint() - start) / 1e9 };
}

export async function runAllowedIpsBench(options: AllowedIpsBenchOptions = {}): Promise<AllowedIpsBenchResult> {
  const quick = options.quick ?? false;
  const settings = {
    rounds: options.rounds ?? (quick ? 3 : 9),
    minTimeMs: options.minTimeMs ?? (quick ? 30 : 200),
    builds: quick ? 1 : 3,
  };
  const print = options.print ?? true;
  const out = (line: string): void => {
    if (print) process.stdout.write(line + '\n');
  };
  const progress = (line: string): void => {
    if (print) process.stderr.write(line + '\n');
  };
  const env = environment([]);
  const gc = gcFunction();
  out(`wgts allowed-ips benchmark${quick ? ' (--quick: smoke run, do not quote)' : ''}`);
  out(describeEnvironment(env));
  out(`${settings.rounds} rounds × ${settings.minTimeMs} ms per sample, with and without jump tables alternating; figures are medians (min–max over rounds)`);
  out('');

  const scenarios = SCENARIOS.filter((s) => options.only === undefined || options.only.includes(s.id));
  const cases: AllowedIpsCaseResult[] = [];
  for (const scenario of scenarios) {
    const { prefixes, owners, peers, packets } = scenario.build(rng(0x0a11_0ed + cases.length));
    const before = heapNow(gc);
    let { table } = build(prefixes, owners, true);
    const after = heapNow(gc);
    const heapBytes = before === undefined || after === undefined ? undefined : after - before;

    // Insert rates: fresh builds, the two kinds alternating.
    const insertSamples = { tables: [] as number[], plain: [] as number[] };
    let plain: AllowedIps<Peer> | undefined;
    for (let b = 0; b < settings.builds; b++) {
      const t = build(prefixes, owners, true);
      insertSamples.tables.push(prefixes.length / t.seconds);
      table = t.table;
      const p = build(prefixes, owners, false);
      insertSamples.plain.push(prefixes.length / p.seconds);
      plain = p.table;
    }

    let hits = 0;
    for (const packet of packets) if (table.lookupDestination(packet) !== undefined) hits++;
    for (const packet of packets) {
      if (table.lookupDestination(packet) !== plain!.lookupDestination(packet)) throw new Error(`${scenario.id}: the two tables disagree`);
    }

    const lookups = compare(
      { tables: lookupWorkload(table, packets), plain: lookupWorkload(plain!, packets) },
      { rounds: settings.rounds, minTimeMs: settings.minTimeMs, warmupMs: settings.minTimeMs },
    );

    const removeStart = process.hrtime.bigint();
    for (const p of peers) table.removeValue(p);
    const removeSeconds = Number(process.hrtime.bigint() - removeStart) / 1e9;
    if (table.size !== 0) throw new Error(`${scenario.id}: ${table.size} prefixes left after removing every peer`);
    const rebuilt = build(prefixes, owners, true).table;

    const result: AllowedIpsCaseResult = {
      id: scenario.id,
      title: scenario.title,
      prefixes: rebuilt.size,
      v4: prefixes.filter((c) => c.family === 4).length,
      v6: prefixes.filter((c) => c.family === 6).length,
      peers: peers.length,
      nodes: rebuilt.nodeCount,
      lookups,
      hitRate: hits / packets.length,
      insertsPerSec: { tables: stats(insertSamples.tables), plain: stats(insertSamples.plain) },
      removesPerSec: prefixes.length / removeSeconds,
      heapBytes,
      typedArrayBytes: rebuilt.byteLength,
      tableBytes: rebuilt.tableByteLength,
    };
    cases.push(result);
    progress(`  ${scenario.id}: ${fmt(lookups.tables.median)} lookups/s with jump tables, ${fmt(lookups.plain.median)} without`);
  }
  const loadAfter = environment([]).loadavg1;

  const mib = (bytes: number | undefined): string => (bytes === undefined ? '–' : `${(bytes / 2 ** 20).toFixed(1)} MiB`);
  const header = ['Table', 'Prefixes (v4 + v6)', 'Nodes', 'Lookups/s, jump tables', 'Lookups/s, plain trie', 'Inserts/s (plain)', 'removeValue prefixes/s', 'Heap (jump tables)', 'Goal'];
  const right = [false, true, true, true, true, true, true, true, false];
  const rows = cases.map((c) => [
    c.id,
    `${fmt(c.prefixes)} (${fmt(c.v4)} + ${fmt(c.v6)})`,
    fmt(c.nodes),
    fmtRange(c.lookups.tables.median, c.lookups.tables.min, c.lookups.tables.max),
    fmtRange(c.lookups.plain.median, c.lookups.plain.min, c.lookups.plain.max),
    `${fmt(c.insertsPerSec.tables.median)} (${fmt(c.insertsPerSec.plain.median)})`,
    fmt(c.removesPerSec),
    `${mib(c.heapBytes)} (${mib(c.tableBytes)})`,
    c.id === GOAL.caseId ? `≥ 5 M/s — ${c.lookups.tables.median >= GOAL.atLeast ? 'met' : 'NOT met'}` : '',
  ]);
  out('');
  out(markdownTable(header, rows, right));
  out('');
  for (const c of cases) out(`${c.id}: ${c.title}; ${c.peers.toLocaleString('en-US')} peers, ${(c.hitRate * 100).toFixed(1)}% of destinations routed`);
  out('Heap: V8 heap + typed arrays held by the table after GC (trie records, jump tables, peer ids and lists).');

  const median = cases.find((c) => c.id === GOAL.caseId)?.lookups.tables.median;
  const goal = { text: GOAL.text, atLeast: GOAL.atLeast, median, met: median === undefined ? undefined : median >= GOAL.atLeast };
  out('');
  out('Goal (single-threaded, i.e. per core; judged on the median):');
  out(`  ${goal.met === undefined ? '–' : goal.met ? 'met    ' : 'NOT met'}  ${goal.text}${median === undefined ? ' (not measured)' : `: ${fmt(median)}/s`}`);
  out(`\nload average ${env.loadavg1.toFixed(2)} at start, ${loadAfter.toFixed(2)} at end`);

  return { environment: env, settings, cases, goal, loadavg1AtEnd: loadAfter };
}

/** Options after the benchmark's name: --rounds N, --min-time-ms MS, --only id[,id…]. */
function parseArgs(args: readonly string[]): Omit<AllowedIpsBenchOptions, 'quick' | 'print'> {
  const parsed: { rounds?: number; minTimeMs?: number; only?: string[] } = {};
  readOptions(args, '--rounds N, --min-time-ms MS, --only id[,id…]', (option, value) => {
    if (option === '--rounds') parsed.rounds = Math.round(value.positive());
    else if (option === '--min-time-ms') parsed.minTimeMs = value.positive();
    else if (option === '--only') parsed.only = value.ids(SCENARIOS.map((s) => s.id));
    else return option === '--quick';
    return true;
  });
  return parsed;
}

/** The bench/index.ts module interface. */
export async function run(options: BenchOptions): Promise<BenchResult> {
  return runAllowedIpsBench({ quick: options.quick, ...parseArgs(options.args) });
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  try {
    await runAllowedIpsBench({ quick: args.includes('--quick'), ...parseArgs(args) });
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`${err.message}\n`);
    process.exitCode = 2;
  }
}
