/**
 * Target "device": a real Device's receive path (receiveDatagrams, then the handshake queue
 * through processHandshakes) with a live session to a legitimate peer.
 *
 * Setup: two Devices, D (under test, 198.18.0.2) and L (its peer, 198.18.0.1), over an
 * in-memory, synchronous underlay. L handshakes with D and sends data; D replies; then D
 * initiates while L is under load, so L answers with a cookie reply, and D completes a second
 * handshake with it. Every datagram L sent D (initiation, response, cookie reply, transport
 * data, keepalives) is a seed. Keys, ephemerals and receiver indices come from a fixed-seed
 * PRNG and the clock is frozen, so the session — and any crash file — is the same every time.
 *
 * An input is 1–1,200 datagrams (received in batches of up to 128), each from a source address (L's, an attacker's, or
 * random, IPv4 or IPv6), plus two flags: D "under load" (MAC2 and cookie replies), and "drain"
 * (process the handshake queue now; otherwise it builds up to its capacity). A datagram is raw
 * bytes or "sealed": an inner packet that run() encrypts with L's real session key — what a
 * peer holding the key may send — to reach the inner-packet checks.
 *
 * Generated datagrams: random bytes; a valid header with random body; handshake messages with
 * a valid MAC1 for D (so they reach X25519), with low-order ephemerals; full initiations from an
 * identity D does not know; responses and cookie replies to D's live receiver indices;
 * transport messages to live indices with counters around the replay window; sealed IPv4/IPv6
 * packets with boundary lengths and sources inside and outside L's allowed IPs.
 *
 * After every input: nothing threw; every datagram is accounted for exactly once (a drop
 * counter, a packet written to the TUN, a keepalive, a cookie reply received or sent, or a
 * place in the handshake queue); no forged handshake succeeded; the handshake queue is within
 * its capacity; the peer set, the receiver-index table, the allowed IPs, the peer's keypairs and
 * handshake are unchanged; the peer's endpoint moved only if an authenticated packet arrived;
 * D sent nothing but cookie replies (and, after authenticated data, transport to L); every
 * packet D wrote to its TUN is a whole IPv4/IPv6 packet from L's allowed IPs.
 * Every check(): the queue drains, and a fresh packet goes L → D and D → L over the same
 * session, with no new handshake.
 */
import { createRequire, syncBuiltinESMExports } from 'node:module';
import type { DatagramTransport, PacketTunnel, TransportFactory } from '../../src/device/device.ts';
import { Device } from '../../src/device/device.ts';
import { ENDPOINT_SIZE, readEndpointRecord, writeEndpointRecord } from '../../src/device/endpoint.ts';
import type { Peer } from '../../src/device/peer.ts';
import { processHandshakes, receiveDatagrams } from '../../src/device/receive.ts';
import { sendInitiation, sendKeepalive } from '../../src/device/send.ts';
import { HANDSHAKE_QUEUE_CAPACITY, LABEL_COOKIE, LABEL_MAC1 } from '../../src/noise/constants.ts';
import { CookieGenerator } from '../../src/noise/cookie.ts';
import type { CryptoBackend } from '../../src/noise/crypto/backend.ts';
import { createBackend } from '../../src/noise/crypto/index.ts';
import { tai64nFromUnixMs } from '../../src/noise/crypto/tai64n.ts';
import { createHandshakeState, createInitiation, createPeerKeys, createStaticIdentity, labelKey } from '../../src/noise/handshake.ts';
import type { Keypair } from '../../src/noise/keypair.ts';
import { decodeCookieReply, INITIATION_LENGTH, MESSAGE_INITIATION, MESSAGE_RESPONSE, RESPONSE_LENGTH, COOKIE_REPLY_LENGTH } from '../../src/noise/messages.ts';
import { parseCidr, parseIp } from '../../src/util/ip.ts';
import { BOUNDARY_LENGTHS, hexOf, Mutator, Rng, type Field } from '../helpers/mutate.ts';
import { ipv4Packet, tunBatch } from '../helpers/memory-net.ts';
import { ByteReader, ByteWriter, check, type FuzzTarget, weighted } from './target.ts';
import { FIELDS_BY_TYPE, LOW_ORDER_POINTS, MESSAGE_FIELDS } from './wire-fields.ts';

const SESSION_SEED = 0x5e55_1011;
const PORT = 51820;
const D_HOST = '198.18.0.2';
const L_HOST = '198.18.0.1';
const D_V4 = [100, 64, 0, 2];
const L_V4 = [100, 64, 0, 1];
const D_V6 = parseIp('fd00::2').bytes;
const L_V6 = parseIp('fd00::1').bytes;
/** Frozen monotonic clock (ms) and wall clock. */
const NOW = 50_000_000;
const EPOCH_MS = 1_780_000_000_000;
/** Largest datagram an input carries (one receive slot). */
const SLOT = 4096;
const BATCH = 128;
/** Most datagrams in one input (delivered as several batches): past the handshake queue's capacity. */
const MAX_DATAGRAMS = 1200;
/** The attacker that receives at its source address, so learns cookies and sends valid MAC2s. */
const COOKIE_HOLDER = { host: '198.18.0.66', port: 4444 };
const ATTACKERS: readonly string[] = ['198.18.0.9', '198.18.0.77', '203.0.113.5', 'fd00::9', 'fd00:0:0:1::66', '::ffff:198.18.0.10'];

