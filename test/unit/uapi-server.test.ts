import { execFile } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, EADDRINUSE, EINVAL, EPROTO } from '../../src/device/config.ts';
import { UapiServer, isValidInterfaceName } from '../../src/device/uapi-server.ts';
import { formatGet, parseGet, parseSet } from '../../src/device/uapi.ts';
import { generatePrivateKey, publicKeyOf } from '../../src/cli/keys.ts';
import { keyToBase64, toHex } from '../../src/util/hex.ts';
import { formatCidr, formatEndpoint } from '../../src/util/ip.ts';
import { FakeDevice } from '../helpers/fake-device.ts';

const run = promisify(execFile);
const key = (fill: number): Uint8Array => new Uint8Array(32).fill(fill);
const A = key(0xa1);
const B = key(0xb2);

/** A raw UAPI client: write bytes, read whole answers (everything up to `errno=N\n\n`). */
class Client {
  private buffer = '';
  private ended = false;
  private waiters: (() => void)[] = [];
  readonly socket: Socket;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      this.wake();
    });
    socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', () => {});
  }

  static connect(path: string): Promise<Client> {
    return new Promise((resolve, reject) => {
      const socket = createConnection({ path, allowHalfOpen: true });
      socket.once('connect', () => resolve(new Client(socket)));
      socket.once('error', reject);
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  write(text: string): void {
    this.socket.write(text);
  }

  /** The next answer, or null when the server closed the connection first. */
  async answer(): Promise<string | null> {
    for (;;) {
      const m = /errno=-?\d+\n\n/.exec(this.buffer);
      if (m) {
        const end = m.index + m[0].length;
        const out = this.buffer.slice(0, end);
        this.buffer = this.buffer.slice(end);
        return out;
      }
      if (this.ended) return null;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** Resolves once the server has closed its side; returns what was left unread. */
  async closed(): Promise<string> {
    while (!this.ended) await new Promise<void>((resolve) => this.waiters.push(resolve));
    return this.buffer;
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

async function request(path: string, text: string): Promise<string | null> {
  const c = await Client.connect(path);
  c.write(text);
  const a = await c.answer();
  c.destroy();
  return a;
}

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('UapiServer (temporary directory)', () => {
  let root: string;
  let dir: string;
  const servers: UapiServer[] = [];
  let counter = 0;

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'wgts-uapi-'));
  });
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });
  afterAll(() => {
    rmSync(root, { recursive: true, force: true });
  });

  async function serve(device = new FakeDevice(), options: { maxRequestBytes?: number; name?: string } = {}) {
    dir = join(root, `run${counter++}`);
    const server = new UapiServer();
    servers.push(server);
    const logs: string[] = [];
    const { name = 'wgtest0', ...limits } = options;
    await server.listen(name, device, { dir, log: (m) => logs.push(m), ...limits });
    return { server, device, path: server.path!, logs };
  }

  it('creates the directory 0700 and the socket 0600, and tightens an existing directory', async () => {
    const { path } = await serve();
    expect(path).toBe(join(dir, 'wgtest0.sock'));
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    const st = lstatSync(path);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);

    const loose = join(root, 'loose');
    mkdirSync(loose, { mode: 0o755 });
    chmodSync(loose, 0o755);
    const s2 = new UapiServer();
    servers.push(s2);
    await s2.listen('wgtest1', new FakeDevice(), { dir: loose });
    expect(statSync(loose).mode & 0o777).toBe(0o700);
    // Only the socket: the temporary bind name was renamed away.
    expect(lstatSync(join(loose, 'wgtest1.sock')).isSocket()).toBe(true);
  });

  it('rejects invalid interface names', async () => {
    for (const bad of ['', '.', '..', 'a/b', 'has space', 'x'.repeat(16), 'a:b']) {
      expect(isValidInterfaceName(bad)).toBe(false);
      await expect(new UapiServer().listen(bad, new FakeDevice(), { dir: join(root, 'never') })).rejects.toThrow(/not a valid interface name/);
    }
    expect(isValidInterfaceName('wgts0')).toBe(true);
  });

  it('serves several requests on one connection, written one by one or all at once', async () => {
    const { path, device } = await serve();
    const c = await Client.connect(path);
    c.write(`set=1\nlisten_port=51820\npublic_key=${toHex(A)}\nallowed_ip=10.0.0.0/8\n\n`);
    expect(await c.answer()).toBe('errno=0\n\n');
    c.write('get=1\n\n');
    expect(await c.answer()).toBe(`${formatGet(device.snapshot())}errno=0\n\n`);
    // Pipelined: three requests in one write.
    c.write(`get=1\n\nset=1\npublic_key=${toHex(B)}\n\nget=1\n\n`);
    const first = parseGet((await c.answer())!);
    expect(first.snapshot.peers.length).toBe(1);
    expect(await c.answer()).toBe('errno=0\n\n');
    const third = parseGet((await c.answer())!);
    expect(third.errno).toBe(0);
    expect(third.snapshot.peers.map((p) => toHex(p.publicKey))).toEqual([toHex(A), toHex(B)]);
    expect(third.snapshot.listenPort).toBe(51820);
    c.destroy();
  });

  it('reassembles requests that arrive a byte at a time', async () => {
    const { path, device } = await serve();
    const c = await Client.connect(path);
    for (const ch of `set=1\npublic_key=${toHex(A)}\nallowed_ip=fd00::/64\n\nget=1\n\n`) {
      c.write(ch);
      await new Promise((r) => setImmediate(r));
    }
    expect(await c.answer()).toBe('errno=0\n\n');
    expect(await c.answer()).toBe(`${formatGet(device.snapshot())}errno=0\n\n`);
    expect(device.peer(A)?.allowedIps.map(formatCidr)).toEqual(['fd00::/64']);
    c.destroy();
  });

  it('answers an empty device with just errno=0', async () => {
    const { path } = await serve();
    expect(await request(path, 'get=1\n\n')).toBe('errno=0\n\n');
  });

  it('answers a bad set with errno=-22, leaves the device unchanged, and keeps serving the connection', async () => {
    const { path, device, logs } = await serve();
    await device.apply(parseSet([`public_key=${toHex(A)}`, 'allowed_ip=10.0.0.0/8']));
    const before = formatGet(device.snapshot());
    const c = await Client.connect(path);
    const secret = toHex(generatePrivateKey());
    c.write(`set=1\nreplace_peers=true\nprivate_key=${secret}\npublic_key=${toHex(B)}\nlisten_port=1\nmore=garbage\n\nget=1\n\n`);
    expect(await c.answer()).toBe(`errno=-${EINVAL}\n\n`);
    expect(await c.answer()).toBe(`${before}errno=0\n\n`);
    expect(formatGet(device.snapshot())).toBe(before);
    expect(device.transactions.length).toBe(1); // the bad set never reached the device
    expect(logs.join('\n')).toMatch(/line 5 "listen_port=1": listen_port is a device key/);
    expect(logs.join('\n')).not.toContain(secret);
    c.write('set=1\nno equals sign\n\n');
    expect(await c.answer()).toBe(`errno=-${EPROTO}\n\n`);
    c.destroy();
  });

  it('passes the device’s own errno through, negated (EADDRINUSE → errno=-98)', async () => {
    const device = new FakeDevice({ portsInUse: [4242] });
    const { path } = await serve(device);
    expect(await request(path, `set=1\nlisten_port=4242\npublic_key=${toHex(A)}\n\n`)).toBe(`errno=-${EADDRINUSE}\n\n`);
    expect(device.snapshot().peers).toEqual([]);
    device.failNext = new Error('not a ConfigError');
    expect(await request(path, 'set=1\nfwmark=1\n\n')).toBe('errno=-55\n\n'); // wireguard-go's IpcErrorUnknown
    device.failNext = new ConfigError('nope', EINVAL);
    expect(await request(path, 'set=1\nfwmark=1\n\n')).toBe('errno=-22\n\n');
    expect(device.snapshot().fwmark).toBe(0);
  });

  it('closes the connection on an unknown operation, without an answer (as wireguard-go)', async () => {
    const { path } = await serve();
    for (const op of ['get=2\n\n', 'hello\n', '\n', 'set=1 \n\n']) {
      const c = await Client.connect(path);
      c.write(op);
      expect(await c.closed()).toBe('');
    }
  });

  it('answers get=1 followed by a non-empty line with errno=-22', async () => {
    const { path } = await serve();
    const c = await Client.connect(path);
    c.write('get=1\nx\nget=1\n\n');
    expect(await c.answer()).toBe('errno=-22\n\n');
    expect(await c.answer()).toBe('errno=0\n\n');
    c.destroy();
  });

  it('applies a set cut short by end of input (as wireguard-go) and still answers a half-closed client', async () => {
    const { path, device } = await serve();
    const c = await Client.connect(path);
    c.write(`set=1\npublic_key=${toHex(A)}\nallowed_ip=10.0.0.0/8`);
    c.end();
    expect(await c.answer()).toBe('errno=0\n\n');
    expect(device.peer(A)?.allowedIps.map(formatCidr)).toEqual(['10.0.0.0/8']);
  });

  it('rejects an oversized line without buffering it, and survives 1 MB of garbage', async () => {
    const { path, device } = await serve();
    // 1 MB without a newline where an operation should be: closed, no answer.
    const c1 = await Client.connect(path);
    c1.write('x'.repeat(1 << 20));
    expect(await c1.closed()).toBe('');
    // Inside a set: answered errno=-22, closed.
    const c2 = await Client.connect(path);
    c2.write(`set=1\nlisten_port=1\nbogus=${'y'.repeat(1 << 20)}\n\n`);
    expect(await c2.answer()).toBe('errno=-22\n\n');
    expect(await c2.closed()).toBe('');
    // 1 MB of short garbage lines inside a set: one answer, the rest discarded.
    const c3 = await Client.connect(path);
    c3.write(`set=1\n${'zz\n'.repeat(350_000)}`);
    c3.end();
    expect(await c3.answer()).toBe(`errno=-${EPROTO}\n\n`);
    expect(await c3.closed()).toBe('');
    expect(device.transactions.length).toBe(0);
    // Still serving.
    expect(await request(path, 'get=1\n\n')).toBe('errno=0\n\n');
  });

  it('bounds the size of a set request', async () => {
    const device = new FakeDevice();
    const { path } = await serve(device, { maxRequestBytes: 64 * 1024 });
    let body = `set=1\npublic_key=${toHex(A)}\n`;
    for (let i = 0; body.length < 100 * 1024; i++) body += `allowed_ip=10.${(i >> 8) & 255}.${i & 255}.0/24\n`;
    const c = await Client.connect(path);
    c.write(`${body}\n`);
    expect(await c.answer()).toBe('errno=-22\n\n');
    expect(await c.closed()).toBe('');
    expect(device.transactions.length).toBe(0);
  });

  it('a malformed request on one connection does not disturb another', async () => {
    const { path, device } = await serve();
    const good = await Client.connect(path);
    const bad = await Client.connect(path);
    good.write(`set=1\npublic_key=${toHex(A)}\n`); // half a request, held open
    bad.write('\x00\xff garbage\n');
    expect(await bad.closed()).toBe('');
    good.write('allowed_ip=10.0.0.0/8\n\n');
    expect(await good.answer()).toBe('errno=0\n\n');
    expect(device.peer(A)).toBeDefined();
    good.destroy();
  });

  it('serializes concurrent sets from many connections', async () => {
    const { path, device } = await serve();
    const answers = await Promise.all(
      Array.from({ length: 40 }, (_, i) => request(path, `set=1\npublic_key=${toHex(key(i + 1))}\nallowed_ip=10.0.${i}.0/24\n\n`)),
    );
    expect(answers.every((a) => a === 'errno=0\n\n')).toBe(true);
    expect(device.snapshot().peers.length).toBe(40);
  });

  it('refuses a socket served by a live process ("unix socket in use")', async () => {
    const { path } = await serve();
    const second = new UapiServer();
    await expect(second.listen('wgtest0', new FakeDevice(), { dir })).rejects.toThrow(/unix socket in use/);
    expect(await request(path, 'get=1\n\n')).toBe('errno=0\n\n'); // the first one is untouched
  });

  it('replaces a stale socket left by a dead process', async () => {
    dir = join(root, `stale${counter++}`);
    mkdirSync(dir, { mode: 0o700 });
    const target = join(dir, 'wgtest0.sock');
    // A socket file nobody listens on: bind elsewhere, move it into place, stop listening.
    const old = createServer();
    await new Promise<void>((r) => old.listen(join(dir, 'tmp.sock'), r));
    renameSync(join(dir, 'tmp.sock'), target);
    await new Promise<void>((r) => old.close(() => r()));
    expect(lstatSync(target).isSocket()).toBe(true);
    const staleIno = lstatSync(target).ino;

    const server = new UapiServer();
    servers.push(server);
    await server.listen('wgtest0', new FakeDevice(), { dir });
    expect(lstatSync(target).ino).not.toBe(staleIno);
    expect(await request(target, 'get=1\n\n')).toBe('errno=0\n\n');
  });

  it('close() removes the socket file, but never a file that replaced it', async () => {
    const { server, path } = await serve();
    await server.close();
    expect(existsSync(path)).toBe(false);
    await server.close(); // idempotent

    const second = await serve();
    unlinkSync(second.path);
    writeFileSync(second.path, 'someone else');
    await second.server.close();
    expect(existsSync(second.path)).toBe(true);
  });

  it('emits socketRemoved once when someone deletes the socket file', async () => {
    const { server, path } = await serve();
    let events = 0;
    const removed = new Promise<void>((resolve) =>
      server.on('socketRemoved', () => {
        events++;
        resolve();
      }),
    );
    unlinkSync(path);
    const started = Date.now();
    await removed;
    expect(Date.now() - started).toBeLessThan(1500);
    await tick(1200);
    expect(events).toBe(1);
  });

  it('emits socketRemoved when the socket file is replaced by another', async () => {
    const { server, path } = await serve();
    const removed = new Promise<void>((resolve) => server.once('socketRemoved', resolve));
    const other = join(dir, 'other');
    writeFileSync(other, '');
    renameSync(other, path);
    await removed;
  });
});

