/**
 * Secrets (issue 7, item 5), with real daemons in namespaces:
 *
 * 1. Private and preshared keys never appear in logs, errors or /metrics. Two wgts daemons run
 *    with LOG_LEVEL=debug (every byte of their stdout and stderr kept raw); one is configured by
 *    `wg setconf` from a config file, the other by `wg set` with key files, both with preshared
 *    keys; they handshake, carry pings, change preshared keys and handshake again. Hostile UAPI
 *    requests carrying key material go to the socket. `wg show` (keys "(hidden)") and `wgts show`
 *    are run. A mesh agent (MeshAgent with a one-peer source, configuring a third daemon) creates
 *    its key, serves /metrics, rotates its key and restarts on it; `wgts mesh` meets a readable
 *    key file. Then every captured output is searched for every secret in every encoding a leak
 *    could take — hex, base64 (each alignment), base64url, raw bytes, decimal lists, whole or any
 *    8-byte piece — and the test fails on any hit.
 * 4. The UAPI socket refuses non-root peers: 0600 in a 0700 directory even when the daemon starts
 *    with umask 000; uid 65534 gets EACCES both through the directory and through a hard link to
 *    the socket placed in an open directory (so each layer holds alone); root connects.
 *
 * Key files (2) and zeroing (3) are in test/unit/secrets.test.ts.
 */
import { chmodSync, existsSync, linkSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generatePrivateKey, publicKeyOf } from '../../src/cli/keys.ts';
import { uapiRequest } from '../../src/device/uapi-client.ts';
import { keyFromBase64, keyToBase64, toHex } from '../../src/util/hex.ts';
import type { TrackedProcess, VethPair } from './helpers/netns.ts';
import { linkState, NetnsBed, skipUnlessRoot, waitFor } from './helpers/netns.ts';
import { configureInterface, NODE, ping, REPO_ROOT, waitForPing, WGTS_CLI, WgtsDaemon } from './helpers/wgts.ts';
import { UAPI_DIRECTORY } from './helpers/wireguard-go.ts';
import type { Secret } from '../helpers/leaks.ts';
import { findLeaks } from '../helpers/leaks.ts';

// ---------------------------------------------------------------------------------------------
// Daemons whose every output byte is kept

interface CapturedDaemon {
  readonly daemon: WgtsDaemon;
  readonly proc: TrackedProcess;
  /** stdout and stderr, raw, in arrival order. */
  output(): Buffer;
}

/**
 * `wgts -f <ifname>` with LOG_LEVEL=debug under umask 000 (so the socket and directory modes
 * cannot come from the umask), its output read raw from the first byte.
 */
async function startCaptured(bed: NetnsBed, ns: string): Promise<CapturedDaemon> {
  const ifname = bed.ifname('wsec');
  const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'debug' };
  delete env.WGTS_WORKERS;
  const proc = bed.spawn(ns, 'sh', ['-c', 'umask 000; exec "$0" "$@"', NODE, WGTS_CLI, '-f', ifname], { env, stdio: 'pipe' });
  const chunks: Buffer[] = [];
  proc.child.stdout?.on('data', (chunk: Buffer) => chunks.push(chunk));
  proc.child.stderr?.on('data', (chunk: Buffer) => chunks.push(chunk));
  const daemon = new WgtsDaemon(bed, ns, ifname, proc);
  bed.trackPath(daemon.socketPath);
  await waitFor(
    async () => {
      if (proc.hasExited()) throw new Error(`wgts ${ifname} exited: ${Buffer.concat(chunks).toString()}`);
      if (!existsSync(daemon.socketPath) || (await linkState(ns, ifname)) === undefined) return false;
      return (await uapiRequest(ifname, 'get=1\n\n', undefined, 2_000)).errno === 0;
    },
    { timeoutMs: 20_000, intervalMs: 25, what: `wgts ${ifname} ready` },
  );
  return { daemon, proc, output: () => Buffer.concat(chunks) };
}