interface Datagram {
  readonly host: string;
  readonly port: number;
  /** bytes is an inner packet that run() seals with L's session key. */
  readonly sealed: boolean;
  readonly bytes: Uint8Array;
}

export interface DeviceInput {
  readonly underLoad: boolean;
  readonly drain: boolean;
  readonly datagrams: readonly Datagram[];
}

// ---------------------------------------------------------------------------------------------
// Deterministic randomness: the receiver-index table draws from node:crypto's randomFillSync,
// which nothing lets us inject; while the target lives it is replaced by a seeded PRNG.

const requireCjs = createRequire(import.meta.url);
const nodeCrypto = requireCjs('node:crypto') as { randomFillSync: (buf: ArrayBufferView | ArrayBuffer, offset?: number, size?: number) => unknown };

class SeededRandomFill {
  private original: typeof nodeCrypto.randomFillSync | undefined;
  private readonly rng: Rng;
  constructor(rng: Rng) {
    this.rng = rng;
  }
  install(): void {
    if (this.original) return;
    this.original = nodeCrypto.randomFillSync;
    const rng = this.rng;
    nodeCrypto.randomFillSync = (buf, offset = 0, size) => {
      const view = ArrayBuffer.isView(buf) ? new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength) : new Uint8Array(buf);
      rng.fill(view.subarray(offset, size === undefined ? view.length : offset + size));
      return buf;
    };
    syncBuiltinESMExports();
  }
  uninstall(): void {
    if (!this.original) return;
    nodeCrypto.randomFillSync = this.original;
    this.original = undefined;
    syncBuiltinESMExports();
  }
}

// ---------------------------------------------------------------------------------------------
// A synchronous in-memory underlay: transports push what they send into an outbox; the harness
// delivers it with receiveDatagrams itself.

interface Sent {
  readonly to: string;
  readonly port: number;
  readonly bytes: Uint8Array;
}

class Outbox {
  readonly items: Sent[] = [];
  factory(): TransportFactory {
    return (port): DatagramTransport => ({
      port: port || PORT,
      setMark: () => {},
      close: () => {},
      send: (slab, offsets, lengths, addrs, count) => {
        for (let i = 0; i < count; i++) {
          const to = readEndpointRecord(addrs, i * ENDPOINT_SIZE);
          this.items.push({ to: to.host, port: to.port, bytes: slab.slice(offsets[i]!, offsets[i]! + lengths[i]!) });
        }
        return count;
      },
    });
  }
}

/** A TUN that checks what the device writes and keeps the last few packets. */
class CheckingTun implements PacketTunnel {
  readonly mtu = 1420;
  written = 0;
  readonly last: Uint8Array[] = [];
  readonly problems: string[] = [];
  validate: ((packet: Uint8Array) => string | undefined) | undefined;
  write(slab: Uint8Array, offsets: Int32Array, lengths: Int32Array, count: number): number {
    for (let i = 0; i < count; i++) {
      const p = slab.subarray(offsets[i]!, offsets[i]! + lengths[i]!);
      this.written++;
      const problem = this.validate?.(p);
      if (problem && this.problems.length < 10) this.problems.push(problem);
      this.last.push(p.slice());
      if (this.last.length > 4) this.last.shift();
    }
    return count;
  }
}

/** Receive buffers, reused like a UDP socket's slab. */
class Rx {
  readonly slab = new Uint8Array(BATCH * SLOT);
  readonly offsets = new Int32Array(BATCH);
  readonly lengths = new Int32Array(BATCH);
  readonly addrs = new Uint8Array(BATCH * ENDPOINT_SIZE);
}

interface Node {
  readonly device: Device;
  readonly tun: CheckingTun;
  readonly outbox: Outbox;
  readonly rx: Rx;
  readonly host: string;
}

function deliver(node: Node, items: readonly { host: string; port: number; bytes: Uint8Array }[]): void {
  const rx = node.rx;
  for (let start = 0; start < items.length; start += BATCH) {
    const chunk = items.slice(start, start + BATCH);
    chunk.forEach((d, i) => {
      if (d.bytes.length > SLOT) throw new RangeError(`datagram of ${d.bytes.length} bytes exceeds the ${SLOT}-byte slot`);
      rx.offsets[i] = i * SLOT;
      rx.lengths[i] = d.bytes.length;
      rx.slab.set(d.bytes, i * SLOT);
      writeEndpointRecord(rx.addrs, i * ENDPOINT_SIZE, { host: d.host, port: d.port });
    });
    const pending = receiveDatagrams(node.device, rx.slab, rx.offsets, rx.lengths, rx.addrs, chunk.length);
    check(pending === undefined, 'receiveDatagrams went asynchronous with the inline executor');
  }
}

function ipv6Packet(src: Uint8Array, dst: Uint8Array, payload: number): Uint8Array {
  const p = new Uint8Array(40 + payload);
  p[0] = 0x60;
  p[4] = payload >> 8;
  p[5] = payload & 0xff;
  p[6] = 17;
  p[7] = 64;
  p.set(src, 8);
  p.set(dst, 24);
  for (let i = 40; i < p.length; i++) p[i] = i & 0xff;
  return p;
}

