/**
 * The cryptographic cost of the protocol, per backend (libsodium via sodium-native, and pure
 * TypeScript via @noble), measured side by side in one run: every round samples both backends,
 * alternating which goes first, and a figure is the median over rounds.
 *
 *   AEAD seal/open      ChaCha20-Poly1305 in place into caller buffers, 64 and 1420 B (Gbit/s of plaintext)
 *   transport seal/open Keypair.seal / decodeTransport + Keypair.open of a 1420-byte packet, in place
 *                       (header, counter nonce, replay window): the data path's per-packet crypto
 *   X25519              a shared secret, and a public key from the base point (ops/s)
 *   full handshake      both sides' work: createInitiation + MAC1, checkMac1 + consumeInitiation,
 *                       createResponse + MAC1, checkMac1 + consumeResponse, deriveKeypair and
 *                       Keypair construction on both sides, fresh ephemerals (ops/s)
 *
 * Options (after `crypto`): --rounds N, --min-time-ms MS, --only id[,id…], --backends name[,name]
 * (one backend alone is for profiling: npx node --cpu-prof bench/index.ts crypto --only handshake --backends sodium).
 */
import type { BackendName, CryptoBackend } from '../src/noise/crypto/index.ts';
import { BACKEND_NAMES, createBackend } from '../src/noise/crypto/index.ts';
import { encodeTai64n, TAI64N_LENGTH } from '../src/noise/crypto/tai64n.ts';
import { CookieChecker, CookieGenerator, equalConstantTime } from '../src/noise/cookie.ts';
import type { HandshakeState, PeerKeys, StaticIdentity } from '../src/noise/handshake.ts';
import {
  consumeInitiation,
  consumeResponse,
  createHandshakeState,
  createInitiation,
  createPeerKeys,
  createResponse,
  createStaticIdentity,
  deriveKeypair,
} from '../src/noise/handshake.ts';
import { Keypair } from '../src/noise/keypair.ts';
import {
  decodeInitiation,
  decodeResponse,
  decodeTransport,
  INITIATION_LENGTH,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  RESPONSE_LENGTH,
  TAG_LENGTH,
  TRANSPORT_HEADER_LENGTH,
} from '../src/noise/messages.ts';
import { HANDSHAKE_INITIATION_RATE } from '../src/noise/constants.ts';
import type { Environment } from './lib/env.ts';
import { bundledLibsodium, describeEnvironment, environment } from './lib/env.ts';
import { fmt, fmtRange, markdownTable } from './lib/format.ts';
import type { Stats, Workload } from './lib/measure.ts';
import { compare, stats } from './lib/measure.ts';
import type { BenchOptions, BenchResult } from './lib/types.ts';
import { readOptions } from './lib/options.ts';

const MTU = 1420;
const EMPTY = new Uint8Array(0);
/** Scratch for workloads that need one buffer per operation of a batch (open: distinct ciphertexts). */
const SCRATCH_BYTES = 384 * 1024;

type Unit = 'Gbit/s' | 'ops/s';

interface Case {
  readonly id: string;
  readonly title: string;
  readonly unit: Unit;
  /** Plaintext bytes per operation (Gbit/s cases). */
  readonly bytes?: number;
  readonly make: (b: CryptoBackend) => { workload: Workload; maxBatch?: number };
}

interface Goal {
  readonly caseId: string;
  readonly backend: BackendName;
  readonly atLeast: number;
  readonly text: string;
}

/** The benchmark's goals (not tests'): single-threaded figures, i.e. per core. */
const GOALS: readonly Goal[] = [
  { caseId: 'aead-seal-1420', backend: 'sodium', atLeast: 3, text: 'sodium AEAD seal at 1420 B ≥ 3 Gbit/s per core' },
  { caseId: 'handshake', backend: 'sodium', atLeast: 1500, text: 'sodium full handshakes ≥ 1,500/s per core' },
];

function random(b: CryptoBackend, length: number): Uint8Array {
  const out = new Uint8Array(length);
  b.randomBytes(out);
  return out;
}

function slotsFor(bytes: number): number {
  return Math.min(4096, Math.max(64, Math.floor(SCRATCH_BYTES / bytes)));
}

function aeadSeal(size: number) {
  return (b: CryptoBackend) => {
    const key = random(b, 32);
    const nonce = random(b, 12);
    const buf = random(b, size + TAG_LENGTH);
    const plaintext = buf.subarray(0, size);
    const sealed = size + TAG_LENGTH;
    return {
      workload: {
        run(n: number) {
          for (let i = 0; i < n; i++) {
            if (b.aeadSeal(buf, key, nonce, plaintext, EMPTY) !== sealed) throw new Error('aeadSeal');
          }
        },
      },
    };
  };
}

