/**
 * A client for the UAPI socket: what `wg` does, for wgts's own tools (`wgts show`, the mesh
 * agent configuring a separate data-plane process).
 */
import { createConnection } from 'node:net';
import { join } from 'node:path';
import type { ConfigTransaction, DeviceSnapshot } from './config.ts';
import { formatSet, parseGet } from './uapi.ts';
import { DEFAULT_UAPI_DIR } from './uapi-server.ts';

export interface UapiAnswer {
  readonly errno: number;
  /** key=value lines before errno=, in order. */
  readonly lines: readonly string[];
}

export function uapiSocketPath(ifname: string, dir: string = DEFAULT_UAPI_DIR): string {
  return join(dir, `${ifname}.sock`);
}

/** Sends one request (e.g. "get=1\n\n") and resolves with the answer. */
export function uapiRequest(ifname: string, request: string, dir?: string, timeoutMs = 10_000): Promise<UapiAnswer> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(uapiSocketPath(ifname, dir));
    let buffer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer from ${uapiSocketPath(ifname, dir)} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(request));
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      const end = buffer.indexOf('\n\n');
      if (end < 0 && !buffer.startsWith('errno=')) return;
      const text = end >= 0 ? buffer.slice(0, end) : buffer;
      const lines = text.split('\n').filter((l) => l.length > 0);
      const last = lines.at(-1);
      if (!last?.startsWith('errno=') || end < 0) return;
      clearTimeout(timer);
      socket.end();
      resolve({ errno: Number(last.slice('errno='.length)), lines: lines.slice(0, -1) });
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** The counters of a wgts interface (the stats=1 extension). */
export async function readStats(ifname: string, dir?: string): Promise<Record<string, number>> {
  const answer = await uapiRequest(ifname, 'stats=1\n\n', dir);
  if (answer.errno !== 0) throw new Error(`stats request failed: errno=${answer.errno}`);
  return Object.fromEntries(answer.lines.map((l) => {
    const eq = l.indexOf('=');
    return [l.slice(0, eq), Number(l.slice(eq + 1))];
  }));
}

/** A device in another process, driven over its UAPI socket as wg drives it. */
export class RemoteDevice {
  readonly ifname: string;
  readonly dir: string | undefined;

  constructor(ifname: string, dir?: string) {
    this.ifname = ifname;
    this.dir = dir;
  }

  async get(): Promise<DeviceSnapshot> {
    const answer = await uapiRequest(this.ifname, 'get=1\n\n', this.dir);
    if (answer.errno !== 0) throw new Error(`get on ${this.ifname} failed: errno=${answer.errno}`);
    return parseGet(answer.lines.join('\n') + '\n').snapshot;
  }

  async set(tx: ConfigTransaction): Promise<void> {
    const answer = await uapiRequest(this.ifname, `set=1\n${formatSet(tx)}\n`, this.dir);
    if (answer.errno !== 0) throw new Error(`set on ${this.ifname} failed: errno=${answer.errno}`);
  }
}
