/**
 * Target "uapi-server": the UAPI unix-socket server (src/device/uapi-server.ts) over a real
 * socket in a temp directory, in front of a FakeDevice, fed request streams over real
 * connections.
 *
 * Input: the bytes a client sends on one connection, how many pieces they are written in
 * (each on its own turn of the event loop, so lines straddle reads), and how the client
 * leaves: half-close and read everything ("end"), reset right after writing ("destroy"), or
 * stay connected while another client is served ("hold"). The server runs with small limits
 * (512-byte lines, 8 KiB requests) so the oversize paths are reachable.
 *
 * A model of the protocol (the serve loop of uapi-server.ts, written out again here, with
 * parseSet and a shadow FakeDevice) predicts, for "end", the exact bytes the server answers
 * and which sets reach apply(). Properties: no exception escapes (uncaught or unhandled); the
 * server closes every connection it is done with, and its connection table empties; "end" gets
 * exactly the model's answer bytes; the device ends in the model's state — a rejected set never
 * changes it — and after "destroy"/"hold" in the state after some prefix of the model's
 * accepted sets; log lines never repeat a private or preshared key from the input; while a
 * client holds a connection half-way through a request, another client's get=1 is answered.
 * Every check(): a fresh connection's get=1 returns exactly the device's configuration.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, type ConfigTransaction } from '../../src/device/config.ts';
import { ENOANO, UapiServer } from '../../src/device/uapi-server.ts';
import { formatGet, parseGet, SetParser } from '../../src/device/uapi.ts';
import { fromHex } from '../../src/util/hex.ts';
import { parseCidr } from '../../src/util/ip.ts';
import { FakeDevice } from '../helpers/fake-device.ts';
import { hexOf, Mutator, type Rng } from '../helpers/mutate.ts';
import { ByteReader, ByteWriter, check, FuzzViolation, type FuzzTarget, weighted } from './target.ts';
import { canonicalSnapshot, checkNoSecret, secretValues } from './target-uapi-parse.ts';
import { generateSetLines, mutateLines, PEER_KEYS, PRIVATE_KEYS, seedSetBodies } from './uapi-grammar.ts';

const MAX_LINE = 512;
const MAX_REQUEST = 8192;
const PORTS_IN_USE = [51821, 60000];
const ENOSYS = 38;
/** How long the server may take to finish with a connection. */
const DEADLINE_MS = 5_000;
const RESET_EVERY = 32;

type Leave = 'end' | 'destroy' | 'hold';
const LEAVES: readonly Leave[] = ['end', 'destroy', 'hold'];

export interface ServerInput {
  readonly bytes: Uint8Array;
  /** Written in this many pieces (1–8). */
  readonly pieces: number;
  readonly leave: Leave;
}

/** FakeDevice's private state (test/helpers/fake-device.ts), for shadow(). */
interface FakePeerState {
  readonly allowedIps: Map<string, unknown>;
}
interface FakeState {
  readonly peers: Map<string, FakePeerState>;
}

const BASELINE: ConfigTransaction = {
  privateKey: fromHex(PRIVATE_KEYS[1]!),
  listenPort: 51820,
  fwmark: 0,
  replacePeers: true,
  peers: [{ publicKey: fromHex(PEER_KEYS[2]!), endpoint: { host: '198.18.0.5', port: 51820 }, addAllowedIps: [parseCidr('100.64.5.0/24')] }],
};

// ---------------------------------------------------------------------------------------------
// The protocol model

const TOO_LONG = Symbol('too long');
type ModelLine = { line: string; terminated: boolean } | null | typeof TOO_LONG;

/** LineReader over a complete input. */
class ModelReader {
  private pos = 0;
  private readonly buf: Buffer;
  constructor(bytes: Uint8Array) {
    this.buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  }
  next(): ModelLine {
    const nl = this.buf.indexOf(0x0a, this.pos);
    if (nl >= 0) {
      if (nl - this.pos > MAX_LINE) return TOO_LONG;
      const line = this.buf.toString('utf8', this.pos, nl);
      this.pos = nl + 1;
      return { line, terminated: true };
    }
    if (this.buf.length - this.pos > MAX_LINE) return TOO_LONG;
    if (this.pos >= this.buf.length) return null;
    const line = this.buf.toString('utf8', this.pos);
    this.pos = this.buf.length;
    return { line, terminated: false };
  }
}