function sumValues(map: ReadonlyMap<string, number>, skip?: (key: string) => boolean): number {
  let n = 0;
  for (const [k, v] of map) if (!skip?.(k)) n += v;
  return n;
}

interface Measure {
  readonly accounted: number;
  readonly drops: number;
  readonly tun: number;
  readonly keepalives: number;
  readonly processed: number;
  readonly handshakeErrors: number;
  readonly responsesSent: number;
  readonly cookieRepliesSent: number;
  readonly indices: number;
  readonly peers: number;
  readonly allowedIps: number;
}

export class DeviceTarget implements FuzzTarget<DeviceInput> {
  readonly name = 'device';
  readonly description = 'receiveDatagrams + handshake queue of a real Device with a live session: captured-message mutants, MAC1-valid forgeries, sealed inner packets, random bytes';
  private readonly sessionRng = new Rng(SESSION_SEED);
  private readonly randomFill = new SeededRandomFill(new Rng(SESSION_SEED ^ 0x1d1c_e5));
  private backend!: CryptoBackend;
  private d!: Node;
  private l!: Node;
  /** L as D knows it, and D as L knows it. */
  private peerL!: Peer;
  private peerD!: Peer;
  private captured: Uint8Array[] = [];
  private seedInputs: DeviceInput[] = [];
  private macForD!: CookieGenerator;
  /** MACs messages as an attacker at COOKIE_HOLDER that reads the cookie replies D sends there. */
  private cookieHolder!: CookieGenerator;
  private stranger!: { identity: ReturnType<typeof createStaticIdentity>; keys: ReturnType<typeof createPeerKeys>; cookies: CookieGenerator };
  private baseline!: { indices: number; initiations: number };
  private mutators: { rng: Rng; byType: Map<number, Mutator>; generic: Mutator; inner: Mutator } | undefined;
  private checks = 0;
  private readonly tally = { sealed: 0, datagrams: 0, batches: 0, underLoad: 0, cookieRepliesOut: 0, cookiesLearned: 0, authenticated: 0 };

  async setup(): Promise<void> {
    this.randomFill.install();
    const base = createBackend('sodium');
    const rng = this.sessionRng;
    this.backend = { ...base, randomBytes: (out: Uint8Array) => void rng.fill(out) };
    this.d = this.node(D_HOST);
    this.l = this.node(L_HOST);
    const kd = rng.bytes(32);
    const kl = rng.bytes(32);
    await this.d.device.apply({ privateKey: kd, listenPort: PORT });
    await this.l.device.apply({ privateKey: kl, listenPort: PORT });
    const pubD = this.d.device.identity!.publicKey;
    const pubL = this.l.device.identity!.publicKey;
    await this.d.device.apply({ peers: [{ publicKey: pubL, addAllowedIps: [parseCidr('100.64.0.1/32'), parseCidr('fd00::1/128')] }] });
    await this.l.device.apply({
      peers: [{ publicKey: pubD, endpoint: { host: D_HOST, port: PORT }, addAllowedIps: [parseCidr('100.64.0.2/32'), parseCidr('fd00::2/128')] }],
    });
    this.peerL = this.d.device.peerByKey(pubL)!;
    this.peerD = this.l.device.peerByKey(pubD)!;
    this.d.tun.validate = (p) => this.validateInner(p);
    this.macForD = new CookieGenerator(this.backend, labelKey(new Uint8Array(32), LABEL_MAC1, pubD), labelKey(new Uint8Array(32), LABEL_COOKIE, pubD));
    this.cookieHolder = new CookieGenerator(this.backend, labelKey(new Uint8Array(32), LABEL_MAC1, pubD), labelKey(new Uint8Array(32), LABEL_COOKIE, pubD));
    const strangerIdentity = createStaticIdentity(this.backend, rng.bytes(32));
    const strangerKeys = createPeerKeys(this.backend, strangerIdentity, pubD);
    this.stranger = { identity: strangerIdentity, keys: strangerKeys, cookies: new CookieGenerator(this.backend, strangerKeys.mac1Key, strangerKeys.cookieKey) };

    // 1. L → D: handshake on demand, staged data, then D answers.
    this.send(this.l, [ipv4Packet('100.64.0.1', '100.64.0.2', 40)]);
    this.pump();
    this.send(this.d, [ipv4Packet('100.64.0.2', '100.64.0.1', 100)]);
    this.send(this.l, [ipv4Packet('100.64.0.1', '100.64.0.2', 1300), ipv6Packet(L_V6, D_V6, 64)]);
    sendKeepalive(this.l.device, this.peerD);
    this.pump();
    // 2. D initiates while L is under load: L answers with a cookie reply, D retries with MAC2.
    this.l.device.lastUnderLoadAt = NOW;
    sendInitiation(this.d.device, this.peerL);
    this.pump();
    this.l.device.lastUnderLoadAt = -Infinity;
    check(this.d.device.counters.cookieRepliesReceived === 1, 'setup: D did not get a cookie reply');
    sendInitiation(this.d.device, this.peerL);
    this.pump();
    this.send(this.l, [ipv4Packet('100.64.0.1', '100.64.0.2', 200)]);
    this.pump();
    const types = new Set(this.captured.map((c) => c[0]));
    check(types.has(1) && types.has(2) && types.has(3) && types.has(4), () => `setup captured types ${[...types].join(',')}`);
    check(this.d.tun.written === 4 && this.l.tun.written === 1, () => `setup delivered ${this.d.tun.written}/${this.l.tun.written}`);
    this.baseline = { indices: this.d.device.indices.size, initiations: this.initiations() };

    const fromL = (bytes: Uint8Array, sealed = false): Datagram => ({ host: L_HOST, port: PORT, sealed, bytes });
    for (const c of this.captured) {
      this.seedInputs.push({ underLoad: false, drain: true, datagrams: [fromL(c)] });
      this.seedInputs.push({ underLoad: true, drain: true, datagrams: [{ host: ATTACKERS[0]!, port: 1234, sealed: false, bytes: c }] });
    }
    this.seedInputs.push({ underLoad: false, drain: false, datagrams: this.captured.map((c) => fromL(c)) });
    for (const inner of [ipv4Packet('100.64.0.1', '100.64.0.2', 20), ipv6Packet(L_V6, D_V6, 8), new Uint8Array(0), ipv4Packet('100.64.0.7', '100.64.0.2', 20)]) {
      this.seedInputs.push({ underLoad: false, drain: true, datagrams: [fromL(inner, true)] });
    }
  }

