/**
 * A bad link between two WireGuard peers: a UDP relay in a middle namespace that each peer uses
 * as the other's endpoint, and that drops, corrupts, duplicates and reorders what it forwards —
 * seeded, and counting everything it did.
 *
 *   A (198.18.0.1:51820) ⇄ relay M (198.18.0.2 / 198.18.1.1, :port) ⇄ B (198.18.1.2:51820)
 *
 * A is configured with B's endpoint = 198.18.0.2:port and B with A's = 198.18.1.1:port; a datagram
 * from A's address goes to B, one from B's goes to A, anything else is counted and ignored.
 *
 * Per datagram, one draw of a seeded PRNG (mulberry32) picks at most one fate, in this order:
 * drop (any message type); and for transport data messages (type 4) only: corrupt (one byte of
 * the encrypted part — offset ≥ 16, never the header — XORed with a non-zero value, so it must
 * fail authentication, not look like another index or counter), duplicate (sent twice, back to
 * back), or reorder (held back and released after 1..maxHoldPackets later datagrams of the same
 * direction have overtaken it — log-uniformly, so as many held for 1–10 as for 100–1000 — or
 * after maxHoldMs, whichever comes first). Everything else is
 * forwarded as is. Handshake messages are only ever dropped — or, with handshakeDelayMs, held
 * for exactly that long (a long path for them alone: two initiations sent less than that apart
 * cross on the way, deterministically).
 *
 * The relay reads each transport message's receiver index and counter (they travel in the clear)
 * and, when a held datagram is released, counts it as `tooOld` if 8128 or more newer counters of
 * that index have already been forwarded — outside the replay window, so the receiver must reject
 * it. With maxHoldPackets well below the window that stays 0, and every reordered datagram must be
 * accepted.
 *
 * Run as a script (`node chaos-relay.ts '<json ChaosRelayConfig>'`), with UDP through wgts's own
 * native socket (recvmmsg/sendmmsg batches, so the relay is not the bottleneck). It prints
 * `chaos-relay ready <port>` on stderr once bound, answers a `stats` line on stdin with one JSON
 * line of ChaosStats on stdout, takes `set <json ChaosRates>` to change the rates, and exits
 * (printing the final stats) when stdin closes. Imported, ChaosRelay starts it through a
 * NetnsBed and wraps those commands.
 */
import type { NetnsBed, TrackedProcess, VethPair } from './netns.ts';
import type { KeyPair, WgDaemon } from './wgts.ts';

/** Probabilities per datagram. */
export interface ChaosRates {
  /** Any message type. */
  readonly drop: number;
  /** Transport messages only. */
  readonly corrupt: number;
  readonly duplicate: number;
  readonly reorder: number;
}

export interface ChaosRelayConfig extends ChaosRates {
  readonly seed: number;
  /** Address to bind in the middle namespace (default 0.0.0.0) and port (0: any). */
  readonly bindAddress?: string;
  readonly port: number;
  /** The two peers' real endpoints, 'a.b.c.d' and port. */
  readonly a: { readonly host: string; readonly port: number };
  readonly b: { readonly host: string; readonly port: number };
  /** A held datagram is released after at most this many later datagrams overtook it (default 64; keep it well below 8128). */
  readonly maxHoldPackets?: number;
  /** …or after this long (default 20 ms). */
  readonly maxHoldMs?: number;
  /** Hold every handshake message (initiation, response, cookie reply) this long (default 0: not held). */
  readonly handshakeDelayMs?: number;
}

export interface DirectionStats {
  /** Datagrams that arrived from this direction's source. */
  received: number;
  /** Transport messages among them. */
  receivedTransport: number;
  /** Handshake initiations and responses among them. */
  receivedInitiations: number;
  receivedResponses: number;
  /** Datagrams sent on (duplicates count twice). */
  forwarded: number;
  dropped: number;
  droppedTransport: number;
  /** Transport messages forwarded with one byte of their encrypted part flipped. */
  corrupted: number;
  /** Transport messages forwarded twice (the extra copies). */
  duplicated: number;
  /** Transport messages held back and overtaken by at least one later datagram. */
  reordered: number;
  /** Largest number of later datagrams that overtook one held datagram. */
  maxOvertaken: number;
  /** Held datagrams released by the timer without having been overtaken (only delayed). */
  delayed: number;
  /** Released held datagrams 8128 or more counters behind the newest forwarded for their index. */
  tooOld: number;
  /** Handshake messages forwarded after handshakeDelayMs. */
  handshakesDelayed: number;
}

