/**
 * The UDP socket carrying WireGuard's outer datagrams: batched recvmmsg/sendmmsg into caller-owned
 * slabs, one 40-byte address record per datagram (./address.ts), SO_MARK for policy routing, and
 * the local address each datagram arrived on so replies can leave from it. UDP GSO on send and
 * GRO on receive happen inside the batch calls: callers still see one datagram per slot.
 */
import { loadNative, type NativeAddon } from './native.ts';
import { FdPoller, type ErrorHandler } from './poller.ts';

/** Counters of the offloads of one socket (since it was opened). */
export interface UdpOffloadStats {
  /** GSO messages sent (each 2..64 datagrams), and the datagrams they carried. */
  gsoMessages: number;
  gsoDatagrams: number;
  /** Times the kernel refused GSO and it was turned off for this socket (0 or 1). */
  gsoFallbacks: number;
  /** Coalesced (GRO) receives split back into datagrams, and those datagrams. */
  groMessages: number;
  groDatagrams: number;
  /** Datagrams split off a receive that did not fit the caller's slots, handed out by a later call. */
  carried: number;
  /** Of those, how many are waiting now. */
  held: number;
}

/** The addon's UDP offload calls (src/tun/README.md). */
export interface UdpOffloadNative {
  udpOpen(family: UdpFamily, port: number, fwmark: number, address?: string, offload?: boolean): { fd: number; port: number };
  /** info (>= 1): [0] datagrams held back for the next call (a coalesced receive larger than the slots left). */
  recvBatch(
    fd: number,
    slab: Uint8Array,
    slotSize: number,
    lengths: Int32Array,
    addrs: Uint8Array,
    count: number,
    info?: Int32Array,
  ): number;
  /** 1: GSO on send, 2: GRO on receive. */
  udpOffloads(fd: number): number;
  udpOffloadStats(fd: number): UdpOffloadStats;
  /** Tests only: the socket's next GSO message fails with this errno as if the kernel refused it. */
  udpInjectGsoError(fd: number, errno: number): void;
}

type UdpNative = Omit<NativeAddon, 'udpOpen' | 'recvBatch'> & UdpOffloadNative;

export const OFFLOAD_GSO = 1;
export const OFFLOAD_GRO = 2;

/** 4, 6, or 0 for one dual-stack IPv6 socket that also takes IPv4 (as ::ffff:a.b.c.d). */
export type UdpFamily = 0 | 4 | 6;

export interface UdpBindOptions {
  /** Default 0 (dual-stack). */
  family?: UdpFamily;
  /** SO_MARK for every datagram sent (0 = none; needs CAP_NET_ADMIN). */
  fwmark?: number;
  /** A local address to bind instead of the wildcard (mostly for tests). */
  address?: string;
  /**
   * UDP GSO on send (UDP_SEGMENT, kernel >= 4.18) and GRO on receive (UDP_GRO, >= 5.0). Transparent
   * to callers; false gives the plain one-datagram-per-message path (to compare). Default: true,
   * unless the environment has WGTS_UDP_OFFLOAD=0 (so a whole daemon can be compared without it).
   */
  offload?: boolean;
}

export class UdpSocket {
  /** The bound port (the kernel's choice when bound to 0). */
  readonly port: number;
  readonly family: UdpFamily;
  readonly #native: UdpNative;
  readonly #poller: FdPoller;
  #fd: number;
  /** recvBatch's info out-parameter: [0] datagrams the addon holds for the next call. */
  readonly #recvInfo = new Int32Array(1);
  #readable: (() => void) | null = null;
  #paused = false;
  #held: ReturnType<typeof setImmediate> | null = null;

  private constructor(native: UdpNative, fd: number, port: number, family: UdpFamily) {
    this.#native = native;
    this.#fd = fd;
    this.port = port;
    this.family = family;
    this.#poller = new FdPoller(native as unknown as NativeAddon, fd);
  }

  static bind(port = 0, options: UdpBindOptions = {}): UdpSocket {
    const native = loadNative() as unknown as UdpNative;
    const family = options.family ?? 0;
    const opened = native.udpOpen(family, port, options.fwmark ?? 0, options.address, options.offload ?? process.env.WGTS_UDP_OFFLOAD !== '0');
    return new UdpSocket(native, opened.fd, opened.port, family);
  }

  /** Whether sendBatch sends runs of equal datagrams to one endpoint as UDP GSO messages (off for good once the kernel refuses one). */
  get gso(): boolean {
    return (this.#native.udpOffloads(this.#fd) & OFFLOAD_GSO) !== 0;
  }

  /** Whether the kernel may hand recvBatch coalesced datagrams (UDP_GRO), which it splits back. */
  get gro(): boolean {
    return (this.#native.udpOffloads(this.#fd) & OFFLOAD_GRO) !== 0;
  }

  get offloadStats(): UdpOffloadStats {
    return this.#native.udpOffloadStats(this.#fd);
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
   * Returns how many (0 when none is waiting). A GRO receive holding more datagrams than the slots
   * left keeps the rest for the next call (and the readable handler runs again for them).
   */
  recvBatch(
    slab: Uint8Array,
    slotSize: number,
    lengths: Int32Array,
    addrs: Uint8Array,
    count = Math.min(lengths.length, Math.floor(slab.length / slotSize)),
  ): number {
    return this.#native.recvBatch(this.#fd, slab, slotSize, lengths, addrs, count, this.#recvInfo);
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
    this.#readable = callback;
    this.#poller.onReadable(this.#dispatch);
  }

  readonly #dispatch = (): void => {
    this.#readable?.();
    this.#wakeForHeld();
  };

  /**
   * Datagrams held back by recvBatch (split off a GRO receive) are not in the kernel's queue, so the
   * poll will not report them: run the handler again on the next loop turn while any are held.
   */
  #wakeForHeld(): void {
    if (this.#recvInfo[0] === 0 || this.#held !== null || this.#paused || this.#fd < 0 || this.#readable === null) return;
    this.#held = setImmediate(() => {
      this.#held = null;
      if (this.#recvInfo[0] !== 0 && !this.#paused && this.#fd >= 0) this.#dispatch();
    });
  }

  /** One-shot: cb runs once the socket can take more after sendBatch returned short. */
  onWritable(callback: () => void): void {
    this.#poller.onWritable(callback);
  }

  onError(callback: ErrorHandler): void {
    this.#poller.onError(callback);
  }

  pause(): void {
    this.#paused = true;
    this.#poller.pause();
  }

  resume(): void {
    this.#paused = false;
    this.#poller.resume();
    this.#wakeForHeld();
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
    if (this.#held !== null) clearImmediate(this.#held);
    this.#held = null;
    this.#readable = null;
    this.#poller.stop();
    const fd = this.#fd;
    this.#fd = -1;
    this.#native.close(fd);
  }
}
