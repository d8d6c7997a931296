/**
 * The inbound path: UDP datagrams → type dispatch. Transport messages: index → keypair →
 * decrypt in place → replay check → the inner source must be in the peer's allowed IPs → TUN
 * batch. Handshake messages are copied to a bounded queue and processed after the batch with
 * a time budget: MAC1 first (no X25519 work for a bad one), then under load MAC2 and a
 * per-source rate limit, then the Noise work.
 */
import {
  REJECT_AFTER_MESSAGES,
  REKEY_TIMEOUT,
  HANDSHAKE_QUEUE_CAPACITY,
  UNDER_LOAD_AFTER_TIME,
  UNDER_LOAD_QUEUE_LENGTH,
} from '../noise/constants.ts';
import { encodeSource } from '../noise/cookie.ts';
import type { InitiationTarget } from '../noise/handshake.ts';
import { consumeInitiation, consumeResponse, createHandshakeState, createResponse, deriveKeypair, restoreInitiation } from '../noise/handshake.ts';
import { Keypair } from '../noise/keypair.ts';
import type { CryptoBatch } from './crypto-batch.ts';
import { OP_OPEN } from './crypto-batch.ts';
import {
  COOKIE_REPLY_LENGTH,
  decodeCookieReply,
  decodeInitiation,
  decodeResponse,
  INITIATION_LENGTH,
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  MESSAGE_TRANSPORT,
  readCounter,
  readI32,
  RESPONSE_LENGTH,
  TRANSPORT_MIN_LENGTH,
} from '../noise/messages.ts';
import type { Device } from './device.ts';
import { copyRecord, ENDPOINT_SIZE, remoteIp, remotePort, sameRecord } from './endpoint.ts';
import type { Peer } from './peer.ts';
import { sendControl, sendKeepalive, sendStaged } from './send.ts';

export interface QueuedHandshake {
  readonly type: typeof MESSAGE_INITIATION | typeof MESSAGE_RESPONSE;
  readonly bytes: Uint8Array;
  readonly addr: Uint8Array;
}

/** Time spent on queued handshake messages per turn of the event loop before yielding to the data path. */
const HANDSHAKE_BUDGET_MS = 4;

class ReceiveScratch {
  readonly reply = new Uint8Array(RESPONSE_LENGTH);
  readonly cookieReply = new Uint8Array(COOKIE_REPLY_LENGTH);
  readonly ephemeral = new Uint8Array(32);
  readonly source = new Uint8Array(18);
  /** Our initiation, while a crossing one from the same peer is answered (consumeInitiation). */
  readonly aside = createHandshakeState();
  scheduled = false;
}

const scratchOf = new WeakMap<Device, ReceiveScratch>();

export function initReceiveBuffers(device: Device): void {
  scratchOf.set(device, new ReceiveScratch());
}

/** Per-slab state of one incoming batch: which datagram and keypair each crypto entry is for. */
class ReceiveJob {
  readonly batch: CryptoBatch;
  readonly datagram: Int32Array;
  readonly keypairs: (Keypair | undefined)[];
  readonly peers: (Peer | undefined)[];
  readonly counters: number[];
  readonly tunOffsets: Int32Array;
  readonly tunLengths: Int32Array;

  constructor(batch: CryptoBatch) {
    this.batch = batch;
    this.datagram = new Int32Array(batch.capacity);
    this.keypairs = new Array(batch.capacity).fill(undefined);
    this.peers = new Array(batch.capacity).fill(undefined);
    this.counters = new Array<number>(batch.capacity).fill(0);
    this.tunOffsets = new Int32Array(batch.capacity);
    this.tunLengths = new Int32Array(batch.capacity);
  }
}

const jobs = new WeakMap<CryptoBatch, ReceiveJob>();

function jobFor(device: Device, slab: Uint8Array): ReceiveJob {
  const batch = device.crypto.batchFor(slab);
  let job = jobs.get(batch);
  if (!job) {
    job = new ReceiveJob(batch);
    jobs.set(batch, job);
  }
  return job;
}

/**
 * Handles a batch of received datagrams (at most the device's batchSize). Returns a Promise
 * when decryption went to worker threads: the caller must keep the slab until it settles.
 */