function aeadOpen(size: number) {
  return (b: CryptoBackend) => {
    const key = random(b, 32);
    const nonce = random(b, 12);
    const pristine = new Uint8Array(size + TAG_LENGTH);
    b.aeadSeal(pristine, key, nonce, random(b, size), EMPTY);
    const slots = Array.from({ length: slotsFor(pristine.length) }, () => new Uint8Array(pristine.length));
    return {
      maxBatch: slots.length,
      workload: {
        prepare(n: number) {
          for (let i = 0; i < n; i++) slots[i]!.set(pristine);
        },
        run(n: number) {
          for (let i = 0; i < n; i++) {
            const slot = slots[i]!;
            if (b.aeadOpen(slot, key, nonce, slot, EMPTY) !== size) throw new Error('aeadOpen');
          }
        },
      },
    };
  };
}

function sessionPair(b: CryptoBackend): { sender: Keypair; receiver: Keypair } {
  const k1 = random(b, 32);
  const k2 = random(b, 32);
  return {
    sender: new Keypair({ sendKey: k1, receiveKey: k2, localIndex: 1, remoteIndex: 2, isInitiator: true }, 0),
    receiver: new Keypair({ sendKey: Uint8Array.from(k2), receiveKey: Uint8Array.from(k1), localIndex: 2, remoteIndex: 1, isInitiator: false }, 0),
  };
}

function transportSeal(size: number) {
  return (b: CryptoBackend) => {
    const { sender } = sessionPair(b);
    const buf = random(b, TRANSPORT_HEADER_LENGTH + size + TAG_LENGTH);
    const plaintext = buf.subarray(TRANSPORT_HEADER_LENGTH, TRANSPORT_HEADER_LENGTH + size);
    const sealed = buf.length;
    return {
      workload: {
        run(n: number) {
          for (let i = 0; i < n; i++) {
            if (sender.seal(b, plaintext, buf, 0) !== sealed) throw new Error('Keypair.seal');
          }
        },
      },
    };
  };
}

function transportOpen(size: number) {
  return (b: CryptoBackend) => {
    const { sender, receiver } = sessionPair(b);
    const length = TRANSPORT_HEADER_LENGTH + size + TAG_LENGTH;
    const count = slotsFor(length);
    // Packets with counters 0..count-1, sealed once; each batch opens copies of them in place
    // after resetting the receiver's replay window, so every open sees a fresh counter.
    const pristine = Array.from({ length: count }, () => {
      const packet = random(b, length);
      sender.seal(b, packet.subarray(TRANSPORT_HEADER_LENGTH, TRANSPORT_HEADER_LENGTH + size), packet, 0);
      return packet;
    });
    const slots = pristine.map((p) => new Uint8Array(p.length));
    return {
      maxBatch: count,
      workload: {
        prepare(n: number) {
          receiver.replay.reset();
          for (let i = 0; i < n; i++) slots[i]!.set(pristine[i]!);
        },
        run(n: number) {
          for (let i = 0; i < n; i++) {
            const slot = slots[i]!;
            const view = decodeTransport(slot);
            if (!view.ok) throw new Error(`decodeTransport: ${view.error}`);
            const { encrypted } = view.value;
            if (receiver.open(b, view.value.counter, encrypted, encrypted, 0) !== size) throw new Error('Keypair.open');
          }
        },
      },
    };
  };
}

function x25519Shared(b: CryptoBackend) {
  const priv = random(b, 32);
  const pub = new Uint8Array(32);
  b.x25519Base(pub, random(b, 32));
  const out = new Uint8Array(32);
  return {
    workload: {
      run(n: number) {
        for (let i = 0; i < n; i++) if (!b.x25519(out, priv, pub)) throw new Error('x25519');
      },
    },
  };
}

function x25519Base(b: CryptoBackend) {
  const priv = random(b, 32);
  const out = new Uint8Array(32);
  return {
    workload: {
      run(n: number) {
        for (let i = 0; i < n; i++) b.x25519Base(out, priv);
      },
    },
  };
}

interface Side {
  readonly keys: PeerKeys;
  readonly handshake: HandshakeState;
}

