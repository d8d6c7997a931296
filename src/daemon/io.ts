/**
 * Glue between the native TUN/UDP classes and the Device: fixed slabs read in batches and handed
 * to the device, and the device's writes handed back. One slab per direction, reused forever.
 */
import type { DatagramTransport, Device, PacketTunnel, TransportFactory } from '../device/device.ts';
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

export class TunPump implements PacketTunnel {
  readonly tun: TunDevice;
  private readonly batch: number;
  private readonly slab: Uint8Array;
  private readonly readView: Uint8Array;
  private readonly offsets: Int32Array;
  private readonly lengths: Int32Array;
  private readonly stats = new Int32Array(3);
  private cachedMtu = 1420;
  private mtuCheckedAt = -Infinity;

  constructor(tun: TunDevice, batch = 128) {
    this.tun = tun;
    this.batch = batch;
    // Slot i's packet is read at 16 + i * SLOT_SIZE so its header fits in front of it.
    this.slab = new Uint8Array(new SharedArrayBuffer(16 + batch * SLOT_SIZE));
    this.readView = this.slab.subarray(16);
    this.offsets = Int32Array.from({ length: batch }, (_, i) => 16 + i * SLOT_SIZE);
    this.lengths = new Int32Array(batch);
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
    this.tun.onReadable(() => {
      for (let round = 0; round < ROUNDS_PER_WAKEUP && !device.closed; round++) {
        let n: number;
        try {
          n = this.tun.readBatch(this.readView, SLOT_SIZE, this.lengths, this.batch);
        } catch (err) {
          onFatal(err as Error);
          return;
        }
        if (n === 0) return;
        for (let i = 0; i < n; i++) if (this.lengths[i]! > MAX_PACKET) this.lengths[i] = -1;
        const pending = device.handleTunPackets(this.slab, this.offsets, this.lengths, n);
        if (pending) {
          // Workers are sealing in this slab: read no more until they are done.
          this.tun.pause();
          pending.then(() => this.tun.resume(), (err: Error) => onFatal(err));
          return;
        }
      }
    });
    this.tun.onError((err) => onFatal(err));
  }

  write(slab: Uint8Array, offsets: Int32Array, lengths: Int32Array, count: number): number {
    const consumed = this.tun.writeBatch(slab, offsets, lengths, count, this.stats);
    return consumed - this.stats[0]!;
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
