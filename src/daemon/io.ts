/**
 * Glue between the native TUN/UDP classes and the Device: fixed slabs read in batches and handed
 * to the device, and the device's writes handed back. One slab per direction, reused forever.
 */
import { constants } from 'node:os';
import type { DatagramTransport, Device, PacketTunnel, TransportFactory } from '../device/device.ts';
import { TcpCoalescer } from '../tun/offload/tcp-coalesce.ts';
import { RAW_SLOT_SIZE, rawAreaSize, TsoSplitter } from '../tun/offload/tso-split.ts';
import { OffloadCounters, VNET_HDR_LENGTH, writePlainHeader } from '../tun/offload/virtio-net-hdr.ts';
import { TunDevice } from '../tun/tun-device.ts';
import { UdpSocket } from '../tun/udp-socket.ts';
import type { Logger } from '../device/logger.ts';

/** Largest packet handled either way; jumbo frames fit. A bigger one is dropped and counted. */
export const MAX_PACKET = 9216;
/** A slot: transport header room + packet + padding + tag, rounded to a cache line. */
export const SLOT_SIZE = 16 + MAX_PACKET + 64;
/** Batches drained per readiness callback before yielding to the other direction. */
const ROUNDS_PER_WAKEUP = 8;
const MTU_REFRESH_MS = 1000;
const { EINVAL } = constants.errno;
/** Offload: TUN reads staged per readBatch call (each up to 64 KiB) before they are split into slots. */
const RAW_READS = 16;

/**
 * Reads TUN batches into the Device and writes what it hands back. With an offloading TUN
 * (tun.offload) reads go through a TsoSplitter and writes through a TcpCoalescer; the Device sees
 * the same batches either way.
 */
export class TunPump implements PacketTunnel {
  readonly tun: TunDevice;
  readonly offloadCounters = new OffloadCounters();
  private readonly batch: number;
  private readonly slab: Uint8Array;
  private readonly readView: Uint8Array;
  private readonly offsets: Int32Array;
  private readonly lengths: Int32Array;
  private readonly stats = new Int32Array(3);
  private readonly plainOffsets: Int32Array;
  private readonly plainLengths: Int32Array;
  private readonly splitter: TsoSplitter | undefined;
  private coalescer: TcpCoalescer | undefined;
  /** The Device holds the slab (workers sealing in it): no reads until it is handed back. */
  private busy = false;
  private drainScheduled = false;
  /** The last read came back short: the TUN's queue was empty (staged segments aside). */
  private tunEmpty = false;
  private cachedMtu = 1420;
  private mtuCheckedAt = -Infinity;

  /** coalesce: with an offloading TUN, merge received TCP segments into GSO writes (default true). */
  constructor(tun: TunDevice, batch = 128, options: { coalesce?: boolean } = {}) {
    this.tun = tun;
    this.batch = batch;
    this.plainOffsets = new Int32Array(tun.offload ? batch : 0);
    this.plainLengths = new Int32Array(tun.offload ? batch : 0);
    // Slot i's packet is read at 16 + i * SLOT_SIZE so its header fits in front of it. With
    // offload the raw reads are staged after the slots, in the same buffer (copyWithin moves them).
    const slots = 16 + batch * SLOT_SIZE;
    this.slab = new Uint8Array(new SharedArrayBuffer(slots + (tun.offload ? rawAreaSize(RAW_READS) : 0)));
    this.readView = this.slab.subarray(16);
    this.offsets = Int32Array.from({ length: batch }, (_, i) => 16 + i * SLOT_SIZE);
    this.lengths = new Int32Array(batch);
    if (tun.offload) {
      // The splitter places each packet up to 7 bytes into its slot (SLOT_SIZE has the room).
      this.splitter = new TsoSplitter(this.slab, this.offsets.slice(), slots, RAW_READS, MAX_PACKET, this.offloadCounters);
      if (options.coalesce ?? true) this.coalescer = new TcpCoalescer(batch, this.offloadCounters);
    }
  }

  /** Offload figures for `wgts show` (tun_offload 0 when the TUN has none). */
  offloadStats(): Record<string, number> {
    return { tun_offload: this.tun.offload ? 1 : 0, tun_coalescing: this.coalescer ? 1 : 0, ...this.offloadCounters.toRecord() };
  }

  get mtu(): number {
    const now = performance.now();
    if (now - this.mtuCheckedAt > MTU_REFRESH_MS) {
      this.mtuCheckedAt = now;
      try {
        this.cachedMtu = this.tun.mtu;
      } catch {
        // the interface may be in another namespace or gone: keep the last value
      }
    }
    return this.cachedMtu;
  }

  start(device: Device, onFatal: (err: Error) => void): void {
    const drain = (): void => {
      for (let round = 0; round < ROUNDS_PER_WAKEUP && !device.closed && !this.busy; round++) {
        let n: number;
        try {
          n = this.splitter ? this.readOffloaded(this.splitter) : this.readPlain();
        } catch (err) {
          onFatal(err as Error);
          return;
        }
        if (n === 0) return;
        const pending = device.handleTunPackets(this.slab, this.offsets, this.lengths, n);
        if (pending) {
          // Workers are sealing in this slab: read no more until they are done.
          this.busy = true;
          this.tun.pause();
          pending.then(
            () => {
              this.busy = false;
              this.tun.resume();
              scheduleLeftovers();
            },
            (err: Error) => onFatal(err),
          );
          return;
        }
        // A read came back short, so the queue was empty: the (level-triggered) poll reports
        // what comes next. Asking again would be one more read() that says EAGAIN, per wakeup.
        if (this.tunEmpty) break;
      }
      scheduleLeftovers();
    };
    // Split segments still staged are not in the kernel's queue, so readiness will not report them.
    const scheduleLeftovers = (): void => {
      if (!this.splitter?.pending || this.drainScheduled || device.closed) return;
      this.drainScheduled = true;
      setImmediate(() => {
        this.drainScheduled = false;
        drain();
      });
    };
    this.tun.onReadable(drain);
    this.tun.onError((err) => onFatal(err));
  }