export function receiveDatagrams(device: Device, slab: Uint8Array, offsets: Int32Array, lengths: Int32Array, addrs: Uint8Array, count: number): void | Promise<void> {
  if (device.closed) return;
  const s = scratchOf.get(device)!;
  const job = jobFor(device, slab);
  const batch = job.batch;
  batch.reset();
  const now = device.now();
  for (let i = 0; i < count; i++) {
    const offset = offsets[i]!;
    const length = lengths[i]!;
    if (length < 4 || slab[offset + 1] !== 0 || slab[offset + 2] !== 0 || slab[offset + 3] !== 0) {
      device.counters.drop('malformed');
      continue;
    }
    const type = slab[offset]!;
    if (type === MESSAGE_TRANSPORT) {
      if (batch.count < batch.capacity) prepareTransport(device, job, slab, offset, length, i, now);
      else device.counters.drop('malformed');
    } else if ((type === MESSAGE_INITIATION && length === INITIATION_LENGTH) || (type === MESSAGE_RESPONSE && length === RESPONSE_LENGTH)) {
      if (device.handshakeQueue.length >= HANDSHAKE_QUEUE_CAPACITY) {
        device.counters.drop('handshake-queue-full');
        continue;
      }
      device.handshakeQueue.push({
        type,
        bytes: slab.slice(offset, offset + length),
        addr: addrs.slice(i * ENDPOINT_SIZE, (i + 1) * ENDPOINT_SIZE),
      });
    } else if (type === MESSAGE_COOKIE_REPLY && length === COOKIE_REPLY_LENGTH) {
      receiveCookieReply(device, slab.subarray(offset, offset + length), now);
    } else {
      device.counters.drop('malformed');
    }
  }
  if (device.handshakeQueue.length > 0) scheduleHandshakes(device, s);
  if (batch.count === 0) return;
  const opening = device.crypto.run(batch, slab);
  if (opening) return opening.then(() => finishTransport(device, job, slab, offsets, lengths, addrs));
  finishTransport(device, job, slab, offsets, lengths, addrs);
}

/** Index → keypair → counter: the checks that need no decryption. */
function prepareTransport(device: Device, job: ReceiveJob, slab: Uint8Array, offset: number, length: number, datagram: number, now: number): void {
  if (length < TRANSPORT_MIN_LENGTH) {
    device.counters.drop('malformed');
    return;
  }
  const entry = device.indices.get(readI32(slab, offset + 4));
  const keypair = entry?.keypair;
  if (!entry || !keypair) {
    device.counters.drop('unknown-index');
    return;
  }
  const counter = readCounter(slab, offset + 8);
  if (counter < 0) {
    device.counters.drop('replay');
    return;
  }
  if (keypair.isExpired(now)) {
    device.counters.drop('expired');
    return;
  }
  const j = job.batch.add(OP_OPEN, offset + 16, length - 16, keypair.receiveKey, counter);
  job.datagram[j] = datagram;
  job.keypairs[j] = keypair;
  job.peers[j] = entry.peer;
  job.counters[j] = counter;
}

/** After decryption, in arrival order: replay window, session confirmation, roaming, timers, inner packet checks, TUN. */
function finishTransport(device: Device, job: ReceiveJob, slab: Uint8Array, offsets: Int32Array, lengths: Int32Array, addrs: Uint8Array): void {
  if (device.closed) return;
  const batch = job.batch;
  const now = device.now();
  let out = 0;
  for (let j = 0; j < batch.count; j++) {
    const keypair = job.keypairs[j]!;
    const peer = job.peers[j]!;
    job.keypairs[j] = undefined;
    job.peers[j] = undefined;
    const plain = batch.results[j]!;
    if (plain < 0) {
      device.counters.drop('decrypt');
      continue;
    }
    if (!keypair.replay.accept(job.counters[j]!, REJECT_AFTER_MESSAGES)) {
      device.counters.drop('replay');
      continue;
    }
    if (peer.removed) continue;
    const i = job.datagram[j]!;
    const offset = offsets[i]!;
    const length = lengths[i]!;
    peer.rxBytes += length;
    if (peer.keypairs.receivedWith(keypair)) {
      // The initiator used the session we answered with: it is confirmed.
      peer.lastHandshakeEpochMs = device.epochMs();
      device.timerEvent(peer, 'handshake-complete');
      sendStaged(device, peer);
    }
    // Roaming: the latest authenticated packet tells where the peer is now.
    const addrOffset = i * ENDPOINT_SIZE;
    if (!peer.hasEndpoint || !sameRecord(peer.endpoint, 0, addrs, addrOffset)) {
      copyRecord(peer.endpoint, 0, addrs, addrOffset);
      peer.hasEndpoint = true;
    }
    device.timerEvent(peer, 'authenticated-received', now);
    device.timerEvent(peer, 'authenticated-traversal', now);
    if (keypair === peer.keypairs.current && !peer.sentLastMinuteHandshake && keypair.wantsRekeyOnReceive(now)) {
      peer.sentLastMinuteHandshake = true;
      device.timerEvent(peer, 'want-handshake', now);
    }
    if (plain === 0) {
      device.counters.keepalivesReceived++;
    } else {
      device.timerEvent(peer, 'data-received', now);
      const ipLength = checkInnerPacket(device, peer, slab, offset + 16, plain);
      if (ipLength > 0) {
        job.tunOffsets[out] = offset + 16;
        job.tunLengths[out] = ipLength;
        out++;
      }
    }
  }
  if (out > 0) {
    const written = device.tun.write(slab, job.tunOffsets, job.tunLengths, out);
    if (written < out) device.counters.drop('tun-write', out - written);
  }
}