  private node(host: string): Node {
    const outbox = new Outbox();
    const tun = new CheckingTun();
    const device = new Device({ backend: this.backend, tun, openTransport: outbox.factory(), now: () => NOW, epochMs: () => EPOCH_MS, batchSize: BATCH });
    return { device, tun, outbox, rx: new Rx(), host };
  }

  private send(node: Node, packets: Uint8Array[]): void {
    const b = tunBatch(packets);
    const pending = node.device.handleTunPackets(b.slab, b.offsets, b.lengths, b.count);
    check(pending === undefined, 'handleTunPackets went asynchronous');
  }

  private initiations(): number {
    return this.d.device.counters.initiationsSent + this.l.device.counters.initiationsSent;
  }

  /** Moves datagrams between D and L until both are quiet; records what L sent D. */
  private pump(): void {
    for (let round = 0; round < 32; round++) {
      processHandshakes(this.d.device);
      processHandshakes(this.l.device);
      const toL = this.d.outbox.items.splice(0).filter((s) => s.to === L_HOST);
      const toD = this.l.outbox.items.splice(0).filter((s) => s.to === D_HOST);
      if (toL.length === 0 && toD.length === 0 && this.d.device.handshakeQueue.length === 0 && this.l.device.handshakeQueue.length === 0) return;
      if (toD.length > 0) {
        if (this.captured.length < 64 && this.seedInputs.length === 0) this.captured.push(...toD.map((s) => s.bytes));
        deliver(this.d, toD.map((s) => ({ host: L_HOST, port: PORT, bytes: s.bytes })));
      }
      if (toL.length > 0) deliver(this.l, toL.map((s) => ({ host: D_HOST, port: PORT, bytes: s.bytes })));
    }
    throw new Error('pump: D and L did not go quiet');
  }

  /** Why a packet D wrote to its TUN should not have been, or undefined. */
  private validateInner(p: Uint8Array): string | undefined {
    const version = p[0]! >> 4;
    if (version === 4) {
      if (p.length < 20) return `IPv4 packet of ${p.length} bytes`;
      const total = (p[2]! << 8) | p[3]!;
      if (total !== p.length) return `IPv4 total length ${total}, wrote ${p.length}`;
      if (this.d.device.allowedIps.lookupV4(p, 12) !== this.peerL) return `IPv4 source ${p.subarray(12, 16).join('.')} outside L's allowed IPs`;
      return undefined;
    }
    if (version === 6) {
      if (p.length < 40) return `IPv6 packet of ${p.length} bytes`;
      const total = 40 + ((p[4]! << 8) | p[5]!);
      if (total !== p.length) return `IPv6 length ${total}, wrote ${p.length}`;
      if (this.d.device.allowedIps.lookupV6(p, 8) !== this.peerL) return `IPv6 source ${hexOf(p.subarray(8, 24))} outside L's allowed IPs`;
      return undefined;
    }
    return `IP version ${version}`;
  }

  seeds(): readonly DeviceInput[] {
    return this.seedInputs;
  }

  // ---- generation ----------------------------------------------------------------------------

  /** D's live receiver indices (its keypairs and pending handshake with L). */
  private liveIndices(): number[] {
    const k = this.peerL.keypairs;
    return [k.current?.localIndex, k.previous?.localIndex, k.next?.localIndex, this.peerL.handshake.localIndex].filter((i): i is number => i !== undefined && i !== 0);
  }

  private index(rng: Rng): number {
    const live = this.liveIndices();
    return weighted(rng, [
      [6, live.length > 0 ? rng.pick(live) : 0],
      [1, rng.u32()],
      [1, rng.pick([0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff])],
    ]);
  }

