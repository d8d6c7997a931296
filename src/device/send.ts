/**
 * The outbound path: IP packets from the TUN → allowed-IPs lookup → peer → seal in place →
 * UDP batch. Packets for a peer without a session are staged (up to MAX_STAGED_PACKETS) and a
 * handshake is requested. Also the control messages: initiations and keepalives.
 *
 * Batch layout contract: packet i sits at slab[offsets[i] .. + lengths[i]) with 16 writable
 * bytes before it (the transport header is written there) and room after it for padding to a
 * multiple of 16 (capped at the MTU) plus the 16-byte tag. Sealing is in place.
 */
import { MAX_STAGED_PACKETS } from '../noise/constants.ts';
import { tai64nFromUnixMs } from '../noise/crypto/tai64n.ts';
import { createInitiation } from '../noise/handshake.ts';
import { paddedLength } from '../noise/keypair.ts';
import {
  INITIATION_LENGTH,
  MESSAGE_INITIATION,
  MESSAGE_TRANSPORT,
  TAG_LENGTH,
  Transport,
  TRANSPORT_HEADER_LENGTH,
  writeCounter,
  writeHeader,
  writeU32,
} from '../noise/messages.ts';
import type { CryptoBatch } from './crypto-batch.ts';
import { OP_SEAL } from './crypto-batch.ts';
import { expire } from '../noise/timers.ts';
import type { Device } from './device.ts';
import { copyRecord, ENDPOINT_SIZE } from './endpoint.ts';
import type { Peer } from './peer.ts';

/** Room a packet needs around it in a slab: header before, padding and tag after. */
export const HEADROOM = TRANSPORT_HEADER_LENGTH;
export const TAILROOM = 16 + TAG_LENGTH;

/** Buffers for control messages (handshakes, keepalives, cookie replies). */
export class SendScratch {
  readonly control = new Uint8Array(256);
  readonly controlOffsets = new Int32Array(1);
  readonly controlLengths = new Int32Array(1);
  readonly controlAddr = new Uint8Array(ENDPOINT_SIZE);
  readonly ephemeral = new Uint8Array(32);
  readonly timestamp = new Uint8Array(12);

}

const scratchOf = new WeakMap<Device, SendScratch>();

export function initSendBuffers(device: Device): void {
  scratchOf.set(device, new SendScratch());
}

function scratch(device: Device): SendScratch {
  return scratchOf.get(device)!;
}

/** The peer whose allowed IPs contain the packet's destination, or undefined. */
function routeOf(device: Device, slab: Uint8Array, offset: number, length: number): Peer | undefined | null {
  const version = slab[offset]! >> 4;
  if (version === 4 && length >= 20) return device.allowedIps.lookupV4(slab, offset + 16);
  if (version === 6 && length >= 40) return device.allowedIps.lookupV6(slab, offset + 24);
  return null;
}

/** Per-slab state of one outgoing batch: its crypto entries and the UDP batch it becomes. */
class SendJob {
  readonly batch: CryptoBatch;
  readonly offsets: Int32Array;
  readonly lengths: Int32Array;
  readonly addrs: Uint8Array;
  count = 0;

  constructor(batch: CryptoBatch) {
    this.batch = batch;
    this.offsets = new Int32Array(batch.capacity);
    this.lengths = new Int32Array(batch.capacity);
    this.addrs = new Uint8Array(batch.capacity * ENDPOINT_SIZE);
  }
}

const jobs = new WeakMap<CryptoBatch, SendJob>();

function jobFor(device: Device, slab: Uint8Array): SendJob {
  const batch = device.crypto.batchFor(slab);
  let job = jobs.get(batch);
  if (!job) {
    job = new SendJob(batch);
    jobs.set(batch, job);
  }
  return job;
}

/**
 * Encrypts and sends a batch of IP packets (at most the device's batchSize). Routing, staging,
 * counters and headers are done here in packet order; the sealing runs on the device's crypto
 * executor; the datagrams leave in the same order. Returns a Promise when the sealing went to
 * worker threads: the caller must not touch the slab until it settles.
 */
export function sendTunPackets(device: Device, slab: Uint8Array, offsets: Int32Array, lengths: Int32Array, count: number): void | Promise<void> {
  const job = jobFor(device, slab);
  const batch = job.batch;
  batch.reset();
  job.count = 0;
  const transport = device.transport;
  const now = device.now();
  const mtu = device.tun.mtu;
  for (let i = 0; i < count; i++) {
    const offset = offsets[i]!;
    const length = lengths[i]!;
    const peer = routeOf(device, slab, offset, length);
    if (peer === null) {
      device.counters.drop('invalid-packet');
      continue;
    }
    if (peer === undefined) {
      device.counters.drop('no-route');
      continue;
    }
    const keypair = peer.keypairs.current;
    const counter = keypair && peer.hasEndpoint && transport && batch.count < batch.capacity ? keypair.nextSendCounter(now) : -1;
    if (counter < 0) {
      stage(device, peer, slab.subarray(offset, offset + length));
      continue;
    }
    const padded = paddedLength(length, mtu);
    slab.fill(0, offset + length, offset + padded);
    const header = offset - HEADROOM;
    writeHeader(slab, MESSAGE_TRANSPORT, header);
    writeU32(slab, header + Transport.receiver, keypair!.remoteIndex);
    writeCounter(slab, header + Transport.counter, counter);
    batch.add(OP_SEAL, offset, padded, keypair!.sendKey, counter);
    const n = job.count++;
    job.offsets[n] = header;
    job.lengths[n] = HEADROOM + padded + TAG_LENGTH;
    copyRecord(job.addrs, n * ENDPOINT_SIZE, peer.endpoint, 0);
    peer.txBytes += HEADROOM + padded + TAG_LENGTH;
    device.timerEvent(peer, 'data-sent', now);
    device.timerEvent(peer, 'authenticated-sent', now);
    device.timerEvent(peer, 'authenticated-traversal', now);
    if (keypair!.wantsRekeyOnSend(now)) device.timerEvent(peer, 'want-handshake', now);
  }
  if (job.count === 0) return;
  const sealing = device.crypto.run(batch, slab);
  if (sealing) return sealing.then(() => flush(device, slab, job));
  flush(device, slab, job);
}