/** Handshake work runs on its own turn of the event loop, so transport packets never wait for X25519. */
function scheduleHandshakes(device: Device, s: ReceiveScratch): void {
  if (s.scheduled || device.closed) return;
  s.scheduled = true;
  setImmediate(() => {
    s.scheduled = false;
    if (device.handshakeQueue.length > 0) processHandshakes(device);
  });
}

/** The inner packet's real length when it is a valid IP packet from the peer's allowed IPs, else 0. */
function checkInnerPacket(device: Device, peer: Peer, slab: Uint8Array, at: number, plain: number): number {
  const version = slab[at]! >> 4;
  let ipLength: number;
  let source: Peer | undefined;
  if (version === 4 && plain >= 20) {
    ipLength = (slab[at + 2]! << 8) | slab[at + 3]!;
    if (ipLength < 20 || ipLength > plain) {
      device.counters.drop('invalid-packet');
      return 0;
    }
    source = device.allowedIps.lookupV4(slab, at + 12);
  } else if (version === 6 && plain >= 40) {
    ipLength = 40 + ((slab[at + 4]! << 8) | slab[at + 5]!);
    if (ipLength > plain) {
      device.counters.drop('invalid-packet');
      return 0;
    }
    source = device.allowedIps.lookupV6(slab, at + 8);
  } else {
    device.counters.drop('invalid-packet');
    return 0;
  }
  if (source !== peer) {
    device.counters.drop('source-not-allowed');
    return 0;
  }
  return ipLength;
}

function receiveCookieReply(device: Device, bytes: Uint8Array, now: number): void {
  const decoded = decodeCookieReply(bytes);
  const entry = decoded.ok ? device.indices.get(decoded.value.receiver) : undefined;
  if (!decoded.ok || !entry || !entry.peer.cookies) {
    device.counters.drop('unknown-index');
    return;
  }
  const consumed = entry.peer.cookies.consumeReply(decoded.value, now);
  if (!consumed.ok) {
    device.counters.handshakeError(`cookie-${consumed.error}`);
    return;
  }
  device.counters.cookieRepliesReceived++;
}

/** Works through queued handshake messages for up to HANDSHAKE_BUDGET_MS, then yields. */
export function processHandshakes(device: Device): void {
  const s = scratchOf.get(device)!;
  const queue = device.handshakeQueue;
  const start = device.now();
  if (queue.length >= UNDER_LOAD_QUEUE_LENGTH) device.lastUnderLoadAt = start;
  const underLoad = start - device.lastUnderLoadAt < UNDER_LOAD_AFTER_TIME;
  let processed = 0;
  while (queue.length > 0 && !device.closed) {
    const msg = queue.shift()!;
    handleHandshake(device, s, msg, underLoad);
    processed++;
    if ((processed & 7) === 0 && device.now() - start > HANDSHAKE_BUDGET_MS) break;
  }
  if (queue.length > 0) scheduleHandshakes(device, s);
}

function handleHandshake(device: Device, s: ReceiveScratch, msg: QueuedHandshake, underLoad: boolean): void {
  const checker = device.cookieChecker;
  const identity = device.identity;
  if (!checker || !identity) {
    device.counters.drop('no-key');
    return;
  }
  if (!checker.checkMac1(msg.bytes, msg.type)) {
    device.counters.drop('mac1');
    return;
  }
  const now = device.now();
  if (underLoad) {
    const source = encodeSource(remoteIp(msg.addr, 0), remotePort(msg.addr, 0), s.source);
    if (!checker.checkMac2(msg.bytes, msg.type, source, now)) {
      checker.createReply(msg.bytes, msg.type, source, now, s.cookieReply);
      if (sendControl(device, s.cookieReply, msg.addr, 0)) device.counters.cookieRepliesSent++;
      return;
    }
    if (!device.rateLimiter.allow(remoteIp(msg.addr, 0), now)) {
      device.counters.drop('rate-limited');
      return;
    }
  }
  device.counters.handshakesProcessed++;
  if (msg.type === MESSAGE_INITIATION) handleInitiation(device, s, msg, now);
  else handleResponse(device, msg, now);
}

interface Target extends InitiationTarget {
  readonly peer: Peer;
}