  private source(rng: Rng): { host: string; port: number } {
    return weighted<() => { host: string; port: number }>(rng, [
      [3, () => ({ host: L_HOST, port: PORT })],
      [5, () => ({ host: rng.pick(ATTACKERS), port: rng.pick([1, 1234, 51820, 65535]) })],
      [1, () => ({ host: `198.18.${rng.below(256)}.${rng.below(256)}`, port: rng.range(1, 65535) })],
      [1, () => ({ host: `fd00:${rng.below(0x10000).toString(16)}::${rng.below(0x10000).toString(16)}`, port: rng.range(1, 65535) })],
    ])();
  }

  private mac1Valid(msg: Uint8Array, type: typeof MESSAGE_INITIATION | typeof MESSAGE_RESPONSE, rng: Rng): Uint8Array {
    this.macForD.addMacs(msg, type, NOW);
    if (rng.chance(0.2)) rng.fill(msg.subarray(type === MESSAGE_INITIATION ? 132 : 76)); // some MAC2
    return msg;
  }

  private rawDatagram(rng: Rng): Uint8Array {
    const kind = weighted(rng, [
      [2, 'random'],
      [2, 'header'],
      [3, 'initiation-mac1'],
      [1, 'stranger'],
      [2, 'response-mac1'],
      [2, 'cookie'],
      [4, 'transport'],
    ] as const);
    switch (kind) {
      case 'random':
        return rng.bytes(rng.chance(0.5) ? rng.pick(BOUNDARY_LENGTHS) : rng.below(1600));
      case 'header': {
        const type = rng.range(1, 4);
        const length = type === 1 ? INITIATION_LENGTH : type === 2 ? RESPONSE_LENGTH : type === 3 ? COOKIE_REPLY_LENGTH : rng.range(32, 1500);
        const m = rng.bytes(length);
        m.set([type, 0, 0, 0]);
        return m;
      }
      case 'initiation-mac1': {
        const m = rng.bytes(INITIATION_LENGTH);
        m.set([1, 0, 0, 0]);
        if (rng.chance(0.3)) m.set(rng.pick(LOW_ORDER_POINTS), 8);
        return this.mac1Valid(m, MESSAGE_INITIATION, rng);
      }
      case 'stranger': {
        const m = new Uint8Array(INITIATION_LENGTH);
        const created = createInitiation(this.backend, this.stranger.identity, this.stranger.keys, createHandshakeState(), {
          ephemeralPrivate: rng.bytes(32),
          timestamp: tai64nFromUnixMs(new Uint8Array(12), EPOCH_MS + rng.below(1_000_000)),
          senderIndex: rng.u32(),
        }, m);
        check(created.ok, 'stranger initiation');
        this.stranger.cookies.addMacs(m, MESSAGE_INITIATION, NOW);
        return m;
      }
      case 'response-mac1': {
        const m = rng.bytes(RESPONSE_LENGTH);
        m.set([2, 0, 0, 0]);
        new DataView(m.buffer).setUint32(8, this.index(rng), true);
        if (rng.chance(0.3)) m.set(rng.pick(LOW_ORDER_POINTS), 12);
        return this.mac1Valid(m, MESSAGE_RESPONSE, rng);
      }
      case 'cookie': {
        const m = rng.bytes(COOKIE_REPLY_LENGTH);
        m.set([3, 0, 0, 0]);
        new DataView(m.buffer).setUint32(4, this.index(rng), true);
        return m;
      }
      case 'transport': {
        const m = rng.bytes(rng.chance(0.3) ? 32 : rng.range(32, 1500));
        m.set([4, 0, 0, 0]);
        const view = new DataView(m.buffer);
        view.setUint32(4, this.index(rng), true);
        const sent = this.peerD.keypairs.current?.sendCounter ?? 0;
        const counter = weighted(rng, [
          [3, Math.max(0, sent - 1 - rng.below(10))],
          [2, sent + rng.below(10)],
          [1, Math.max(0, sent - 8128 - rng.below(3))],
          [1, rng.pick([0, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 60, 2 ** 64 - 1])],
        ]);
        view.setBigUint64(8, BigInt(Math.min(counter, 2 ** 64 - 1)) & 0xffff_ffff_ffff_ffffn, true);
        return m;
      }
    }
  }

  private innerPacket(rng: Rng): Uint8Array {
    const kind = weighted(rng, [[5, 4], [3, 6], [1, 0], [1, -1]] as const);
    if (kind === 0) return new Uint8Array(0); // keepalive
    if (kind === -1) return rng.bytes(rng.below(80));
    const payload = rng.chance(0.9) ? rng.below(64) : rng.below(1380);
    if (kind === 4) {
      const src = weighted(rng, [[6, L_V4], [1, D_V4], [1, [100, 64, 0, rng.below(256)]], [1, [...rng.bytes(4)]]]);
      const p = ipv4Packet(src.join('.'), D_V4.join('.'), payload);
      if (rng.chance(0.3)) {
        const total = rng.pick([0, 19, 20, p.length - 1, p.length + 1, 0xffff, rng.below(0x10000)]);
        p[2] = total >> 8;
        p[3] = total & 0xff;
      }
      return rng.chance(0.1) ? p.slice(0, rng.below(p.length + 1)) : p;
    }
    const src = weighted(rng, [[6, L_V6], [1, D_V6], [1, rng.bytes(16)]]);
    const p = ipv6Packet(src, D_V6, payload);
    if (rng.chance(0.3)) {
      const len = rng.pick([0, payload - 1, payload + 1, 0xffff, rng.below(0x10000)]) & 0xffff;
      p[4] = len >> 8;
      p[5] = len & 0xff;
    }
    return rng.chance(0.1) ? p.slice(0, rng.below(p.length + 1)) : p;
  }

