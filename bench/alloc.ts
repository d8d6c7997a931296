/**
 * Does the data path allocate per packet? Two wgts daemons on the e2e bench's namespace pair
 * (198.18.n.0/24 underlay, 100.64.0.1 ↔ 100.64.0.2 overlay), and for each daemon the JS heap
 * bytes it allocated and the collections it ran over three windows of D seconds:
 *
 *   idle   no traffic: the floor (timers, and reading these figures over UAPI allocates a little)
 *   tcp    iperf3 TCP, 1 stream, A → B
 *   udp    iperf3 UDP offered at 500 Mbit/s, A → B
 *
 * The heap figures are the daemon's own (`wgts show --json`: heap_allocated_bytes from a V8 GC
 * profiler, gc_minor, gc_major, gc_pause_us — src/daemon/heap-meter.ts); packets are the TUN's
 * rx + tx packet counters, i.e. every packet the daemon carried (with TUN offload, each
 * super-packet read or coalesced write counted as the segments it held). "Bytes per packet" is
 * (allocated in the window − allocated in the idle window, scaled to its length) ÷ packets.
 *
 * Contenders (alternating, fresh tunnel each; see e2e.ts): wgts sodium as it runs by default
 * (TUN offload, 0 workers), with 1 crypto worker, and without TUN offload.
 * Options (after `alloc`): --rounds N (default 3), --duration S (default 10), --only id[,id…],
 * --heap-profiles DIR (the daemons write V8 sampling heap profiles there when they stop: open
 * them in Chrome DevTools to see which functions allocate).
 * --quick: 1 round of 3 s windows.
 */
import os from 'node:os';
import { resolve } from 'node:path';
import { IMPLEMENTATIONS, iperf, OVERLAY, wgtsCounters, withTunnel } from './e2e.ts';
import { describeEnvironment, environment } from './lib/env.ts';
import { fmt, fmtSummary, markdownTable } from './lib/format.ts';
import type { Daemon, Implementation, VethPair } from './lib/netns.ts';
import { Bed, describeSourceState, exec, sourceState } from './lib/netns.ts';
import type { BenchOptions, BenchResult } from './lib/types.ts';
import { readOptions } from './lib/options.ts';

const CONTENDERS = ['wgts-sodium', 'wgts-sodium-w1', 'wgts-no-offload'];
const WINDOWS = ['idle', 'tcp', 'udp'] as const;
type Window = (typeof WINDOWS)[number];
const SIDES = ['A (sender)', 'B (receiver)'] as const;
const UDP_RATE = '500M';
const UDP_LENGTH = '1372';

interface Settings {
  rounds: number;
  durationS: number;
  only: string[];
  /** Directory for the daemons' sampling heap profiles (--heap-prof), if asked. */
  heapProfiles: string | undefined;
}

function settings(options: BenchOptions): Settings {
  const s: Settings = options.quick ? { rounds: 1, durationS: 3, only: CONTENDERS, heapProfiles: undefined } : { rounds: 3, durationS: 10, only: CONTENDERS, heapProfiles: undefined };
  readOptions(options.args, '--rounds N, --duration S, --only id[,id…], --heap-profiles DIR', (option, value) => {
    if (option === '--rounds') s.rounds = value.positiveInt();
    else if (option === '--duration') s.durationS = value.positiveInt();
    else if (option === '--only') s.only = value.ids(IMPLEMENTATIONS.filter((m) => m.kind === 'wgts').map((m) => m.id));
    else if (option === '--heap-profiles') s.heapProfiles = resolve(value.text());
    else return false;
    return true;
  });
  return s;
}

/** What one daemon did over one window. */
interface Usage {
  readonly allocatedBytes: number;
  readonly packets: number;
  readonly gcMinor: number;
  readonly gcMajor: number;
  readonly gcPauseMs: number;
  readonly seconds: number;
}

interface Reading {
  readonly heap: Record<string, number>;
  readonly packets: number;
  readonly at: number;
}