function target(peer: Peer | undefined): Target | undefined {
  if (!peer || peer.removed || !peer.keys) return undefined;
  return { keys: peer.keys, handshake: peer.handshake, peer };
}

function learnEndpoint(peer: Peer, addr: Uint8Array): void {
  copyRecord(peer.endpoint, 0, addr, 0);
  peer.hasEndpoint = true;
}

function handleInitiation(device: Device, s: ReceiveScratch, msg: QueuedHandshake, now: number): void {
  const decoded = decodeInitiation(msg.bytes);
  if (!decoded.ok) return device.counters.handshakeError(decoded.error);
  // Ours is kept only while in flight: past REKEY_TIMEOUT it is due for a retry anyway.
  const consumed = consumeInitiation(device.backend, device.identity!, decoded.value, (key) => target(device.peerByKey(key)), now, (t) =>
    now - t.peer.timers.lastInitiationSentAt < REKEY_TIMEOUT ? s.aside : undefined,
  );
  if (!consumed.ok) return device.counters.handshakeError(consumed.error);
  const peer = consumed.value.peer.peer;
  if (consumed.value.crossed) device.counters.initiationsCrossed++;
  try {
    answerInitiation(device, s, peer, msg, now, consumed.value.crossed);
  } finally {
    // Ours goes on waiting for its answer: whichever answer comes first makes a session.
    if (consumed.value.crossed) restoreInitiation(peer.handshake, s.aside);
  }
}

function answerInitiation(device: Device, s: ReceiveScratch, peer: Peer, msg: QueuedHandshake, now: number, crossed: boolean): void {
  peer.rxBytes += msg.bytes.length;
  learnEndpoint(peer, msg.addr);
  const hs = peer.handshake;
  // The index of an initiation of ours that was never answered goes — unless it was set aside.
  if (!crossed && hs.localIndex !== 0 && device.indices.get(hs.localIndex)?.keypair === undefined) device.indices.release(hs.localIndex);
  const entry = { peer, keypair: undefined as Keypair | undefined };
  const index = device.indices.allocate(entry);
  device.backend.randomBytes(s.ephemeral);
  const created = createResponse(device.backend, peer.keys!, hs, { ephemeralPrivate: s.ephemeral, senderIndex: index }, s.reply);
  s.ephemeral.fill(0);
  if (!created.ok) {
    device.indices.release(index);
    return device.counters.handshakeError(created.error);
  }
  peer.cookies!.addMacs(s.reply, MESSAGE_RESPONSE, now);
  const keys = deriveKeypair(hs);
  if (!keys.ok) {
    device.indices.release(index);
    return device.counters.handshakeError(keys.error);
  }
  const keypair = new Keypair(keys.value, now);
  entry.keypair = keypair;
  peer.keypairs.install(keypair);
  device.timerEvent(peer, 'authenticated-received');
  device.timerEvent(peer, 'session-derived');
  if (sendControl(device, s.reply, peer.endpoint, 0)) {
    device.counters.responsesSent++;
    peer.txBytes += s.reply.length;
    device.timerEvent(peer, 'authenticated-sent');
  }
  device.timerEvent(peer, 'authenticated-traversal');
  device.schedule(peer);
}

function handleResponse(device: Device, msg: QueuedHandshake, now: number): void {
  const decoded = decodeResponse(msg.bytes);
  if (!decoded.ok) return device.counters.handshakeError(decoded.error);
  const consumed = consumeResponse(device.backend, device.identity!, decoded.value, (index) => {
    const entry = device.indices.get(index);
    return entry && !entry.keypair ? target(entry.peer) : undefined;
  });
  if (!consumed.ok) return device.counters.handshakeError(consumed.error);
  const peer = consumed.value.peer;
  peer.rxBytes += msg.bytes.length;
  learnEndpoint(peer, msg.addr);
  const keys = deriveKeypair(peer.handshake);
  if (!keys.ok) return device.counters.handshakeError(keys.error);
  const keypair = new Keypair(keys.value, now);
  const entry = device.indices.get(keypair.localIndex);
  if (entry) entry.keypair = keypair;
  peer.keypairs.install(keypair);
  peer.sentLastMinuteHandshake = false;
  peer.lastHandshakeEpochMs = device.epochMs();
  device.timerEvent(peer, 'handshake-complete');
  device.timerEvent(peer, 'session-derived');
  device.timerEvent(peer, 'authenticated-received');
  device.timerEvent(peer, 'authenticated-traversal');
  // Confirm the session at once so the responder can start sending on it.
  if (peer.staged.length > 0) sendStaged(device, peer);
  else sendKeepalive(device, peer);
  device.schedule(peer);
}