  /**
   * A handshake message from the one attacker that reads its cookie replies: with a valid MAC2
   * once D has sent it a cookie (D under load then rate-limits it and does the Noise work).
   */
  private cookieHolderMessage(rng: Rng): Datagram {
    const initiation = rng.chance(0.7);
    const m = rng.bytes(initiation ? INITIATION_LENGTH : RESPONSE_LENGTH);
    m.set([initiation ? 1 : 2, 0, 0, 0]);
    if (!initiation) new DataView(m.buffer).setUint32(8, this.index(rng), true);
    this.cookieHolder.addMacs(m, initiation ? MESSAGE_INITIATION : MESSAGE_RESPONSE, NOW);
    return { ...COOKIE_HOLDER, sealed: false, bytes: m };
  }

  private datagram(rng: Rng): Datagram {
    if (rng.chance(0.05)) return this.cookieHolderMessage(rng);
    if (rng.chance(0.2)) {
      const from = rng.chance(0.8) ? { host: L_HOST, port: PORT } : this.source(rng);
      return { ...from, sealed: true, bytes: this.innerPacket(rng) };
    }
    return { ...this.source(rng), sealed: false, bytes: this.rawDatagram(rng) };
  }

  generate(rng: Rng): DeviceInput {
    if (rng.chance(0.003)) {
      // A flood of several receive batches, left in the queue: it fills the queue past capacity.
      const datagrams: Datagram[] = [];
      const n = rng.range(BATCH, MAX_DATAGRAMS);
      for (let i = 0; i < n; i++) datagrams.push(rng.chance(0.5) ? this.cookieHolderMessage(rng) : { ...this.source(rng), sealed: false, bytes: this.rawDatagram(rng) });
      return { underLoad: rng.chance(0.5), drain: false, datagrams };
    }
    if (rng.chance(0.05)) return { underLoad: true, drain: true, datagrams: [this.cookieHolderMessage(rng)] };
    const n = weighted(rng, [[80, 1], [15, rng.range(2, 8)], [5, rng.range(9, BATCH)]]);
    const datagrams: Datagram[] = [];
    for (let i = 0; i < n; i++) datagrams.push(this.datagram(rng));
    return { underLoad: rng.chance(0.15), drain: rng.chance(0.85), datagrams };
  }

  // ---- mutation ------------------------------------------------------------------------------

  private mutatorsFor(rng: Rng): NonNullable<DeviceTarget['mutators']> {
    if (this.mutators?.rng === rng) return this.mutators;
    const words: Uint8Array[] = [...LOW_ORDER_POINTS];
    for (const index of this.liveIndices()) {
      const w = new Uint8Array(4);
      new DataView(w.buffer).setUint32(0, index, true);
      words.push(w);
    }
    const byType = new Map<number, Mutator>();
    for (const [type, fields] of Object.entries(FIELDS_BY_TYPE)) {
      byType.set(Number(type), new Mutator(rng, { donors: this.captured, fields, dictionary: words, maxExtend: 128 }));
    }
    const innerFields: Field[] = [
      { offset: 0, length: 1 }, { offset: 2, length: 2 }, { offset: 12, length: 4 }, { offset: 16, length: 4 }, // IPv4
      { offset: 4, length: 2 }, { offset: 8, length: 16 }, { offset: 24, length: 16 }, // IPv6
    ];
    const innerWords = [Uint8Array.of(0x45), Uint8Array.of(0x60), Uint8Array.of(0x4f), Uint8Array.of(0x00), Uint8Array.from(L_V4), Uint8Array.from(D_V4), L_V6, D_V6, Uint8Array.of(0, 20), Uint8Array.of(0xff, 0xff), Uint8Array.of(0, 0)];
    this.mutators = {
      rng,
      byType,
      generic: new Mutator(rng, { donors: this.captured, fields: MESSAGE_FIELDS, dictionary: words, maxExtend: 128 }),
      inner: new Mutator(rng, {
        fields: innerFields,
        dictionary: innerWords,
        lengths: [0, 1, 19, 20, 21, 39, 40, 41, 60, 1380, 1420],
        weights: { bitflip: 2, bitflips: 1, byte: 2, field: 4, length: 2, truncate: 2, extend: 1 },
      }),
    };
    return this.mutators;
  }

