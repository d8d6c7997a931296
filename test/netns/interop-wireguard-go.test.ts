/**
 * Interop, for real: wireguard-go in namespace B, the wgts protocol core (src/noise) in this
 * process, speaking through a plain UDP socket in namespace A (udp-pipe). No TUN on our side:
 * we build and parse the inner IPv4/ICMP packets ourselves.
 *
 *   A: udp-pipe on 198.18.n.1:51820          B: wireguard-go, UDP 198.18.n.2:<port>
 *      inner address 100.64.0.1 (ours)          TUN 100.64.0.2/24, peer = us (100.64.0.1/32)
 *
 * Each scenario gets a fresh wireguard-go (own interface name, own listen port) and fresh keys,
 * and runs once per crypto backend.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { generatePrivateKey, publicKeyOf } from '../../src/cli/keys.ts';
import { CookieChecker, CookieGenerator, equalConstantTime } from '../../src/noise/cookie.ts';
import type { CryptoBackend } from '../../src/noise/crypto/index.ts';
import { BACKEND_NAMES, createBackend } from '../../src/noise/crypto/index.ts';
import { compareTai64n, TAI64N_LENGTH, tai64nFromUnixMs } from '../../src/noise/crypto/tai64n.ts';
import type { Result } from '../../src/noise/errors.ts';
import type { HandshakeState, InitiationTarget, PeerKeys, StaticIdentity } from '../../src/noise/handshake.ts';
import {
  consumeInitiation,
  consumeResponse,
  createHandshakeState,
  createInitiation,
  createPeerKeys,
  createResponse,
  createStaticIdentity,
  deriveKeypair,
} from '../../src/noise/handshake.ts';
import { Keypair, Keypairs, paddedLength } from '../../src/noise/keypair.ts';
import {
  classify,
  decodeInitiation,
  decodeResponse,
  decodeTransport,
  INITIATION_LENGTH,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  MESSAGE_TRANSPORT,
  readU32,
  Response,
  RESPONSE_LENGTH,
  TAG_LENGTH,
  Transport,
  TRANSPORT_HEADER_LENGTH,
} from '../../src/noise/messages.ts';
import { keyToBase64 } from '../../src/util/hex.ts';
import type { VethPair } from './helpers/netns.ts';
import { exec, NetnsBed, skipUnlessRoot, waitFor } from './helpers/netns.ts';
import type { Datagram } from './helpers/udp-pipe.ts';
import { UdpPipe } from './helpers/udp-pipe.ts';
import { WireguardGo } from './helpers/wireguard-go.ts';

const OUR_INNER = '100.64.0.1';
const WG_INNER = '100.64.0.2';
const OUR_UDP_PORT = 51820;
const WG_MTU = 1420;
const RECEIVE_TIMEOUT_MS = 5_000;
/** wireguard-go drops initiations from one peer closer than 20 ms (HandshakeInitationRate); keep well clear. */
const INITIATION_SPACING_MS = 50;
/** wireguard-go's TAI64N epoch: 2^62 + 10 s (as ours). */
const TAI64_BASE = 0x4000_0000_0000_000an;

// ---------------------------------------------------------------------------------------------
// Inner packets: IPv4 + ICMP echo, built and checked by hand.

function internetChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i + 1 < bytes.length; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (bytes.length % 2 === 1) sum += bytes[bytes.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function ipv4Bytes(address: string): number[] {
  return address.split('.').map(Number);
}

interface Echo {
  readonly type: number;
  readonly code: number;
  readonly src: string;
  readonly dst: string;
  readonly id: number;
  readonly seq: number;
  readonly payload: Uint8Array;
}

/** An IPv4 packet carrying an ICMP echo request (type 8) or reply (type 0), checksums filled. */
function buildEcho(echo: Echo): Uint8Array {
  const icmpLength = 8 + echo.payload.length;
  const packet = new Uint8Array(20 + icmpLength);
  const view = new DataView(packet.buffer);
  packet[0] = 0x45;
  view.setUint16(2, packet.length);
  view.setUint16(4, (echo.id ^ echo.seq) & 0xffff);
  view.setUint16(6, 0x4000); // DF
  packet[8] = 64;
  packet[9] = 1; // ICMP
  packet.set(ipv4Bytes(echo.src), 12);
  packet.set(ipv4Bytes(echo.dst), 16);
  view.setUint16(10, internetChecksum(packet.subarray(0, 20)));
  packet[20] = echo.type;
  packet[21] = echo.code;
  view.setUint16(24, echo.id);
  view.setUint16(26, echo.seq);
  packet.set(echo.payload, 28);
  view.setUint16(22, internetChecksum(packet.subarray(20)));
  return packet;
}

/** Parses an IPv4/ICMP echo packet (which may carry WireGuard's zero padding) and verifies both checksums. */
function parseEcho(packet: Uint8Array): Echo {
  expect(packet.length, 'inner packet shorter than IPv4 + ICMP headers').toBeGreaterThanOrEqual(28);
  expect(packet[0]! >> 4, 'IP version').toBe(4);
  const headerLength = (packet[0]! & 0x0f) * 4;
  const view = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  const totalLength = view.getUint16(2);
  expect(totalLength, 'IPv4 total length within the decrypted bytes').toBeLessThanOrEqual(packet.length);
  expect(internetChecksum(packet.subarray(0, headerLength)), 'IPv4 header checksum').toBe(0);
  expect(packet[9], 'IP protocol').toBe(1);
  const icmp = packet.subarray(headerLength, totalLength);
  expect(internetChecksum(icmp), 'ICMP checksum').toBe(0);
  expect(packet.subarray(totalLength).every((b) => b === 0), 'padding is zero').toBe(true);
  return {
    type: icmp[0]!,
    code: icmp[1]!,
    src: [...packet.subarray(12, 16)].join('.'),
    dst: [...packet.subarray(16, 20)].join('.'),
    id: (icmp[4]! << 8) | icmp[5]!,
    seq: (icmp[6]! << 8) | icmp[7]!,
    payload: icmp.slice(8),
  };
}

// ---------------------------------------------------------------------------------------------
// Our side of the tunnel, driven step by step through the protocol core.

function unwrap<T>(result: Result<T>, what: string): T {
  if (!result.ok) throw new Error(`${what}: ${result.error}`);
  return result.value;
}

function randomPrivateKey(backend: CryptoBackend): Uint8Array {
  const key = new Uint8Array(32);
  backend.randomBytes(key);
  key[0]! &= 248;
  key[31]! &= 127;
  key[31]! |= 64;
  return key;
}

function randomIndex(backend: CryptoBackend): number {
  const bytes = new Uint8Array(4);
  backend.randomBytes(bytes);
  return readU32(bytes, 0);
}

function unixSecondsOfTai64n(timestamp: Uint8Array): number {
  const view = new DataView(timestamp.buffer, timestamp.byteOffset, TAI64N_LENGTH);
  return Number(view.getBigUint64(0) - TAI64_BASE);
}

interface Received {
  readonly datagram: Datagram;
  readonly keypair: Keypair;
  readonly counter: number;
  /** Decrypted plaintext, padding included. */
  readonly plaintext: Uint8Array;
}

class Tunnel {
  readonly backend: CryptoBackend;
  readonly identity: StaticIdentity;
  readonly keys: PeerKeys;
  readonly handshake: HandshakeState = createHandshakeState();
  readonly target: InitiationTarget;
  /** MAC1/MAC2 on what we send (keyed by wireguard-go's public key). */
  readonly macs: CookieGenerator;
  /** MAC1 on what wireguard-go sends us (keyed by our public key). */
  readonly checker: CookieChecker;
  readonly keypairs = new Keypairs();
  readonly pipe: UdpPipe;
  readonly remoteHost: string;
  readonly remotePort: number;
  private lastTimestamp: Uint8Array = new Uint8Array(TAI64N_LENGTH);
  private lastInitiationAt = -Infinity;

  constructor(backend: CryptoBackend, privateKey: Uint8Array, remotePublic: Uint8Array, pipe: UdpPipe, remoteHost: string, remotePort: number) {
    this.backend = backend;
    this.identity = createStaticIdentity(backend, privateKey);
    this.keys = createPeerKeys(backend, this.identity, remotePublic);
    this.target = { keys: this.keys, handshake: this.handshake };
    this.macs = new CookieGenerator(backend, this.keys.mac1Key, this.keys.cookieKey);
    this.checker = new CookieChecker(backend, this.identity.mac1Key, this.identity.cookieKey);
    this.pipe = pipe;
    this.remoteHost = remoteHost;
    this.remotePort = remotePort;
  }

  fromRemote(d: Datagram): boolean {
    return d.address === this.remoteHost && d.port === this.remotePort;
  }

  send(bytes: Uint8Array): void {
    this.pipe.send(bytes, this.remoteHost, this.remotePort);
  }

  /**
   * A timestamp wireguard-go will take as newer than our last one, at least INITIATION_SPACING_MS
   * after our last initiation (TAI64N is whitened to ~16.8 ms steps, so back-to-back initiations
   * could carry equal timestamps and be refused as replays).
   */
  private async nextTimestamp(): Promise<Uint8Array> {
    return waitFor(
      () => {
        const ts = tai64nFromUnixMs(new Uint8Array(TAI64N_LENGTH), Date.now());
        return compareTai64n(ts, this.lastTimestamp) > 0 && performance.now() - this.lastInitiationAt >= INITIATION_SPACING_MS && ts;
      },
      { timeoutMs: 1_000, intervalMs: 5, what: 'a fresh TAI64N timestamp' },
    );
  }

  /** Sends an initiation; returns its sender index and bytes. */
  async sendInitiation(): Promise<{ senderIndex: number; bytes: Uint8Array }> {
    const timestamp = await this.nextTimestamp();
    const senderIndex = randomIndex(this.backend);
    const msg = new Uint8Array(INITIATION_LENGTH);
    unwrap(
      createInitiation(this.backend, this.identity, this.keys, this.handshake, { ephemeralPrivate: randomPrivateKey(this.backend), timestamp, senderIndex }, msg),
      'createInitiation',
    );
    this.macs.addMacs(msg, MESSAGE_INITIATION, performance.now());
    this.send(msg);
    this.lastTimestamp = timestamp;
    this.lastInitiationAt = performance.now();
    return { senderIndex, bytes: msg };
  }

  /** Waits for wireguard-go's response to our initiation senderIndex, consumes it and installs the keypair. */
  async completeInitiation(senderIndex: number): Promise<Keypair> {
    const response = await this.pipe.next(
      RECEIVE_TIMEOUT_MS,
      (d) => this.fromRemote(d) && d.data[0] === MESSAGE_RESPONSE && d.data.length === RESPONSE_LENGTH && readU32(d.data, Response.receiver) === senderIndex,
    );
    expect(classify(response.data)).toBe(MESSAGE_RESPONSE);
    expect(this.checker.checkMac1(response.data, MESSAGE_RESPONSE), 'MAC1 of the response, keyed by our public key').toBe(true);
    const view = unwrap(decodeResponse(response.data), 'decodeResponse');
    const peer = unwrap(
      consumeResponse(this.backend, this.identity, view, (index) => (index === senderIndex ? this.target : undefined)),
      'consumeResponse',
    );
    expect(peer).toBe(this.target);
    const keypair = new Keypair(unwrap(deriveKeypair(this.handshake), 'deriveKeypair'), performance.now());
    expect(keypair.isInitiator).toBe(true);
    expect(keypair.localIndex).toBe(senderIndex);
    expect(keypair.remoteIndex).toBe(view.sender);
    this.keypairs.install(keypair);
    return keypair;
  }

  /** A full handshake as initiator. */
  async initiate(): Promise<Keypair> {
    const { senderIndex } = await this.sendInitiation();
    return this.completeInitiation(senderIndex);
  }

  /** Pads and seals an inner packet with keypair and sends it; returns the transport message. */
  sendPacket(keypair: Keypair, packet: Uint8Array): Uint8Array {
    const plaintext = new Uint8Array(paddedLength(packet.length, WG_MTU));
    plaintext.set(packet);
    const out = new Uint8Array(TRANSPORT_HEADER_LENGTH + plaintext.length + TAG_LENGTH);
    const length = keypair.seal(this.backend, plaintext, out, performance.now());
    expect(length).toBe(out.length);
    this.send(out);
    return out;
  }

  /**
   * The next transport message from wireguard-go that carries data (keepalives are skipped),
   * decrypted with the keypair its receiver index names. Fails on anything that does not open.
   */
  async receivePacket(timeoutMs = RECEIVE_TIMEOUT_MS): Promise<Received> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const datagram = await this.pipe.next(Math.max(1, deadline - performance.now()), (d) => this.fromRemote(d) && d.data[0] === MESSAGE_TRANSPORT);
      const view = unwrap(decodeTransport(datagram.data), 'decodeTransport');
      const keypair = this.keypairs.byIndex(view.receiver);
      if (!keypair) throw new Error(`transport message for unknown receiver index ${view.receiver}`);
      const plaintext = new Uint8Array(view.encrypted.length - TAG_LENGTH);
      const length = keypair.open(this.backend, view.counter, view.encrypted, plaintext, performance.now());
      if (length < 0) throw new Error(`Keypair.open of counter ${view.counter} returned ${length}`);
      if (length === 0) continue; // keepalive
      return { datagram, keypair, counter: view.counter, plaintext: plaintext.subarray(0, length) };
    }
  }

  /** Waits for an initiation from wireguard-go and answers it; returns the (responder) keypair, installed as `next`. */
  async respond(): Promise<{ keypair: Keypair; timestamp: Uint8Array }> {
    const initiation = await this.pipe.next(RECEIVE_TIMEOUT_MS, (d) => this.fromRemote(d) && d.data[0] === MESSAGE_INITIATION);
    expect(classify(initiation.data)).toBe(MESSAGE_INITIATION);
    expect(this.checker.checkMac1(initiation.data, MESSAGE_INITIATION), 'MAC1 of the initiation, keyed by our public key').toBe(true);
    const view = unwrap(decodeInitiation(initiation.data), 'decodeInitiation');
    const consumed = unwrap(
      consumeInitiation(this.backend, this.identity, view, (remoteStatic) => (equalConstantTime(remoteStatic, this.keys.remoteStatic) ? this.target : undefined), performance.now()),
      'consumeInitiation',
    );
    expect(consumed.peer).toBe(this.target);
    const senderIndex = randomIndex(this.backend);
    const response = new Uint8Array(RESPONSE_LENGTH);
    unwrap(createResponse(this.backend, this.keys, this.handshake, { ephemeralPrivate: randomPrivateKey(this.backend), senderIndex }, response), 'createResponse');
    this.macs.addMacs(response, MESSAGE_RESPONSE, performance.now());
    const keypair = new Keypair(unwrap(deriveKeypair(this.handshake), 'deriveKeypair'), performance.now());
    expect(keypair.isInitiator).toBe(false);
    expect(keypair.remoteIndex).toBe(view.sender);
    this.keypairs.install(keypair);
    this.send(response);
    return { keypair, timestamp: consumed.timestamp };
  }
}