interface Prediction {
  /** The exact bytes the server answers when the client sends everything and half-closes. */
  readonly answer: string;
  /** Canonical device states: before, and after each accepted set (only the last unless everyState). */
  readonly states: readonly string[];
  readonly requests: number;
}

function errnoOf(err: unknown): number {
  return err instanceof ConfigError && err.errno > 0 ? err.errno : ENOANO;
}

/** Runs the serve loop of uapi-server.ts over input, against shadow (which it changes). */
async function predict(input: Uint8Array, shadow: FakeDevice, everyState: boolean): Promise<Prediction> {
  const reader = new ModelReader(input);
  const states = everyState ? [canonicalSnapshot(shadow.snapshot())] : [];
  let answer = '';
  let requests = 0;
  const apply = async (tx: ConfigTransaction): Promise<string> => {
    try {
      await shadow.apply(tx);
      if (everyState) states.push(canonicalSnapshot(shadow.snapshot()));
      return 'errno=0\n\n';
    } catch (err) {
      return `errno=-${errnoOf(err)}\n\n`;
    }
  };
  for (;;) {
    const op = reader.next();
    if (op === null || op === TOO_LONG || !op.terminated) break;
    requests++;
    if (op.line === 'get=1' || op.line === 'stats=1') {
      const blank = reader.next();
      if (blank === null || blank === TOO_LONG) break;
      if (blank.line !== '') {
        answer += 'errno=-22\n\n';
        continue;
      }
      answer += op.line === 'get=1' ? `${formatGet(shadow.snapshot())}errno=0\n\n` : `errno=-${ENOSYS}\n\n`;
      continue;
    }
    if (op.line !== 'set=1') break;
    const parser = new SetParser({ firstLineNumber: 2 });
    let bytes = 'set=1\n'.length;
    let failed = false;
    let keepGoing = true;
    let applyNow = false;
    for (;;) {
      const next = reader.next();
      if (next === TOO_LONG) {
        if (!failed) answer += 'errno=-22\n\n';
        keepGoing = false;
        break;
      }
      if (next === null) {
        if (failed) keepGoing = false;
        else applyNow = true;
        break;
      }
      bytes += Buffer.byteLength(next.line) + (next.terminated ? 1 : 0);
      if (bytes > MAX_REQUEST) {
        if (!failed) answer += 'errno=-22\n\n';
        keepGoing = false;
        break;
      }
      if (next.line === '') {
        if (!failed) applyNow = true;
        break;
      }
      if (failed) continue;
      try {
        parser.feed(next.line);
      } catch (err) {
        failed = true;
        answer += `errno=-${errnoOf(err)}\n\n`;
      }
    }
    if (applyNow) {
      let tx: ConfigTransaction | undefined;
      try {
        tx = parser.finish();
      } catch (err) {
        answer += `errno=-${errnoOf(err)}\n\n`;
      }
      if (tx) answer += await apply(tx);
    }
    if (!keepGoing) break;
  }
  if (!everyState) states.push(canonicalSnapshot(shadow.snapshot()));
  return { answer, states, requests };
}

// ---------------------------------------------------------------------------------------------
// A client

interface Exchange {
  readonly received: string;
  /** The server closed (or ended) its side. */
  readonly closed: boolean;
  /**
   * Writing failed (EPIPE/ECONNRESET: the server had closed because the request was over).
   * Node then destroys the socket and may drop answer bytes it had not read yet, so what was
   * received is only a prefix of what the server sent.
   */
  readonly writeFailed: boolean;
}