  mutate(rng: Rng, input: DeviceInput): DeviceInput {
    const m = this.mutatorsFor(rng);
    const datagrams = [...input.datagrams];
    let { underLoad, drain } = input;
    const at = rng.below(datagrams.length);
    const op = weighted(rng, [[70, 'bytes'], [8, 'source'], [5, 'load'], [3, 'drain'], [5, 'duplicate'], [4, 'insert'], [3, 'remove'], [2, 'unseal']] as const);
    const d = datagrams[at]!;
    switch (op) {
      case 'bytes': {
        const mutator = d.sealed ? m.inner : rng.chance(0.8) ? (m.byType.get(d.bytes[0] ?? 0) ?? m.generic) : m.generic;
        datagrams[at] = { ...d, bytes: clip(mutator.mutate(d.bytes).bytes) };
        break;
      }
      case 'source':
        datagrams[at] = { ...d, ...this.source(rng) };
        break;
      case 'load':
        underLoad = !underLoad;
        break;
      case 'drain':
        drain = !drain;
        break;
      case 'duplicate':
        if (datagrams.length < MAX_DATAGRAMS) datagrams.splice(at, 0, d);
        break;
      case 'insert':
        if (datagrams.length < MAX_DATAGRAMS) datagrams.splice(rng.below(datagrams.length + 1), 0, { host: L_HOST, port: PORT, sealed: false, bytes: rng.pick(this.captured) });
        break;
      case 'remove':
        if (datagrams.length > 1) datagrams.splice(at, 1);
        break;
      case 'unseal':
        datagrams[at] = { ...d, sealed: !d.sealed };
        break;
    }
    return { underLoad, drain, datagrams };
  }

  // ---- running -------------------------------------------------------------------------------

  private measure(): Measure {
    const device = this.d.device;
    const c = device.counters;
    const drops = sumValues(c.drops);
    return {
      accounted: drops + this.d.tun.written + c.keepalivesReceived + c.cookieRepliesReceived + c.cookieRepliesSent + device.handshakeQueue.length,
      drops,
      tun: this.d.tun.written,
      keepalives: c.keepalivesReceived,
      processed: c.handshakesProcessed,
      handshakeErrors: sumValues(c.handshakeErrors, (k) => k.startsWith('cookie-')),
      responsesSent: c.responsesSent,
      cookieRepliesSent: c.cookieRepliesSent,
      indices: device.indices.size,
      peers: device.peers.size,
      allowedIps: device.allowedIps.size,
    };
  }

  private seal(inner: Uint8Array): Uint8Array | undefined {
    const keypair: Keypair | undefined = this.peerD.keypairs.current;
    if (!keypair) return undefined;
    const out = new Uint8Array(16 + inner.length + 16);
    out.set(inner, 16);
    const n = keypair.seal(this.backend, out.subarray(16, 16 + inner.length), out, NOW);
    return n < 0 ? undefined : out.subarray(0, n);
  }

  run(input: DeviceInput): void {
    const device = this.d.device;
    const outbox = this.d.outbox.items;
    this.checkOutbox(false);
    outbox.length = 0;
    const peer = this.peerL;
    const keypairs = [peer.keypairs.current, peer.keypairs.previous, peer.keypairs.next];
    const handshake = `${peer.handshake.phase}/${peer.handshake.localIndex}/${peer.handshake.remoteIndex}`;
    const endpoint = peer.endpoint.slice();
    const rxBytes = peer.rxBytes;
    const before = this.measure();
    const datagrams = input.datagrams.map((d) => {
      const bytes = d.sealed ? this.seal(d.bytes) ?? d.bytes : d.bytes;
      return { host: d.host, port: d.port, bytes: bytes.length > SLOT ? bytes.subarray(0, SLOT) : bytes };
    });
    device.lastUnderLoadAt = input.underLoad ? NOW : -Infinity;
    deliver(this.d, datagrams);
    check(device.handshakeQueue.length <= HANDSHAKE_QUEUE_CAPACITY, () => `handshake queue ${device.handshakeQueue.length} > ${HANDSHAKE_QUEUE_CAPACITY}`);
    if (input.drain) {
      processHandshakes(device);
      check(device.handshakeQueue.length === 0, 'the handshake queue did not drain');
    }
    device.lastUnderLoadAt = -Infinity;
    const after = this.measure();

    this.tally.batches++;
    this.tally.datagrams += datagrams.length;
    this.tally.sealed += input.datagrams.filter((d) => d.sealed).length;
    if (input.underLoad) this.tally.underLoad++;
    const n = datagrams.length;
    const delta = (k: keyof Measure): number => after[k] - before[k];
    check(delta('accounted') === n, () => `${n} datagrams in, but counters moved by ${delta('accounted')} (drops ${delta('drops')}, tun ${delta('tun')}, keepalives ${delta('keepalives')}, cookie replies sent ${delta('cookieRepliesSent')})`);
    check(delta('responsesSent') === 0, 'a forged initiation was answered with a response');
    check(delta('processed') === delta('handshakeErrors'), () => `${delta('processed')} handshake messages reached the Noise core but only ${delta('handshakeErrors')} were rejected: one was accepted`);
    check(this.d.tun.problems.length === 0, () => `D wrote a bad packet to its TUN: ${this.d.tun.problems.join('; ')}`);
    check(after.peers === before.peers && device.peers.get(peer.publicKeyHex) === peer && !peer.removed, 'the peer set changed');
    check(after.indices === before.indices, () => `receiver-index table ${before.indices} → ${after.indices}`);
    check(after.allowedIps === before.allowedIps, 'allowed IPs changed');
    check(keypairs[0] === peer.keypairs.current && keypairs[1] === peer.keypairs.previous && keypairs[2] === peer.keypairs.next, 'the peer keypairs changed');
    check(`${peer.handshake.phase}/${peer.handshake.localIndex}/${peer.handshake.remoteIndex}` === handshake, 'the peer handshake state changed');
    // rxBytes grows exactly for datagrams that authenticated (whatever their inner packet).
    const authenticated = peer.rxBytes > rxBytes;
    if (authenticated) this.tally.authenticated++;
    if (!authenticated) check(Buffer.from(endpoint).equals(peer.endpoint), 'the peer endpoint moved without an authenticated packet');
    check(!authenticated || input.datagrams.some((d) => d.sealed), 'an unsealed (forged) datagram authenticated');
    check(delta('tun') + delta('keepalives') === 0 || authenticated, 'a packet reached the TUN without authenticating');
    this.checkOutbox(authenticated);
  }

