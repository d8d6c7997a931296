/**
 * The src/tun native addon against the real kernel: UDP batches over loopback (IPv4, IPv6,
 * dual-stack, PKTINFO sources, SO_MARK), a TUN answering a ping from inside a network namespace,
 * MTU and persistence, and error shapes. Needs root (TUN, SO_MARK, namespaces); CI runs as root.
 * The address-record helpers are pure and run everywhere.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
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
import type { SystemError } from '../../src/tun/native.ts';
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