/** One raw exchange on a UAPI socket: what the server sent until it closed the connection. */
function exchange(path: string, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path });
    let text = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer to ${JSON.stringify(request.slice(0, 16))}`));
    }, 10_000);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.end(request));
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(text);
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Connects to a unix socket as uid/gid 65534 with no groups; resolves with "CONNECTED" or "ERROR <code>". */
async function connectAsNobody(bed: NetnsBed, path: string): Promise<string> {
  // python3 from the system, not our Node: the checkout (and node_modules/node) may sit in a
  // directory uid 65534 cannot enter, which would fail for the wrong reason.
  const script =
    'import errno, socket, sys\n' +
    's = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n' +
    'try:\n' +
    '    s.connect(sys.argv[1]); print("CONNECTED")\n' +
    'except OSError as e:\n' +
    '    print("ERROR " + errno.errorcode.get(e.errno, str(e.errno)))\n';
  // env -i: our environment may carry a library path (LD_LIBRARY_PATH) into root-only directories.
  const result = await bed.exec(undefined, 'setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', 'env', '-i', '/usr/bin/python3', '-c', script, path], { allowFailure: true, timeoutMs: 20_000 });
  return `${result.stdout.trim()}${result.stderr.trim() ? ` (stderr: ${result.stderr.trim()})` : ''}`;
}

function b64(bytes: Uint8Array): string {
  return keyToBase64(bytes);
}

const MESH_SCRIPT = String.raw`
import { copyFileSync } from 'node:fs';
import { createRequire } from 'node:module';
const [repo, keyFile, ifname, selfAddress, peerPublicKey, peerHost, metricsListen, rotate] = process.argv.slice(2);
const pino = createRequire(repo + '/package.json')('pino');
const { MeshAgent } = await import(repo + '/src/mesh/agent.ts');
const { keyFromBase64 } = await import(repo + '/src/util/hex.ts');
const { parseCidr } = await import(repo + '/src/util/ip.ts');
const logger = pino({ level: 'debug', base: { component: 'wgts-mesh', node: 'node-c' } }, pino.destination(2));
const state = {
  peers: [{ name: 'node-a', publicKey: keyFromBase64(peerPublicKey), endpoint: { host: peerHost, port: 51820 }, allowedIps: [parseCidr('100.64.1.1/32')], persistentKeepalive: 5 }],
  unencrypted: [], blackholed: [], synced: true,
};
const source = {
  start: async () => {},
  current: () => state,
  self: () => ({ name: 'node-c', underlayAddress: selfAddress, interfaceAddresses: [parseCidr('100.64.1.3/32')], localPrefixes: [] }),
  publish: async () => {},
  exemptions: () => [],
  stop: async () => {},
};
const agent = new MeshAgent({ source, ifname, listenPort: 51820, keyFile, hostEncryption: false, strict: false, metricsListen, logger });
const base = 'http://' + metricsListen;
const scrape = async (tag) => {
  for (const path of ['/metrics', '/healthz', '/readyz']) {
    const response = await fetch(base + path);
    process.stdout.write(JSON.stringify({ tag, path, status: response.status, body: await response.text() }) + '\n');
  }
};
const ready = async () => {
  const deadline = Date.now() + 20000;
  while (!agent.metrics.ready) {
    if (Date.now() > deadline) throw new Error('the agent never became ready');
    await new Promise((r) => setTimeout(r, 20));
  }
};
await agent.start();
await ready();
await scrape('start');
if (rotate === 'rotate') {
  copyFileSync(keyFile, keyFile + '.first'); // for the test to know the first key; never printed
  await agent.rotateKey();
  await ready();
  await scrape('rotated');
}
await agent.stop();
process.stdout.write('DONE\n');
process.exit(0);
`;

describe.skipIf(skipUnlessRoot('secrets'))('secrets: no key material in logs, errors or /metrics; the UAPI socket refuses non-root', () => {
  const bed = new NetnsBed('sec');
  let nsA: string;
  let nsB: string;
  let nsC: string;
  let ab: VethPair;
  let ca: VethPair;
  let A: CapturedDaemon;
  let B: CapturedDaemon;
  /** Every secret so far: each test searches its own outputs for all of them. */
  const secrets: Secret[] = [];
  const secret = (name: string, bytes: Uint8Array = generatePrivateKey()): Uint8Array => {
    secrets.push({ name, bytes });
    return bytes;
  };

  beforeAll(async () => {
    await bed.sweepStale();
    nsA = await bed.createNamespace('a');
    nsB = await bed.createNamespace('b');
    nsC = await bed.createNamespace('c');
    ab = await bed.createVethPair(nsA, nsB);
    ca = await bed.createVethPair(nsC, nsA);
    A = await startCaptured(bed, nsA);
    B = await startCaptured(bed, nsB);
  });

  afterAll(async () => {
    await bed.cleanup();
  });

  it('1. keys configured by wg setconf and wg set, handshakes and traffic, hostile UAPI requests, wg show and wgts show: no key material in any output', async () => {
    /** Everything any process or answer produced in this test, by name. */
    const outputs: Record<string, string | Uint8Array> = {};
    const privA = secret('A private key');
    const privB = secret('B private key');
    const pskAB = secret('A–B preshared key');
    const pskGhost = secret('preshared key of a peer that never answers');
    const pubA = publicKeyOf(privA);
    const pubB = publicKeyOf(privB);
    const ghost = publicKeyOf(generatePrivateKey());
    const dir = bed.tempDir();

    // A: wg setconf from a config file.
    const conf = join(dir, 'a.conf');
    writeFileSync(
      conf,
      [
        '[Interface]',
        `PrivateKey = ${b64(privA)}`,
        'ListenPort = 51820',
        '',
        '[Peer]',
        `PublicKey = ${b64(pubB)}`,
        `PresharedKey = ${b64(pskAB)}`,
        `Endpoint = ${ab.b.address4}:51820`,
        'AllowedIPs = 100.64.0.2/32',
        '',
        '[Peer]',
        `PublicKey = ${b64(ghost)}`,
        `PresharedKey = ${b64(pskGhost)}`,
        'Endpoint = 198.18.250.1:51820',
        'AllowedIPs = 100.64.0.9/32',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    const setconf = await bed.exec(nsA, 'wg', ['setconf', A.daemon.ifname, conf]);
    outputs['wg setconf'] = setconf.stdout + setconf.stderr;
    await bed.exec(nsA, 'ip', ['addr', 'add', '100.64.0.1/24', 'dev', A.daemon.ifname]);
    await bed.exec(nsA, 'ip', ['link', 'set', A.daemon.ifname, 'up']);
    // B: wg set with key files (configureInterface writes them 0600).
    await configureInterface(bed, nsB, B.daemon.ifname, {
      privateKey: b64(privB),
      listenPort: 51820,
      peers: [{ publicKey: b64(pubA), presharedKey: b64(pskAB), endpoint: `${ab.a.address4}:51820`, allowedIps: ['100.64.0.1/32'] }],
      addresses: ['100.64.0.2/24'],
    });

    // Handshake and traffic; the ghost peer gets initiations that go nowhere.
    await waitForPing(bed, nsA, '100.64.0.2', 15_000);
    const pings = await ping(bed, nsA, '100.64.0.2', { count: 10, intervalSeconds: 0.05 });
    expect(pings.received).toBe(10);
    await ping(bed, nsA, '100.64.0.9', { count: 1, waitSeconds: 1 });
    const firstHandshake = (await A.daemon.peer(b64(pubB))).latestHandshake;
    expect(firstHandshake).toBeGreaterThan(0);

    // New preshared keys on both sides: a second handshake under them.
    const psk2 = secret('A–B preshared key, changed');
    const pskFile = join(dir, 'psk2');
    writeFileSync(pskFile, `${b64(psk2)}\n`, { mode: 0o600 });
    outputs['wg set psk A'] = (await bed.exec(nsA, 'wg', ['set', A.daemon.ifname, 'peer', b64(pubB), 'preshared-key', pskFile])).stderr;
    outputs['wg set psk B'] = (await bed.exec(nsB, 'wg', ['set', B.daemon.ifname, 'peer', b64(pubA), 'preshared-key', pskFile])).stderr;
    await waitForPing(bed, nsA, '100.64.0.2', 15_000);
    expect((await ping(bed, nsB, '100.64.0.1', { count: 5, intervalSeconds: 0.05 })).received).toBe(5);

    // Hostile UAPI requests: key material on wrong lines, malformed, in the wrong section,
    // as a key name, as an invalid operation. Each set is refused with an errno alone.
    const privHex = toHex(privA);
    const pskHex = toHex(psk2);
    const P = `public_key=${toHex(pubB)}`;
    const hostileSets: string[][] = [
      [P, `private_key=${privHex}`],
      [`preshared_key=${pskHex}`],
      [`private_key=${privHex}00`],
      [`private_key=${privHex.slice(2)}`],
      [`private_key=${privHex.slice(0, 30)}zz${privHex.slice(32)}`],
      [`private_key=${b64(privA)}`],
      [P, `preshared_key=${Buffer.from(psk2).toString('base64url')}`],
      [`PRIVATE_KEY=${privHex.toUpperCase()}`],
      [`${privHex}=1`],
      [P, `${pskHex}=true`],
      [privHex],
      [`listen_port=${privHex}`],
      [P, `endpoint=${b64(psk2)}`],
      [P, `allowed_ip=${Buffer.from(psk2).toString('base64url')}/32`],
      [`privkey=${privHex.slice(0, 32)}`],
      [`private_key=${privHex}`, `fwmark=${pskHex}`],
    ];
    const socket = A.daemon.socketPath;
    for (const [i, lines] of hostileSets.entries()) {
      const answer = await exchange(socket, `set=1\n${lines.join('\n')}\n\n`);
      expect(answer, `hostile set ${i}`).toMatch(/^errno=-\d+\n\n$/);
      outputs[`answer to hostile set ${i}`] = answer;
    }
    for (const [i, request] of [`private_key=${privHex}\n\n`, `${pskHex}\n`, `set=${privHex}\n\n`, `get=1\n${pskHex}\n\n`, `get=${b64(privA)}\n\n`].entries()) {
      outputs[`answer to invalid operation ${i}`] = await exchange(socket, request);
    }
    // The device is unharmed: same key, same preshared key (get=1 shows them to root, by design).
    const get = await uapiRequest(A.daemon.ifname, 'get=1\n\n');
    expect(get.lines).toContain(`private_key=${privHex}`);
    expect(get.lines).toContain(`preshared_key=${pskHex}`);

    // wg show prints "(hidden)" for both kinds of key; wgts show prints counters.
    for (const args of [['show'], ['show', A.daemon.ifname], ['show', 'all']]) {
      const r = await bed.exec(nsA, 'wg', args);
      outputs[`wg ${args.join(' ')}`] = r.stdout + r.stderr;
    }
    expect(outputs[`wg show ${A.daemon.ifname}`]).toMatch(/private key: \(hidden\)/);
    expect(outputs[`wg show ${A.daemon.ifname}`]).toMatch(/preshared key: \(hidden\)/);
    for (const [ns, d] of [[nsA, A], [nsB, B]] as const) {
      for (const extra of [[], ['--json']]) {
        const r = await bed.exec(ns, NODE, [WGTS_CLI, 'show', d.daemon.ifname, ...extra]);
        outputs[`wgts show ${d.daemon.ifname} ${extra.join(' ')}`] = r.stdout + r.stderr;
      }
    }
    expect(outputs[`wgts show ${A.daemon.ifname} --json`]).toMatch(/"handshake/);

    // Stop both daemons (their shutdown is logged too), then search everything.
    await A.daemon.stop();
    await B.daemon.stop();
    outputs['daemon A stdout+stderr'] = A.output();
    outputs['daemon B stdout+stderr'] = B.output();
    const logA = A.output().toString();
    // The logs are not empty: debug lines, the refused requests, the shutdown are all there.
    expect(logA).toMatch(/sending handshake initiation/);
    expect(logA).toMatch(/bad UAPI request/);
    expect(logA.match(/bad UAPI request/g)!.length).toBeGreaterThanOrEqual(hostileSets.length + 4);
    expect(logA).toMatch(/shutting down/);
    expect(findLeaks(outputs, secrets)).toEqual([]);
  });

  it('1. the mesh agent: creates its key, logs public keys only, /metrics has no key material, rotation and restart too; `wgts mesh` refuses a readable key without showing it', async () => {
    const outputs: Record<string, string | Uint8Array> = {};
    const C = await startCaptured(bed, nsC);
    const dir = bed.tempDir();
    const keyFile = join(dir, 'state', 'private.key');
    const script = join(dir, 'mesh.mjs');
    writeFileSync(script, MESH_SCRIPT);
    // Agent peer: A's side of the c–a link (A has no such peer; the handshake just goes unanswered).
    const peerKey = b64(publicKeyOf(generatePrivateKey()));
    const metricsListen = '127.0.0.1:9586';
    const runAgent = async (mode: string): Promise<string> => {
      const r = await bed.exec(nsC, NODE, [script, REPO_ROOT, keyFile, C.daemon.ifname, ca.a.address4, peerKey, ca.b.address4, metricsListen, mode], { timeoutMs: 60_000, allowFailure: true });
      outputs[`mesh agent (${mode}) stdout`] = r.stdout;
      outputs[`mesh agent (${mode}) stderr`] = r.stderr;
      expect(r.code, `agent (${mode}):\n${r.stdout}\n${r.stderr}`).toBe(0);
      expect(r.stdout).toMatch(/DONE/);
      return r.stdout + r.stderr;
    };

    const first = await runAgent('rotate');
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'state')).mode & 0o777).toBe(0o700);
    const key1 = keyFromBase64(readFileSync(`${keyFile}.first`, 'utf8'));
    rmSync(`${keyFile}.first`);
    const key2 = keyFromBase64(readFileSync(keyFile, 'utf8'));
    secret('mesh node key', key1);
    secret('mesh node key after rotation', key2);
    expect(first).toMatch(/generated a node key/);
    expect(first).toContain(b64(publicKeyOf(key1)));
    expect(first).toMatch(/rotating the node key/);
    expect(first).toContain(b64(publicKeyOf(key2)));
    expect(first).toMatch(/wgts_peers_configured 1/);
    expect(first).toMatch(/wgts_key_rotations_total 1/);
    // The data plane did get the key (over UAPI, where root may read it back).
    expect((await uapiRequest(C.daemon.ifname, 'get=1\n\n')).lines).toContain(`private_key=${toHex(key2)}`);

    const second = await runAgent('restart');
    expect(second).toMatch(/loaded the node key/);
    expect(second).toContain(b64(publicKeyOf(key2)));

    // `wgts mesh` with a key file others can read: refused, the message names the file and mode only.
    const exposed = join(bed.tempDir(), 'exposed.key');
    const key3 = secret('a key file others could read');
    writeFileSync(exposed, `${b64(key3)}\n`);
    chmodSync(exposed, 0o644);
    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      'apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://198.18.250.1:6443\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n',
    );
    const refused = await bed.exec(nsC, NODE, [WGTS_CLI, 'mesh', '--kubeconfig', kubeconfig, '--node-name', 'node-c', '--key-file', exposed, '--metrics-listen', '127.0.0.1:9587', '--log-level', 'debug'], { allowFailure: true, timeoutMs: 30_000 });
    outputs['wgts mesh (readable key) stdout'] = refused.stdout;
    outputs['wgts mesh (readable key) stderr'] = refused.stderr;
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/readable by group or others \(mode 644\).*chmod 600/);
    expect(refused.stderr).not.toContain(b64(publicKeyOf(key3)));
    expect(statSync(exposed).mode & 0o777).toBe(0o644);

    await C.daemon.stop();
    outputs['daemon C stdout+stderr'] = C.output();
    expect(findLeaks(outputs, secrets)).toEqual([]);
  });

  it('4. the UAPI socket is 0600 in a 0700 directory; uid 65534 gets EACCES through either; root connects', async () => {
    const D = await startCaptured(bed, nsA);
    try {
      const dirStat = statSync(UAPI_DIRECTORY);
      expect(dirStat.isDirectory()).toBe(true);
      expect(dirStat.mode & 0o777).toBe(0o700);
      expect(dirStat.uid).toBe(0);
      const sockStat = statSync(D.daemon.socketPath);
      expect(sockStat.isSocket()).toBe(true);
      expect(sockStat.mode & 0o777).toBe(0o600);
      expect(sockStat.uid).toBe(0);

      // Root connects and is answered.
      expect((await uapiRequest(D.daemon.ifname, 'get=1\n\n')).errno).toBe(0);
      // uid 65534 through the 0700 directory.
      expect(await connectAsNobody(bed, D.daemon.socketPath)).toBe('ERROR EACCES');
      // uid 65534 through a hard link in a world-searchable directory: the socket's own 0600 refuses.
      const open = mkdtempSync(join('/run', `${bed.prefix}-`));
      bed.trackPath(open);
      chmodSync(open, 0o755);
      const link = join(open, 'uapi.sock');
      linkSync(D.daemon.socketPath, link);
      expect(await connectAsNobody(bed, link)).toBe('ERROR EACCES');
      // Controls: the same link works for root; and uid 65534 does connect to a socket there
      // that is 0666 — so the EACCES above is the socket's mode, not the setup.
      expect(await exchange(link, 'get=1\n\n')).toMatch(/errno=0\n\n$/);
      const control = createServer((c) => c.end());
      const controlPath = join(open, 'control.sock');
      await new Promise<void>((resolve) => control.listen(controlPath, resolve));
      try {
        chmodSync(controlPath, 0o666);
        expect(await connectAsNobody(bed, controlPath)).toBe('CONNECTED');
      } finally {
        await new Promise<void>((resolve) => control.close(() => resolve()));
      }
      rmSync(open, { recursive: true, force: true });
      // The daemon did not notice the link come and go.
      expect(D.proc.hasExited()).toBe(false);
      expect((await uapiRequest(D.daemon.ifname, 'get=1\n\n')).errno).toBe(0);
    } finally {
      await D.daemon.stop();
    }
    expect(findLeaks({ 'daemon D': D.output() }, secrets)).toEqual([]);
  });
});
