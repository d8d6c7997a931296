/**
 * Secrets (issue 7, item 5), the parts that need no root:
 *
 * 1. Key material never reaches an error message or a log line: UAPI set/get parse errors and
 *    the UAPI server's answers and log for hostile requests (a private key on a wrong line, in a
 *    key name, malformed, base64/base64url instead of hex, as an invalid operation), the mesh
 *    agent's key logs and /metrics. Every captured text is searched for each secret in every
 *    encoding a leak could take (findLeaks below), including partial runs.
 * 2. Key files: created 0600 in a 0700 directory; refused, with a clear message and unread, when
 *    group or others may read them.
 * 3. Key material is zeroed when it is retired: transport keypairs after rotation and after the
 *    ZeroKeys timer (3 × REJECT_AFTER_TIME, fake clock), handshake state after deriving, the
 *    crypto batches' key copies, a replaced private key, a removed peer's preshared key.
 *
 * The root-only half (a real daemon, wg, the UAPI socket's permissions) is test/netns/secrets.test.ts.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { generatePrivateKey, publicKeyOf } from '../../src/cli/keys.ts';
import { CryptoBatch, InlineExecutor, OP_SEAL } from '../../src/device/crypto-batch.ts';
import { Device } from '../../src/device/device.ts';
import type { Logger } from '../../src/device/logger.ts';
import type { Peer } from '../../src/device/peer.ts';
import { parseGet, parseSet, redactLine } from '../../src/device/uapi.ts';
import { UapiServer } from '../../src/device/uapi-server.ts';
import { WorkerPool } from '../../src/device/worker-pool.ts';
import { MeshAgent } from '../../src/mesh/agent.ts';
import { KeyFileError, loadOrCreateKey, writeKeyFile } from '../../src/mesh/keys.ts';
import { MeshMetrics } from '../../src/mesh/metrics.ts';
import type { MeshSource, MeshState } from '../../src/mesh/types.ts';
import { REJECT_AFTER_TIME, REKEY_AFTER_TIME, ZERO_KEYS_AFTER } from '../../src/noise/constants.ts';
import type { CryptoBackend } from '../../src/noise/crypto/backend.ts';
import { createBackend } from '../../src/noise/crypto/index.ts';
import type { HandshakeState } from '../../src/noise/handshake.ts';
import type { Keypair } from '../../src/noise/keypair.ts';
import { keyToBase64, toHex } from '../../src/util/hex.ts';
import { parseCidr } from '../../src/util/ip.ts';
import { ipv4Packet, MemoryNet, RecordingTun, tunBatch, waitFor } from '../helpers/memory-net.ts';
import { makePair, handshake as fullHandshake } from '../helpers/handshake.ts';
import type { Secret } from '../helpers/leaks.ts';
import { findLeaks } from '../helpers/leaks.ts';

const backend = createBackend('sodium');
const REPO = resolve(fileURLToPath(new URL('../..', import.meta.url)));

function secretKey(name: string): Secret {
  return { name, bytes: generatePrivateKey() };
}

function isZero(bytes: Uint8Array): boolean {
  return bytes.every((b) => b === 0);
}

const tempDirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'wgts-secrets-'));
  tempDirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

/** A Logger that keeps every line as pino would serialise it. */
function captureLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const at = (level: string) => (obj: object | string, msg?: string) => {
    lines.push(JSON.stringify(typeof obj === 'string' ? { level, msg: obj } : { level, ...obj, msg }));
  };
  return { lines, error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') };
}

