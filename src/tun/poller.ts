/**
 * One uv_poll per fd, shared by TunDevice and UdpSocket: a persistent readable handler that can be
 * paused, a one-shot writable wait for backpressure, and an error handler. Interest is recomputed
 * after every change so the poll only watches what someone waits for (and an fd nobody waits on
 * does not keep the process alive).
 */
import { getSystemErrorName } from 'node:util';
import { POLL_READABLE, POLL_WRITABLE, type NativeAddon, type PollHandle, type SystemError } from './native.ts';

export type ErrorHandler = (error: SystemError) => void;

export class FdPoller {
  readonly #native: NativeAddon;
  readonly #fd: number;
  #handle: PollHandle | null = null;
  #readable: (() => void) | null = null;
  #writable: (() => void) | null = null;
  #error: ErrorHandler | null = null;
  #paused = false;
  #referenced = true;
  #stopped = false;

  constructor(native: NativeAddon, fd: number) {
    this.#native = native;
    this.#fd = fd;
  }

  /** Level-triggered: called while the fd has data; drain it (until a batch returns 0) each time. */
  onReadable(callback: () => void): void {
    this.#readable = callback;
    this.#apply();
  }

  /** Called once, the next time the fd can take more; re-arm after each partial write. */
  onWritable(callback: () => void): void {
    this.#writable = callback;
    this.#apply();
  }

  /** Poll failures (e.g. the TUN interface was deleted). Without a handler they are thrown. */
  onError(callback: ErrorHandler): void {
    this.#error = callback;
  }

  pause(): void {
    this.#paused = true;
    this.#apply();
  }

  resume(): void {
    this.#paused = false;
    this.#apply();
  }

  /** Whether a started poll keeps the event loop alive (default true). */
  setReferenced(referenced: boolean): void {
    this.#referenced = referenced;
    if (this.#handle !== null) this.#native.pollRef(this.#handle, referenced);
  }

  /** Stops watching for good; call before closing the fd. */
  stop(): void {
    this.#stopped = true;
    this.#readable = null;
    this.#writable = null;
    if (this.#handle !== null) this.#native.pollStop(this.#handle);
    this.#handle = null;
  }

  #events(): number {
    return (this.#readable !== null && !this.#paused ? POLL_READABLE : 0) | (this.#writable !== null ? POLL_WRITABLE : 0);
  }

  #apply(): void {
    if (this.#stopped) return;
    const events = this.#events();
    if (this.#handle !== null) {
      this.#native.pollUpdate(this.#handle, events);
    } else if (events !== 0) {
      this.#handle = this.#native.pollStart(this.#fd, events, this.#onEvents);
      if (!this.#referenced) this.#native.pollRef(this.#handle, false);
    }
  }

  readonly #onEvents = (events: number, status: number): void => {
    if (status < 0) {
      // libuv has stopped the poll; resume() or a new handler re-arms it.
      const code = getSystemErrorName(status);
      const error = Object.assign(new Error(`poll fd ${this.#fd}: ${code}`), {
        code,
        errno: status,
        syscall: 'poll',
      }) as SystemError;
      if (this.#error === null) throw error;
      this.#error(error);
      return;
    }
    if ((events & POLL_WRITABLE) !== 0 && this.#writable !== null) {
      const callback = this.#writable;
      this.#writable = null;
      this.#apply();
      callback();
    }
    if ((events & POLL_READABLE) !== 0 && this.#readable !== null && !this.#paused) this.#readable();
  };
}
