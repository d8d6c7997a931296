/**
 * The src/tun native addon against the real kernel: UDP batches over loopback (IPv4, IPv6,
 * dual-stack, PKTINFO sources, SO_MARK), a TUN answering a ping from inside a network namespace,
 * MTU and persistence, and error shapes. Needs root (TUN, SO_MARK, namespaces); CI runs as root.
 * The address-record helpers are pure and run everywhere.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ADDRESS_RECORD_SIZE,
  clearLocal,
  copyRecord,
  formatEndpoint,
  formatIp,
  readEndpoint,
  readLocal,
  sameRemote,
  writeEndpoint,
  writeEndpointString,
  writeIp,
  writeLocal,
} from '../../src/tun/address.ts';
import { loadNative, type SystemError } from '../../src/tun/native.ts';
import { TunDevice } from '../../src/tun/tun-device.ts';
import { UdpSocket } from '../../src/tun/udp-socket.ts';

const isRoot = process.getuid?.() === 0;
if (!isRoot) {
  console.log('tun-native: native TUN/UDP tests skipped: they need root (TUN, SO_MARK, network namespaces); CI runs them as root');
}

const SLOT = 2048;

// ---- helpers -------------------------------------------------------------------------------------

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function tryIp(...args: string[]): boolean {
  try {
    ip(...args);
    return true;
  } catch {
    return false;
  }
}

function linkExists(name: string): boolean {
  return tryIp('link', 'show', 'dev', name);
}

function linkInfo(name: string): { ifindex: number; mtu: number } {
  return (JSON.parse(ip('-j', 'link', 'show', 'dev', name)) as { ifindex: number; mtu: number }[])[0]!;
}

function localAddresses(): Set<string> {
  const links = JSON.parse(ip('-j', 'addr', 'show')) as { addr_info?: { local: string }[] }[];
  return new Set(links.flatMap((l) => (l.addr_info ?? []).map((a) => a.local)));
}

/** Resolves when check() holds, polling every few ms; rejects at the deadline. */
async function waitFor(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function systemError(fn: () => unknown): SystemError {
  try {
    fn();
  } catch (error) {
    return error as SystemError;
  }
  throw new Error('expected a throw');
}

interface Received {
  slab: Uint8Array;
  lengths: Int32Array;
  addrs: Uint8Array;
  calls: number;
}

/** Collects `want` datagrams with recvBatch, driven by onReadable, within a deadline. */
function receive(sock: UdpSocket, want: number, timeoutMs = 5000): Promise<Received> {
  const slab = new Uint8Array(want * SLOT);
  const lengths = new Int32Array(want);
  const addrs = new Uint8Array(want * ADDRESS_RECORD_SIZE);
  let n = 0;
  let calls = 0;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      sock.pause();
      reject(new Error(`received ${n} of ${want} datagrams before the deadline`));
    }, timeoutMs);
    sock.onReadable(() => {
      try {
        while (n < want) {
          const got = sock.recvBatch(
            slab.subarray(n * SLOT),
            SLOT,
            lengths.subarray(n),
            addrs.subarray(n * ADDRESS_RECORD_SIZE),
            want - n,
          );
          if (got === 0) return;
          calls++;
          n += got;
        }
        clearTimeout(timer);
        sock.pause();
        resolve({ slab, lengths, addrs, calls });
      } catch (error) {
        clearTimeout(timer);
        sock.pause();
        reject(error as Error);
      }
    });
  });
}

/** A batch of `count` datagrams of different sizes, each to `to`, with recognisable contents. */
function makeBatch(count: number, size: (i: number) => number) {
  const slab = new Uint8Array(count * SLOT);
  const offsets = new Int32Array(count);
  const lengths = new Int32Array(count);
  const addrs = new Uint8Array(count * ADDRESS_RECORD_SIZE);
  for (let i = 0; i < count; i++) {
    offsets[i] = i * SLOT;
    lengths[i] = size(i);
    for (let j = 0; j < lengths[i]!; j++) slab[i * SLOT + j] = (i * 31 + j) & 0xff;
  }
  return { slab, offsets, lengths, addrs };
}

function expectPayload(received: Received, i: number, sentIndex: number, size: number): void {
  expect(received.lengths[i]).toBe(size);
  const got = received.slab.subarray(i * SLOT, i * SLOT + size);
  for (let j = 0; j < size; j++) {
    if (got[j] !== ((sentIndex * 31 + j) & 0xff)) throw new Error(`datagram ${i} differs at byte ${j}`);
  }
}

// ---- address records (pure) ----------------------------------------------------------------------

describe('address records', () => {
  it('writes and reads IPv4 and IPv6 endpoints in the 40-byte layout', () => {
    const addrs = new Uint8Array(3 * ADDRESS_RECORD_SIZE);
    writeEndpoint(addrs, 1, '192.0.2.7', 51820);
    expect([...addrs.subarray(40, 60)]).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 192, 0, 2, 7, 0xca, 0x6c, 4, 0]);
    expect(readEndpoint(addrs, 1)).toEqual({ address: '192.0.2.7', port: 51820, family: 4 });
    expect(formatEndpoint(addrs, 1)).toBe('192.0.2.7:51820');

    writeEndpoint(addrs, 2, 'fd00::1', 1);
    expect(addrs[80]).toBe(0xfd);
    expect(addrs[95]).toBe(1);
    expect(addrs[98]).toBe(6);
    expect(formatEndpoint(addrs, 2)).toBe('[fd00::1]:1');

    writeEndpoint(addrs, 0, new Uint8Array([10, 1, 2, 3]), 65535);
    expect(readEndpoint(addrs, 0)).toEqual({ address: '10.1.2.3', port: 65535, family: 4 });
    expect(readLocal(addrs, 0)).toBeNull();
  });

  it('keeps the local half apart from the remote half', () => {
    const a = new Uint8Array(2 * ADDRESS_RECORD_SIZE);
    writeEndpoint(a, 0, '198.18.0.1', 51820);
    writeLocal(a, 0, '198.18.0.2', 0x01020304);
    expect(readLocal(a, 0)).toEqual({ address: '198.18.0.2', family: 4, ifindex: 0x01020304 });
    expect([...a.subarray(36, 40)]).toEqual([4, 3, 2, 1]);
    copyRecord(a, 0, a, 1);
    expect(sameRemote(a, 0, a, 1)).toBe(true);
    clearLocal(a, 1);
    expect(readLocal(a, 1)).toBeNull();
    expect(sameRemote(a, 0, a, 1)).toBe(true);
    writeEndpoint(a, 1, '198.18.0.1', 51821);
    expect(sameRemote(a, 0, a, 1)).toBe(false);
  });

  it('parses and formats IPv6 text like inet_pton/RFC 5952', () => {
    const cases: [string, string][] = [
      ['::', '::'],
      ['::1', '::1'],
      ['FD00:0:0:0:0:0:0:1', 'fd00::1'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['2001:0db8:0000:0000:0000:ff00:0042:8329', '2001:db8::ff00:42:8329'],
      ['1::', '1::'],
      ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
      ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
      ['::ffff:192.0.2.1', '192.0.2.1'],
      ['fe80::1:2', 'fe80::1:2'],
    ];
    const buf = new Uint8Array(16);
    for (const [text, formatted] of cases) {
      writeIp(buf, 0, text);
      expect(formatIp(buf), text).toBe(formatted);
    }
    for (const bad of ['', ':', ':::', '1:2', '1::2::3', '12345::', '1:2:3:4:5:6:7:8:9', '1.2.3', '1.2.3.256', '01.2.3.4', 'fe80::1%eth0', '::1.2.3.4.5', 'g::']) {
      expect(() => writeIp(buf, 0, bad), bad).toThrow(TypeError);
    }
  });

  it('parses endpoint strings as wg prints them', () => {
    const addrs = new Uint8Array(ADDRESS_RECORD_SIZE);
    writeEndpointString(addrs, 0, '[fd00::7]:51820');
    expect(readEndpoint(addrs, 0)).toEqual({ address: 'fd00::7', port: 51820, family: 6 });
    writeEndpointString(addrs, 0, '100.64.0.1:1');
    expect(readEndpoint(addrs, 0)).toEqual({ address: '100.64.0.1', port: 1, family: 4 });
    expect(() => writeEndpointString(addrs, 0, 'fd00::7:51820')).toThrow(TypeError);
    expect(() => writeEndpointString(addrs, 0, '1.2.3.4:65536')).toThrow(RangeError);
    expect(() => writeEndpoint(addrs, 1, '1.2.3.4', 1)).toThrow(RangeError);
  });
});