/** Two peers that handshake with each other over and over; one() runs a complete handshake. */
function handshakePair(b: CryptoBackend): { one: () => [Keypair, Keypair] } {
  const initiator: StaticIdentity = createStaticIdentity(b, random(b, 32));
  const responder: StaticIdentity = createStaticIdentity(b, random(b, 32));
  const psk = random(b, 32);
  // Static-static DH and the label hashes are per-peer precomputation, outside the loop.
  const atInitiator: Side = { keys: createPeerKeys(b, initiator, responder.publicKey, psk), handshake: createHandshakeState() };
  const atResponder: Side = { keys: createPeerKeys(b, responder, initiator.publicKey, psk), handshake: createHandshakeState() };
  const macsFromInitiator = new CookieGenerator(b, atInitiator.keys.mac1Key, atInitiator.keys.cookieKey);
  const macsFromResponder = new CookieGenerator(b, atResponder.keys.mac1Key, atResponder.keys.cookieKey);
  const checkAtResponder = new CookieChecker(b, responder.mac1Key, responder.cookieKey);
  const checkAtInitiator = new CookieChecker(b, initiator.mac1Key, initiator.cookieKey);
  const initiation = new Uint8Array(INITIATION_LENGTH);
  const response = new Uint8Array(RESPONSE_LENGTH);
  const initiatorEphemeral = new Uint8Array(32);
  const responderEphemeral = new Uint8Array(32);
  const timestamp = new Uint8Array(TAI64N_LENGTH);
  const lookupByKey = (key: Uint8Array): Side | undefined => (equalConstantTime(key, initiator.publicKey) ? atResponder : undefined);
  const lookupByIndex = (index: number): Side | undefined => (index === atInitiator.handshake.localIndex ? atInitiator : undefined);
  let now = 0;
  let seconds = 1_800_000_000n;
  let index = 0;

  const one = (): [Keypair, Keypair] => {
    // A synthetic clock past the flood limit, and a newer timestamp, for every handshake.
    now += HANDSHAKE_INITIATION_RATE + 1;
    encodeTai64n(timestamp, seconds++, 0);
    b.randomBytes(initiatorEphemeral);
    b.randomBytes(responderEphemeral);

    const created = createInitiation(b, initiator, atInitiator.keys, atInitiator.handshake,
      { ephemeralPrivate: initiatorEphemeral, timestamp, senderIndex: (index = (index + 1) >>> 0) }, initiation);
    if (!created.ok) throw new Error(`createInitiation: ${created.error}`);
    macsFromInitiator.addMacs(initiation, MESSAGE_INITIATION, now);

    if (!checkAtResponder.checkMac1(initiation, MESSAGE_INITIATION)) throw new Error('checkMac1 (initiation)');
    const initiationView = decodeInitiation(initiation);
    if (!initiationView.ok) throw new Error(`decodeInitiation: ${initiationView.error}`);
    const consumed = consumeInitiation(b, responder, initiationView.value, lookupByKey, now);
    if (!consumed.ok) throw new Error(`consumeInitiation: ${consumed.error}`);
    const peer = consumed.value.peer;
    const responded = createResponse(b, peer.keys, peer.handshake,
      { ephemeralPrivate: responderEphemeral, senderIndex: (index = (index + 1) >>> 0) }, response);
    if (!responded.ok) throw new Error(`createResponse: ${responded.error}`);
    macsFromResponder.addMacs(response, MESSAGE_RESPONSE, now);
    const responderKeys = deriveKeypair(peer.handshake);
    if (!responderKeys.ok) throw new Error(`deriveKeypair (responder): ${responderKeys.error}`);

    if (!checkAtInitiator.checkMac1(response, MESSAGE_RESPONSE)) throw new Error('checkMac1 (response)');
    const responseView = decodeResponse(response);
    if (!responseView.ok) throw new Error(`decodeResponse: ${responseView.error}`);
    const completed = consumeResponse(b, initiator, responseView.value, lookupByIndex);
    if (!completed.ok) throw new Error(`consumeResponse: ${completed.error}`);
    const initiatorKeys = deriveKeypair(completed.value.handshake);
    if (!initiatorKeys.ok) throw new Error(`deriveKeypair (initiator): ${initiatorKeys.error}`);

    return [new Keypair(initiatorKeys.value, now), new Keypair(responderKeys.value, now)];
  };
  return { one };
}

function handshake(b: CryptoBackend) {
  const { one } = handshakePair(b);
  // Once, untimed: the two sides' keypairs must talk to each other.
  const [i, r] = one();
  const packet = new Uint8Array(TRANSPORT_HEADER_LENGTH + 64 + TAG_LENGTH);
  i.seal(b, packet.subarray(TRANSPORT_HEADER_LENGTH, TRANSPORT_HEADER_LENGTH + 64), packet, 0);
  const view = decodeTransport(packet);
  if (!view.ok || r.open(b, view.value.counter, view.value.encrypted, new Uint8Array(64 + TAG_LENGTH), 0) !== 64) {
    throw new Error('handshake keypairs do not interoperate');
  }
  return {
    workload: {
      run(n: number) {
        for (let k = 0; k < n; k++) one();
      },
    },
  };
}

