/**
 * The single executable (`npm run package` → out/wgts + the native addons beside it), run from
 * an empty directory with no node_modules anywhere above it and no Node on the PATH:
 * `--version`, `genkey | pubkey`, and two daemons from the executable in two namespaces,
 * configured with `wg set`, pinging and moving bytes through the tunnel:
 *
 *   A: `wgts <if>` (the wireguard-go style background launch), libsodium, 2 crypto workers
 *   B: `wgts -f <if>` from a copy without sodium-native.node: the noble fallback
 *
 * The package is built into a temporary directory (WGTS_PACKAGE_OUT), not out/.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publicKeyOf } from '../../src/cli/keys.ts';
import { keyFromBase64, keyToBase64 } from '../../src/util/hex.ts';
import type { TrackedProcess, VethPair } from './helpers/netns.ts';
import { linkState, namespacePids, NetnsBed, skipUnlessRoot, waitFor } from './helpers/netns.ts';
import { configureInterface, mbps, newKeyPair, ping, REPO_ROOT, transfer } from './helpers/wgts.ts';
import { UAPI_DIRECTORY } from './helpers/wireguard-go.ts';

const { version } = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
/** No node, no npm: what a machine without Node has. */
const BARE_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LOG_LEVEL: 'info' };

describe.skipIf(skipUnlessRoot('single executable'))('single executable (npm run package)', () => {
  const bed = new NetnsBed('sea');
  let out: string;
  let exe: string;
  let empty: string;

  beforeAll(async () => {
    await bed.sweepStale();
    out = bed.tempDir();
    const started = performance.now();
    const build = spawnSync('npm', ['run', 'package'], { cwd: REPO_ROOT, encoding: 'utf8', env: { ...process.env, WGTS_PACKAGE_OUT: out }, timeout: 100_000 });
    if (build.status !== 0) throw new Error(`npm run package failed (${build.status ?? build.signal}):\n${build.stdout}\n${build.stderr}`);
    process.stdout.write(`[sea] npm run package: ${((performance.now() - started) / 1000).toFixed(1)} s\n${build.stdout.split('\n').filter((l) => l.startsWith('package: done')).join('\n')}\n`);
    exe = join(out, 'wgts');
    empty = bed.tempDir();
  }, 110_000);

  afterAll(async () => {
    await bed.cleanup();
  });

  /** cmd args, run from the empty directory (`sh -c 'cd … && exec …'` keeps the PID). */
  const fromEmpty = (cmd: string, args: readonly string[]): [string, string[]] => ['sh', ['-c', 'cd "$0" && exec "$@"', empty, cmd, ...args]];
  const runExe = (args: string[], input?: string) => spawnSync(exe, args, { cwd: empty, env: BARE_ENV, encoding: 'utf8', ...(input === undefined ? {} : { input }), timeout: 20_000 });

  it('ships the executable and the native addons, nothing else', () => {
    const listing = spawnSync('ls', ['-A', out], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).sort();
    expect(listing).toEqual(['sodium-native.node', 'wgts', 'wgts_native.node']);
    expect(resolve(empty)).not.toContain(REPO_ROOT);
  });

  it('--version, genkey | pubkey and mesh --help, from an empty directory without Node', () => {
    const v = runExe(['--version']);
    expect(v.status, v.stderr).toBe(0);
    expect(v.stdout.trim()).toBe(version);
    const key = runExe(['genkey']);
    expect(key.status, key.stderr).toBe(0);
    expect(key.stdout).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
    const pub = runExe(['pubkey'], key.stdout);
    expect(pub.status, pub.stderr).toBe(0);
    expect(pub.stdout.trim()).toBe(keyToBase64(publicKeyOf(keyFromBase64(key.stdout))));
    const mesh = runExe(['mesh', '--help']);
    expect(mesh.stdout).toContain('--peers <file>');
  });

  it('two daemons from the executable, configured with wg set: ping and TCP through the tunnel (libsodium ↔ noble fallback)', async () => {
    const a = await bed.createNamespace('a');
    const b = await bed.createNamespace('b');
    const link: VethPair = await bed.createVethPair(a, b);
    const ifA = bed.ifname('sea');
    const ifB = bed.ifname('sea');
    for (const ifname of [ifA, ifB]) bed.trackPath(join(UAPI_DIRECTORY, `${ifname}.sock`));

    // B: a copy of the package without libsodium, in the foreground.
    const noSodium = join(bed.tempDir(), 'bin');
    mkdirSync(noSodium);
    for (const f of ['wgts', 'wgts_native.node']) copyFileSync(join(out, f), join(noSodium, f));
    spawnSync('chmod', ['755', join(noSodium, 'wgts')]);
    const daemonB: TrackedProcess = bed.spawn(b, ...fromEmpty(join(noSodium, 'wgts'), ['-f', ifB]), { env: BARE_ENV });

    // A: like wireguard-go, `wgts <if>` returns once the daemon is up, which stays in the background.
    const launch = await bed.exec(a, ...fromEmpty(exe, [ifA]), { env: { ...BARE_ENV, WGTS_WORKERS: '2', WGTS_LOG_FILE: join(empty, 'a.log') }, timeoutMs: 30_000 });
    expect(launch.code).toBe(0);
    for (const pid of await namespacePids(a)) bed.trackPid(pid, `wgts ${ifA}`);
    await waitFor(async () => (await linkState(b, ifB)) !== undefined && daemonB.output().includes('UAPI listening'), {
      timeoutMs: 20_000,
      what: `wgts -f ${ifB}\n${daemonB.output()}`,
    });
    expect(await linkState(a, ifA)).toBeDefined();

    const keys = [newKeyPair(), newKeyPair()] as const;
    await configureInterface(bed, a, ifA, {
      privateKey: keys[0].privateKey,
      listenPort: 51820,
      peers: [{ publicKey: keys[1].publicKey, endpoint: `${link.b.address4}:51820`, allowedIps: ['100.64.61.2/32'] }],
      addresses: ['100.64.61.1/24'],
    });
    await configureInterface(bed, b, ifB, {
      privateKey: keys[1].privateKey,
      listenPort: 51820,
      peers: [{ publicKey: keys[0].publicKey, endpoint: `${link.a.address4}:51820`, allowedIps: ['100.64.61.1/32'] }],
      addresses: ['100.64.61.2/24'],
    });
    const diagnostics = (): string => `--- A log\n${readFileSync(join(empty, 'a.log'), 'utf8').slice(-3000)}\n--- B output\n${daemonB.output().slice(-3000)}`;
    try {
      const r = await ping(bed, a, '100.64.61.2', { count: 3, waitSeconds: 5 });
      expect(r.received, r.stdout).toBe(3);
      const back = await ping(bed, b, '100.64.61.1', { count: 3, waitSeconds: 5 });
      expect(back.received, back.stdout).toBe(3);
      const { sent, received } = await transfer(bed, { from: a, to: b, address: '100.64.61.2', bytes: 20 * 1024 * 1024, timeoutMs: 60_000 });
      expect(received.sha256).toBe(sent.sha256);
      process.stdout.write(`[sea] 20 MiB A (sodium, 2 workers) → B (noble): ${mbps(received)} Mbit/s\n`);
      const show = (await bed.exec(a, 'wg', ['show', ifA, 'latest-handshakes'])).stdout;
      expect(show).toContain(keys[1].publicKey);
      // A ran on libsodium with its worker pool; B fell back to noble, saying so once.
      const logA = readFileSync(join(empty, 'a.log'), 'utf8');
      expect(logA).toMatch(/"crypto":"sodium","workers":2/);
      expect(daemonB.output()).toMatch(/sodium-native unavailable .*using the pure-TypeScript noble backend/);
      expect(daemonB.output()).toMatch(/"crypto":"noble"/);
    } catch (err) {
      process.stderr.write(diagnostics());
      throw err;
    }
  });
});