  private readPlain(): number {
    const n = this.tun.readBatch(this.readView, SLOT_SIZE, this.lengths, this.batch);
    this.tunEmpty = n < this.batch;
    for (let i = 0; i < n; i++) if (this.lengths[i]! > MAX_PACKET) this.lengths[i] = -1;
    return n;
  }

  /** Fills the slots from staged reads first, then from new ones, until full or the TUN is empty. */
  private readOffloaded(splitter: TsoSplitter): number {
    let count = 0;
    this.tunEmpty = false;
    while (count < this.batch) {
      if (!splitter.pending) {
        if (this.tunEmpty) break;
        const want = Math.min(splitter.rawSlots, this.batch - count);
        const n = this.tun.readBatch(splitter.rawView, RAW_SLOT_SIZE, splitter.rawLengths, want);
        this.tunEmpty = n < want;
        if (n === 0) break;
        splitter.loaded(n);
      }
      count = splitter.split(this.offsets, this.lengths, count, this.batch);
    }
    return count;
  }

  write(slab: Uint8Array, offsets: Int32Array, lengths: Int32Array, count: number): number {
    if (this.coalescer) return this.writeCoalesced(this.coalescer, slab, offsets, lengths, count);
    if (this.tun.offload) return this.writeWithPlainHeaders(slab, offsets, lengths, count);
    const consumed = this.tun.writeBatch(slab, offsets, lengths, count, this.stats);
    return consumed - this.stats[0]!;
  }

  /** Returns how many packets the kernel took (what the Device counts as written). */
  private writeCoalesced(coalescer: TcpCoalescer, slab: Uint8Array, offsets: Int32Array, lengths: Int32Array, count: number): number {
    if (count > coalescer.capacity) return this.writeWithPlainHeaders(slab, offsets, lengths, count);
    const writes = coalescer.build(slab, offsets, lengths, count);
    const consumed = this.tun.writevBatch(slab, coalescer.iovOffsets, coalescer.iovLengths, coalescer.iovCounts, writes, this.stats, coalescer.errors);
    let written = 0;
    for (let w = 0; w < consumed; w++) {
      if (coalescer.errors[w] === 0) written += coalescer.iovCounts[w]!;
      else if (coalescer.iovCounts[w]! > 1 && coalescer.errors[w] === -EINVAL) {
        // EINVAL for a packet we coalesced: this kernel does not take our GSO writes. TCP will
        // resend those segments; from now on they go one by one.
        this.coalescer = undefined;
        this.offloadCounters.coalescingRefused++;
      }
    }
    return written;
  }

  /** Offloading TUN without coalescing: every packet with an all-zero virtio_net_hdr in its headroom. */
  private writeWithPlainHeaders(slab: Uint8Array, offsets: Int32Array, lengths: Int32Array, count: number): number {
    let written = 0;
    for (let start = 0; start < count; start += this.batch) {
      const n = Math.min(this.batch, count - start);
      for (let i = 0; i < n; i++) {
        const at = offsets[start + i]! - VNET_HDR_LENGTH;
        writePlainHeader(slab, at);
        this.plainOffsets[i] = at;
        this.plainLengths[i] = lengths[start + i]! + VNET_HDR_LENGTH;
      }
      const consumed = this.tun.writeBatch(slab, this.plainOffsets, this.plainLengths, n, this.stats);
      written += consumed - this.stats[0]!;
      if (consumed < n) break;
    }
    return written;
  }
}

/** A TransportFactory over the native UDP socket: dual-stack, falling back to IPv4 only. */
export function udpTransports(logger: Logger, batch = 128): TransportFactory {
  return (port, fwmark, onDatagrams): DatagramTransport => {
    let socket: UdpSocket;
    try {
      socket = UdpSocket.bind(port, { family: 0, fwmark });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAFNOSUPPORT') throw err;
      logger.warn('IPv6 unavailable; listening on IPv4 only');
      socket = UdpSocket.bind(port, { family: 4, fwmark });
    }
    const slab = new Uint8Array(new SharedArrayBuffer(batch * SLOT_SIZE));
    const offsets = Int32Array.from({ length: batch }, (_, i) => i * SLOT_SIZE);
    const lengths = new Int32Array(batch);
    const addrs = new Uint8Array(batch * 40);
    const stats = new Int32Array(3);
    let closed = false;
    socket.onReadable(() => {
      for (let round = 0; round < ROUNDS_PER_WAKEUP && !closed; round++) {
        const n = socket.recvBatch(slab, SLOT_SIZE, lengths, addrs, batch);
        if (n === 0) return;
        const pending = onDatagrams(slab, offsets, lengths, addrs, n);
        if (pending) {
          // Workers are opening in this slab: read no more until they are done.
          socket.pause();
          pending.then(() => closed || socket.resume(), (err: Error) => logger.error({ err: err.message }, 'receive batch failed'));
          return;
        }
      }
    });
    socket.onError((err) => logger.error({ err: err.message }, 'UDP socket error'));
    return {
      port: socket.port,
      send: (s, o, l, a, count) => {
        const consumed = socket.sendBatch(s, o, l, a, count, stats);
        return consumed - stats[0]!;
      },
      setMark: (mark) => socket.setMark(mark),
      close: () => {
        closed = true;
        socket.close();
      },
    };
  };
}
