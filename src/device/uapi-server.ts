/**
 * The UAPI socket: `/var/run/wireguard/<ifname>.sock`, a stream unix socket speaking the
 * cross-platform configuration protocol to `wg` and `wg-quick` (wireguard-go's ipc/uapi_*.go and
 * IpcHandle in device/uapi.go).
 *
 * Protocol, per connection, any number of requests in sequence:
 *   `get=1\n\n`                → get body (uapi.ts formatGet) + `errno=0\n\n`
 *   `set=1\n` lines `\n`       → `errno=0\n\n`, or `errno=-N\n\n` (negative errno, as wireguard-go
 *                                sends and as `wg` reads it: it returns the value as -errno)
 *   anything else              → the connection is closed without an answer (as wireguard-go)
 *
 * A failed set is answered as soon as the bad line is seen; the rest of that request (up to its
 * blank line) is discarded and the connection stays usable. A set cut short by end of input is
 * applied, as wireguard-go does. Lines are bounded (UAPI_MAX_LINE_BYTES) and so is a request
 * (UAPI_MAX_REQUEST_BYTES): an oversized one is answered with errno=-EINVAL and the connection
 * closed. Reading is pull-based (async iteration), so a client that floods the socket is held
 * back by TCP-style backpressure instead of being buffered in memory, and a client that never
 * reads its answers stops being read.
 *
 * Socket file lifecycle: the directory is created (or chmod'ed) 0700; a socket already served
 * by a live process is refused ("unix socket in use"), a stale one replaced. The socket is
 * bound under a temporary name, set to 0600 and renamed into place, so `wg` never sees it half
 * ready, and so the unlink libuv performs on close hits only that temporary name: close()
 * removes `<ifname>.sock` itself, and only if it is still ours. When someone else deletes (or
 * replaces) the socket file, the server emits 'socketRemoved' once; a daemon exits then, as
 * the xplatform text asks.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { watch, lstatSync, type FSWatcher } from 'node:fs';
import { chmod, lstat, mkdir, rename, unlink } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { isMainThread } from 'node:worker_threads';
import { ConfigError, EADDRINUSE, EINVAL, EIO, type DeviceControl } from './config.ts';
import { formatGet, redactLine, SetParser, UAPI_MAX_LINE_BYTES, UAPI_MAX_REQUEST_BYTES } from './uapi.ts';

/** wireguard-go's IpcErrorUnknown: ENOANO, for failures that carry no errno of their own. */
export const ENOANO = 55;
const ENOSYS = 38;

/**
 * Requests answered with a body: get=1 as wg sends it, and stats=1 (a wgts extension that wg
 * never sends) with the device's drop and handshake counters, for `wgts show`.
 */
const READ_OPERATIONS: Record<string, (control: DeviceControl) => string> = {
  'get=1': (control) => formatGet(control.snapshot()),
  'stats=1': (control) => {
    if (!control.stats) throw new ConfigError('this device keeps no counters', ENOSYS);
    return Object.entries(control.stats()).map(([key, value]) => `${key}=${value}\n`).join('');
  },
};
export const DEFAULT_UAPI_DIR = '/var/run/wireguard';
/** sockaddr_un.sun_path holds 108 bytes including the terminating NUL. */
const SUN_PATH_MAX = 107;

export interface UapiListenOptions {
  /** Socket directory; `wg` only looks in /var/run/wireguard. */
  readonly dir?: string;
  readonly maxLineBytes?: number;
  readonly maxRequestBytes?: number;
  /** Backup poll for the socket file, in ms, besides fs.watch; 0 disables it. Default 1000. */
  readonly watchIntervalMs?: number;
  /** Where protocol errors are reported (their text never contains key material). */
  readonly log?: (message: string) => void;
}

export type UapiServerEvents = {
  /** The socket file was deleted or replaced by someone else. Emitted at most once. */
  socketRemoved: [];
};