describe('the leak scanner', () => {
  const secret = secretKey('k');
  const b = Buffer.from(secret.bytes);
  it.each([
    ['hex', b.toString('hex'), 'hex'],
    ['upper-case hex', b.toString('hex').toUpperCase(), 'hex'],
    ['base64', b.toString('base64'), 'base64'],
    ['base64 of a slice at another alignment', b.subarray(1, 20).toString('base64'), 'base64'],
    ['base64url', b.toString('base64url'), 'base64url'],
    ['JSON-escaped base64', JSON.stringify(b.toString('base64')).replaceAll('/', '\\/'), 'base64'],
    ['a cut-off hex key (8 bytes)', `line 3 "x=${b.toString('hex').slice(20, 36)}…"`, 'hex'],
    ['a serialised Uint8Array', JSON.stringify([...b]), 'decimal list'],
    ['util.inspect of a Uint8Array', `Uint8Array(32) [\n  ${[...b].join(',\n  ')}\n]`, 'decimal list'],
  ])('finds %s', (_what, text, encoding) => {
    // (A base64url window without "-" or "_" is also a base64 one: either name will do.)
    const found = findLeaks({ out: `before ${text} after` }, [secret]);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(new RegExp(`^k as ${encoding === 'base64url' ? 'base64' : encoding}`));
  });

  it('finds the raw bytes in binary output', () => {
    const out = Buffer.concat([Buffer.from('junk'), b.subarray(5, 15), Buffer.from('junk')]);
    expect(findLeaks({ out }, [secret])).toEqual(['k as raw in out']);
  });

  it('stays quiet for text without the secret (its public key included)', () => {
    const pub = Buffer.from(publicKeyOf(secret.bytes));
    const text = `public_key=${pub.toString('hex')} ${pub.toString('base64')} ${b.toString('hex').slice(0, 15)} errno=-22`;
    expect(findLeaks({ out: text }, [secret])).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// 1. errors and logs

const PRIV = secretKey('private key');
const PSK = secretKey('preshared key');
const SECRETS = [PRIV, PSK];
const privHex = toHex(PRIV.bytes);
const pskHex = toHex(PSK.bytes);
const PEER_PUB = toHex(publicKeyOf(generatePrivateKey()));
const P = `public_key=${PEER_PUB}`;

/** Set bodies (lines after set=1) that carry key material where it does not belong. */
const HOSTILE_SETS: [string, string[]][] = [
  ['private_key in a peer section', [P, `private_key=${privHex}`]],
  ['preshared_key in the device section', [`preshared_key=${pskHex}`]],
  ['private_key one character too long', [`private_key=${privHex}0`]],
  ['private_key one character short', [`private_key=${privHex.slice(1)}`]],
  ['private_key with a non-hex character', [`private_key=${privHex.slice(0, 40)}g${privHex.slice(41)}`]],
  ['private_key as base64', [`private_key=${keyToBase64(PRIV.bytes)}`]],
  ['preshared_key as base64url', [P, `preshared_key=${Buffer.from(PSK.bytes).toString('base64url')}`]],
  ['PRIVATE_KEY in capitals', [`PRIVATE_KEY=${privHex.toUpperCase()}`]],
  ['private key after leading spaces', [`   private_key=${privHex}`]],
  ['private_key without "="', [`private_key ${privHex}`]],
  ['private_key with a CR', [`private_key=${privHex}\r`]],
  ['the key as a key name', [`${privHex}=1`]],
  ['the key as a key name in a peer section', [P, `${pskHex}=true`]],
  ['the key alone on a line', [privHex]],
  ['the key as a listen_port', [`listen_port=${privHex}`]],
  ['a base64 key as an endpoint', [P, `endpoint=${keyToBase64(PSK.bytes)}`]],
  ['a base64url key (no padding) as an endpoint', [P, `endpoint=${Buffer.from(PSK.bytes).toString('base64url')}`]],
  ['an unpadded base64 key as an allowed_ip', [P, `allowed_ip=${keyToBase64(PSK.bytes).slice(0, 43)}`]],
  ['half a key under an unknown name', [`privkey=${privHex.slice(0, 32)}`]],
  ['a key split in two', [`fwmark=${privHex.slice(0, 32)} ${privHex.slice(32)}`]],
  ['a key name then a key', [`x${privHex}y=${pskHex}`]],
  ['a key after a valid key line', [`private_key=${privHex}`, `listen_port=${pskHex}`]],
];

describe('1. key material never appears in UAPI errors', () => {
  it.each(HOSTILE_SETS)('parseSet: %s', (_name, lines) => {
    let message = '';
    try {
      parseSet(lines);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).not.toBe('');
    expect(findLeaks({ message }, SECRETS)).toEqual([]);
  });

  it.each([
    ['a get answer with a malformed private_key', `private_key=${privHex}0\n`],
    ['a get answer with the key as a key name', `${privHex}=1\n`],
    ['a get answer with a preshared_key as a device key', `listen_port=1\nfoo${pskHex}=2\n`],
    ['a get answer with the key on a bad peer line', `${P}\nendpoint=${keyToBase64(PSK.bytes)}\n`],
  ])('parseGet: %s', (_name, text) => {
    expect(() => parseGet(text)).toThrow();
    let message = '';
    try {
      parseGet(text);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(findLeaks({ message }, SECRETS)).toEqual([]);
  });

  it('redactLine keeps what helps (names, short values, public keys) and hides key material', () => {
    expect(redactLine('listen_port=99999999999999999999999')).toBe('listen_port=99999999999999999999999');
    expect(redactLine('endpoint=198.18.0.1:99999')).toBe('endpoint=198.18.0.1:99999');
    expect(redactLine(`${P}`)).toBe(P);
    expect(redactLine(`listen_port=${privHex}`)).toBe('listen_port=<redacted>');
    expect(redactLine(`${privHex}=1`)).toBe('<redacted>=1');
    expect(redactLine(`endpoint=${Buffer.from(PSK.bytes).toString('base64url')}`)).toBe('endpoint=<redacted>');
  });

  describe('the UAPI server, answers and log', () => {
    let server: UapiServer | undefined;
    let device: Device | undefined;
    afterEach(async () => {
      await server?.close();
      device?.close();
      server = undefined;
      device = undefined;
    });

    /** One raw exchange: everything the server sent until it closed or answered. */
    function exchange(path: string, request: string): Promise<string> {
      return new Promise((resolveAnswer, reject) => {
        const socket = createConnection({ path });
        let text = '';
        const timer = setTimeout(() => {
          socket.destroy();
          reject(new Error(`no answer to ${JSON.stringify(request.slice(0, 20))}`));
        }, 5_000);
        socket.setEncoding('utf8');
        socket.on('connect', () => socket.end(request));
        socket.on('data', (chunk: string) => (text += chunk));
        socket.on('close', () => {
          clearTimeout(timer);
          resolveAnswer(text);
        });
        socket.on('error', () => {});
      });
    }

    it('makes its directory 0700 (even one that existed 0755) and its socket 0600, whatever the umask', async () => {
      const dir = join(tempDir(), 'wireguard');
      mkdirSync(dir, { mode: 0o755 });
      chmodSync(dir, 0o755);
      const net = new MemoryNet();
      device = new Device({ backend, tun: new RecordingTun(), openTransport: net.factory('198.18.0.3') });
      device.start(0);
      server = new UapiServer();
      const old = process.umask(0);
      try {
        await server.listen('wgsec3', device, { dir, watchIntervalMs: 0 });
      } finally {
        process.umask(old);
      }
      expect(statSync(dir).mode & 0o777).toBe(0o700);
      const socket = statSync(join(dir, 'wgsec3.sock'));
      expect(socket.isSocket()).toBe(true);
      expect(socket.mode & 0o777).toBe(0o600);
    });

    it('answers hostile requests with an errno only, and logs them redacted', async () => {
      const dir = tempDir();
      const log: string[] = [];
      const net = new MemoryNet();
      device = new Device({ backend, tun: new RecordingTun(), openTransport: net.factory('198.18.0.1') });
      device.start(0);
      server = new UapiServer();
      await server.listen('wgsec0', device, { dir, log: (m) => log.push(m), watchIntervalMs: 0 });
      const path = join(dir, 'wgsec0.sock');
      // A configured key and peer with a preshared key first: get=1 shows them (by design, to root).
      expect(await exchange(path, `set=1\nprivate_key=${privHex}\n${P}\npreshared_key=${pskHex}\nallowed_ip=100.64.0.2/32\n\n`)).toBe('errno=0\n\n');
      const answers: Record<string, string> = {};
      for (const [name, lines] of HOSTILE_SETS) {
        const answer = await exchange(path, `set=1\n${lines.join('\n')}\n\n`);
        expect(answer, name).toMatch(/^errno=-\d+\n\n$/);
        answers[name] = answer;
      }
      // Not a set at all: closed without an answer, and the log must not quote the key.
      for (const request of [`private_key=${privHex}\n\n`, `${privHex}\n\n`, `set=${pskHex}\n\n`, `get=1${privHex}\n\n`, `get=1\n${pskHex}\n\n`]) {
        answers[`invalid operation ${request.slice(0, 12)}`] = await exchange(path, request);
      }
      expect(log.length).toBeGreaterThanOrEqual(HOSTILE_SETS.length + 5);
      expect(findLeaks({ ...answers, log: log.join('\n') }, SECRETS)).toEqual([]);
      // The device still has its key: the hostile requests changed nothing (each failed whole).
      expect(toHex(device.snapshot().privateKey!)).toBe(privHex);
    });
  });

  it('MeshMetrics /metrics and the health endpoints carry no key material', async () => {
    const metrics = new MeshMetrics();
    const peers = [secretKey('peer 1 psk'), secretKey('peer 2 psk')];
    const snapshot = {
      privateKey: PRIV.bytes,
      listenPort: 51820,
      fwmark: 0x51820,
      peers: peers.map((psk, i) => ({
        publicKey: publicKeyOf(generatePrivateKey()),
        presharedKey: psk.bytes,
        endpoint: { host: `198.18.0.${i + 2}`, port: 51820 },
        lastHandshakeEpochMs: Date.now() - 1000,
        rxBytes: 1000 * i,
        txBytes: 2000 * i,
        persistentKeepaliveInterval: 25,
        allowedIps: [parseCidr(`100.64.0.${i + 2}/32`)],
      })),
    };
    // One peer named, one labelled by its public key.
    const names = new Map([[toHex(snapshot.peers[0]!.publicKey), 'node-b']]);
    metrics.observePeers(snapshot, names, 2, 0, Date.now());
    metrics.observeDrops({ drop_replay: 3, drop_mac1: 1, handshakes: 7 });
    metrics.ready = true;
    const server = await metrics.listen('127.0.0.1:0');
    try {
      const { port } = server.address() as AddressInfo;
      const bodies: Record<string, string> = {};
      for (const path of ['/metrics', '/healthz', '/readyz', `/metrics?key=x`]) {
        const response = await fetch(`http://127.0.0.1:${port}${path}`);
        bodies[path] = await response.text();
      }
      expect(bodies['/metrics']).toMatch(/wgts_peer_rx_bytes\{peer="node-b"\}/);
      expect(findLeaks(bodies, [PRIV, ...peers])).toEqual([]);
    } finally {
      await new Promise<void>((done) => server.close(() => done()));
    }
  });

  it('the mesh agent logs its public key only, on load and on rotation', async () => {
    const dir = tempDir();
    const keyFile = join(dir, 'state', 'private.key');
    const logger = captureLogger();
    const agent = new MeshAgent({ source: stubSource(), ifname: 'wgsec1', listenPort: 51820, keyFile, hostEncryption: false, strict: false, logger, uapiDir: dir });
    const first = loadOrCreateKey(keyFile).key;
    expect(logger.lines.join('\n')).toContain(keyToBase64(publicKeyOf(first)));
    // Rotation: the new key goes to the file, its public key to the log. (The data plane is
    // absent: the reconcile fails and says so, without key material.)
    await agent.rotateKey();
    const second = loadOrCreateKey(keyFile).key;
    expect(toHex(second)).not.toBe(toHex(first));
    expect(logger.lines.join('\n')).toContain(keyToBase64(publicKeyOf(second)));
    // Loading the existing key again.
    new MeshAgent({ source: stubSource(), ifname: 'wgsec1', listenPort: 51820, keyFile, hostEncryption: false, strict: false, logger, uapiDir: dir });
    const agentText = logger.lines.join('\n');
    expect(agentText).toMatch(/generated a node key/);
    expect(agentText).toMatch(/loaded the node key/);
    expect(findLeaks({ log: agentText }, [{ name: 'first key', bytes: first }, { name: 'rotated key', bytes: second }])).toEqual([]);
    await agent.stop();
  });
});

/** A MeshSource with one peer and nothing to watch. */
function stubSource(): MeshSource {
  const state: MeshState = { peers: [], unencrypted: [], blackholed: [], synced: true };
  return {
    start: async () => {},
    current: () => state,
    self: () => ({ name: 'self', underlayAddress: '198.18.0.1', interfaceAddresses: [], localPrefixes: [] }),
    publish: async () => {},
    exemptions: () => [],
    stop: async () => {},
  };
}

// ---------------------------------------------------------------------------------------------
// 2. key files

describe('2. key files: 0600 in a 0700 directory, refused when others may read them', () => {
  it('creates the key 0600 in a new 0700 directory, whatever the umask', () => {
    const dir = tempDir();
    const keyFile = join(dir, 'var', 'lib', 'wgts', 'private.key');
    const old = process.umask(0);
    try {
      const { key, created } = loadOrCreateKey(keyFile);
      expect(created).toBe(true);
      expect(statSync(keyFile).mode & 0o777).toBe(0o600);
      expect(statSync(join(dir, 'var', 'lib', 'wgts')).mode & 0o777).toBe(0o700);
      expect(readFileSync(keyFile, 'utf8')).toBe(`${keyToBase64(key)}\n`);
      // The second start loads the same key.
      const again = loadOrCreateKey(keyFile);
      expect(again.created).toBe(false);
      expect(toHex(again.key)).toBe(toHex(key));
    } finally {
      process.umask(old);
    }
  });

  it('leaves an existing directory alone (it may be /etc) and never writes through a leftover temp file', () => {
    const dir = join(tempDir(), 'keys');
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755);
    const keyFile = join(dir, 'private.key');
    // A leftover temp file with a wide mode, and one that is a symlink to elsewhere.
    const temp = `${keyFile}.${process.pid}.tmp`;
    writeFileSync(temp, 'old\n', { mode: 0o644 });
    chmodSync(temp, 0o644);
    writeKeyFile(keyFile, generatePrivateKey());
    expect(statSync(dir).mode & 0o777).toBe(0o755);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    const elsewhere = join(tempDir(), 'target');
    writeFileSync(elsewhere, 'untouched\n', { mode: 0o644 });
    symlinkSync(elsewhere, temp);
    writeKeyFile(keyFile, generatePrivateKey());
    expect(readFileSync(elsewhere, 'utf8')).toBe('untouched\n');
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(existsSync(temp)).toBe(false);
  });

  it.each([0o640, 0o604, 0o644, 0o660, 0o606, 0o620, 0o602])('refuses a key file with mode %o, saying why and how to fix it', (mode) => {
    const dir = tempDir();
    const keyFile = join(dir, 'private.key');
    const key = generatePrivateKey();
    writeFileSync(keyFile, `${keyToBase64(key)}\n`);
    chmodSync(keyFile, mode);
    let error: unknown;
    try {
      loadOrCreateKey(keyFile);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(KeyFileError);
    const message = (error as Error).message;
    expect(message).toContain(keyFile);
    expect(message).toContain(`mode ${mode.toString(8)}`);
    expect(message).toMatch(/readable by group or others.*chmod 600/);
    expect(findLeaks({ message }, [{ name: 'key', bytes: key }])).toEqual([]);
    // Refused, not replaced: the file and its mode are as they were.
    expect(statSync(keyFile).mode & 0o777).toBe(mode);
    expect(readFileSync(keyFile, 'utf8')).toBe(`${keyToBase64(key)}\n`);
  });

  it('does not read a refused key: a group-readable FIFO (reading it would block) is refused at once', () => {
    const dir = tempDir();
    const fifo = join(dir, 'private.key');
    expect(spawnSync('mkfifo', ['-m', '644', fifo]).status).toBe(0);
    const script = `import { loadOrCreateKey } from ${JSON.stringify(join(REPO, 'src/mesh/keys.ts'))};
      try { loadOrCreateKey(${JSON.stringify(fifo)}); console.log('LOADED'); } catch (err) { console.log(err.name + ': ' + err.message); }`;
    const result = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 10_000 });
    expect(result.signal, 'loadOrCreateKey blocked reading the FIFO').toBeNull();
    expect(result.stdout).toMatch(/^KeyFileError: .*readable by group or others \(mode 644\)/);
  });

  it('the mesh agent refuses a readable key before logging anything about it', () => {
    const dir = tempDir();
    const keyFile = join(dir, 'private.key');
    const key = generatePrivateKey();
    writeFileSync(keyFile, `${keyToBase64(key)}\n`, { mode: 0o600 });
    chmodSync(keyFile, 0o644);
    const logger = captureLogger();
    expect(() => new MeshAgent({ source: stubSource(), ifname: 'wgsec2', listenPort: 51820, keyFile, hostEncryption: false, strict: false, logger })).toThrow(KeyFileError);
    // Not even its public key: the agent never got as far as reading it.
    expect(logger.lines).toEqual([]);
  });

  it('an unreadable (malformed) key file is reported without its content', () => {
    const dir = tempDir();
    const keyFile = join(dir, 'private.key');
    const key = generatePrivateKey();
    writeFileSync(keyFile, `${toHex(key)}\n`, { mode: 0o600 }); // hex, not base64
    expect(() => loadOrCreateKey(keyFile)).toThrow(KeyFileError);
    try {
      loadOrCreateKey(keyFile);
    } catch (err) {
      expect(findLeaks({ message: (err as Error).message }, [{ name: 'key', bytes: key }])).toEqual([]);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 3. zeroing

interface Clock {
  t: number;
}

const devices: Device[] = [];
afterEach(() => {
  for (const d of devices.splice(0)) d.close();
});

/** Two devices over the in-memory underlay, a → b with a preshared key, on a fake clock. */
async function pair(clock: Clock, psk: Uint8Array) {
  const net = new MemoryNet();
  const make = (host: string) => {
    const tun = new RecordingTun();
    const device = new Device({ backend, tun, openTransport: net.factory(host), now: () => clock.t, epochMs: () => 1_700_000_000_000 + clock.t });
    device.start(51820);
    devices.push(device);
    return { device, tun };
  };
  const a = make('198.18.0.1');
  const b = make('198.18.0.2');
  await a.device.apply({ privateKey: generatePrivateKey() });
  await b.device.apply({ privateKey: generatePrivateKey() });
  await a.device.apply({ peers: [{ publicKey: b.device.identity!.publicKey, presharedKey: psk, endpoint: { host: '198.18.0.2', port: 51820 }, addAllowedIps: [parseCidr('100.64.0.2/32')] }] });
  await b.device.apply({ peers: [{ publicKey: a.device.identity!.publicKey, presharedKey: psk, addAllowedIps: [parseCidr('100.64.0.1/32')] }] });
  const peerAtA = [...a.device.peers.values()][0]!;
  const peerAtB = [...b.device.peers.values()][0]!;
  return { net, a, b, peerAtA, peerAtB };
}

function send(device: Device, from: string, to: string): void {
  const batch = tunBatch([ipv4Packet(from, to, 64)]);
  void device.handleTunPackets(batch.slab, batch.offsets, batch.lengths, batch.count);
}

function slots(peer: Peer): Keypair[] {
  return [peer.keypairs.current, peer.keypairs.previous, peer.keypairs.next].filter((k): k is Keypair => k !== undefined);
}

function handshakeCleared(hs: HandshakeState): boolean {
  return hs.phase === 'none' && isZero(hs.hash) && isZero(hs.chainingKey) && isZero(hs.localEphemeral) && isZero(hs.remoteEphemeral);
}

/** Runs a peer's timer now (what its setTimeout does when it fires). */
function fire(device: Device, peer: Peer): void {
  device['fire'](peer);
}

describe('3. key material is zeroed when it is retired', () => {
  it('handshake functions leave no hash, chaining key or ephemeral behind once the keys are derived', () => {
    const { a, b } = makePair(backend, generatePrivateKey());
    const { ka, kb } = fullHandshake(backend, a, b);
    expect(toHex(ka.sendKey)).toBe(toHex(kb.receiveKey));
    expect(isZero(ka.sendKey)).toBe(false);
    expect(handshakeCleared(a.peer.handshake)).toBe(true);
    expect(handshakeCleared(b.peer.handshake)).toBe(true);
    ka.zero();
    expect(isZero(ka.sendKey) && isZero(ka.receiveKey)).toBe(true);
  });

  it('handshake functions wipe their temporaries: every AEAD key, hash (AD) and DH result they used is zero afterwards', () => {
    const { a, b } = makePair(backend, generatePrivateKey());
    const used: { what: string; bytes: Uint8Array }[] = [];
    // A backend that remembers the buffers the handshake passes to it (the functions' own locals).
    const recording: CryptoBackend = {
      ...backend,
      x25519: (out, privateKey, publicKey) => {
        used.push({ what: 'DH result', bytes: out });
        return backend.x25519(out, privateKey, publicKey);
      },
      aeadSeal: (out, key, nonce, plaintext, ad) => {
        used.push({ what: 'AEAD key', bytes: key }, { what: 'hash', bytes: ad });
        return backend.aeadSeal(out, key, nonce, plaintext, ad);
      },
      aeadOpen: (out, key, nonce, ciphertext, ad) => {
        used.push({ what: 'AEAD key', bytes: key }, { what: 'hash', bytes: ad });
        return backend.aeadOpen(out, key, nonce, ciphertext, ad);
      },
    };
    const { ka, kb } = fullHandshake(recording, a, b);
    expect(toHex(ka.sendKey)).toBe(toHex(kb.receiveKey));
    expect(used.length).toBeGreaterThanOrEqual(12);
    for (const { what, bytes } of used) expect(isZero(bytes), `${what} left behind`).toBe(true);
  });

  it('after rotation every keypair that left its slots is zero; after REJECT_AFTER_TIME × 3 all are, and the handshake state too', async () => {
    const clock: Clock = { t: 1_000_000 };
    const { a, b, peerAtA, peerAtB } = await pair(clock, generatePrivateKey());
    /** Every keypair either side ever had, with its own key buffers (the very objects, not copies). */
    const seen = new Map<Keypair, { side: string; sendKey: Uint8Array; receiveKey: Uint8Array }>();
    const record = (): void => {
      for (const [side, peer] of [['a', peerAtA], ['b', peerAtB]] as const) {
        for (const kp of slots(peer)) if (!seen.has(kp)) seen.set(kp, { side, sendKey: kp.sendKey, receiveKey: kp.receiveKey });
      }
    };
    const check = (): { live: number; zeroed: number } => {
      let live = 0;
      let zeroed = 0;
      for (const [kp, { side, sendKey, receiveKey }] of seen) {
        const inSlot = slots(side === 'a' ? peerAtA : peerAtB).includes(kp);
        if (inSlot) {
          expect(isZero(sendKey) || isZero(receiveKey), `a keypair in use at ${side} was zeroed`).toBe(false);
          live++;
        } else {
          expect(isZero(sendKey), `retired send key at ${side}`).toBe(true);
          expect(isZero(receiveKey), `retired receive key at ${side}`).toBe(true);
          zeroed++;
        }
      }
      return { live, zeroed };
    };
    /** One session: a sends, both sides end up with the same current keypair. */
    const session = async (n: number): Promise<Keypair> => {
      const before = peerAtA.keypairs.current;
      send(a.device, '100.64.0.1', '100.64.0.2');
      await waitFor(() => {
        const ca = peerAtA.keypairs.current;
        const cb = peerAtB.keypairs.current;
        return ca !== undefined && ca !== before && cb !== undefined && toHex(ca.sendKey) === toHex(cb.receiveKey);
      }, 5_000, `session ${n}`);
      record();
      // Deriving wiped the handshake on both sides.
      expect(handshakeCleared(peerAtA.handshake)).toBe(true);
      expect(handshakeCleared(peerAtB.handshake)).toBe(true);
      return peerAtA.keypairs.current!;
    };

    const first = await session(1);
    const firstKeys = { sendKey: first.sendKey, receiveKey: first.receiveKey };
    const firstAtB = peerAtB.keypairs.current!;
    expect(check()).toEqual({ live: 2, zeroed: 0 });
    // Rotations: past REKEY_AFTER_TIME the initiator's next packet starts a new handshake.
    for (let n = 2; n <= 4; n++) {
      clock.t += REKEY_AFTER_TIME + 1;
      await session(n);
      check();
    }
    expect(isZero(firstKeys.sendKey) && isZero(firstKeys.receiveKey)).toBe(true);
    expect(isZero(firstAtB.sendKey) && isZero(firstAtB.receiveKey)).toBe(true);
    const afterRotation = check();
    expect(afterRotation.zeroed).toBeGreaterThanOrEqual(4);
    expect(afterRotation.live).toBeGreaterThanOrEqual(2);

    // Quiet, then the ZeroKeys deadline: 3 × REJECT_AFTER_TIME after the last session.
    expect(ZERO_KEYS_AFTER).toBe(3 * REJECT_AFTER_TIME);
    await new Promise((r) => setTimeout(r, 20)); // let the last keepalive land
    const held = [...seen.values()];
    clock.t += ZERO_KEYS_AFTER - 1;
    fire(a.device, peerAtA);
    fire(b.device, peerAtB);
    expect(held.some(({ sendKey }) => !isZero(sendKey)), 'keys wiped before their time').toBe(true);
    clock.t += 2;
    fire(a.device, peerAtA);
    fire(b.device, peerAtB);
    for (const { side, sendKey, receiveKey } of held) {
      expect(isZero(sendKey), `send key at ${side}`).toBe(true);
      expect(isZero(receiveKey), `receive key at ${side}`).toBe(true);
    }
    expect(slots(peerAtA)).toEqual([]);
    expect(slots(peerAtB)).toEqual([]);
    expect(handshakeCleared(peerAtA.handshake)).toBe(true);
    expect(handshakeCleared(peerAtB.handshake)).toBe(true);
    // Their indices went with them.
    expect(a.device.indices.size).toBe(0);
    expect(b.device.indices.size).toBe(0);
  });

  it('a removed peer takes its keypairs, preshared key and derived static secret with it', async () => {
    const clock: Clock = { t: 5_000_000 };
    const psk = generatePrivateKey();
    const { a, peerAtA } = await pair(clock, psk);
    send(a.device, '100.64.0.1', '100.64.0.2');
    await waitFor(() => peerAtA.keypairs.current, 5_000, 'a session');
    const kp = peerAtA.keypairs.current!;
    const held = [kp.sendKey, kp.receiveKey, peerAtA.presharedKey, peerAtA.keys!.staticStatic, peerAtA.keys!.presharedKey];
    expect(held.every((k) => !isZero(k))).toBe(true);
    await a.device.apply({ peers: [{ publicKey: peerAtA.publicKey, remove: true }] });
    for (const k of held) expect(isZero(k)).toBe(true);
    expect(isZero(psk), 'the caller’s own buffer is not the device’s to wipe').toBe(false);
  });

  it('a replaced private key and a replaced preshared key are wiped; close() wipes the last key', async () => {
    const clock: Clock = { t: 9_000_000 };
    const { a, peerAtA } = await pair(clock, generatePrivateKey());
    const oldIdentity = a.device.identity!;
    const oldPsk = peerAtA.presharedKey;
    const oldStatic = peerAtA.keys!.staticStatic;
    await a.device.apply({ peers: [{ publicKey: peerAtA.publicKey, presharedKey: generatePrivateKey() }] });
    expect(isZero(oldPsk)).toBe(true);
    expect(isZero(oldStatic)).toBe(true);
    const static2 = peerAtA.keys!.staticStatic;
    await a.device.apply({ privateKey: generatePrivateKey() });
    expect(isZero(oldIdentity.privateKey)).toBe(true);
    expect(isZero(static2)).toBe(true);
    // Setting the same key again keeps it (nothing to wipe).
    const current = a.device.identity!;
    await a.device.apply({ privateKey: Uint8Array.from(current.privateKey) });
    expect(a.device.identity).toBe(current);
    expect(isZero(current.privateKey)).toBe(false);
    a.device.close();
    expect(isZero(current.privateKey)).toBe(true);
    expect(a.device.snapshot().privateKey).toBeUndefined();
  });

  it('crypto batches keep no copy of a session key once the batch ran (inline)', () => {
    const executor = new InlineExecutor(backend, 8);
    const slab = new Uint8Array(8 * 256);
    const batch = executor.batchFor(slab);
    batch.reset();
    const key = generatePrivateKey();
    for (let i = 0; i < 4; i++) batch.add(OP_SEAL, i * 256, 64, key, i);
    expect(isZero(batch.keys)).toBe(false);
    executor.run(batch, slab);
    expect(batch.results.subarray(0, 4).every((n) => n === 64 + 16)).toBe(true);
    expect(isZero(batch.keys)).toBe(true);
  });

  it('crypto batches keep no copy of a session key once the batch ran (worker threads)', async () => {
    const pool = new WorkerPool(backend, 2, 64, 1);
    try {
      const slab = new Uint8Array(new SharedArrayBuffer(64 * 256));
      const batch = pool.batchFor(slab);
      expect(batch.buffer).toBeInstanceOf(SharedArrayBuffer);
      batch.reset();
      const key = generatePrivateKey();
      for (let i = 0; i < 48; i++) batch.add(OP_SEAL, i * 256, 100, key, i);
      await pool.run(batch, slab);
      expect(batch.results.subarray(0, 48).every((n) => n === 100 + 16)).toBe(true);
      expect(isZero(batch.keys)).toBe(true);
    } finally {
      pool.close();
    }
  });

  it('CryptoBatch is sized as the workers expect (a guard for the wipe above)', () => {
    expect(new CryptoBatch(4, false).keys.length).toBe(4 * 32);
  });
});

describe('writeKeyFile never narrows a directory it did not create', () => {
  it('leaves an existing 0755 directory as it was, and creates a missing one 0700', async () => {
    const { mkdtempSync, statSync, mkdirSync, chmodSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const { writeKeyFile: write } = await import('../../src/mesh/keys.ts');
    const { generatePrivateKey: gen } = await import('../../src/cli/keys.ts');
    const base = mkdtempSync(join(tmpdir(), 'wgts-keydir-'));
    const shared = join(base, 'shared');
    mkdirSync(shared);
    chmodSync(shared, 0o755);
    write(join(shared, 'node.key'), gen());
    expect(statSync(shared).mode & 0o777).toBe(0o755);
    expect(statSync(join(shared, 'node.key')).mode & 0o777).toBe(0o600);
    const fresh = join(base, 'fresh', 'deeper');
    write(join(fresh, 'node.key'), gen());
    expect(statSync(fresh).mode & 0o777).toBe(0o700);
  });
});