// ---- UDP -----------------------------------------------------------------------------------------

describe.skipIf(!isRoot)('UdpSocket (native, loopback)', () => {
  const sockets: UdpSocket[] = [];
  const open = (port: number, options: Parameters<typeof UdpSocket.bind>[1]): UdpSocket => {
    const s = UdpSocket.bind(port, options);
    sockets.push(s);
    return s;
  };
  let loIndex = 0;

  beforeAll(() => {
    loIndex = linkInfo('lo').ifindex;
  });

  afterAll(() => {
    for (const s of sockets) s.close();
  });

  it('exchanges 64 IPv4 datagrams of different sizes in one sendBatch and recvBatch', async () => {
    const a = open(0, { family: 4, address: '127.0.0.1' });
    const b = open(0, { family: 4, address: '127.0.0.1' });
    expect(a.port).toBeGreaterThan(0);
    const size = (i: number) => 1 + ((i * 97) % 1472);
    const batch = makeBatch(64, size);
    for (let i = 0; i < 64; i++) writeEndpoint(batch.addrs, i, '127.0.0.1', b.port);
    const stats = new Int32Array(3);
    const receiving = receive(b, 64);
    expect(a.sendBatch(batch.slab, batch.offsets, batch.lengths, batch.addrs, 64, stats)).toBe(64);
    expect([...stats]).toEqual([0, 0, 0]);
    const got = await receiving;
    if (got.calls !== 1) console.log(`tun-native: 64 datagrams took ${got.calls} recvBatch calls`);
    for (let i = 0; i < 64; i++) {
      expectPayload(got, i, i, size(i));
      expect(readEndpoint(got.addrs, i)).toEqual({ address: '127.0.0.1', port: a.port, family: 4 });
      expect(readLocal(got.addrs, i)).toEqual({ address: '127.0.0.1', family: 4, ifindex: loIndex });
    }
    expect(formatEndpoint(got.addrs, 0)).toBe(`127.0.0.1:${a.port}`);
    expect(b.recvBatch(got.slab, SLOT, got.lengths, got.addrs)).toBe(0);
  });

  it('handles batches longer than one mmsg chunk (150 datagrams), from SharedArrayBuffer slabs', async () => {
    const a = open(0, { family: 4, address: '127.0.0.1' });
    const b = open(0, { family: 4, address: '127.0.0.1' });
    const size = (i: number) => 20 + (i % 50);
    const batch = makeBatch(150, size);
    for (let i = 0; i < 150; i++) writeEndpoint(batch.addrs, i, '127.0.0.1', b.port);
    const shared = <T extends Uint8Array | Int32Array>(array: T): T => {
      const copy = new (array.constructor as new (buffer: SharedArrayBuffer) => T)(new SharedArrayBuffer(array.byteLength));
      copy.set(array as never);
      return copy;
    };
    const receiving = receive(b, 150);
    expect(a.sendBatch(shared(batch.slab), shared(batch.offsets), shared(batch.lengths), shared(batch.addrs))).toBe(150);
    const got = await receiving;
    for (let i = 0; i < 150; i++) expectPayload(got, i, i, size(i));
  });

  it('exchanges IPv6 datagrams over ::1', async () => {
    const a = open(0, { family: 6, address: '::1' });
    const b = open(0, { family: 6, address: '::1' });
    const size = (i: number) => 1 + i * 80;
    const batch = makeBatch(16, size);
    for (let i = 0; i < 16; i++) writeEndpoint(batch.addrs, i, '::1', b.port);
    const receiving = receive(b, 16);
    expect(a.sendBatch(batch.slab, batch.offsets, batch.lengths, batch.addrs)).toBe(16);
    const got = await receiving;
    for (let i = 0; i < 16; i++) {
      expectPayload(got, i, i, size(i));
      expect(readEndpoint(got.addrs, i)).toEqual({ address: '::1', port: a.port, family: 6 });
      expect(readLocal(got.addrs, i)).toEqual({ address: '::1', family: 6, ifindex: loIndex });
    }
    expect(formatEndpoint(got.addrs, 0)).toBe(`[::1]:${a.port}`);
  });

  it('reports IPv4 senders on a dual-stack socket as family 4 and answers both families', async () => {
    const dual = open(0, { family: 0 });
    const v4 = open(0, { family: 4, address: '127.0.0.1' });
    const v6 = open(0, { family: 6, address: '::1' });
    const out = makeBatch(1, () => 10);
    const receiving = receive(dual, 2);
    writeEndpoint(out.addrs, 0, '127.0.0.1', dual.port);
    expect(v4.sendBatch(out.slab, out.offsets, out.lengths, out.addrs)).toBe(1);
    writeEndpoint(out.addrs, 0, '::1', dual.port);
    expect(v6.sendBatch(out.slab, out.offsets, out.lengths, out.addrs)).toBe(1);
    const got = await receiving;
    const endpoints = [0, 1].map((i) => readEndpoint(got.addrs, i)).sort((x, y) => x.family - y.family);
    expect(endpoints).toEqual([
      { address: '127.0.0.1', port: v4.port, family: 4 },
      { address: '::1', port: v6.port, family: 6 },
    ]);
    const locals = [0, 1].map((i) => readLocal(got.addrs, i)?.address).sort();
    expect(locals).toEqual(['127.0.0.1', '::1']);

    // Answer each sender from the records as received (remote + the local address it reached).
    const back4 = receive(v4, 1);
    const back6 = receive(v6, 1);
    const offsets = new Int32Array([0, SLOT]);
    const stats = new Int32Array(3);
    expect(dual.sendBatch(got.slab, offsets, got.lengths, got.addrs, 2, stats)).toBe(2);
    expect([...stats]).toEqual([0, 0, 0]);
    expect(readEndpoint((await back4).addrs, 0)).toEqual({ address: '127.0.0.1', port: dual.port, family: 4 });
    expect(readEndpoint((await back6).addrs, 0)).toEqual({ address: '::1', port: dual.port, family: 6 });
  });

  it('sends from the local address in the record, and without it once the kernel refuses it', async () => {
    const a = open(0, { family: 4, address: '127.0.0.1' });
    const b = open(0, { family: 4, address: '127.0.0.1' });
    const a6 = open(0, { family: 6, address: '::1' });
    const b6 = open(0, { family: 6, address: '::1' });
    const locals = localAddresses();
    const gone4 = ['198.19.255.254', '198.19.255.253', '198.19.255.252'].find((x) => !locals.has(x))!;
    const gone6 = ['fd00:77::fe', 'fd00:77::fd', 'fd00:77::fc'].find((x) => !locals.has(x))!;

    const batch = makeBatch(4, () => 12);
    for (let i = 0; i < 4; i++) writeEndpoint(batch.addrs, i, '127.0.0.1', b.port);
    writeLocal(batch.addrs, 0, '127.0.0.2'); // all of 127/8 is local: a valid other source
    writeLocal(batch.addrs, 1, gone4, loIndex);
    writeLocal(batch.addrs, 2, '127.0.0.3');
    writeLocal(batch.addrs, 3, gone4, loIndex);
    const stats = new Int32Array(3);
    const receiving = receive(b, 4);
    expect(a.sendBatch(batch.slab, batch.offsets, batch.lengths, batch.addrs, 4, stats)).toBe(4);
    expect([...stats]).toEqual([0, 0, 2]);
    expect(readLocal(batch.addrs, 0)?.address).toBe('127.0.0.2');
    expect(readLocal(batch.addrs, 1)).toBeNull(); // the stale source was dropped from the record
    expect(readLocal(batch.addrs, 2)?.address).toBe('127.0.0.3');
    expect(readLocal(batch.addrs, 3)).toBeNull();
    const got = await receiving;
    expect([0, 1, 2, 3].map((i) => readEndpoint(got.addrs, i).address)).toEqual(['127.0.0.2', '127.0.0.1', '127.0.0.3', '127.0.0.1']);

    const batch6 = makeBatch(1, () => 12);
    writeEndpoint(batch6.addrs, 0, '::1', b6.port);
    writeLocal(batch6.addrs, 0, gone6);
    const receiving6 = receive(b6, 1);
    expect(a6.sendBatch(batch6.slab, batch6.offsets, batch6.lengths, batch6.addrs, 1, stats)).toBe(1);
    expect([...stats]).toEqual([0, 0, 1]);
    expect(readLocal(batch6.addrs, 0)).toBeNull();
    expect(readEndpoint((await receiving6).addrs, 0)).toEqual({ address: '::1', port: a6.port, family: 6 });
  });

  it('drops a datagram the kernel refuses, counts it, and sends the rest', async () => {
    const a = open(0, { family: 4, address: '127.0.0.1' });
    const b = open(0, { family: 4, address: '127.0.0.1' });
    const batch = makeBatch(4, (i) => 30 + i);
    writeEndpoint(batch.addrs, 0, '127.0.0.1', b.port);
    writeEndpoint(batch.addrs, 1, '127.0.0.1', 0); // port 0: EINVAL
    writeEndpoint(batch.addrs, 2, '::1', b.port); // IPv6 destination on an IPv4 socket
    writeEndpoint(batch.addrs, 3, '127.0.0.1', b.port);
    const stats = new Int32Array(3);
    const receiving = receive(b, 2);
    expect(a.sendBatch(batch.slab, batch.offsets, batch.lengths, batch.addrs, 4, stats)).toBe(4);
    expect(stats[0]).toBe(2);
    expect(stats[1]).toBeLessThan(0);
    const got = await receiving;
    expectPayload(got, 0, 0, 30);
    expectPayload(got, 1, 3, 33);
  });

  it('reports a datagram larger than its slot as length -1', async () => {
    const a = open(0, { family: 4, address: '127.0.0.1' });
    const b = open(0, { family: 4, address: '127.0.0.1' });
    const batch = makeBatch(2, (i) => (i === 0 ? 200 : 50));
    for (let i = 0; i < 2; i++) writeEndpoint(batch.addrs, i, '127.0.0.1', b.port);
    expect(a.sendBatch(batch.slab, batch.offsets, batch.lengths, batch.addrs)).toBe(2);
    const slab = new Uint8Array(2 * 100);
    const lengths = new Int32Array(2);
    const addrs = new Uint8Array(2 * ADDRESS_RECORD_SIZE);
    let n = 0;
    await waitFor('two datagrams', () => (n += b.recvBatch(slab.subarray(n * 100), 100, lengths.subarray(n), addrs.subarray(n * 40), 2 - n)) === 2);
    expect([...lengths]).toEqual([-1, 50]);
  });

  it('recvBatch returns 0 when nothing is waiting (EAGAIN), without blocking', () => {
    const s = open(0, { family: 0 });
    const slab = new Uint8Array(4 * SLOT);
    expect(s.recvBatch(slab, SLOT, new Int32Array(4), new Uint8Array(4 * ADDRESS_RECORD_SIZE))).toBe(0);
    expect(s.sendBatch(slab, new Int32Array(0), new Int32Array(0), new Uint8Array(0))).toBe(0);
  });

  it('sets SO_MARK at bind and with setMark', () => {
    const marked = open(0, { family: 4, address: '127.0.0.1', fwmark: 0x51820 });
    expect(marked.mark).toBe(0x51820);
    marked.setMark(0xfffff);
    expect(marked.mark).toBe(0xfffff);
    marked.setMark(0);
    expect(marked.mark).toBe(0);
    expect(open(0, { family: 6, address: '::1' }).mark).toBe(0);
    expect(open(0, { family: 0, fwmark: 0xffffffff }).mark).toBe(0xffffffff);
  });

  it('calls onWritable once, and stops polling once closed', async () => {
    const s = UdpSocket.bind(0, { family: 4, address: '127.0.0.1' });
    let calls = 0;
    s.onWritable(() => calls++);
    await waitFor('writable', () => calls === 1);
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    expect(calls).toBe(1);
    s.onReadable(() => {
      throw new Error('no datagram was sent');
    });
    s.close();
    s.close(); // idempotent
    expect(s.fd).toBe(-1);
  });

  it('throws system errors shaped like Node’s', () => {
    const a = open(0, { family: 4, address: '127.0.0.1' });
    const inUse = systemError(() => UdpSocket.bind(a.port, { family: 4, address: '127.0.0.1' }));
    expect(inUse).toBeInstanceOf(Error);
    expect(inUse).toMatchObject({ code: 'EADDRINUSE', errno: -98, syscall: 'bind' });
    expect(inUse.message).toBe(`bind 127.0.0.1:${a.port}: Address already in use`);

    const closed = UdpSocket.bind(0, { family: 4, address: '127.0.0.1' });
    closed.close();
    const slab = new Uint8Array(SLOT);
    const bad = systemError(() => closed.recvBatch(slab, SLOT, new Int32Array(1), new Uint8Array(40)));
    expect(bad).toMatchObject({ code: 'EBADF', errno: -9, syscall: 'recvmmsg' });
    expect(() => a.recvBatch(slab, SLOT, new Int32Array(2), new Uint8Array(80), 2)).toThrow(RangeError);
  });
});