export interface ChaosStats {
  readonly seed: number;
  readonly rates: ChaosRates;
  readonly aToB: DirectionStats;
  readonly bToA: DirectionStats;
  /** Datagrams from neither peer. */
  unknownSource: number;
  /** Datagrams larger than a relay slot (not forwarded). */
  oversize: number;
  /** Datagrams the relay's socket refused (counted as lost on the link). */
  sendErrors: number;
  /** Times sendmmsg said the socket buffer was full (the relay then waits; nothing is lost). */
  sendBlocked: number;
  /** Datagrams held right now. */
  held: number;
}

/** The replay window of WireGuard (kernel, wireguard-go, wgts): counters this far behind are rejected. */
export const REPLAY_WINDOW = 8128;

const MESSAGE_INITIATION = 1;
const MESSAGE_RESPONSE = 2;
const MESSAGE_TRANSPORT = 4;
const TRANSPORT_HEADER = 16;
const TAG = 16;

/** mulberry32: a tiny, well-mixed 32-bit PRNG; the same seed gives the same sequence. */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function newDirection(): DirectionStats {
  return {
    received: 0,
    receivedTransport: 0,
    receivedInitiations: 0,
    receivedResponses: 0,
    forwarded: 0,
    dropped: 0,
    droppedTransport: 0,
    corrupted: 0,
    duplicated: 0,
    reordered: 0,
    maxOvertaken: 0,
    delayed: 0,
    tooOld: 0,
    handshakesDelayed: 0,
  };
}

/** A datagram held back for reordering. */
interface Held {
  readonly bytes: Uint8Array;
  /** Release once this many later datagrams of the direction have been forwarded. */
  readonly releaseAfter: number;
  overtaken: number;
  readonly deadline: number;
  readonly transport: boolean;
  readonly index: number;
  readonly counter: number;
}

/**
 * The chaos decisions for one direction, without I/O: feed it datagrams, it returns what to send
 * now (in order). Sans-I/O so the accounting is the same in the script and in a unit test.
 */
export class ChaosDirection {
  readonly stats = newDirection();
  private readonly held: Held[] = [];
  /** Newest counter forwarded per receiver index (transport messages). */
  private readonly newest = new Map<number, number>();
  private readonly random: () => number;
  private readonly maxHoldPackets: number;
  private readonly maxHoldMs: number;
  private readonly handshakeDelayMs: number;
  rates: ChaosRates;

  constructor(random: () => number, rates: ChaosRates, maxHoldPackets = 64, maxHoldMs = 20, handshakeDelayMs = 0) {
    this.random = random;
    this.rates = rates;
    this.maxHoldPackets = maxHoldPackets;
    this.maxHoldMs = maxHoldMs;
    this.handshakeDelayMs = handshakeDelayMs;
  }

  get heldCount(): number {
    return this.held.length;
  }