function echoPayload(seed: number): Uint8Array {
  return Uint8Array.from({ length: 56 }, (_, i) => (seed * 31 + i * 7) & 0xff);
}

function echoRequest(id: number, seq: number): Uint8Array {
  return buildEcho({ type: 8, code: 0, src: OUR_INNER, dst: WG_INNER, id, seq, payload: echoPayload(seq) });
}

/** Asserts that a received packet is the echo reply to our request (id, seq). */
function expectEchoReply(received: Received, id: number, seq: number): void {
  const echo = parseEcho(received.plaintext);
  expect({ type: echo.type, code: echo.code, src: echo.src, dst: echo.dst, id: echo.id, seq: echo.seq }).toEqual({
    type: 0,
    code: 0,
    src: WG_INNER,
    dst: OUR_INNER,
    id,
    seq,
  });
  expect(Buffer.from(echo.payload).equals(Buffer.from(echoPayload(seq))), 'echo payload returned unchanged').toBe(true);
}

/** Sends echo request (id, seq) on keypair and returns the reply wireguard-go's kernel side sent back. */
async function ping(tunnel: Tunnel, keypair: Keypair, id: number, seq: number): Promise<Received> {
  tunnel.sendPacket(keypair, echoRequest(id, seq));
  const reply = await tunnel.receivePacket();
  expectEchoReply(reply, id, seq);
  return reply;
}