/** Backend operations one full handshake performs (after per-peer precomputation), counted on one run. */
function countPerHandshake(b: CryptoBackend): { x25519: number; x25519Base: number; aead: number } {
  const counts = { x25519: 0, x25519Base: 0, aead: 0 };
  const counting: CryptoBackend = {
    ...b,
    x25519(out, priv, pub) {
      counts.x25519++;
      return b.x25519(out, priv, pub);
    },
    x25519Base(out, priv) {
      counts.x25519Base++;
      b.x25519Base(out, priv);
    },
    aeadSeal(out, key, nonce, plaintext, ad) {
      counts.aead++;
      return b.aeadSeal(out, key, nonce, plaintext, ad);
    },
    aeadOpen(out, key, nonce, ciphertext, ad) {
      counts.aead++;
      return b.aeadOpen(out, key, nonce, ciphertext, ad);
    },
  };
  const { one } = handshakePair(counting);
  counts.x25519 = counts.x25519Base = counts.aead = 0;
  one();
  return counts;
}

const CASES: readonly Case[] = [
  { id: 'aead-seal-64', title: 'AEAD seal, 64 B', unit: 'Gbit/s', bytes: 64, make: aeadSeal(64) },
  { id: 'aead-open-64', title: 'AEAD open, 64 B', unit: 'Gbit/s', bytes: 64, make: aeadOpen(64) },
  { id: 'aead-seal-1420', title: 'AEAD seal, 1420 B', unit: 'Gbit/s', bytes: MTU, make: aeadSeal(MTU) },
  { id: 'aead-open-1420', title: 'AEAD open, 1420 B', unit: 'Gbit/s', bytes: MTU, make: aeadOpen(MTU) },
  { id: 'transport-seal-1420', title: 'transport Keypair.seal, 1420 B', unit: 'Gbit/s', bytes: MTU, make: transportSeal(MTU) },
  { id: 'transport-open-1420', title: 'transport decode + Keypair.open, 1420 B', unit: 'Gbit/s', bytes: MTU, make: transportOpen(MTU) },
  { id: 'x25519', title: 'X25519 shared secret', unit: 'ops/s', make: x25519Shared },
  { id: 'x25519-base', title: 'X25519 public key (base point)', unit: 'ops/s', make: x25519Base },
  { id: 'handshake', title: 'full handshake, both sides', unit: 'ops/s', make: handshake },
];

interface Settings {
  rounds: number;
  minTimeMs: number;
  warmupMs: number;
  only: readonly string[] | undefined;
  /** Backends to run (default all); one alone is for profiling, the ratio column then reads "–". */
  backends: readonly BackendName[];
}

function settings(options: BenchOptions): Settings {
  const s: Settings = options.quick
    ? { rounds: 3, minTimeMs: 25, warmupMs: 25, only: undefined, backends: BACKEND_NAMES }
    : { rounds: 7, minTimeMs: 250, warmupMs: 300, only: undefined, backends: BACKEND_NAMES };
  readOptions(options.args, '--rounds N, --min-time-ms MS, --only id[,id…], --backends name[,name]', (option, value) => {
    if (option === '--rounds') s.rounds = Math.round(value.positive());
    else if (option === '--min-time-ms') s.minTimeMs = s.warmupMs = value.positive();
    else if (option === '--only') s.only = value.ids(CASES.map((c) => c.id));
    else if (option === '--backends') s.backends = value.ids(BACKEND_NAMES) as BackendName[];
    else return false;
    return true;
  });
  return s;
}

function scale(s: Stats, factor: number): Stats {
  return stats(s.samples.map((x) => x * factor));
}

interface CaseResult {
  readonly id: string;
  readonly title: string;
  readonly unit: Unit;
  readonly bytesPerOp: number | undefined;
  /** Per backend: the figure in unit, and the same samples as operations per second. */
  readonly backends: Record<string, { value: Stats; opsPerSec: Stats }>;
  /** Median sodium / median noble, in unit. */
  readonly ratio: number;
}

interface GoalResult {
  readonly text: string;
  readonly caseId: string;
  readonly backend: BackendName;
  readonly atLeast: number;
  readonly median: number | undefined;
  readonly met: boolean | undefined;
}

function goalCell(c: CaseResult): string {
  const parts = GOALS.filter((g) => g.caseId === c.id).map((g) => {
    const median = c.backends[g.backend]?.value.median;
    const verdict = median === undefined ? '' : median >= g.atLeast ? ' — met' : ' — NOT met';
    return `${g.backend} ≥ ${fmt(g.atLeast)}${verdict}`;
  });
  return parts.join('; ');
}