/** Valid Linux interface names (dev_valid_name): 1–15 bytes, no '/', ':' or whitespace, not . or .. */
export function isValidInterfaceName(name: string): boolean {
  return Buffer.byteLength(name) >= 1 && Buffer.byteLength(name) <= 15 && name !== '.' && name !== '..' && !/[/:\s\0]/.test(name);
}

export class UapiServer extends EventEmitter<UapiServerEvents> {
  private server: Server | undefined;
  private socketPath: string | undefined;
  private socketIdentity: { dev: bigint; ino: bigint } | undefined;
  private watcher: FSWatcher | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private removed = false;
  private closing: Promise<void> | undefined;
  private readonly connections = new Set<Socket>();
  /** Serializes device access across connections, like wireguard-go's ipcMutex. */
  private queue: Promise<unknown> = Promise.resolve();
  private control: DeviceControl | undefined;
  private maxLine = UAPI_MAX_LINE_BYTES;
  private maxRequest = UAPI_MAX_REQUEST_BYTES;
  private log: (message: string) => void = () => {};

  /** The socket file path while listening. */
  get path(): string | undefined {
    return this.socketPath;
  }

  async listen(ifname: string, control: DeviceControl, options: UapiListenOptions = {}): Promise<void> {
    if (this.server || this.closing) throw new Error('UapiServer: listen() called twice');
    if (!isValidInterfaceName(ifname)) throw new Error(`"${ifname}" is not a valid interface name`);
    const dir = options.dir ?? DEFAULT_UAPI_DIR;
    const path = join(dir, `${ifname}.sock`);
    if (Buffer.byteLength(path) > SUN_PATH_MAX) throw new Error(`${path}: too long for a unix socket path`);
    this.control = control;
    this.maxLine = options.maxLineBytes ?? UAPI_MAX_LINE_BYTES;
    this.maxRequest = options.maxRequestBytes ?? UAPI_MAX_REQUEST_BYTES;
    this.log = options.log ?? (() => {});

    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700);

    if (await isServed(path)) {
      throw Object.assign(new Error(`${path}: unix socket in use`), { code: 'EADDRINUSE', errno: EADDRINUSE });
    }

