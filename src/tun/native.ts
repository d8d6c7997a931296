/**
 * Loads the wgts native addon (build/Release/wgts_native.node, built by `npm install` through
 * node-gyp from binding.gyp) and describes its functions. The addon only does what Node cannot:
 * TUN ioctls, recvmmsg/sendmmsg with PKTINFO and SO_MARK, and uv_poll on arbitrary fds. It never
 * parses a packet and allocates nothing per packet: every batch call works on caller-owned typed
 * arrays. See src/tun/README.md for the semantics of each call.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { isSea } from 'node:sea';
import { fileURLToPath } from 'node:url';

/** Opaque handle of one uv_poll watching one fd. */
export type PollHandle = { readonly __wgtsPollHandle: unique symbol };

export const POLL_READABLE = 1;
export const POLL_WRITABLE = 2;

/** What the addon throws for a failed syscall (shaped like Node's own system errors). */
export interface SystemError extends Error {
  /** Symbolic errno, e.g. 'EPERM'. */
  code: string;
  /** Negative errno, as in Node (`util.getSystemErrorName(err.errno)` works). */
  errno: number;
  /** The failing call, e.g. 'TUNSETIFF', 'bind', 'recvmmsg'. */
  syscall: string;
}

export interface NativeAddon {
  close(fd: number): void;

  /** offload: IFF_VNET_HDR + TUNSETOFFLOAD; a refusal falls back to none (offload false, offloadError why). */
  tunOpen(name: string, persist: boolean, offload?: boolean): { fd: number; name: string; offload: boolean; offloadError: string };
  tunSetPersist(fd: number, persist: boolean): void;
  setMtu(name: string, mtu: number): void;
  getMtu(name: string): number;
  setUp(name: string, up: boolean): void;
  /** Packets into slots of slab; returns how many (0 = none ready). */
  readBatch(fd: number, slab: Uint8Array, slotSize: number, lengths: Int32Array, count: number): number;
  /** Returns packets consumed (written or dropped); < count only on EAGAIN. stats: [dropped, -errno]. */
  writeBatch(
    fd: number,
    slab: Uint8Array,
    offsets: Int32Array,
    lengths: Int32Array,
    count: number,
    stats?: Int32Array,
  ): number;

  /**
   * One writev per packet: packet i gathers the next iovCounts[i] ranges (iovOffsets/iovLengths).
   * Returns packets consumed; < count only on EAGAIN. stats: [dropped, -errno]; errors[i]: 0 or -errno.
   */
  writevBatch(
    fd: number,
    slab: Uint8Array,
    iovOffsets: Int32Array,
    iovLengths: Int32Array,
    iovCounts: Int32Array,
    count: number,
    stats?: Int32Array,
    errors?: Int32Array,
  ): number;

  udpOpen(family: 0 | 4 | 6, port: number, fwmark: number, address?: string): { fd: number; port: number };
  udpSetMark(fd: number, mark: number): void;
  udpGetMark(fd: number): number;
  /** Datagrams into slots of slab, one 40-byte address record each; lengths[i] = -1 if truncated. */
  recvBatch(
    fd: number,
    slab: Uint8Array,
    slotSize: number,
    lengths: Int32Array,
    addrs: Uint8Array,
    count: number,
  ): number;
  /** Returns datagrams consumed (sent or dropped); < count only on EAGAIN. stats: [dropped, -errno, unsourced]. */
  sendBatch(
    fd: number,
    slab: Uint8Array,
    offsets: Int32Array,
    lengths: Int32Array,
    addrs: Uint8Array,
    count: number,
    stats?: Int32Array,
  ): number;

  /** callback(events, status): events = POLL_READABLE | POLL_WRITABLE; status 0 or negative errno. */
  pollStart(fd: number, events: number, callback: (events: number, status: number) => void): PollHandle;
  pollUpdate(handle: PollHandle, events: number): void;
  pollRef(handle: PollHandle, ref: boolean): void;
  pollStop(handle: PollHandle): void;
}

const ADDON_PATH = join('build', 'Release', 'wgts_native.node');

/** The nearest directory at or above this module holding package.json: the same from src/ and dist/. */
function packageRoot(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (let dir = here; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) return join(here, '..', '..');
  }
}

let addon: NativeAddon | undefined;

/** The addon, loaded on first use so modules that never touch a TUN or socket work without it. */
export function loadNative(): NativeAddon {
  if (addon !== undefined) return addon;
  // The single executable (scripts/package.ts) has no package: the addon ships beside it.
  const sea = isSea();
  const root = sea ? dirname(process.execPath) : packageRoot();
  const path = sea ? join(root, 'wgts_native.node') : join(root, ADDON_PATH);
  if (!existsSync(path)) {
    throw new Error(
      sea
        ? `wgts native addon missing: ${path} must be beside the executable (npm run package puts it there)`
        : `wgts native addon not built: ${path} is missing. Run \`npm install\` in ${root} ` +
            `(it runs node-gyp, which needs a C compiler, make, python3 and the Node headers).`,
    );
  }
  const require = createRequire(sea ? process.execPath : import.meta.url);
  addon = require(path) as NativeAddon;
  return addon;
}