  /**
   * Decides the fate of one datagram (which the caller owns until the call returns; `out` gets
   * views that stay valid only until the next call, or copies for released held datagrams).
   */
  push(datagram: Uint8Array, now: number, out: Uint8Array[]): void {
    const s = this.stats;
    s.received++;
    const transport = datagram.length >= TRANSPORT_HEADER + TAG && datagram[0] === MESSAGE_TRANSPORT && datagram[1] === 0 && datagram[2] === 0 && datagram[3] === 0;
    if (transport) s.receivedTransport++;
    else if (datagram[0] === MESSAGE_INITIATION) s.receivedInitiations++;
    else if (datagram[0] === MESSAGE_RESPONSE) s.receivedResponses++;
    let r = this.random();
    const { drop, corrupt, duplicate, reorder } = this.rates;
    if (r < drop) {
      s.dropped++;
      if (transport) s.droppedTransport++;
      return;
    }
    r -= drop;
    if (transport) {
      if (r < corrupt) {
        const at = TRANSPORT_HEADER + Math.floor(this.random() * (datagram.length - TRANSPORT_HEADER));
        datagram[at] = datagram[at]! ^ (1 + Math.floor(this.random() * 255));
        s.corrupted++;
        this.forward(datagram, out);
        return;
      }
      r -= corrupt;
      if (r < duplicate) {
        s.duplicated++;
        this.forward(datagram, out);
        this.forward(datagram, out);
        return;
      }
      r -= duplicate;
      if (r < reorder) {
        const view = new DataView(datagram.buffer, datagram.byteOffset, datagram.byteLength);
        this.held.push({
          bytes: Uint8Array.from(datagram),
          releaseAfter: Math.max(1, Math.floor(Math.exp(this.random() * Math.log(this.maxHoldPackets + 1)))),
          overtaken: 0,
          deadline: now + this.maxHoldMs,
          transport,
          index: view.getUint32(4, true),
          counter: Number(view.getBigUint64(8, true)),
        });
        return;
      }
    } else if (this.handshakeDelayMs > 0) {
      this.held.push({ bytes: Uint8Array.from(datagram), releaseAfter: Infinity, overtaken: 0, deadline: now + this.handshakeDelayMs, transport, index: 0, counter: 0 });
      return;
    }
    this.forward(datagram, out);
  }

  /** Releases held datagrams whose time is up (call from a timer). */
  expire(now: number, out: Uint8Array[]): void {
    for (let i = 0; i < this.held.length; ) {
      const h = this.held[i]!;
      if (h.deadline <= now) {
        this.held.splice(i, 1);
        this.release(h, out);
      } else {
        i++;
      }
    }
  }

  /** Releases everything still held (at shutdown). */
  releaseAll(out: Uint8Array[]): void {
    for (const h of this.held.splice(0)) this.release(h, out);
  }

  private forward(datagram: Uint8Array, out: Uint8Array[]): void {
    this.noteCounter(datagram);
    out.push(datagram);
    this.stats.forwarded++;
    // Every forwarded datagram overtakes what is held; some are then due.
    for (let i = 0; i < this.held.length; ) {
      const h = this.held[i]!;
      h.overtaken++;
      if (h.overtaken >= h.releaseAfter) {
        this.held.splice(i, 1);
        this.release(h, out);
      } else {
        i++;
      }
    }
  }

  private release(h: Held, out: Uint8Array[]): void {
    const s = this.stats;
    if (!h.transport) {
      s.handshakesDelayed++;
      out.push(h.bytes);
      s.forwarded++;
      return;
    }
    if (h.overtaken > 0) {
      s.reordered++;
      if (h.overtaken > s.maxOvertaken) s.maxOvertaken = h.overtaken;
    } else {
      s.delayed++;
    }
    const newest = this.newest.get(h.index);
    if (newest !== undefined && newest - h.counter >= REPLAY_WINDOW) s.tooOld++;
    this.noteCounter(h.bytes);
    out.push(h.bytes);
    s.forwarded++;
  }

  private noteCounter(datagram: Uint8Array): void {
    if (datagram.length < TRANSPORT_HEADER || datagram[0] !== MESSAGE_TRANSPORT) return;
    const view = new DataView(datagram.buffer, datagram.byteOffset, datagram.byteLength);
    const index = view.getUint32(4, true);
    const counter = Number(view.getBigUint64(8, true));
    const newest = this.newest.get(index);
    if (newest === undefined || counter > newest) this.newest.set(index, counter);
  }
}

// ---------------------------------------------------------------------------------------------
// The test side.

/** The header's topology: namespaces A, M (the relay's), B, joined by two veths. */
export interface RelayPath {
  readonly nsA: string;
  readonly nsM: string;
  readonly nsB: string;
  /** A 198.18.0.1 ⇄ M 198.18.0.2 */
  readonly am: VethPair;
  /** M 198.18.1.1 ⇄ B 198.18.1.2 */
  readonly mb: VethPair;
}

