/**
 * A TUN interface (IFF_TUN | IFF_NO_PI): each read is one whole IP packet, each write injects one.
 * With offload (IFF_VNET_HDR + TUNSETOFFLOAD) each read and write starts with a 10-byte
 * virtio_net_hdr and may be a TCP super-packet; src/tun/offload/ handles those.
 * Reads and writes are batched into caller-owned slabs and driven by readiness on Node's event
 * loop; nothing here allocates per packet.
 */
import { loadNative, type NativeAddon } from './native.ts';
import { FdPoller, type ErrorHandler } from './poller.ts';

export interface TunOpenOptions {
  /** Keep the interface when the fd closes (TUNSETPERSIST); false leaves an existing flag alone. */
  persist?: boolean;
  /**
   * Ask for TCP segmentation/checksum offload (IFF_VNET_HDR, TUN_F_CSUM|TSO4|TSO6). If the kernel
   * refuses, the TUN opens without it: check `offload` and `offloadError` afterwards.
   */
  offload?: boolean;
}

export class TunDevice {
  /** The interface name the kernel gave (with any %d filled in). */
  readonly name: string;
  /** Whether reads and writes carry a virtio_net_hdr (offload asked for and granted). */
  readonly offload: boolean;
  /** Why offload was refused ("TUNSETOFFLOAD: Invalid argument"), or ''. */
  readonly offloadError: string;
  readonly #native: NativeAddon;
  readonly #poller: FdPoller;
  #fd: number;

  private constructor(native: NativeAddon, fd: number, name: string, offload: boolean, offloadError: string) {
    this.#native = native;
    this.#fd = fd;
    this.name = name;
    this.offload = offload;
    this.offloadError = offloadError;
    this.#poller = new FdPoller(native, fd);
  }

  /** Creates the interface, or attaches to an existing persistent one. '' or 'wg%d' lets the kernel number it. */
  static open(name = '', options: TunOpenOptions = {}): TunDevice {
    const native = loadNative();
    const opened = native.tunOpen(name, options.persist ?? false, options.offload ?? false);
    return new TunDevice(native, opened.fd, opened.name, opened.offload, opened.offloadError);
  }

  /** The descriptor, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /**
   * Reads up to count packets: packet i at slab[i * slotSize], its length in lengths[i]. Returns
   * how many (0 when none is ready). slotSize must hold the interface MTU.
   */
  readBatch(slab: Uint8Array, slotSize: number, lengths: Int32Array, count = Math.min(lengths.length, Math.floor(slab.length / slotSize))): number {
    return this.#native.readBatch(this.#fd, slab, slotSize, lengths, count);
  }

  /**
   * Writes packet i = slab[offsets[i] .. offsets[i] + lengths[i]) for i < count. Returns how many
   * were consumed (written, or refused by the kernel and dropped: see stats[0], stats[1] = -errno).
   * Fewer than count means the device is full: call onWritable() and resume from the returned index.
   */
  writeBatch(slab: Uint8Array, offsets: Int32Array, lengths: Int32Array, count = lengths.length, stats?: Int32Array): number {
    return this.#native.writeBatch(this.#fd, slab, offsets, lengths, count, stats);
  }

  /**
   * Gathered writes: packet i is the next iovCounts[i] ranges slab[iovOffsets[k] .. + iovLengths[k]),
   * written with one writev. Returns packets consumed as writeBatch; errors[i] (optional) is 0 when
   * packet i was written, -errno when the kernel refused it.
   */
  writevBatch(slab: Uint8Array, iovOffsets: Int32Array, iovLengths: Int32Array, iovCounts: Int32Array, count: number, stats?: Int32Array, errors?: Int32Array): number {
    return this.#native.writevBatch(this.#fd, slab, iovOffsets, iovLengths, iovCounts, count, stats, errors);
  }

  /** Level-triggered: cb runs while packets are waiting; drain with readBatch until it returns 0. */
  onReadable(callback: () => void): void {
    this.#poller.onReadable(callback);
  }

  /** One-shot: cb runs once the device can take writes again. */
  onWritable(callback: () => void): void {
    this.#poller.onWritable(callback);
  }

  /** Readiness failures, such as the interface being deleted. Without a handler they are thrown. */
  onError(callback: ErrorHandler): void {
    this.#poller.onError(callback);
  }

  /** Stops readable callbacks (backpressure) until resume(). */
  pause(): void {
    this.#poller.pause();
  }

  resume(): void {
    this.#poller.resume();
  }

  /** Whether waiting for packets keeps the process alive (default true). */
  ref(): void {
    this.#poller.setReferenced(true);
  }

  unref(): void {
    this.#poller.setReferenced(false);
  }

  /** MTU by interface name: only while the interface is in this process's network namespace. */
  get mtu(): number {
    return this.#native.getMtu(this.name);
  }

  set mtu(mtu: number) {
    this.#native.setMtu(this.name, mtu);
  }

  /** Sets or clears IFF_UP (same namespace caveat as mtu). */
  setUp(up = true): void {
    this.#native.setUp(this.name, up);
  }

  /** Clearing persistence makes the interface disappear when its last fd closes. */
  setPersist(persist: boolean): void {
    this.#native.tunSetPersist(this.#fd, persist);
  }

  /** Stops polling and closes the fd; a non-persistent interface goes away with it. Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    this.#poller.stop();
    const fd = this.#fd;
    this.#fd = -1;
    this.#native.close(fd);
  }
}