// ---- UDP offloads (GSO / GRO) --------------------------------------------------------------------

/** The runs sendBatch sends as one GSO message each (the rules of gso_run in udp.c), as sizes. */
function gsoRuns(addrs: Uint8Array, lengths: Int32Array, count: number): number[] {
  const runs: number[] = [];
  for (let i = 0; i < count; ) {
    const size = lengths[i]!;
    const rec = addrs.subarray(i * ADDRESS_RECORD_SIZE, (i + 1) * ADDRESS_RECORD_SIZE);
    const limit = readEndpoint(addrs, i).family === 4 ? 65535 - 28 : 65535 - 8;
    let k = 1;
    let total = size;
    while (size > 0 && k < 64 && i + k < count) {
      const len = lengths[i + k]!;
      const other = addrs.subarray((i + k) * ADDRESS_RECORD_SIZE, (i + k + 1) * ADDRESS_RECORD_SIZE);
      if (len <= 0 || len > size || total + len > limit || !rec.every((b, j) => b === other[j])) break;
      total += len;
      k++;
      if (len < size) break;
    }
    runs.push(k);
    i += k;
  }
  return runs;
}

const gsoMessagesOf = (runs: number[]) => runs.filter((k) => k > 1).length;
const gsoDatagramsOf = (runs: number[]) => runs.filter((k) => k > 1).reduce((a, b) => a + b, 0);