// ---------------------------------------------------------------------------------------------

describe.skipIf(skipUnlessRoot('interop with wireguard-go'))('interop with wireguard-go', () => {
  const bed = new NetnsBed('iwg');
  let nsA = '';
  let nsB = '';
  let link: VethPair;
  let pipe: UdpPipe;
  let nextWgPort = 40_000 + (process.pid % 10_000);

  beforeAll(async () => {
    for (const tool of ['wireguard-go', 'wg', 'ping']) {
      const found = await exec(undefined, 'sh', ['-c', `command -v ${tool}`], { allowFailure: true });
      if (found.code !== 0) throw new Error(`${tool} is not installed: apt-get install -y wireguard-go wireguard-tools iputils-ping`);
    }
    await bed.sweepStale();
    nsA = await bed.createNamespace('a');
    nsB = await bed.createNamespace('b');
    link = await bed.createVethPair(nsA, nsB);
    pipe = await UdpPipe.start(bed, nsA, { bindAddress: link.a.address4, port: OUR_UDP_PORT });
  });

  afterAll(async () => {
    await pipe?.close();
    await bed.cleanup();
  });

  describe.each(BACKEND_NAMES)('%s backend', (backendName) => {
    const backend = createBackend(backendName);
    let wg: WireguardGo;
    let wgPrivate: Uint8Array;
    let ourPrivate: Uint8Array;
    let tunnel: Tunnel;
    let wgPort: number;

    beforeEach(async (context) => {
      pipe.drain(); // anything a previous scenario's wireguard-go left in flight
      wgPrivate = generatePrivateKey();
      ourPrivate = randomPrivateKey(backend);
      wgPort = nextWgPort++;
      wg = await WireguardGo.start(bed, nsB);
      await wg.configure({
        privateKey: wgPrivate,
        listenPort: wgPort,
        peers: [{ publicKey: publicKeyOf(ourPrivate), allowedIps: [`${OUR_INNER}/32`], endpoint: `${pipe.address}:${pipe.port}` }],
        addresses: [`${WG_INNER}/24`],
        mtu: WG_MTU,
      });
      tunnel = new Tunnel(backend, ourPrivate, publicKeyOf(wgPrivate), pipe, link.b.address4, wgPort);
      expect(keyToBase64(tunnel.identity.publicKey)).toBe(keyToBase64(publicKeyOf(ourPrivate)));
      context.onTestFailed(() => {
        process.stderr.write(`--- wireguard-go ${wg.ifname} log ---\n${wg.log()}\n`);
      });
    });

    afterEach(async () => {
      await wg?.stop();
    });

    it('(a) initiates a handshake and gets the echo reply to an echo request sent through the tunnel', async () => {
      const before = Date.now();
      const keypair = await tunnel.initiate();
      expect(tunnel.keypairs.current).toBe(keypair);

      const id = 0x5a00 | (process.pid & 0xff);
      const reply = await ping(tunnel, keypair, id, 1);
      expect(reply.keypair).toBe(keypair);
      expect(reply.counter).toBe(0);
      const second = await ping(tunnel, keypair, id, 2);
      expect(second.counter).toBe(1);

      const peer = await wg.peer(tunnel.identity.publicKey);
      expect(peer.endpoint).toBe(`${pipe.address}:${pipe.port}`);
      expect(peer.latestHandshake).toBeGreaterThanOrEqual(Math.floor(before / 1000) - 1);
      expect(peer.latestHandshake).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000) + 1);
      expect(peer.rxBytes).toBeGreaterThan(0);
      expect(peer.txBytes).toBeGreaterThan(0);
    });

    it('(b) answers a handshake wireguard-go initiates, decrypts its echo request and sends a reply ping accepts', async () => {
      // ping in B has a packet for 100.64.0.1 → wireguard-go stages it and initiates to us.
      const pingDone = exec(nsB, 'ping', ['-n', '-c', '1', '-W', '5', OUR_INNER], { allowFailure: true, timeoutMs: 10_000 });

      const { keypair, timestamp } = await tunnel.respond();
      expect(Math.abs(unixSecondsOfTai64n(timestamp) - Date.now() / 1000), 'wireguard-go TAI64N decodes to now').toBeLessThan(5);
      expect(tunnel.keypairs.next).toBe(keypair);
      expect(tunnel.keypairs.current).toBeUndefined();

      const request = await tunnel.receivePacket();
      expect(request.keypair).toBe(keypair);
      expect(tunnel.keypairs.receivedWith(keypair), 'first data from the initiator confirms the session').toBe(true);
      expect(tunnel.keypairs.current).toBe(keypair);
      const echo = parseEcho(request.plaintext);
      expect({ type: echo.type, code: echo.code, src: echo.src, dst: echo.dst }).toEqual({ type: 8, code: 0, src: WG_INNER, dst: OUR_INNER });

      tunnel.sendPacket(keypair, buildEcho({ ...echo, type: 0, src: OUR_INNER, dst: WG_INNER }));
      const result = await pingDone;
      expect(result.code, `ping exit status\n${result.stdout}${result.stderr}`).toBe(0);
      expect(result.stdout).toMatch(/1 packets transmitted, 1 received/);
      // ping counts a reply of any sequence number; check that it saw ours.
      expect(result.stdout).toMatch(new RegExp(`bytes from ${OUR_INNER.replaceAll('.', '\\.')}: icmp_seq=${echo.seq} `));

      const peer = await wg.peer(tunnel.identity.publicKey);
      expect(peer.latestHandshake).toBeGreaterThan(0);
      expect(peer.rxBytes).toBeGreaterThan(0);
    });

    it('(c) keeps traffic flowing across a rekey: old keypair for in-flight packets, new keypair accepted', async () => {
      const id = 0x6b00 | (process.pid & 0xff);
      const first = await tunnel.initiate();
      await ping(tunnel, first, id, 1);

      // Second full handshake while the first session is live; a packet on the old keypair is in flight meanwhile.
      const { senderIndex } = await tunnel.sendInitiation();
      tunnel.sendPacket(first, echoRequest(id, 2));
      const second = await tunnel.completeInitiation(senderIndex);
      expect(second.localIndex).not.toBe(first.localIndex);
      expect(second.remoteIndex, 'wireguard-go allocates a new index').not.toBe(first.remoteIndex);
      expect(Buffer.from(second.sendKey).equals(Buffer.from(first.sendKey))).toBe(false);
      expect(tunnel.keypairs.current).toBe(second);
      expect(tunnel.keypairs.previous).toBe(first);

      // wireguard-go holds the new keypair as `next` until we use it, so this reply still comes on the old one.
      const inFlight = await tunnel.receivePacket();
      expect(inFlight.keypair, 'in-flight reply decrypted with the previous keypair').toBe(first);
      expectEchoReply(inFlight, id, 2);

      // Data on the new keypair: wireguard-go must accept it and answer on it.
      const onNew = await ping(tunnel, second, id, 3);
      expect(onNew.keypair).toBe(second);
      expect(onNew.counter).toBe(0);
      const again = await ping(tunnel, second, id, 4);
      expect(again.keypair).toBe(second);

      // A late packet on the old keypair is still accepted (it is wireguard-go's `previous` now); the reply uses the new one.
      const late = await ping(tunnel, first, id, 5);
      expect(late.keypair).toBe(second);
    });

    it('(d) drops a replayed transport packet, and so does Keypair.open', async () => {
      const id = 0x7c00 | (process.pid & 0xff);
      const keypair = await tunnel.initiate();
      const rx0 = (await wg.peer(tunnel.identity.publicKey)).rxBytes;

      const original = tunnel.sendPacket(keypair, echoRequest(id, 1));
      const reply = await tunnel.receivePacket();
      expectEchoReply(reply, id, 1);
      const rx1 = (await wg.peer(tunnel.identity.publicKey)).rxBytes;
      expect(rx1).toBeGreaterThan(rx0);

      // Replay the delivered packet byte for byte, then a fresh one (same size) as a marker: wireguard-go
      // handles one peer's packets in order, so a delivered replay would be answered before the marker.
      tunnel.send(original);
      tunnel.sendPacket(keypair, echoRequest(id, 2));
      const next = await tunnel.receivePacket();
      expectEchoReply(next, id, 2);
      const rx2 = (await wg.peer(tunnel.identity.publicKey)).rxBytes;
      expect(rx2 - rx1, 'rx grew by the marker packet only, not by the replay').toBe(rx1 - rx0);

      // Locally: the reply we already accepted, opened again, is a replay.
      const view = unwrap(decodeTransport(reply.datagram.data), 'decodeTransport');
      const out = new Uint8Array(view.encrypted.length);
      expect(keypair.open(backend, view.counter, view.encrypted, out, performance.now())).toBe(-2);
      // …while a tampered copy fails authentication first (and does not touch the window).
      const tampered = Uint8Array.from(reply.datagram.data);
      tampered[Transport.payload]! ^= 1;
      const tamperedView = unwrap(decodeTransport(tampered), 'decodeTransport');
      expect(keypair.open(backend, tamperedView.counter, tamperedView.encrypted, out, performance.now())).toBe(-1);
    });
  });
});