function flush(device: Device, slab: Uint8Array, job: SendJob): void {
  const transport = device.transport;
  if (!transport) {
    device.counters.drop('udp-send', job.count);
    return;
  }
  const sent = transport.send(slab, job.offsets, job.lengths, job.addrs, job.count);
  if (sent < job.count) device.counters.drop('udp-send', job.count - sent);
}

/** Keeps a copy of a packet until the peer has a session, and asks for one. */
function stage(device: Device, peer: Peer, packet: Uint8Array): void {
  if (peer.staged.length >= MAX_STAGED_PACKETS) {
    peer.staged.shift();
    device.counters.drop('staged-overflow');
  }
  peer.staged.push(Uint8Array.from(packet));
  device.timerEvent(peer, 'want-handshake');
}

/** Sends what was staged, now that the peer has a session. */
export function sendStaged(device: Device, peer: Peer): void {
  const packets = peer.staged;
  if (packets.length === 0) return;
  peer.staged = [];
  const slot = HEADROOM + device.tun.mtu + TAILROOM + 64;
  const biggest = packets.reduce((m, p) => Math.max(m, p.length), 0);
  const slotSize = Math.max(slot, HEADROOM + biggest + TAILROOM);
  const slab = new Uint8Array(slotSize * packets.length);
  const offsets = new Int32Array(packets.length);
  const lengths = new Int32Array(packets.length);
  packets.forEach((p, i) => {
    offsets[i] = i * slotSize + HEADROOM;
    lengths[i] = p.length;
    slab.set(p, offsets[i]);
  });
  // One slab per chunk: a chunk's sealing may still be running on a worker when the next starts.
  for (let start = 0; start < packets.length; start += device.batchSize) {
    const n = Math.min(device.batchSize, packets.length - start);
    const chunk = start === 0 && n === packets.length ? slab : slab.slice(start * slotSize, (start + n) * slotSize);
    const chunkOffsets = Int32Array.from(offsets.subarray(start, start + n), (o) => o - start * slotSize);
    void sendTunPackets(device, chunk, chunkOffsets, lengths.subarray(start, start + n), n);
  }
}

/** Sends one control message (handshake, cookie reply, keepalive) to an endpoint record. */
export function sendControl(device: Device, bytes: Uint8Array, record: Uint8Array, recordOffset: number): boolean {
  const transport = device.transport;
  if (!transport) return false;
  const s = scratch(device);
  if (bytes.buffer !== s.control.buffer || bytes.byteOffset !== s.control.byteOffset) s.control.set(bytes);
  s.controlOffsets[0] = 0;
  s.controlLengths[0] = bytes.length;
  copyRecord(s.controlAddr, 0, record, recordOffset);
  const sent = transport.send(s.control, s.controlOffsets, s.controlLengths, s.controlAddr, 1);
  if (sent < 1) device.counters.drop('udp-send');
  return sent === 1;
}

function sendToPeer(device: Device, peer: Peer, bytes: Uint8Array): void {
  if (!sendControl(device, bytes, peer.endpoint, 0)) return;
  peer.txBytes += bytes.length;
  device.timerEvent(peer, 'authenticated-sent');
  device.timerEvent(peer, 'authenticated-traversal');
}

export function sendInitiation(device: Device, peer: Peer): void {
  const identity = device.identity;
  if (!identity || !peer.keys || !peer.cookies) return;
  if (!peer.hasEndpoint) return;
  const s = scratch(device);
  const hs = peer.handshake;
  if (hs.localIndex !== 0 && device.indices.get(hs.localIndex)?.keypair === undefined) device.indices.release(hs.localIndex);
  const index = device.indices.allocate({ peer, keypair: undefined });
  device.backend.randomBytes(s.ephemeral);
  tai64nFromUnixMs(s.timestamp, device.epochMs());
  const msg = s.control.subarray(0, INITIATION_LENGTH);
  const created = createInitiation(device.backend, identity, peer.keys, hs, { ephemeralPrivate: s.ephemeral, timestamp: s.timestamp, senderIndex: index }, msg);
  s.ephemeral.fill(0);
  if (!created.ok) {
    device.indices.release(index);
    device.counters.handshakeError(created.error);
    return;
  }
  peer.cookies.addMacs(msg, MESSAGE_INITIATION, device.now());
  device.counters.initiationsSent++;
  device.logger.debug({ peer: peer.publicKeyHex.slice(0, 8) }, 'sending handshake initiation');
  sendToPeer(device, peer, msg);
  device.timerEvent(peer, 'handshake-initiated');
}

export function sendKeepalive(device: Device, peer: Peer): void {
  const now = device.now();
  const keypair = peer.keypairs.current;
  if (!keypair || keypair.isExpired(now) || !peer.hasEndpoint) {
    device.timerEvent(peer, 'want-handshake');
    return;
  }
  const s = scratch(device);
  const n = keypair.seal(device.backend, s.control.subarray(HEADROOM, HEADROOM), s.control, now);
  if (n < 0) return;
  device.counters.keepalivesSent++;
  sendToPeer(device, peer, s.control.subarray(0, n));
}

export function expireTimers(device: Device, peer: Peer): number {
  return expire(peer.timers, device.now(), device.jitter());
}
