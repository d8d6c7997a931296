/**
 * A UDP socket inside a network namespace, driven from the test process.
 *
 * Run as a script (`ip netns exec NS <node 24> udp-pipe.ts <bindAddress> <port>`), it binds a
 * node:dgram socket and relays datagrams between it and stdin/stdout, one frame each:
 *
 *   [u16 BE payload length][u8 family 4|6][16-byte address][u16 BE port][payload]
 *
 * (an IPv4 address fills the first 4 address bytes). Frames on stdin are sent to the address in
 * the frame; every datagram received is written to stdout with its source. Once bound it prints
 * `udp-pipe ready <address> <port>` on stderr. It exits when stdin closes.
 *
 * Imported, it exports UdpPipe, which starts that script in a namespace through a NetnsBed and
 * offers send() and next() — so all protocol logic stays in the test process.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { NetnsBed, TrackedProcess } from './netns.ts';

export const FRAME_HEADER_LENGTH = 21;
const ADDRESS_OFFSET = 3;
const PORT_OFFSET = 19;
const MAX_PAYLOAD = 0xffff;

export interface Datagram {
  readonly data: Uint8Array;
  /** Source address (received) or destination (sent). */
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
}

export function encodeFrame(data: Uint8Array, address: string, port: number): Uint8Array {
  if (data.length > MAX_PAYLOAD) throw new Error(`datagram of ${data.length} bytes does not fit a frame`);
  const frame = new Uint8Array(FRAME_HEADER_LENGTH + data.length);
  const view = new DataView(frame.buffer);
  view.setUint16(0, data.length);
  if (isIPv4(address)) {
    frame[2] = 4;
    frame.set(address.split('.').map(Number), ADDRESS_OFFSET);
  } else if (isIPv6(address)) {
    frame[2] = 6;
    frame.set(parseIPv6(address), ADDRESS_OFFSET);
  } else {
    throw new Error(`not an IP address: ${address}`);
  }
  view.setUint16(PORT_OFFSET, port);
  frame.set(data, FRAME_HEADER_LENGTH);
  return frame;
}

/** Splits complete frames off the front of a byte stream; keeps the rest for the next chunk. */
export class FrameReader {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Datagram[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: Datagram[] = [];
    while (this.pending.length >= FRAME_HEADER_LENGTH) {
      const length = this.pending.readUInt16BE(0);
      if (this.pending.length < FRAME_HEADER_LENGTH + length) break;
      const family = this.pending[2];
      if (family !== 4 && family !== 6) throw new Error(`udp-pipe frame with family ${family}`);
      const raw = this.pending.subarray(ADDRESS_OFFSET, ADDRESS_OFFSET + (family === 4 ? 4 : 16));
      out.push({
        data: new Uint8Array(this.pending.subarray(FRAME_HEADER_LENGTH, FRAME_HEADER_LENGTH + length)),
        address: family === 4 ? [...raw].join('.') : formatIPv6(raw),
        port: this.pending.readUInt16BE(PORT_OFFSET),
        family,
      });
      this.pending = this.pending.subarray(FRAME_HEADER_LENGTH + length);
    }
    return out;
  }
}