function connect(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path, allowHalfOpen: true });
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** Collects what the server sends until it ends its side (or the deadline passes). */
function collect(socket: Socket, deadlineMs: number): Promise<Exchange> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let done = false;
    let writeFailed = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ received: Buffer.concat(chunks).toString('utf8'), closed, writeFailed });
    };
    const timer = setTimeout(() => finish(false), deadlineMs);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => finish(true));
    socket.on('close', () => finish(true));
    socket.on('error', () => {
      writeFailed = true;
    });
  });
}

async function writePieces(socket: Socket, bytes: Uint8Array, pieces: number): Promise<void> {
  const size = Math.max(1, Math.ceil(bytes.length / pieces));
  for (let at = 0; at < bytes.length; at += size) {
    if (socket.destroyed) return;
    socket.write(bytes.subarray(at, at + size));
    if (at + size < bytes.length) await new Promise((r) => setImmediate(r));
  }
}

/** get=1 on a fresh connection: the answer text. */
async function probeGet(path: string): Promise<string> {
  const socket = await connect(path);
  const done = collect(socket, DEADLINE_MS);
  socket.end('get=1\n\n');
  const { received, closed } = await done;
  socket.destroy();
  check(closed, 'the server did not answer a get=1 probe in time');
  return received;
}

// ---------------------------------------------------------------------------------------------
// Inputs

const encoder = new TextEncoder();

function setRequest(rng: Rng, lines: readonly string[]): string {
  const end = weighted(rng, [[12, '\n\n'], [1, '\n'], [1, ''], [1, '\n\r\n']]);
  return `set=1\n${lines.join('\n')}${end}`;
}

function request(rng: Rng): string {
  return weighted<() => string>(rng, [
    [4, () => setRequest(rng, generateSetLines(rng))],
    [3, () => 'get=1\n\n'],
    [1, () => 'stats=1\n\n'],
    [1, () => rng.pick(['get=1\n', 'get=1', 'get=1\nx\n', 'get=1\r\n\r\n', 'set=1\n', 'set=1', 'set=2\n\n', 'GET=1\n\n', '\n', '\n\n', 'get=1\n\nget=1\n\n', 'set=1\nlisten_port=1\nset=1\n\n'])],
    [0.5, () => `${'a'.repeat(rng.pick([MAX_LINE - 1, MAX_LINE, MAX_LINE + 1, MAX_LINE * 3]))}\n`],
    [0.5, () => `set=1\nlisten_port=${'1'.repeat(rng.pick([MAX_LINE - 12, MAX_LINE - 11, MAX_LINE - 10, MAX_LINE]))}\n\n`],
    [0.3, () => setRequest(rng, [`public_key=${rng.pick(PEER_KEYS)}`, ...Array.from({ length: rng.range(250, 330) }, (_, i) => `allowed_ip=100.${64 + (i >> 8)}.${i & 0xff}.0/24`)])],
    [0.5, () => Buffer.from(rng.bytes(rng.below(64))).toString('latin1')],
  ])();
}

export class UapiServerTarget implements FuzzTarget<ServerInput> {
  readonly name = 'uapi-server';
  readonly description = 'the UAPI unix-socket server (FakeDevice) fed request streams over real connections; answers and device state checked against a protocol model';
  private dir!: string;
  private server!: UapiServer;
  private device!: FakeDevice;
  private readonly logs: string[] = [];
  private inputs = 0;
  private mutator: Mutator | undefined;
  private mutatorRng: Rng | undefined;
  private readonly seedList: ServerInput[];
  private readonly tally = { end: 0, destroy: 0, hold: 0, requests: 0, answers_ok: 0, answers_error: 0, applied: 0, log_lines: 0, write_failed: 0 };