  /** D may send cookie replies to anyone; transport to L only after authenticated data. */
  private checkOutbox(transportAllowed: boolean): void {
    for (const s of this.d.outbox.items) {
      if (s.bytes[0] === 3) {
        check(s.bytes.length === COOKIE_REPLY_LENGTH, 'cookie reply of the wrong length');
        this.tally.cookieRepliesOut++;
        if (s.to === COOKIE_HOLDER.host && s.port === COOKIE_HOLDER.port && !this.cookieHolder.hasFreshCookie(NOW)) {
          const reply = decodeCookieReply(s.bytes);
          if (reply.ok && this.cookieHolder.consumeReply(reply.value, NOW).ok) this.tally.cookiesLearned++;
        }
        continue;
      }
      check(transportAllowed && s.bytes[0] === 4, () => `D sent a type-${s.bytes[0]} message (${s.bytes.length} bytes) to ${s.to} in answer to garbage`);
    }
    this.d.outbox.items.length = 0;
  }

  check(): void {
    const device = this.d.device;
    processHandshakes(device);
    device.lastUnderLoadAt = -Infinity;
    this.checkOutbox(true);
    this.checks++;
    const tag = this.checks & 0xff;
    const toD = ipv4Packet('100.64.0.1', '100.64.0.2', Uint8Array.of(0xc4, tag, ...new Array(30).fill(tag)));
    const toL = ipv6Packet(D_V6, L_V6, 24);
    toL[40] = tag;
    this.send(this.l, [toD]);
    this.pump();
    check(Buffer.from(this.d.tun.last.at(-1) ?? []).equals(toD), 'a legitimate packet from L did not reach D');
    this.send(this.d, [toL]);
    this.pump();
    check(Buffer.from(this.l.tun.last.at(-1) ?? []).equals(toL), 'a legitimate packet from D did not reach L');
    check(this.initiations() === this.baseline.initiations, 'the session had to be renegotiated');
    check(device.indices.size === this.baseline.indices, () => `receiver-index table ${this.baseline.indices} → ${device.indices.size}`);
  }

  stats(): Record<string, number> {
    const c = this.d.device.counters;
    const out: Record<string, number> = { ...this.tally, handshakes_processed: c.handshakesProcessed, cookie_replies_sent: c.cookieRepliesSent };
    for (const [reason, n] of c.drops) out[`drop_${reason}`] = n;
    for (const [error, n] of c.handshakeErrors) out[`handshake_error_${error}`] = n;
    return out;
  }

  encode(input: DeviceInput): Uint8Array {
    const w = new ByteWriter().u8((input.underLoad ? 1 : 0) | (input.drain ? 2 : 0)).u32(input.datagrams.length);
    for (const d of input.datagrams) w.string(d.host).u32(d.port).u8(d.sealed ? 1 : 0).bytes(d.bytes);
    return w.finish();
  }

  decode(bytes: Uint8Array): DeviceInput {
    const r = new ByteReader(bytes);
    const flags = r.u8();
    const n = r.u32();
    const datagrams: Datagram[] = [];
    for (let i = 0; i < Math.min(n, MAX_DATAGRAMS); i++) datagrams.push({ host: r.string(), port: r.u32(), sealed: r.u8() === 1, bytes: r.bytes() });
    return { underLoad: (flags & 1) !== 0, drain: (flags & 2) !== 0, datagrams };
  }

  describe(input: DeviceInput): string {
    const shown = input.datagrams.slice(0, 4).map((d) => `${d.sealed ? 'sealed ' : ''}${d.bytes.length}B from ${d.host}:${d.port} ${hexOf(d.bytes.subarray(0, 40))}${d.bytes.length > 40 ? '…' : ''}`);
    return `${input.datagrams.length} datagram(s)${input.underLoad ? ', under load' : ''}${input.drain ? '' : ', queue not drained'}: ${shown.join(' | ')}${input.datagrams.length > 4 ? ' | …' : ''}`;
  }

  teardown(): void {
    this.d?.device.close();
    this.l?.device.close();
    this.randomFill.uninstall();
  }
}

function clip(bytes: Uint8Array): Uint8Array {
  return bytes.length > SLOT - 64 ? bytes.subarray(0, SLOT - 64) : bytes;
}