export async function createRelayPath(bed: NetnsBed): Promise<RelayPath> {
  const nsA = await bed.createNamespace('a');
  const nsM = await bed.createNamespace('m');
  const nsB = await bed.createNamespace('b');
  const am = await bed.createVethPair(nsA, nsM);
  const mb = await bed.createVethPair(nsM, nsB);
  return { nsA, nsM, nsB, am, mb };
}

/** The relay's view of the path: A and B at their veth addresses, on wgPort. */
export function relayEnds(path: RelayPath, wgPort: number): Pick<ChaosRelayConfig, 'a' | 'b'> {
  return { a: { host: path.am.a.address4, port: wgPort }, b: { host: path.mb.b.address4, port: wgPort } };
}

/**
 * Configures a (in A, overlay 100.64.0.1) and b (in B, 100.64.0.2) as each other's only peer,
 * each with the relay's address on its own link as the other's endpoint.
 */
export async function configureThroughRelay(path: RelayPath, relayPort: number, wgPort: number, [a, b]: readonly [WgDaemon, WgDaemon], [keysA, keysB]: readonly [KeyPair, KeyPair]): Promise<void> {
  await a.configure({
    privateKey: keysA.privateKey,
    listenPort: wgPort,
    peers: [{ publicKey: keysB.publicKey, endpoint: `${path.am.b.address4}:${relayPort}`, allowedIps: ['100.64.0.2/32'] }],
    addresses: ['100.64.0.1/24'],
  });
  await b.configure({
    privateKey: keysB.privateKey,
    listenPort: wgPort,
    peers: [{ publicKey: keysA.publicKey, endpoint: `${path.mb.a.address4}:${relayPort}`, allowedIps: ['100.64.0.1/32'] }],
    addresses: ['100.64.0.2/24'],
  });
}

export class ChaosRelay {
  readonly process: TrackedProcess;
  readonly port: number;
  private stdout = '';
  private readonly lineWaiters: Array<(line: string) => void> = [];

  private constructor(proc: TrackedProcess, port: number) {
    this.process = proc;
    this.port = port;
    proc.child.stdout!.on('data', (chunk: Buffer) => {
      this.stdout += chunk.toString();
      for (;;) {
        const nl = this.stdout.indexOf('\n');
        if (nl < 0) break;
        const line = this.stdout.slice(0, nl);
        this.stdout = this.stdout.slice(nl + 1);
        this.lineWaiters.shift()?.(line);
      }
    });
  }

  /** Starts the relay in ns (Node 24, the test's own) and resolves once it is bound. */
  static async start(bed: NetnsBed, ns: string, config: ChaosRelayConfig): Promise<ChaosRelay> {
    const script = new URL(import.meta.url).pathname;
    const proc = bed.spawn(ns, process.execPath, ['--disable-warning=ExperimentalWarning', script, JSON.stringify(config)], { stdio: 'pipe' });
    let stderr = '';
    proc.child.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      if (stderr.length > 65536) stderr = stderr.slice(-65536);
    });
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`chaos-relay: not ready after 10 s\n${stderr}`)), 10_000);
      const check = (): void => {
        const m = /chaos-relay ready (\d+)/.exec(stderr);
        if (m) {
          clearTimeout(timer);
          proc.child.stderr!.off('data', check);
          resolve(Number(m[1]));
        }
      };
      proc.child.stderr!.on('data', check);
      void proc.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`chaos-relay exited (${code ?? signal}) before it was ready\n${stderr}`));
      });
    }).catch(async (err: Error) => {
      await bed.stop(proc);
      throw err;
    });
    return new ChaosRelay(proc, port);
  }

  private request(line: string): Promise<ChaosStats> {
    if (this.process.hasExited()) return Promise.reject(new Error('chaos-relay has exited'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`chaos-relay: no answer to ${line}`)), 5_000);
      this.lineWaiters.push((answer) => {
        clearTimeout(timer);
        try {
          resolve(JSON.parse(answer) as ChaosStats);
        } catch (err) {
          reject(err as Error);
        }
      });
      this.process.child.stdin!.write(`${line}\n`);
    });
  }

  stats(): Promise<ChaosStats> {
    return this.request('stats');
  }

  /** New rates from now on; resolves with the stats at the switch. */
  setRates(rates: ChaosRates): Promise<ChaosStats> {
    return this.request(`set ${JSON.stringify(rates)}`);
  }

  /** Closes stdin; resolves with the final stats (held datagrams are released first). */
  async close(): Promise<ChaosStats> {
    const final = new Promise<string>((resolve) => this.lineWaiters.push(resolve));
    this.process.child.stdin!.end();
    const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 5_000).unref());
    const line = await Promise.race([final, timeout]);
    if (line === 'timeout') {
      this.process.child.kill('SIGKILL');
      await this.process.exited;
      throw new Error('chaos-relay did not exit');
    }
    await this.process.exited;
    return JSON.parse(line) as ChaosStats;
  }
}