    const server = createServer({ allowHalfOpen: true, pauseOnConnect: false }, (socket) => this.accept(socket));
    // Bind under a temporary name in the same directory, then rename into place (atomic).
    const temp = join(dir, `.${ifname}.${randomBytes(4).toString('hex')}`);
    const bindPath = Buffer.byteLength(temp) <= SUN_PATH_MAX ? temp : path;
    if (bindPath === path) await unlink(path).catch(ignoreEnoent);
    await bindServer(server, bindPath);
    try {
      await chmod(bindPath, 0o600);
      if (bindPath !== path) await rename(bindPath, path);
      const st = await lstat(path, { bigint: true });
      this.socketIdentity = { dev: st.dev, ino: st.ino };
    } catch (err) {
      server.close();
      await unlink(bindPath).catch(ignoreEnoent);
      throw err;
    }
    server.on('error', (err) => this.log(`uapi: server error: ${err.message}`));
    this.server = server;
    this.socketPath = path;
    this.watchSocket(dir, `${ifname}.sock`, options.watchIntervalMs ?? 1000);
  }

  /** Stops listening, drops open connections, removes the socket file if it is still ours. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.stopWatching();
    const server = this.server;
    this.server = undefined;
    for (const socket of this.connections) socket.destroy();
    this.connections.clear();
    if (this.socketPath && this.isOurSocket()) await unlink(this.socketPath).catch(ignoreEnoent);
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  // -------------------------------------------------------------------------------------------
  // socket file watch

  private watchSocket(dir: string, name: string, intervalMs: number): void {
    const check = (): void => {
      if (this.removed || !this.socketPath) return;
      if (this.isOurSocket()) return;
      this.removed = true;
      this.stopWatching();
      this.emit('socketRemoved');
    };
    try {
      this.watcher = watch(dir, { persistent: false }, (_event, filename) => {
        if (filename === null || filename === name) check();
      });
      this.watcher.on('error', () => {
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch {
      this.watcher = undefined; // polling below still covers it
    }
    if (intervalMs > 0) {
      this.pollTimer = setInterval(check, intervalMs);
      this.pollTimer.unref();
    }
  }

  private stopWatching(): void {
    this.watcher?.close();
    this.watcher = undefined;
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = undefined;
  }

  private isOurSocket(): boolean {
    if (!this.socketPath || !this.socketIdentity) return false;
    try {
      const st = lstatSync(this.socketPath, { bigint: true });
      return st.dev === this.socketIdentity.dev && st.ino === this.socketIdentity.ino;
    } catch {
      return false;
    }
  }

  // -------------------------------------------------------------------------------------------
  // connections

  private accept(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    this.connections.add(socket);
    socket.on('error', () => {}); // ECONNRESET, EPIPE: the serve loop sees the end
    socket.on('close', () => this.connections.delete(socket));
    this.serve(socket)
      .catch((err: unknown) => this.log(`uapi: connection error: ${(err as Error).message}`))
      .finally(() => {
        // Flush what was written, then let go even if the client keeps its half open.
        if (!socket.destroyed) socket.end(() => socket.destroy());
      });
  }

  private async serve(socket: Socket): Promise<void> {
    const reader = new LineReader(socket, this.maxLine);
    for (;;) {
      const op = await reader.next();
      if (op === null) return; // end of input between requests
      if (op === TOO_LONG || !op.terminated) {
        this.log('uapi: invalid operation (unterminated or oversized line); closing connection');
        return;
      }
      const read = READ_OPERATIONS[op.line];
      if (read) {
        const blank = await reader.next();
        if (blank === null || blank === TOO_LONG) return;
        if (blank.line !== '') {
          this.log(`uapi: trailing characters after ${op.line}`);
          if (!(await writeAll(socket, `errno=-${EINVAL}\n\n`))) return;
          continue;
        }
        const body = await this.exclusive(() => {
          try {
            return read(this.controlOrThrow()) + 'errno=0\n\n';
          } catch (err) {
            this.log(`uapi: ${op.line} failed: ${(err as Error).message}`);
            return `errno=-${errnoOf(err)}\n\n`;
          }
        });
        if (!(await writeAll(socket, body))) return;
        continue;
      }
      if (op.line === 'set=1') {
        const keepGoing = await this.serveSet(socket, reader);
        if (!keepGoing) return;
        continue;
      }
      this.log(`uapi: invalid operation ${JSON.stringify(redactLine(op.line))}; closing connection`);
      return;
    }
  }

  /** One set request; returns whether the connection may carry another request. */
  private async serveSet(socket: Socket, reader: LineReader): Promise<boolean> {
    const parser = new SetParser({ firstLineNumber: 2 });
    let bytes = 'set=1\n'.length;
    let failed = false;
    const fail = async (err: unknown): Promise<boolean> => {
      failed = true;
      this.log(`uapi: set failed: ${(err as Error).message}`);
      return writeAll(socket, `errno=-${errnoOf(err)}\n\n`);
    };
    for (;;) {
      const next = await reader.next();
      if (next === TOO_LONG) {
        if (!failed) await fail(new ConfigError(`a line is longer than ${this.maxLine} bytes`, EINVAL));
        return false;
      }
      if (next === null) {
        if (failed) return false;
        break; // end of input: apply what came, as wireguard-go does
      }
      bytes += Buffer.byteLength(next.line) + (next.terminated ? 1 : 0);
      if (bytes > this.maxRequest) {
        if (!failed) await fail(new ConfigError(`set request larger than ${this.maxRequest} bytes`, EINVAL));
        return false;
      }
      if (next.line === '') {
        if (failed) return true;
        break;
      }
      if (failed) continue; // discard the rest of a failed request
      try {
        parser.feed(next.line);
      } catch (err) {
        if (!(await fail(err))) return false;
      }
    }
    if (failed) return false;
    const answer = await this.exclusive(async () => {
      try {
        const tx = parser.finish();
        await this.controlOrThrow().apply(tx);
        return 'errno=0\n\n';
      } catch (err) {
        this.log(`uapi: set failed: ${(err as Error).message}`);
        return `errno=-${errnoOf(err)}\n\n`;
      }
    });
    return writeAll(socket, answer);
  }

  private controlOrThrow(): DeviceControl {
    if (!this.control) throw new ConfigError('no device', EIO);
    return this.control;
  }

  private exclusive<T>(fn: () => T | Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => {});
    return run;
  }
}