async function read(d: Daemon): Promise<Reading> {
  const heap = (await wgtsCounters(d)) as Record<string, number>;
  if (typeof heap.heap_allocated_bytes !== 'number') throw new Error(`${d.ifname}: wgts show --json has no heap_allocated_bytes: ${JSON.stringify(heap)}`);
  const link = JSON.parse((await exec(d.ns, 'ip', ['-j', '-s', 'link', 'show', 'dev', d.ifname])).stdout) as Array<{
    stats64?: { rx?: { packets?: number }; tx?: { packets?: number } };
  }>;
  // With TUN offload one read can be a TCP super-packet and one write a coalesced one: count
  // the segments they stood for, so every contender's figure is per packet on the wire.
  const tunPackets = (link[0]?.stats64?.rx?.packets ?? NaN) + (link[0]?.stats64?.tx?.packets ?? NaN);
  const offloaded = (heap.tun_tso_segments ?? 0) - (heap.tun_tso_packets ?? 0) + (heap.tun_coalesced_segments ?? 0) - (heap.tun_coalesced_writes ?? 0);
  const packets = tunPackets + offloaded;
  return { heap, packets, at: performance.now() };
}

function usage(after: Reading, before: Reading): Usage {
  const d = (key: string): number => (after.heap[key] ?? NaN) - (before.heap[key] ?? NaN);
  return {
    allocatedBytes: d('heap_allocated_bytes'),
    packets: after.packets - before.packets,
    gcMinor: d('gc_minor'),
    gcMajor: d('gc_major'),
    gcPauseMs: d('gc_pause_us') / 1000,
    seconds: (after.at - before.at) / 1000,
  };
}

interface Sample {
  readonly impl: string;
  readonly round: number;
  /** [window][side] */
  readonly usage: Record<Window, readonly [Usage, Usage]>;
  readonly mbits: Record<Exclude<Window, 'idle'>, number>;
}

async function runOne(bed: Bed, link: VethPair, impl: Implementation, round: number, s: Settings): Promise<Sample> {
  return withTunnel(bed, link, impl, 'al', async (a, b) => {
    // Warm up (JIT, slabs, socket buffers) so the windows see the steady state.
    await iperf(bed, a.ns, b.ns, OVERLAY[1], 2, [], undefined);
    const pair = [a, b] as const;
    const readBoth = async (): Promise<[Reading, Reading]> => [await read(a), await read(b)];
    const measureWindow = async (traffic: () => Promise<number>): Promise<{ usage: [Usage, Usage]; mbits: number }> => {
      const before = await readBoth();
      const mbits = await traffic();
      const after = await readBoth();
      return { usage: [usage(after[0], before[0]), usage(after[1], before[1])], mbits };
    };
    const idle = await measureWindow(async () => {
      await new Promise((r) => setTimeout(r, s.durationS * 1000));
      return 0;
    });
    process.stderr.write(`    idle: A ${fmt(idle.usage[0].allocatedBytes / 1024)} KiB, B ${fmt(idle.usage[1].allocatedBytes / 1024)} KiB allocated\n`);
    const tcp = await measureWindow(async () => (await iperf(bed, a.ns, b.ns, OVERLAY[1], s.durationS, [], pair)).bitsPerSecond / 1e6);
    process.stderr.write(`    tcp: ${fmt(tcp.mbits)} Mbit/s; A ${fmt(tcp.usage[0].allocatedBytes / 1024)} KiB over ${tcp.usage[0].packets} packets, ${tcp.usage[0].gcMinor} scavenges\n`);
    const udp = await measureWindow(async () => (await iperf(bed, a.ns, b.ns, OVERLAY[1], s.durationS, ['-u', '-b', UDP_RATE, '-l', UDP_LENGTH], pair)).bitsPerSecond / 1e6);
    process.stderr.write(`    udp: ${fmt(udp.mbits)} Mbit/s; A ${fmt(udp.usage[0].allocatedBytes / 1024)} KiB over ${udp.usage[0].packets} packets, ${udp.usage[0].gcMinor} scavenges\n`);
    return { impl: impl.id, round, usage: { idle: idle.usage, tcp: tcp.usage, udp: udp.usage }, mbits: { tcp: tcp.mbits, udp: udp.mbits } };
  });
}