function parseIPv6(address: string): Uint8Array {
  const out = new Uint8Array(16);
  const [head = '', tail] = address.split('::');
  const groups = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const all = [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  all.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/** RFC 5952 text: lowercase, the longest run (≥ 2) of zero groups as "::". */
function formatIPv6(raw: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((raw[i]! << 8) | raw[i + 1]!);
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j === i ? i + 1 : j;
  }
  const hex = (list: number[]): string => list.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLength))}`;
}

// ---------------------------------------------------------------------------------------------
// The test side.

export interface UdpPipeOptions {
  readonly bindAddress: string;
  /** 0: any free port (see UdpPipe.port). */
  readonly port: number;
  /** Node 24 (the test's own process.execPath by default). */
  readonly nodePath?: string;
  readonly readyTimeoutMs?: number;
}

interface Waiter {
  readonly predicate: (d: Datagram) => boolean;
  readonly resolve: (d: Datagram) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

export class UdpPipe {
  readonly process: TrackedProcess;
  readonly address: string;
  readonly port: number;
  private readonly queue: Datagram[] = [];
  private readonly waiters: Waiter[] = [];
  private stderrText: string;
  private closedError: Error | undefined;

  private constructor(proc: TrackedProcess, address: string, port: number, stderrText: string) {
    this.process = proc;
    this.address = address;
    this.port = port;
    this.stderrText = stderrText;
  }

  /** Starts the relay inside ns and resolves once its socket is bound. */
  static async start(bed: NetnsBed, ns: string, options: UdpPipeOptions): Promise<UdpPipe> {
    const script = fileURLToPath(import.meta.url);
    const node = options.nodePath ?? process.execPath;
    const proc = bed.spawn(ns, node, ['--disable-warning=ExperimentalWarning', script, options.bindAddress, String(options.port)], { stdio: 'pipe' });
    const { stdout, stderr } = proc.child;
    if (!stdout || !stderr) throw new Error('udp-pipe: no stdio');
    let stderrText = '';
    const ready = await new Promise<{ address: string; port: number }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`udp-pipe: not ready after ${options.readyTimeoutMs ?? 10_000} ms\n${stderrText}`)), options.readyTimeoutMs ?? 10_000);
      const onData = (chunk: Buffer): void => {
        stderrText += chunk.toString();
        const match = /udp-pipe ready (\S+) (\d+)\n/.exec(stderrText);
        if (match) {
          clearTimeout(timer);
          stderr.off('data', onData);
          resolve({ address: match[1]!, port: Number(match[2]) });
        }
      };
      stderr.on('data', onData);
      void proc.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`udp-pipe exited (${code ?? signal}) before it was ready:\n${stderrText}`));
      });
    }).catch(async (err: Error) => {
      await bed.stop(proc);
      throw err;
    });
    const pipe = new UdpPipe(proc, ready.address, ready.port, stderrText);
    const reader = new FrameReader();
    stdout.on('data', (chunk: Buffer) => {
      for (const datagram of reader.push(chunk)) pipe.deliver(datagram);
    });
    stderr.on('data', (chunk: Buffer) => {
      pipe.stderrText += chunk.toString();
    });
    void proc.exited.then(({ code, signal }) => pipe.fail(new Error(`udp-pipe exited (${code ?? signal})\n${pipe.stderrText}`)));
    return pipe;
  }

  /** Sends one datagram from the pipe's socket. */
  send(data: Uint8Array, host: string, port: number): void {
    if (this.closedError) throw this.closedError;
    this.process.child.stdin!.write(encodeFrame(data, host, port));
  }

  /**
   * The oldest received datagram matching predicate (default: any), waiting up to timeoutMs.
   * Datagrams that do not match stay queued for later calls.
   */
  next(timeoutMs: number, predicate: (d: Datagram) => boolean = () => true): Promise<Datagram> {
    const index = this.queue.findIndex(predicate);
    if (index >= 0) return Promise.resolve(this.queue.splice(index, 1)[0]!);
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        const queued = this.queue.map((d) => `${d.address}:${d.port} ${d.data.length} B type ${d.data[0]}`).join('; ');
        reject(new Error(`no matching datagram within ${timeoutMs} ms (queued: ${queued || 'none'})`));
      }, timeoutMs);
      const waiter: Waiter = { predicate, resolve, reject, timer };
      this.waiters.push(waiter);
    });
  }

  /** Removes and returns every queued datagram matching predicate (default: all). */
  drain(predicate: (d: Datagram) => boolean = () => true): Datagram[] {
    const out: Datagram[] = [];
    for (let i = 0; i < this.queue.length; ) {
      if (predicate(this.queue[i]!)) out.push(...this.queue.splice(i, 1));
      else i++;
    }
    return out;
  }

  /** Received datagrams as they come, until the pipe closes. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Datagram> {
    for (;;) {
      try {
        yield await this.next(2 ** 31 - 1);
      } catch (err) {
        if (this.closedError) return;
        throw err;
      }
    }
  }

  /** Closes stdin (the relay then exits) and waits for the process. */
  async close(): Promise<void> {
    this.process.child.stdin?.end();
    const timer = new Promise<void>((resolve) => setTimeout(resolve, 3_000).unref());
    await Promise.race([this.process.exited, timer]);
    if (!this.process.hasExited()) this.process.child.kill('SIGKILL');
    await this.process.exited;
  }

  private deliver(datagram: Datagram): void {
    const index = this.waiters.findIndex((w) => w.predicate(datagram));
    if (index < 0) {
      this.queue.push(datagram);
      return;
    }
    const [waiter] = this.waiters.splice(index, 1);
    clearTimeout(waiter!.timer);
    waiter!.resolve(datagram);
  }

  private fail(err: Error): void {
    this.closedError = err;
    for (const waiter of this.waiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(err);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The script side.

async function main(argv: readonly string[]): Promise<void> {
  const dgram = await import('node:dgram');
  const [bindAddress, portText] = argv;
  if (!bindAddress || portText === undefined || !(isIPv4(bindAddress) || isIPv6(bindAddress))) {
    process.stderr.write('usage: udp-pipe.ts <bindAddress> <port>\n');
    process.exit(2);
  }
  const socket = dgram.createSocket(isIPv6(bindAddress) ? 'udp6' : 'udp4');
  socket.on('error', (err) => {
    process.stderr.write(`udp-pipe: ${err.message}\n`);
    process.exit(1);
  });
  socket.on('message', (msg, rinfo) => {
    process.stdout.write(encodeFrame(msg, rinfo.address.replace(/%.*$/, ''), rinfo.port));
  });
  socket.bind(Number(portText), bindAddress, () => {
    const bound = socket.address();
    process.stderr.write(`udp-pipe ready ${bound.address} ${bound.port}\n`);
    const reader = new FrameReader();
    process.stdin.on('data', (chunk: Buffer) => {
      for (const frame of reader.push(chunk)) socket.send(frame.data, frame.port, frame.address);
    });
    process.stdin.on('end', () => socket.close());
  });
}

if (import.meta.main) {
  main(process.argv.slice(2)).catch((err: Error) => {
    process.stderr.write(`udp-pipe: ${err.stack ?? err.message}\n`);
    process.exit(1);
  });
}