function errnoOf(err: unknown): number {
  return err instanceof ConfigError && err.errno > 0 ? err.errno : ENOANO;
}

function ignoreEnoent(err: NodeJS.ErrnoException): void {
  if (err.code !== 'ENOENT') throw err;
}

/** Whether a live process accepts connections on path (wireguard-go's "socket in use" test). */
async function isServed(path: string): Promise<boolean> {
  try {
    await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  return new Promise<boolean>((resolve) => {
    const probe = createConnection({ path });
    const done = (served: boolean): void => {
      probe.removeAllListeners();
      probe.on('error', () => {});
      probe.destroy();
      resolve(served);
    };
    probe.setTimeout(2000, () => done(true)); // a listener too busy to accept is still alive
    probe.once('connect', () => done(true));
    probe.once('error', (err: NodeJS.ErrnoException) => {
      // ECONNREFUSED: nobody listens (stale); ENOENT: gone meanwhile; ENOTSOCK etc.: not a socket.
      done(err.code === 'EAGAIN');
    });
  });
}

function bindServer(server: Server, path: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    // Created 0600 where a umask can be set (the main thread); chmod'ed afterwards regardless.
    const oldUmask = isMainThread ? process.umask(0o177) : undefined;
    try {
      server.listen({ path, exclusive: true }, () => {
        server.off('error', onError);
        resolve();
      });
    } finally {
      if (oldUmask !== undefined) process.umask(oldUmask);
    }
  });
}

/** Writes text; resolves false when the peer is gone. Waits for drain so answers never pile up. */
function writeAll(socket: Socket, text: string): Promise<boolean> {
  if (socket.destroyed || !socket.writable) return Promise.resolve(false);
  if (socket.write(text)) return Promise.resolve(true);
  return new Promise<boolean>((resolve) => {
    const finish = (ok: boolean): void => {
      socket.off('drain', onDrain);
      socket.off('close', onClose);
      resolve(ok);
    };
    const onDrain = (): void => finish(true);
    const onClose = (): void => finish(false);
    socket.on('drain', onDrain);
    socket.on('close', onClose);
  });
}

const TOO_LONG = Symbol('line too long');

interface Line {
  readonly line: string;
  /** False for a final line that ended with the input instead of a newline. */
  readonly terminated: boolean;
}

/** Pulls newline-terminated lines from a socket, never holding more than one bounded partial line. */
class LineReader {
  private readonly chunks: AsyncIterator<Buffer>;
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;
  private ended = false;
  private readonly maxLine: number;

  constructor(socket: Socket, maxLine: number) {
    this.maxLine = maxLine;
    this.chunks = socket.iterator({ destroyOnReturn: false })[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  async next(): Promise<Line | null | typeof TOO_LONG> {
    for (;;) {
      const nl = this.buf.indexOf(0x0a, this.pos);
      if (nl >= 0) {
        if (nl - this.pos > this.maxLine) return TOO_LONG;
        const line = this.buf.toString('utf8', this.pos, nl);
        this.pos = nl + 1;
        return { line, terminated: true };
      }
      if (this.buf.length - this.pos > this.maxLine) return TOO_LONG;
      if (this.ended) {
        if (this.pos >= this.buf.length) return null;
        const line = this.buf.toString('utf8', this.pos);
        this.pos = this.buf.length;
        return { line, terminated: false };
      }
      let result: IteratorResult<Buffer>;
      try {
        result = await this.chunks.next();
      } catch {
        result = { done: true, value: undefined };
      }
      if (result.done) {
        this.ended = true;
        continue;
      }
      const rest = this.buf.subarray(this.pos);
      this.buf = rest.length === 0 ? result.value : Buffer.concat([rest, result.value]);
      this.pos = 0;
    }
  }
}