interface OffloadNative {
  udpInjectGsoError(fd: number, errno: number): void;
}
const injectGsoError = (sock: UdpSocket, errno: number) =>
  (loadNative() as unknown as OffloadNative).udpInjectGsoError(sock.fd, errno);

describe.skipIf(!isRoot)('UdpSocket offloads (GSO/GRO, native, loopback)', () => {
  const sockets: UdpSocket[] = [];
  const open = (port: number, options: Parameters<typeof UdpSocket.bind>[1]): UdpSocket => {
    const s = UdpSocket.bind(port, options);
    sockets.push(s);
    return s;
  };
  let loIndex = 0;

  beforeAll(() => {
    loIndex = linkInfo('lo').ifindex;
  });

  afterAll(() => {
    for (const s of sockets) s.close();
  });

  it('turns offloads on by default and off on request', () => {
    const on = open(0, { family: 4, address: '127.0.0.1' });
    expect([on.gso, on.gro]).toEqual([true, true]);
    const off = open(0, { family: 0, offload: false });
    expect([off.gso, off.gro]).toEqual([false, false]);
    expect(off.offloadStats).toEqual({ gsoMessages: 0, gsoDatagrams: 0, gsoFallbacks: 0, groMessages: 0, groDatagrams: 0, carried: 0, held: 0 });
  });

  it('sends 64 equal datagrams as one GSO message and a shorter last one ends a run; GRO splits them back in order', async () => {
    const a = open(0, { family: 4, address: '127.0.0.1' });
    const b = open(0, { family: 4, address: '127.0.0.1' });
    // 64 × 1000 (one full run), 123 alone (the next is longer), 30 × 1000 + 200 (a run ending short).
    const size = (i: number) => (i < 64 ? 1000 : i === 64 ? 123 : i < 95 ? 1000 : 200);
    const batch = makeBatch(96, size);
    for (let i = 0; i < 96; i++) writeEndpoint(batch.addrs, i, '127.0.0.1', b.port);
    expect(gsoRuns(batch.addrs, batch.lengths, 96)).toEqual([64, 1, 31]);
    const stats = new Int32Array(3);
    const receiving = receive(b, 96);
    expect(a.sendBatch(batch.slab, batch.offsets, batch.lengths, batch.addrs, 96, stats)).toBe(96);
    expect([...stats]).toEqual([0, 0, 0]);
    expect(a.offloadStats).toMatchObject({ gsoMessages: 2, gsoDatagrams: 95, gsoFallbacks: 0 });
    const got = await receiving;
    for (let i = 0; i < 96; i++) {
      expectPayload(got, i, i, size(i));
      expect(readEndpoint(got.addrs, i)).toEqual({ address: '127.0.0.1', port: a.port, family: 4 });
      expect(readLocal(got.addrs, i)).toEqual({ address: '127.0.0.1', family: 4, ifindex: loIndex });
    }
    // Loopback hands a GSO message to a UDP_GRO socket whole: two coalesced receives, split here.
    expect(b.offloadStats).toMatchObject({ groMessages: 2, groDatagrams: 95, held: 0 });
    expect(b.recvBatch(got.slab, SLOT, got.lengths, got.addrs)).toBe(0);
  });

  it('keeps a GSO message below the largest IPv4 / IPv6 datagram', async () => {
    // 48 × 1365 = 65520 bytes: over IPv4's 65507-byte payload limit, within IPv6's 65527.
    for (const [family, host, perMessage] of [[4, '127.0.0.1', 47], [6, '::1', 48]] as const) {
      const a = open(0, { family, address: host });
      const b = open(0, { family, address: host });
      const batch = makeBatch(96, () => 1365);
      for (let i = 0; i < 96; i++) writeEndpoint(batch.addrs, i, host, b.port);
      const runs = gsoRuns(batch.addrs, batch.lengths, 96);
      expect(runs[0]).toBe(perMessage);
      const receiving = receive(b, 96);
      const stats = new Int32Array(3);
      expect(a.sendBatch(batch.slab, batch.offsets, batch.lengths, batch.addrs, 96, stats)).toBe(96);
      expect([...stats]).toEqual([0, 0, 0]);
      expect(a.offloadStats).toMatchObject({ gsoMessages: gsoMessagesOf(runs), gsoDatagrams: gsoDatagramsOf(runs) });
      const got = await receiving;
      for (let i = 0; i < 96; i++) expectPayload(got, i, i, 1365);
      expect(readEndpoint(got.addrs, 95)).toEqual({ address: host, port: a.port, family });
    }
  });

  it('groups only consecutive datagrams with the same record, across mixed destinations and lengths', async () => {
    const a = open(0, { family: 0 });
    const b = open(0, { family: 4, address: '127.0.0.1' });
    const c = open(0, { family: 6, address: '::1' });
    // A deterministic mix: stretches to b (IPv4 through the dual-stack socket) and c (IPv6) of
    // random length, sizes either repeated (GSO-able), shrinking or growing.
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) >>> 8) % n;
    const count = 300;
    const to: ('b' | 'c')[] = [];
    const sizes: number[] = [];
    while (to.length < count) {
      const dest = rand(2) === 0 ? 'b' : 'c';
      const stretch = 1 + rand(40);
      const base = 1 + rand(1452);
      for (let k = 0; k < stretch && to.length < count; k++) {
        to.push(dest);
        const kind = rand(10);
        sizes.push(kind < 7 ? base : kind < 9 ? Math.max(1, base - rand(base)) : base + 1 + rand(100));
      }
    }
    const batch = makeBatch(count, (i) => sizes[i]!);
    for (let i = 0; i < count; i++) writeEndpoint(batch.addrs, i, to[i] === 'b' ? '127.0.0.1' : '::1', to[i] === 'b' ? b.port : c.port);
    const runs = gsoRuns(batch.addrs, batch.lengths, count);
    expect(gsoMessagesOf(runs)).toBeGreaterThan(10);
    expect(runs.filter((k) => k === 1).length).toBeGreaterThan(10);
    const toB = [...to.keys()].filter((i) => to[i] === 'b');
    const toC = [...to.keys()].filter((i) => to[i] === 'c');
    const atB = receive(b, toB.length);
    const atC = receive(c, toC.length);
    const stats = new Int32Array(3);
    expect(a.sendBatch(batch.slab, batch.offsets, batch.lengths, batch.addrs, count, stats)).toBe(count);
    expect([...stats]).toEqual([0, 0, 0]);
    expect(a.offloadStats).toMatchObject({ gsoMessages: gsoMessagesOf(runs), gsoDatagrams: gsoDatagramsOf(runs) });
    const gotB = await atB;
    const gotC = await atC;
    toB.forEach((sent, i) => expectPayload(gotB, i, sent, sizes[sent]!));
    toC.forEach((sent, i) => expectPayload(gotC, i, sent, sizes[sent]!));
    expect(readEndpoint(gotB.addrs, 0)).toEqual({ address: '127.0.0.1', port: a.port, family: 4 });
    expect(readEndpoint(gotC.addrs, 0)).toEqual({ address: '::1', port: a.port, family: 6 });
  });

  it('sends GSO runs from the record’s source, and without it once the kernel refuses it', async () => {
    const a = open(0, { family: 4, address: '127.0.0.1' });
    const b = open(0, { family: 4, address: '127.0.0.1' });
    const locals = localAddresses();
    const gone4 = ['198.19.255.254', '198.19.255.253', '198.19.255.252'].find((x) => !locals.has(x))!;
    const batch = makeBatch(30, () => 700);
    for (let i = 0; i < 30; i++) {
      writeEndpoint(batch.addrs, i, '127.0.0.1', b.port);
      writeLocal(batch.addrs, i, i < 10 ? '127.0.0.2' : i < 20 ? gone4 : '127.0.0.3', loIndex);
    }
    const stats = new Int32Array(3);
    const receiving = receive(b, 30);
    expect(a.sendBatch(batch.slab, batch.offsets, batch.lengths, batch.addrs, 30, stats)).toBe(30);
    expect([...stats]).toEqual([0, 0, 10]);
    expect(a.offloadStats).toMatchObject({ gsoMessages: 3, gsoDatagrams: 30 });
    for (let i = 0; i < 30; i++) {
      if (i >= 10 && i < 20) expect(readLocal(batch.addrs, i)).toBeNull();
      else expect(readLocal(batch.addrs, i)?.address).toBe(i < 10 ? '127.0.0.2' : '127.0.0.3');
    }
    const got = await receiving;
    for (let i = 0; i < 30; i++) {
      expectPayload(got, i, i, 700);
      expect(readEndpoint(got.addrs, i).address).toBe(i < 10 ? '127.0.0.2' : i < 20 ? '127.0.0.1' : '127.0.0.3');
    }
  });

  it('delivers GSO datagrams to a receiver without GRO one by one (the kernel segments them)', async () => {
    const a = open(0, { family: 6, address: '::1' });
    const b = open(0, { family: 6, address: '::1', offload: false });
    const batch = makeBatch(64, (i) => (i === 63 ? 77 : 1000));
    for (let i = 0; i < 64; i++) writeEndpoint(batch.addrs, i, '::1', b.port);
    const receiving = receive(b, 64);
    expect(a.sendBatch(batch.slab, batch.offsets, batch.lengths, batch.addrs)).toBe(64);
    expect(a.offloadStats).toMatchObject({ gsoMessages: 1, gsoDatagrams: 64 });
    const got = await receiving;
    for (let i = 0; i < 64; i++) expectPayload(got, i, i, i === 63 ? 77 : 1000);
    expect(b.offloadStats.groMessages).toBe(0);
  });

  it('keeps what does not fit the slots for the next call, and wakes the handler for it', async () => {
    const a = open(0, { family: 4, address: '127.0.0.1' });
    const b = open(0, { family: 4, address: '127.0.0.1' });
    const batch = makeBatch(64, (i) => (i === 63 ? 10 : 1000));
    for (let i = 0; i < 64; i++) writeEndpoint(batch.addrs, i, '127.0.0.1', b.port);
    expect(a.sendBatch(batch.slab, batch.offsets, batch.lengths, batch.addrs)).toBe(64);

    // One coalesced receive of 64 datagrams, 10 slots per call, ONE call per readable callback:
    // the 54 held back are not in the kernel's queue, so only the socket's own wake-up finds them.
    const slab = new Uint8Array(64 * SLOT);
    const lengths = new Int32Array(64);
    const addrs = new Uint8Array(64 * ADDRESS_RECORD_SIZE);
    let n = 0;
    let callbacks = 0;
    const heldAfterFirst: number[] = [];
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`received ${n} of 64`)), 5000);
      b.onReadable(() => {
        callbacks++;
        n += b.recvBatch(slab.subarray(n * SLOT), SLOT, lengths.subarray(n), addrs.subarray(n * ADDRESS_RECORD_SIZE), Math.min(10, 64 - n));
        if (callbacks === 1) heldAfterFirst.push(b.offloadStats.held);
        if (n === 64) {
          clearTimeout(timer);
          b.pause();
          resolve();
        }
      });
    });
    expect(heldAfterFirst).toEqual([54]);
    expect(callbacks).toBe(7);
    for (let i = 0; i < 64; i++) {
      expect(lengths[i]).toBe(i === 63 ? 10 : 1000);
      const got = slab.subarray(i * SLOT, i * SLOT + lengths[i]!);
      expect(got.every((x, j) => x === ((i * 31 + j) & 0xff))).toBe(true);
      expect(readEndpoint(addrs, i)).toEqual({ address: '127.0.0.1', port: a.port, family: 4 });
    }
    expect(b.offloadStats).toMatchObject({ groMessages: 1, groDatagrams: 64, carried: 54, held: 0 });
  });

  it('reports coalesced datagrams larger than the slot as -1, like plain ones', async () => {
    for (const offload of [true, false]) {
      const a = open(0, { family: 4, address: '127.0.0.1' });
      const b = open(0, { family: 4, address: '127.0.0.1', offload });
      const batch = makeBatch(6, (i) => (i < 5 ? 1200 : 300));
      for (let i = 0; i < 6; i++) writeEndpoint(batch.addrs, i, '127.0.0.1', b.port);
      expect(a.sendBatch(batch.slab, batch.offsets, batch.lengths, batch.addrs)).toBe(6);
      const slab = new Uint8Array(6 * 1000);
      const lengths = new Int32Array(6);
      const addrs = new Uint8Array(6 * ADDRESS_RECORD_SIZE);
      let n = 0;
      await waitFor('six datagrams', () => (n += b.recvBatch(slab.subarray(n * 1000), 1000, lengths.subarray(n), addrs.subarray(n * 40), 6 - n)) === 6);
      expect([...lengths], `offload ${offload}`).toEqual([-1, -1, -1, -1, -1, 300]);
      expect(slab.subarray(5000, 5300).every((x, j) => x === ((5 * 31 + j) & 0xff))).toBe(true);
    }
  });

  it('falls back to plain datagrams for good when the kernel answers a GSO message with EIO, losing none', async () => {
    const a = open(0, { family: 4, address: '127.0.0.1' });
    const b = open(0, { family: 4, address: '127.0.0.1' });
    const batch = makeBatch(100, (i) => (i < 3 ? 100 + i : 1400)); // 3 singles, then runs
    for (let i = 0; i < 100; i++) writeEndpoint(batch.addrs, i, '127.0.0.1', b.port);
    injectGsoError(a, 5); // EIO: as from a route whose device cannot checksum (kernels before ~6.x)
    const stats = new Int32Array(3);
    const receiving = receive(b, 200);
    expect(a.sendBatch(batch.slab, batch.offsets, batch.lengths, batch.addrs, 100, stats)).toBe(100);
    expect([...stats]).toEqual([0, 0, 0]);
    expect(a.gso).toBe(false);
    expect(a.offloadStats).toMatchObject({ gsoMessages: 0, gsoFallbacks: 1 });
    expect(a.sendBatch(batch.slab, batch.offsets, batch.lengths, batch.addrs, 100, stats)).toBe(100);
    expect(a.offloadStats.gsoMessages).toBe(0);
    const got = await receiving;
    for (let i = 0; i < 200; i++) expectPayload(got, i, i % 100, i % 100 < 3 ? 100 + (i % 100) : 1400);
  });

  it('after an ambiguous refusal (EINVAL) turns GSO off only if the datagrams then go plainly', async () => {
    const a = open(0, { family: 4, address: '127.0.0.1' });
    const b = open(0, { family: 4, address: '127.0.0.1' });
    // A run to port 0: EINVAL whether GSO or not — the destination's fault, so GSO stays on.
    const batch = makeBatch(20, () => 500);
    for (let i = 0; i < 20; i++) writeEndpoint(batch.addrs, i, '127.0.0.1', i < 5 ? 0 : b.port);
    const stats = new Int32Array(3);
    const first = receive(b, 15);
    expect(a.sendBatch(batch.slab, batch.offsets, batch.lengths, batch.addrs, 20, stats)).toBe(20);
    expect([...stats]).toEqual([5, -22, 0]);
    expect(a.gso).toBe(true);
    expect(a.offloadStats).toMatchObject({ gsoMessages: 1, gsoDatagrams: 15, gsoFallbacks: 0 });
    const gotFirst = await first;
    for (let i = 0; i < 15; i++) expectPayload(gotFirst, i, i + 5, 500);

    // The same errno on a good destination (injected): the plain resend works, so GSO goes off.
    injectGsoError(a, 22);
    b.resume(); // receive() pauses the socket once it has what it wants
    const second = receive(b, 15);
    expect(a.sendBatch(batch.slab, batch.offsets.subarray(5), batch.lengths.subarray(5), batch.addrs.subarray(5 * 40), 15, stats)).toBe(15);
    expect([...stats]).toEqual([0, 0, 0]);
    expect(a.gso).toBe(false);
    expect(a.offloadStats).toMatchObject({ gsoMessages: 1, gsoFallbacks: 1 });
    const gotSecond = await second;
    for (let i = 0; i < 15; i++) expectPayload(gotSecond, i, i + 5, 500);
  });

  it('stops at a GSO message that would block with none of its datagrams sent, and resumes there', async () => {
    const a = open(0, { family: 4, address: '127.0.0.1' });
    const b = open(0, { family: 4, address: '127.0.0.1' });
    const size = (i: number) => (i === 0 ? 100 : i === 1 ? 200 : i < 12 ? 1000 : 50);
    const batch = makeBatch(13, size); // two singles, a run of 11 (10 × 1000 + 50)
    for (let i = 0; i < 13; i++) writeEndpoint(batch.addrs, i, '127.0.0.1', b.port);
    expect(gsoRuns(batch.addrs, batch.lengths, 13)).toEqual([1, 1, 11]);
    injectGsoError(a, 11); // EAGAIN on the GSO message: the kernel sends the two before it
    const receiving = receive(b, 13);
    const stats = new Int32Array(3);
    expect(a.sendBatch(batch.slab, batch.offsets, batch.lengths, batch.addrs, 13, stats)).toBe(2);
    expect(a.sendBatch(batch.slab, batch.offsets.subarray(2), batch.lengths.subarray(2), batch.addrs.subarray(80), 11, stats)).toBe(11);
    expect(a.offloadStats).toMatchObject({ gsoMessages: 1, gsoDatagrams: 11, gsoFallbacks: 0 });
    const got = await receiving;
    for (let i = 0; i < 13; i++) expectPayload(got, i, i, size(i));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(b.recvBatch(got.slab, SLOT, got.lengths, got.addrs)).toBe(0); // nothing sent twice
  });
});