  constructor() {
    const bodies = seedSetBodies();
    const wgSet = (lines: string[]): string => `set=1\n${lines.join('\n')}\n\n`;
    const streams = [
      'get=1\n\n',
      wgSet(bodies[0]!),
      `${wgSet(bodies[1]!)}get=1\n\n`,
      `${wgSet(bodies[2]!)}${wgSet(bodies[3]!)}get=1\n\n`,
      `set=1\nlisten_port=99999\npublic_key=${PEER_KEYS[0]}\n\nget=1\n\n`,
      'stats=1\n\n',
      `${wgSet(bodies[4]!)}${wgSet(bodies[5]!)}${wgSet(bodies[6]!)}`,
    ];
    this.seedList = streams.map((s) => ({ bytes: encoder.encode(s), pieces: 1, leave: 'end' as const }));
  }

  async setup(): Promise<void> {
    this.dir = mkdtempSync(join(tmpdir(), 'wgts-fuzz-uapi-'));
    this.device = new FakeDevice({ portsInUse: PORTS_IN_USE });
    await this.device.apply(BASELINE);
    this.device.transactions.length = 0;
    this.server = new UapiServer();
    await this.server.listen('fuzz0', this.device, { dir: this.dir, maxLineBytes: MAX_LINE, maxRequestBytes: MAX_REQUEST, watchIntervalMs: 0, log: (m) => void this.logs.push(m) });
  }

  private get path(): string {
    return this.server.path!;
  }

  private connections(): number {
    return (this.server as unknown as { connections: Set<unknown> }).connections.size;
  }

  private async settle(): Promise<void> {
    const deadline = Date.now() + DEADLINE_MS;
    while (this.connections() > 0) {
      if (Date.now() > deadline) throw new FuzzViolation(`the server still holds ${this.connections()} connection(s) after the clients left`);
      await new Promise((r) => setImmediate(r));
    }
  }

  /**
   * A FakeDevice in the device's exact state. Copied field by field rather than applied as a
   * transaction: applying a private key costs a (pure JS) X25519 every input.
   */
  private shadow(): FakeDevice {
    const shadow = new FakeDevice({ portsInUse: PORTS_IN_USE });
    const from = (this.device as unknown as { state: FakeState }).state;
    const peers = new Map<string, FakePeerState>();
    for (const [k, p] of from.peers) peers.set(k, { ...p, allowedIps: new Map(p.allowedIps) });
    (shadow as unknown as { state: FakeState }).state = { ...from, peers };
    return shadow;
  }

  seeds(): readonly ServerInput[] {
    return this.seedList;
  }

  generate(rng: Rng): ServerInput {
    const n = weighted(rng, [[5, 1], [3, 2], [1, rng.range(3, 5)]]);
    let text = '';
    for (let i = 0; i < n; i++) text += request(rng);
    return { bytes: encoder.encode(text), pieces: this.pieces(rng), leave: this.leave(rng) };
  }

  private pieces(rng: Rng): number {
    return weighted(rng, [[7, 1], [3, rng.range(2, 8)]]);
  }

  private leave(rng: Rng): Leave {
    return weighted(rng, [[16, 'end'], [2, 'destroy'], [1, 'hold']] as const);
  }

  mutate(rng: Rng, input: ServerInput): ServerInput {
    const op = weighted(rng, [[5, 'lines'], [4, 'bytes'], [1, 'concat'], [1, 'how']] as const);
    switch (op) {
      case 'lines': {
        const lines = Buffer.from(input.bytes).toString('utf8').split('\n');
        return { ...input, bytes: encoder.encode(mutateLines(rng, lines).join('\n')) };
      }
      case 'bytes': {
        if (this.mutatorRng !== rng) {
          this.mutatorRng = rng;
          this.mutator = new Mutator(rng, {
            donors: this.seedList.map((s) => s.bytes),
            weights: { bitflip: 2, bitflips: 1, byte: 3, truncate: 3, extend: 1, splice: 3, length: 1 },
            lengths: [0, 1, 5, 6, 7, 100, MAX_LINE, MAX_LINE + 1, MAX_REQUEST, MAX_REQUEST + 1],
          });
        }
        return { ...input, bytes: this.mutator!.mutate(input.bytes).bytes };
      }
      case 'concat':
        return { ...input, bytes: new Uint8Array(Buffer.concat([input.bytes, rng.pick(this.seedList).bytes])) };
      case 'how':
        return { ...input, pieces: this.pieces(rng), leave: this.leave(rng) };
    }
  }