// ---------------------------------------------------------------------------------------------
// The script side.

const SLOT = 2048;
const BATCH = 128;
/** Output slots: a batch can emit two per input (duplicates) plus released held datagrams. */
const OUT_SLOTS = 4 * BATCH;

async function main(argv: readonly string[]): Promise<void> {
  const { UdpSocket } = await import('../../../src/tun/udp-socket.ts');
  const { ADDRESS_RECORD_SIZE, writeEndpoint, clearLocal, sameRemote } = await import('../../../src/tun/address.ts');
  const config = JSON.parse(argv[0] ?? '') as ChaosRelayConfig;
  const random = mulberry32(config.seed);
  const rates: ChaosRates = { drop: config.drop, corrupt: config.corrupt, duplicate: config.duplicate, reorder: config.reorder };
  const directions = [
    new ChaosDirection(random, rates, config.maxHoldPackets, config.maxHoldMs, config.handshakeDelayMs), // from A, to B
    new ChaosDirection(random, rates, config.maxHoldPackets, config.maxHoldMs, config.handshakeDelayMs), // from B, to A
  ] as const;
  const stats = { unknownSource: 0, oversize: 0, sendErrors: 0, sendBlocked: 0 };

  // peers[0] = A, peers[1] = B; direction d sends to peers[1 - d].
  const peers = new Uint8Array(2 * ADDRESS_RECORD_SIZE);
  writeEndpoint(peers, 0, config.a.host, config.a.port);
  writeEndpoint(peers, 1, config.b.host, config.b.port);
  clearLocal(peers, 0);
  clearLocal(peers, 1);

  const socket = UdpSocket.bind(config.port, { family: 4, address: config.bindAddress ?? '0.0.0.0' });
  const slab = new Uint8Array(BATCH * SLOT);
  const lengths = new Int32Array(BATCH);
  const addrs = new Uint8Array(BATCH * ADDRESS_RECORD_SIZE);

  const outSlab = new Uint8Array(OUT_SLOTS * SLOT);
  const outOffsets = Int32Array.from({ length: OUT_SLOTS }, (_, i) => i * SLOT);
  const outLengths = new Int32Array(OUT_SLOTS);
  const outAddrs = new Uint8Array(OUT_SLOTS * ADDRESS_RECORD_SIZE);
  const sendStats = new Int32Array(3);
  let outCount = 0;
  let outSent = 0;
  let blocked = false;
  /** Datagrams emitted while the socket was full (reading is paused then, so this stays small). */
  const overflow: Array<{ peer: number; bytes: Uint8Array }> = [];
  const emitted: Uint8Array[] = [];

  /** Sends the queued output; false when the socket is full (it resumes itself once writable). */
  const flush = (): boolean => {
    while (outSent < outCount) {
      const n = socket.sendBatch(
        outSlab,
        outOffsets.subarray(outSent),
        outLengths.subarray(outSent),
        outAddrs.subarray(outSent * ADDRESS_RECORD_SIZE),
        outCount - outSent,
        sendStats,
      );
      stats.sendErrors += sendStats[0]!;
      outSent += n;
      if (outSent < outCount) {
        stats.sendBlocked++;
        blocked = true;
        socket.pause();
        socket.onWritable(() => {
          blocked = false;
          if (flush() && drainOverflow()) socket.resume();
        });
        return false;
      }
    }
    outCount = 0;
    outSent = 0;
    return true;
  };

  const place = (peer: number, bytes: Uint8Array): void => {
    outSlab.set(bytes, outCount * SLOT);
    outLengths[outCount] = bytes.length;
    outAddrs.set(peers.subarray(peer * ADDRESS_RECORD_SIZE, (peer + 1) * ADDRESS_RECORD_SIZE), outCount * ADDRESS_RECORD_SIZE);
    outCount++;
  };

  const drainOverflow = (): boolean => {
    while (overflow.length > 0) {
      if (outCount === OUT_SLOTS && !flush()) return false;
      const next = overflow.shift()!;
      place(next.peer, next.bytes);
    }
    return flush();
  };

  /** Queues what direction d emitted (to the other peer). */
  const queue = (d: number): void => {
    const peer = 1 - d;
    for (const bytes of emitted) {
      if (!blocked && outCount === OUT_SLOTS) flush();
      if (blocked || overflow.length > 0) overflow.push({ peer, bytes: Uint8Array.from(bytes) });
      else place(peer, bytes);
    }
    emitted.length = 0;
  };

  socket.onReadable(() => {
    for (let round = 0; round < 8 && !blocked; round++) {
      const n = socket.recvBatch(slab, SLOT, lengths, addrs, BATCH);
      if (n === 0) break;
      const now = performance.now();
      for (let i = 0; i < n; i++) {
        const length = lengths[i]!;
        if (length < 0) {
          stats.oversize++;
          continue;
        }
        const d = sameRemote(addrs, i, peers, 0) ? 0 : sameRemote(addrs, i, peers, 1) ? 1 : undefined;
        if (d === undefined) {
          stats.unknownSource++;
          continue;
        }
        directions[d].push(slab.subarray(i * SLOT, i * SLOT + length), now, emitted);
        queue(d);
      }
      if (!flush()) break;
    }
  });
  socket.onError((err) => {
    process.stderr.write(`chaos-relay: socket error ${err.message}\n`);
  });

  const releaseDue = (): void => {
    if (blocked) return;
    const now = performance.now();
    for (const d of [0, 1] as const) {
      directions[d].expire(now, emitted);
      queue(d);
    }
    flush();
  };
  const timer = setInterval(releaseDue, 2);

  const snapshot = (): ChaosStats => ({
    seed: config.seed,
    rates: directions[0].rates,
    aToB: directions[0].stats,
    bToA: directions[1].stats,
    ...stats,
    held: directions[0].heldCount + directions[1].heldCount,
  });

  let input = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk: string) => {
    input += chunk;
    for (;;) {
      const nl = input.indexOf('\n');
      if (nl < 0) break;
      const line = input.slice(0, nl).trim();
      input = input.slice(nl + 1);
      if (line === 'stats') {
        process.stdout.write(JSON.stringify(snapshot()) + '\n');
      } else if (line.startsWith('set ')) {
        const next = JSON.parse(line.slice(4)) as ChaosRates;
        for (const d of directions) d.rates = next;
        process.stdout.write(JSON.stringify(snapshot()) + '\n');
      } else if (line !== '') {
        process.stderr.write(`chaos-relay: unknown command ${line}\n`);
      }
    }
  });
  process.stdin.on('end', () => {
    clearInterval(timer);
    for (const d of [0, 1] as const) {
      directions[d].releaseAll(emitted);
      queue(d);
    }
    drainOverflow();
    process.stdout.write(JSON.stringify(snapshot()) + '\n', () => {
      socket.close();
      process.exit(0);
    });
  });

  process.stderr.write(`chaos-relay ready ${socket.port}\n`);
}

if (import.meta.main) {
  main(process.argv.slice(2)).catch((err: Error) => {
    process.stderr.write(`chaos-relay: ${err.stack ?? err.message}\n`);
    process.exit(1);
  });
}