export async function run(options: BenchOptions): Promise<BenchResult> {
  const s = settings(options);
  const env: Environment = environment(['sodium-native', '@noble/ciphers', '@noble/curves', '@noble/hashes']);
  const backends = s.backends.map((name) => createBackend(name));
  const libsodium = bundledLibsodium();
  const perHandshake = countPerHandshake(backends[0]!);
  const cases = CASES.filter((c) => s.only === undefined || s.only.includes(c.id));

  const out = (line: string): void => void process.stdout.write(line + '\n');
  out(`wgts crypto benchmark${options.quick ? ' (--quick: smoke run, do not quote)' : ''}`);
  out(describeEnvironment(env) + ` (libsodium ${libsodium})`);
  out(`${s.rounds} rounds × ${s.minTimeMs} ms per sample, backends alternating per round; figures are medians (min–max over rounds)`);
  out('');

  const results: CaseResult[] = [];
  for (const c of cases) {
    const made = Object.fromEntries(backends.map((b) => [b.name, c.make(b)])) as Record<string, ReturnType<Case['make']>>;
    const workloads = Object.fromEntries(Object.entries(made).map(([k, m]) => [k, m.workload])) as Record<string, Workload>;
    const maxBatch = Math.min(...Object.values(made).map((m) => m.maxBatch ?? Infinity));
    const raw = compare(workloads, {
      rounds: s.rounds,
      minTimeMs: s.minTimeMs,
      warmupMs: s.warmupMs,
      ...(Number.isFinite(maxBatch) ? { maxBatch } : {}),
    });
    const factor = c.unit === 'Gbit/s' ? ((c.bytes ?? 0) * 8) / 1e9 : 1;
    const perBackend: CaseResult['backends'] = {};
    for (const [name, st] of Object.entries(raw)) perBackend[name] = { value: scale(st, factor), opsPerSec: st };
    const ratio = (perBackend.sodium?.value.median ?? NaN) / (perBackend.noble?.value.median ?? NaN);
    results.push({ id: c.id, title: c.title, unit: c.unit, bytesPerOp: c.bytes, backends: perBackend, ratio });
    process.stderr.write(`  ${c.id}: ${backends.map((b) => `${b.name} ${fmt(perBackend[b.name]!.value.median)}`).join(', ')} ${c.unit}\n`);
  }
  const loadAfter = environment([]).loadavg1;

  const header = ['Measurement', 'Unit', ...backends.map((b) => `${b.name} median (min–max)`), 'sodium/noble', 'Goal'];
  const right = [false, false, ...backends.map(() => true), true, false];
  const rows = results.map((r) => [
    r.title,
    r.unit,
    ...backends.map((b) => {
      const v = r.backends[b.name]!.value;
      return fmtRange(v.median, v.min, v.max);
    }),
    Number.isFinite(r.ratio) ? `${fmt(r.ratio)}×` : '–',
    goalCell(r),
  ]);
  out('');
  out(markdownTable(header, rows, right));
  out('');
  out(`Full handshake = ${perHandshake.x25519Base + perHandshake.x25519} X25519 (${perHandshake.x25519Base} public keys from the base point + ` +
    `${perHandshake.x25519} shared secrets; static-static is precomputed per peer), ${perHandshake.aead} AEAD, and in src/noise/crypto/blake2s.ts ` +
    '16 KDF calls (42 HMAC-BLAKE2s), 12 BLAKE2s hashes and 4 keyed-BLAKE2s MAC1s (2 written, 2 checked).');

  const goals: GoalResult[] = GOALS.map((g) => {
    const median = results.find((r) => r.id === g.caseId)?.backends[g.backend]?.value.median;
    return { ...g, median, met: median === undefined ? undefined : median >= g.atLeast };
  });
  out('');
  out('Goals (single-threaded, i.e. per core; judged on the median):');
  for (const g of goals) {
    const unit = CASES.find((c) => c.id === g.caseId)!.unit;
    out(`  ${g.met === undefined ? '–' : g.met ? 'met    ' : 'NOT met'}  ${g.text}${g.median === undefined ? ' (not measured)' : `: ${fmt(g.median)} ${unit}`}`);
  }
  out(`\nload average ${env.loadavg1.toFixed(2)} at start, ${loadAfter.toFixed(2)} at end`);

  return {
    environment: env,
    libsodium,
    loadavg1AtEnd: loadAfter,
    settings: s,
    perHandshake,
    cases: results,
    goals,
  };
}