  async run(input: ServerInput): Promise<void> {
    if (++this.inputs % RESET_EVERY === 0) await this.reset();
    this.logs.length = 0;
    const secrets = secretValues(Buffer.from(input.bytes).toString('utf8').split('\n'));
    const model = await predict(input.bytes, this.shadow(), input.leave !== 'end');
    this.tally[input.leave]++;
    this.tally.requests += model.requests;
    const socket = await connect(this.path);
    const answer = collect(socket, DEADLINE_MS);
    await writePieces(socket, input.bytes, input.pieces);
    if (input.leave === 'end') {
      socket.end();
      const { received, closed, writeFailed } = await answer;
      socket.destroy();
      check(closed, () => `the server neither answered nor closed within ${DEADLINE_MS} ms (received ${JSON.stringify(received.slice(0, 200))})`);
      const differ = () => `answers differ from the protocol model${writeFailed ? ' (write failed: a prefix is enough)' : ''}:\nserver ${JSON.stringify(received.slice(0, 800))}\nmodel  ${JSON.stringify(model.answer.slice(0, 800))}`;
      if (writeFailed) {
        this.tally.write_failed++;
        check(model.answer.startsWith(received), differ);
      } else {
        check(received === model.answer, differ);
      }
      for (const m of received.matchAll(/errno=(-?\d+)\n\n/g)) this.tally[m[1] === '0' ? 'answers_ok' : 'answers_error']++;
    } else if (input.leave === 'destroy') {
      socket.destroy();
    } else {
      // Another client is served while this one sits half-way through whatever it sent.
      const other = await probeGet(this.path);
      check(/errno=0\n\n$/.test(other) && parseGet(other).errno === 0, () => `a get=1 probe beside a held connection got ${JSON.stringify(other.slice(0, 200))}`);
      socket.destroy();
    }
    await this.settle();
    const state = canonicalSnapshot(this.device.snapshot());
    if (input.leave === 'end') {
      check(state === model.states.at(-1), () => `device state differs from the model's:\ndevice ${state}\nmodel  ${model.states.at(-1)}`);
    } else {
      check(model.states.includes(state), () => `device state is none of the model's ${model.states.length} possible states:\n${state}`);
    }
    this.tally.applied += this.device.transactions.length;
    this.device.transactions.length = 0;
    this.tally.log_lines += this.logs.length;
    for (const line of this.logs) checkNoSecret(line, secrets, 'a log line');
  }

  private async reset(): Promise<void> {
    await this.device.apply(BASELINE);
    this.device.transactions.length = 0;
  }

  async check(): Promise<void> {
    await this.settle();
    const got = await probeGet(this.path);
    check(got === `${formatGet(this.device.snapshot())}errno=0\n\n`, () => `get=1 does not show the device's configuration: ${JSON.stringify(got.slice(0, 300))}`);
    await this.reset();
  }

  stats(): Record<string, number> {
    return { ...this.tally };
  }

  encode(input: ServerInput): Uint8Array {
    return new ByteWriter().u8(input.pieces).u8(LEAVES.indexOf(input.leave)).bytes(input.bytes).finish();
  }

  decode(bytes: Uint8Array): ServerInput {
    const r = new ByteReader(bytes);
    const pieces = Math.max(1, Math.min(8, r.u8()));
    const leave = LEAVES[r.u8()] ?? 'end';
    return { pieces, leave, bytes: r.bytes() };
  }

  describe(input: ServerInput): string {
    const text = Buffer.from(input.bytes).toString('utf8');
    return `${input.bytes.length} bytes in ${input.pieces} piece(s), then ${input.leave}: ${JSON.stringify(text.length > 600 ? `${text.slice(0, 600)}…` : text)}${input.bytes.length < 200 ? ` (hex ${hexOf(input.bytes)})` : ''}`;
  }

  async teardown(): Promise<void> {
    await this.server?.close();
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}