// ---------------------------------------------------------------------------------------------
// With the real `wg` (wireguard-tools), which only looks in /var/run/wireguard.

const isRoot = process.getuid?.() === 0;
const wgPath = '/usr/bin/wg';
const haveWg = existsSync(wgPath);
const skipReason = !isRoot ? 'not root (the real-wg tests serve /var/run/wireguard)' : !haveWg ? `${wgPath} missing (apt-get install -y wireguard-tools)` : '';
if (skipReason) process.stdout.write(`uapi-server.test.ts: skipping the real-wg tests: ${skipReason}\n`);

describe.skipIf(skipReason !== '')('UapiServer with the real wg', () => {
  const name = `wgtsu${process.pid}`.slice(0, 15);
  const device = new FakeDevice({ portsInUse: [9] });
  const server = new UapiServer();
  const work = mkdtempSync(join(tmpdir(), 'wgts-wg-'));
  const priv = generatePrivateKey();
  const pub = publicKeyOf(priv);
  const peerPriv = generatePrivateKey();
  const peer = publicKeyOf(peerPriv);
  const peer2 = publicKeyOf(generatePrivateKey());
  const b64 = keyToBase64;

  async function wg(...args: string[]): Promise<string> {
    const { stdout } = await run(wgPath, args, { encoding: 'utf8' });
    return stdout;
  }
  async function wgFails(...args: string[]): Promise<{ code: number; stderr: string }> {
    try {
      await run(wgPath, args, { encoding: 'utf8' });
    } catch (err) {
      const e = err as { code: number; stderr: string };
      return { code: e.code, stderr: e.stderr };
    }
    throw new Error(`wg ${args.join(' ')} succeeded`);
  }

  beforeAll(async () => {
    await server.listen(name, device);
  });
  afterAll(async () => {
    await server.close();
    rmSync(work, { recursive: true, force: true });
    expect(existsSync(`/var/run/wireguard/${name}.sock`)).toBe(false);
  });

  it('lists the interface', async () => {
    expect((await wg('show', 'interfaces')).split(/\s+/)).toContain(name);
    expect(statSync('/var/run/wireguard').mode & 0o777).toBe(0o700);
  });

  it('wg set: private key, port, fwmark, and a peer with allowed-ips, endpoint and keepalive', async () => {
    const keyFile = join(work, 'private');
    writeFileSync(keyFile, `${b64(priv)}\n`, { mode: 0o600 });
    await wg('set', name, 'private-key', keyFile, 'listen-port', '51999', 'fwmark', '0x51820');
    await wg('set', name, 'peer', b64(peer), 'allowed-ips', '100.64.1.0/24', 'endpoint', '198.18.0.2:51820', 'persistent-keepalive', '25');
    const s = device.snapshot();
    expect(s.privateKey).toEqual(priv);
    expect(s.listenPort).toBe(51999);
    expect(s.fwmark).toBe(0x51820);
    const p = device.peer(peer)!;
    expect(p.allowedIps.map(formatCidr)).toEqual(['100.64.1.0/24']);
    expect(p.endpoint && formatEndpoint(p.endpoint)).toBe('198.18.0.2:51820');
    expect(p.persistentKeepaliveInterval).toBe(25);
    // `wg set … allowed-ips` replaces the list (it sends replace_allowed_ips=true).
    await wg('set', name, 'peer', b64(peer), 'allowed-ips', '100.64.2.0/24,fd00::2/128');
    expect(device.peer(peer)!.allowedIps.map(formatCidr)).toEqual(['100.64.2.0/24', 'fd00::2/128']);
    const last = device.transactions.at(-1)!;
    expect(last.peers?.[0]?.replaceAllowedIps).toBe(true);
  });

  it('wg show dump and showconf read everything back, counters and handshake time included', async () => {
    const handshake = Date.now() - 42_000;
    device.setStats(peer, { rxBytes: 123456, txBytes: 654321, lastHandshakeEpochMs: handshake });
    const dump = (await wg('show', name, 'dump')).trimEnd().split('\n').map((l) => l.split('\t'));
    expect(dump[0]).toEqual([b64(priv), b64(pub), '51999', '0x51820']);
    expect(dump[1]).toEqual([b64(peer), '(none)', '198.18.0.2:51820', '100.64.2.0/24,fd00::2/128', String(Math.floor(handshake / 1000)), '123456', '654321', '25']);
    const conf = await wg('showconf', name);
    expect(conf).toContain(`PrivateKey = ${b64(priv)}`);
    expect(conf).toContain('ListenPort = 51999');
    expect(conf).toContain('FwMark = 0x51820');
    expect(conf).toContain(`PublicKey = ${b64(peer)}`);
    expect(conf).toContain('AllowedIPs = 100.64.2.0/24, fd00::2/128');
    expect(conf).toContain('Endpoint = 198.18.0.2:51820');
    expect(conf).toContain('PersistentKeepalive = 25');
    const show = await wg('show', name);
    expect(show).toMatch(/latest handshake: 4\d seconds ago/);
    expect(show).toContain(`public key: ${b64(pub)}`);
  });

  it('wg set … remove', async () => {
    await wg('set', name, 'peer', b64(peer2), 'allowed-ips', '100.64.9.0/24');
    expect(device.peer(peer2)).toBeDefined();
    await wg('set', name, 'peer', b64(peer2), 'remove');
    expect(device.peer(peer2)).toBeUndefined();
    expect(device.peer(peer)).toBeDefined();
  });

  it('wg setconf replaces everything; wg addconf adds; wg syncconf converges', async () => {
    const psk = generatePrivateKey();
    const conf1 = join(work, 'one.conf');
    writeFileSync(
      conf1,
      `[Interface]\nPrivateKey = ${b64(priv)}\nListenPort = 51998\n\n[Peer]\nPublicKey = ${b64(peer2)}\nPresharedKey = ${b64(psk)}\nAllowedIPs = 100.64.3.0/24, fd00:3::/64\nEndpoint = [fd00::9]:51820\n`,
    );
    await wg('setconf', name, conf1);
    let s = device.snapshot();
    expect(s.listenPort).toBe(51998);
    expect(s.fwmark).toBe(0); // setconf sends fwmark=0 when the file has none
    expect(s.peers.map((p) => toHex(p.publicKey))).toEqual([toHex(peer2)]);
    expect(s.peers[0]!.presharedKey).toEqual(psk);
    expect(s.peers[0]!.allowedIps.map(formatCidr)).toEqual(['100.64.3.0/24', 'fd00:3::/64']);
    expect(formatEndpoint(s.peers[0]!.endpoint!)).toBe('[fd00::9]:51820');

    const conf2 = join(work, 'two.conf');
    writeFileSync(conf2, `[Peer]\nPublicKey = ${b64(peer)}\nAllowedIPs = 100.64.4.0/24\n`);
    await wg('addconf', name, conf2);
    expect(device.snapshot().peers.length).toBe(2);

    // syncconf: peer2 loses an allowed IP and its PSK, peer goes away, a new one arrives.
    const peer3 = publicKeyOf(generatePrivateKey());
    const conf3 = join(work, 'three.conf');
    writeFileSync(
      conf3,
      `[Interface]\nPrivateKey = ${b64(priv)}\nListenPort = 51998\n\n[Peer]\nPublicKey = ${b64(peer2)}\nAllowedIPs = 100.64.3.0/24\n\n[Peer]\nPublicKey = ${b64(peer3)}\nAllowedIPs = 100.64.5.0/24\n`,
    );
    await wg('syncconf', name, conf3);
    s = device.snapshot();
    expect(s.peers.map((p) => toHex(p.publicKey)).sort()).toEqual([toHex(peer2), toHex(peer3)].sort());
    expect(device.peer(peer2)!.allowedIps.map(formatCidr)).toEqual(['100.64.3.0/24']);
    // Newer wg (after 1.0.20210914) also sends preshared_key=0 for a PSK the file dropped.
    const sent = device.transactions.at(-1)!.peers!.find((p) => toHex(p.publicKey) === toHex(peer2))!;
    expect(device.peer(peer2)!.presharedKey).toEqual(sent.presharedKey ?? psk);
    expect(device.peer(peer3)!.allowedIps.map(formatCidr)).toEqual(['100.64.5.0/24']);
    // And showconf is now what syncconf asked for.
    const conf = await wg('showconf', name);
    expect(conf).not.toContain(b64(peer));
    expect(conf).toContain(`PublicKey = ${b64(peer3)}`);
  });

  it('a failing set makes wg exit non-zero with the errno as a message, and changes nothing', async () => {
    const before = formatGet(device.snapshot());
    const inUse = await wgFails('set', name, 'listen-port', '9', 'peer', b64(peer), 'allowed-ips', '10.9.9.0/24');
    expect(inUse.code).not.toBe(0);
    expect(inUse.stderr).toMatch(/Unable to modify interface: Address already in use/);
    device.failNext = new ConfigError('rejected', EINVAL);
    const invalid = await wgFails('set', name, 'fwmark', '7');
    expect(invalid.code).not.toBe(0);
    expect(invalid.stderr).toMatch(/Unable to modify interface: Invalid argument/);
    expect(formatGet(device.snapshot())).toBe(before);
  });

  it('a second server for the same name is refused while wg uses the first', async () => {
    const other = new UapiServer();
    await expect(other.listen(name, new FakeDevice())).rejects.toThrow(/unix socket in use/);
    expect(existsSync(`/var/run/wireguard/${name}.sock`)).toBe(true);
  });
});