// ---- UDP GRO over veth (the kernel coalescing separately sent datagrams) ---------------------

const hasEthtool = isRoot && (() => {
  try {
    execFileSync('ethtool', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
if (isRoot && !hasEthtool) console.log('tun-native: the veth GRO test is skipped: it needs ethtool');

/** Runs in a namespace: `recv host port count` or `send host port count`, over UdpSocket. */
const GRO_PEER_SCRIPT = `
const [mode, udpModule, addressModule, host, port, count] = process.argv.slice(2);
const { UdpSocket } = await import(udpModule);
const { writeEndpoint } = await import(addressModule);
const SLOT = 2048, LEN = 1400, want = Number(count);
if (mode === 'recv') {
  const sock = UdpSocket.bind(Number(port), { family: 4, address: host });
  const slab = new Uint8Array(128 * SLOT), lengths = new Int32Array(128), addrs = new Uint8Array(128 * 40);
  const view = new DataView(slab.buffer);
  let got = 0, corrupt = 0, disorder = 0, last = -1, timer;
  const finish = () => {
    console.log(JSON.stringify({ gro: sock.gro, got, corrupt, disorder, stats: sock.offloadStats }));
    process.exit(0);
  };
  sock.onReadable(() => {
    for (let n; (n = sock.recvBatch(slab, SLOT, lengths, addrs, 128)) > 0; ) {
      for (let i = 0; i < n; i++) {
        const seq = view.getUint32(i * SLOT);
        if (seq <= last) disorder++;
        last = seq;
        if (lengths[i] !== LEN) corrupt++;
        else for (let j = 4; j < LEN; j++) if (slab[i * SLOT + j] !== ((seq + j) & 0xff)) { corrupt++; break; }
        got++;
      }
    }
    clearTimeout(timer);
    timer = setTimeout(finish, got >= want ? 0 : 2000);
  });
  timer = setTimeout(finish, 8000);
  console.log('ready');
} else {
  // Plain datagrams (offload off): any coalescing at the receiver is the kernel's GRO.
  const sock = UdpSocket.bind(0, { family: 4, offload: false });
  const B = 64, slab = new Uint8Array(B * SLOT), view = new DataView(slab.buffer);
  const offsets = Int32Array.from({ length: B }, (_, i) => i * SLOT), lengths = new Int32Array(B).fill(LEN);
  const addrs = new Uint8Array(B * 40);
  for (let i = 0; i < B; i++) writeEndpoint(addrs, i, host, Number(port));
  for (let seq = 0; seq < want; seq += B) {
    for (let i = 0; i < B; i++) {
      view.setUint32(i * SLOT, seq + i);
      for (let j = 4; j < LEN; j++) slab[i * SLOT + j] = (seq + i + j) & 0xff;
    }
    for (let n = 0; n < B; ) n += sock.sendBatch(slab, offsets.subarray(n), lengths.subarray(n), addrs.subarray(n * 40), B - n);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  process.exit(0);
}
`;

describe.skipIf(!hasEthtool)('UDP GRO over veth between two namespaces', () => {
  const tag = `${process.pid}${Math.random().toString(36).slice(2, 5)}`;
  const nsA = `wgtsGa${tag}`;
  const nsB = `wgtsGb${tag}`;
  const created: string[] = [];
  const children: ChildProcess[] = [];
  let script = '';

  beforeAll(() => {
    for (const ns of [nsA, nsB]) {
      ip('netns', 'add', ns);
      created.push(ns);
    }
    ip('-n', nsA, 'link', 'add', 'gsoa', 'type', 'veth', 'peer', 'name', 'gsob', 'netns', nsB);
    ip('-n', nsA, 'addr', 'add', '198.18.77.1/24', 'dev', 'gsoa');
    ip('-n', nsB, 'addr', 'add', '198.18.77.2/24', 'dev', 'gsob');
    for (const [ns, dev] of [[nsA, 'gsoa'], [nsB, 'gsob']]) ip('-n', ns!, 'link', 'set', 'dev', dev!, 'up');
    // veth runs GRO only in NAPI mode (GRO on), only for a TSO-capable sender's socket traffic
    // when the receiving end has rx-gro-list or rx-udp-gro-forwarding, and only coalesces what
    // queues up between polls: threaded NAPI lets a burst queue while the sender runs.
    const exec = (ns: string, ...args: string[]) => execFileSync('ip', ['netns', 'exec', ns, ...args], { stdio: 'pipe' });
    exec(nsB, 'ethtool', '-K', 'gsob', 'gro', 'on', 'rx-gro-list', 'on');
    exec(nsB, 'sh', '-c', 'echo 1 > /sys/class/net/gsob/threaded');
    script = join(mkdtempSync(join(tmpdir(), 'wgts-gro-')), 'peer.mjs');
    writeFileSync(script, GRO_PEER_SCRIPT);
  });

  afterAll(() => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const ns of created) tryIp('netns', 'del', ns);
    if (script) rmSync(dirname(script), { recursive: true, force: true });
  });

  function peer(ns: string, ...args: string[]): { child: ChildProcess; output: Promise<string>; ready: Promise<void> } {
    const udp = new URL('../../src/tun/udp-socket.ts', import.meta.url).href;
    const address = new URL('../../src/tun/address.ts', import.meta.url).href;
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, script, args[0]!, udp, address, ...args.slice(1)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let out = '';
    let err = '';
    let onReady: () => void = () => {};
    const ready = new Promise<void>((resolve) => (onReady = resolve));
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) onReady();
    });
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const output = new Promise<string>((resolve, reject) =>
      child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`peer ${args[0]} exited ${code}: ${err}`)))),
    );
    return { child, output, ready };
  }

  it('splits datagrams the kernel coalesced back into one per slot, intact and in order', async () => {
    const count = 64 * 60;
    const receiver = peer(nsB, 'recv', '198.18.77.2', '5599', `${count}`);
    await Promise.race([receiver.ready, receiver.output]);
    await peer(nsA, 'send', '198.18.77.2', '5599', `${count}`).output;
    const result = JSON.parse((await receiver.output).trim().split('\n').pop()!) as {
      gro: boolean;
      got: number;
      corrupt: number;
      disorder: number;
      stats: { groMessages: number; groDatagrams: number };
    };
    // The sending veth drops (silently, for UDP) what its peer's 256-entry ring cannot take when the
    // receiving NAPI thread is slow to run: count those, everything else must arrive.
    const vethDropped = (JSON.parse(ip('-n', nsA, '-j', '-s', 'link', 'show', 'dev', 'gsoa')) as { stats64: { tx: { dropped: number } } }[])[0]!.stats64.tx.dropped;
    console.log(
      `tun-native: veth GRO: ${result.stats.groDatagrams} of ${result.got} datagrams arrived in ${result.stats.groMessages} coalesced receives` +
        (vethDropped > 0 ? ` (${vethDropped} dropped by the sending veth)` : ''),
    );
    expect(result).toMatchObject({ gro: true, corrupt: 0, disorder: 0 });
    expect(result.got).toBeLessThanOrEqual(count);
    expect(result.got + vethDropped).toBeGreaterThanOrEqual(count); // ≥: the veth may also drop a stray IPv6 ND packet
    expect(result.got).toBeGreaterThan(count / 2);
    expect(result.stats.groMessages).toBeGreaterThan(0);
  }, 20_000);
});

