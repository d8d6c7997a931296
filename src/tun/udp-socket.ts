/**
 * The UDP socket carrying WireGuard's outer datagrams: batched recvmmsg/sendmmsg into caller-owned
 * slabs, one 40-byte address record per datagram (./address.ts), SO_MARK for policy routing, and
 * the local address each datagram arrived on so replies can leave from it.
 */
import { loadNative, type NativeAddon } from './native.ts';
import { FdPoller, type ErrorHandler } from './poller.ts';

/** 4, 6, or 0 for one dual-stack IPv6 socket that also takes IPv4 (as ::ffff:a.b.c.d). */
export type UdpFamily = 0 | 4 | 6;

export interface UdpBindOptions {
  /** Default 0 (dual-stack). */
  family?: UdpFamily;
  /** SO_MARK for every datagram sent (0 = none; needs CAP_NET_ADMIN). */
  fwmark?: number;
  /** A local address to bind instead of the wildcard (mostly for tests). */
  address?: string;
}

export class UdpSocket {
  /** The bound port (the kernel's choice when bound to 0). */
  readonly port: number;
  readonly family: UdpFamily;
  readonly #native: NativeAddon;
  readonly #poller: FdPoller;
  #fd: number;

  private constructor(native: NativeAddon, fd: number, port: number, family: UdpFamily) {
    this.#native = native;
    this.#fd = fd;
    this.port = port;
    this.family = family;
    this.#poller = new FdPoller(native, fd);
  }

  static bind(port = 0, options: UdpBindOptions = {}): UdpSocket {
    const native = loadNative();
    const family = options.family ?? 0;
    const opened = native.udpOpen(family, port, options.fwmark ?? 0, options.address);
    return new UdpSocket(native, opened.fd, opened.port, family);
  }

  /** The descriptor, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /** SO_MARK as the kernel holds it. */
  get mark(): number {
    return this.#native.udpGetMark(this.#fd);
  }

  setMark(mark: number): void {
    this.#native.udpSetMark(this.#fd, mark);
  }

  /**
   * Receives up to count datagrams: datagram i at slab[i * slotSize], length in lengths[i] (-1 when
   * it did not fit slotSize: skip it), sender and local address in address record i of addrs.
   * Returns how many (0 when none is waiting).
   */
  recvBatch(
    slab: Uint8Array,
    slotSize: number,
    lengths: Int32Array,
    addrs: Uint8Array,
    count = Math.min(lengths.length, Math.floor(slab.length / slotSize)),
  ): number {
    return this.#native.recvBatch(this.#fd, slab, slotSize, lengths, addrs, count);
  }

  /**
   * Sends datagram i = slab[offsets[i] .. offsets[i] + lengths[i]) to address record i (from its
   * local address when set). Returns how many were consumed (sent, or refused and dropped); fewer
   * than count means the socket buffer is full: onWritable(), then resume from the returned index.
   * stats (>= 3): [0] dropped, [1] -errno of the last drop, [2] sent without their stale source
   * (whose records' local halves were zeroed).
   */
  sendBatch(
    slab: Uint8Array,
    offsets: Int32Array,
    lengths: Int32Array,
    addrs: Uint8Array,
    count = lengths.length,
    stats?: Int32Array,
  ): number {
    return this.#native.sendBatch(this.#fd, slab, offsets, lengths, addrs, count, stats);
  }

  /** Level-triggered: cb runs while datagrams are waiting; drain with recvBatch until it returns 0. */
  onReadable(callback: () => void): void {
    this.#poller.onReadable(callback);
  }

  /** One-shot: cb runs once the socket can take more after sendBatch returned short. */
  onWritable(callback: () => void): void {
    this.#poller.onWritable(callback);
  }

  onError(callback: ErrorHandler): void {
    this.#poller.onError(callback);
  }

  pause(): void {
    this.#poller.pause();
  }

  resume(): void {
    this.#poller.resume();
  }

  ref(): void {
    this.#poller.setReferenced(true);
  }

  unref(): void {
    this.#poller.setReferenced(false);
  }

  /** Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    this.#poller.stop();
    const fd = this.#fd;
    this.#fd = -1;
    this.#native.close(fd);
  }
}