/** Bytes per packet beyond the idle floor (scaled to the window's length). */
function perPacket(sample: Sample, window: Window, side: number): number | undefined {
  const u = sample.usage[window][side]!;
  const idle = sample.usage.idle[side]!;
  if (window === 'idle' || u.packets <= 0) return undefined;
  const floor = (idle.allocatedBytes / idle.seconds) * u.seconds;
  return Math.max(0, u.allocatedBytes - floor) / u.packets;
}

export async function run(options: BenchOptions): Promise<BenchResult> {
  const s = settings(options);
  const impls = IMPLEMENTATIONS.filter((m) => s.only.includes(m.id)).map((m) =>
    s.heapProfiles ? { ...m, env: { ...m.env, NODE_OPTIONS: `--heap-prof --heap-prof-interval=4096 --heap-prof-dir=${s.heapProfiles}` } } : m,
  );
  const out = (line: string): void => void process.stdout.write(line + '\n');
  const load0 = os.loadavg();
  out(`wgts data-path allocation benchmark${options.quick ? ' (--quick: smoke run, do not quote)' : ''}`);
  out(describeEnvironment(environment(['sodium-native'])));
  out(describeSourceState(await sourceState()));
  out(`${s.rounds} round(s) × ${impls.length} contenders, windows of ${s.durationS} s; order rotates each round`);
  const bed = new Bed('alloc');
  const samples: Sample[] = [];
  try {
    await bed.sweepStale();
    const link = await bed.veth(await bed.namespace('a'), await bed.namespace('b'));
    for (let round = 0; round < s.rounds; round++) {
      for (let i = 0; i < impls.length; i++) {
        const impl = impls[(i + round) % impls.length]!;
        process.stderr.write(`round ${round + 1}/${s.rounds}: ${impl.label}\n`);
        samples.push(await runOne(bed, link, impl, round, s));
      }
    }
  } finally {
    await bed.cleanup();
  }
  const load1 = os.loadavg();
  const rows: string[][] = [];
  for (const impl of impls) {
    const mine = samples.filter((x) => x.impl === impl.id);
    for (const window of WINDOWS) {
      SIDES.forEach((side, k) => {
        const u = mine.map((x) => x.usage[window][k]!);
        rows.push([
          impl.label,
          window === 'idle' ? 'idle' : `${window} (${fmtSummary(mine.map((x) => x.mbits[window]))} Mbit/s)`,
          side,
          fmtSummary(u.map((x) => x.packets)),
          fmtSummary(u.map((x) => x.allocatedBytes / 1024)),
          fmtSummary(mine.map((x) => perPacket(x, window, k))),
          fmtSummary(u.map((x) => x.gcMinor)),
          fmtSummary(u.map((x) => x.gcMajor)),
          fmtSummary(u.map((x) => (x.gcPauseMs / (x.seconds * 1000)) * 100)),
        ]);
      });
    }
  }
  out('');
  out(
    markdownTable(
      ['Contender', 'Window', 'Daemon', 'Packets', 'Heap allocated (KiB)', 'Bytes per packet (beyond idle)', 'Scavenges', 'Major GCs', 'GC pause (% of window)'],
      rows,
      [false, false, false, true, true, true, true, true, true],
    ),
  );
  out('');
  out(`Figures: median (min–max) over ${s.rounds} round(s); windows of ${s.durationS} s. Load average ${load0.map(fmt).join(' ')} at start, ${load1.map(fmt).join(' ')} at end.`);
  return { settings: s, samples, load: { start: load0, end: load1 } };
}