// ---- TUN -----------------------------------------------------------------------------------------

/** Ones'-complement checksum of bytes[start, end) (IP header, ICMP). */
function checksum(bytes: Uint8Array, start: number, end: number): number {
  let sum = 0;
  for (let i = start; i < end; i += 2) sum += (bytes[i]! << 8) | (i + 1 < end ? bytes[i + 1]! : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function ipv4(bytes: Uint8Array, at: number): string {
  return `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`;
}

/** The echo request's reply: swap addresses, type 0, both checksums recomputed. */
function echoReply(request: Uint8Array): Uint8Array {
  const reply = request.slice();
  const ihl = (reply[0]! & 0x0f) * 4;
  reply.set(request.subarray(16, 20), 12);
  reply.set(request.subarray(12, 16), 16);
  reply[ihl] = 0; // echo reply
  reply[ihl + 2] = reply[ihl + 3] = 0;
  const icmp = checksum(reply, ihl, reply.length);
  reply[ihl + 2] = icmp >> 8;
  reply[ihl + 3] = icmp & 0xff;
  reply[10] = reply[11] = 0;
  const header = checksum(reply, 0, ihl);
  reply[10] = header >> 8;
  reply[11] = header & 0xff;
  return reply;
}

describe.skipIf(!isRoot)('TunDevice (native, network namespace)', () => {
  const tag = `${process.pid}`;
  const ns = `wgtsT${tag}${Math.random().toString(36).slice(2, 6)}`;
  const base = `wgtsT${tag}`.slice(0, 13); // interface names: at most 15 bytes, with a suffix
  const devices: TunDevice[] = [];
  const children: ChildProcess[] = [];
  let nsCreated = false;

  beforeAll(() => {
    ip('netns', 'add', ns);
    nsCreated = true;
  });

  afterAll(() => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const device of devices) {
      try {
        device.setPersist(false);
      } catch {
        // already closed
      }
      device.close();
    }
    if (nsCreated) tryIp('netns', 'del', ns);
    for (const suffix of ['', 'm', 'p']) if (linkExists(base + suffix)) tryIp('link', 'del', base + suffix);
  });

  it('answers a ping from inside a namespace through readBatch and writeBatch', async () => {
    const tun = TunDevice.open(base);
    devices.push(tun);
    expect(tun.name).toBe(base);
    expect(tun.fd).toBeGreaterThanOrEqual(0);
    const slab = new Uint8Array(8 * SLOT);
    const lengths = new Int32Array(8);
    expect(tun.readBatch(slab, SLOT, lengths)).toBe(0); // down, nothing waiting: EAGAIN

    ip('link', 'set', 'dev', tun.name, 'netns', ns);
    ip('-n', ns, 'addr', 'add', '100.64.77.1/24', 'dev', tun.name);
    ip('-n', ns, 'link', 'set', 'dev', tun.name, 'up');

    const ping = spawn('ip', ['netns', 'exec', ns, 'ping', '-n', '-c', '1', '-W', '2', '100.64.77.2'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(ping);
    let pingOutput = '';
    ping.stdout!.on('data', (d: Buffer) => (pingOutput += d.toString()));
    ping.stderr!.on('data', (d: Buffer) => (pingOutput += d.toString()));
    const pingExit = new Promise<number | null>((resolve) => ping.on('exit', (code) => resolve(code)));

    // Read until the echo request shows up; other packets (IPv6 router solicitations…) are skipped.
    const request = await new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => {
        tun.pause();
        reject(new Error(`no echo request read from the TUN; ping said: ${pingOutput}`));
      }, 10_000);
      tun.onReadable(() => {
        try {
          for (let n = tun.readBatch(slab, SLOT, lengths); n > 0; n = tun.readBatch(slab, SLOT, lengths)) {
            for (let i = 0; i < n; i++) {
              const packet = slab.subarray(i * SLOT, i * SLOT + lengths[i]!);
              const ihl = (packet[0]! & 0x0f) * 4;
              if (packet[0]! >> 4 !== 4 || packet[9] !== 1 || packet[ihl] !== 8) continue;
              clearTimeout(timer);
              tun.pause();
              resolve(packet.slice());
              return;
            }
          }
        } catch (error) {
          clearTimeout(timer);
          reject(error as Error);
        }
      });
    });
    expect(ipv4(request, 12)).toBe('100.64.77.1');
    expect(ipv4(request, 16)).toBe('100.64.77.2');
    expect(checksum(request, 0, (request[0]! & 0x0f) * 4)).toBe(0);

    // One batch: a malformed packet the kernel refuses (version 0), then the reply.
    const reply = echoReply(request);
    const out = new Uint8Array(SLOT);
    out.set(reply, 64);
    const stats = new Int32Array(2);
    expect(tun.writeBatch(out, new Int32Array([0, 64]), new Int32Array([20, reply.length]), 2, stats)).toBe(2);
    expect([...stats]).toEqual([1, -22]);
    expect(await pingExit, pingOutput).toBe(0);
    expect(pingOutput).toMatch(/1 received/);
  });

  it('gets and sets the MTU', () => {
    const tun = TunDevice.open(`${base}m`);
    devices.push(tun);
    expect(tun.mtu).toBe(1500);
    tun.mtu = 1420;
    expect(tun.mtu).toBe(1420);
    expect(linkInfo(tun.name).mtu).toBe(1420);
    tun.setUp(true);
    expect(ip('-j', 'link', 'show', 'dev', tun.name)).toMatch(/"UP"/);
    tun.setUp(false);
    tun.close();
    expect(linkExists(`${base}m`)).toBe(false);
    const closedError = systemError(() => tun.readBatch(new Uint8Array(SLOT), SLOT, new Int32Array(1)));
    expect(closedError).toMatchObject({ code: 'EBADF', syscall: 'readv' });
  });

  it('keeps a persistent TUN after close, re-attaches to it by name, then deletes it', async () => {
    const name = `${base}p`;
    const first = TunDevice.open(name, { persist: true });
    devices.push(first);
    first.close();
    expect(linkExists(name)).toBe(true);

    const again = TunDevice.open(name);
    devices.push(again);
    expect(again.name).toBe(name);
    // A second attach to a single-queue TUN that is in use is refused.
    expect(systemError(() => TunDevice.open(name))).toMatchObject({ code: 'EBUSY', syscall: 'TUNSETIFF' });
    again.setPersist(false);
    again.close();
    await waitFor(`${name} to disappear`, () => !linkExists(name));
  });

  it('lets the kernel number the interface', () => {
    const tun = TunDevice.open('wgtsT%d');
    devices.push(tun);
    expect(tun.name).toMatch(/^wgtsT\d+$/);
    expect(linkExists(tun.name)).toBe(true);
    tun.close();
    expect(linkExists(tun.name)).toBe(false);
  });

  it('throws an Error with code, errno and syscall for an invalid name', () => {
    const tooLong = 'x'.repeat(20);
    const error = systemError(() => TunDevice.open(tooLong));
    expect(error).toBeInstanceOf(Error);
    expect(error).toMatchObject({ code: 'EINVAL', errno: -22, syscall: 'TUNSETIFF' });
    expect(error.message).toBe(`TUNSETIFF ${tooLong}: Invalid argument`);
    expect(systemError(() => TunDevice.open('bad/name'))).toMatchObject({ code: 'EINVAL', syscall: 'TUNSETIFF' });
  });
});
