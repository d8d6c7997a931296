/**
 * `npm run package`: wgts as a standalone executable (Node's Single Executable Application), in out/:
 *
 *   out/wgts                the Node 24 binary with wgts injected (runs with no Node, no node_modules)
 *   out/wgts_native.node    the TUN/UDP addon (build/Release), loaded from beside the executable
 *   out/sodium-native.node  libsodium (sodium-native's prebuild for this platform), likewise;
 *                           without it wgts falls back to the pure-TypeScript noble backend
 *
 * How:
 * 1. esbuild bundles src/cli.ts into one CommonJS script (SEA runs one CJS script) and the
 *    crypto worker into another. Native code cannot be bundled; three substitutions make the
 *    bundle find it beside the executable instead of in a package tree, without changing src/:
 *    - `node:module`'s createRequire (imported by src/) resolves from the executable's
 *      directory, and hands out the bundled sodium-native for `require('sodium-native')`;
 *    - sodium-native's binding.js dlopens sodium-native.node beside the executable;
 *    - `node:worker_threads`' Worker (in src/device/worker-pool.ts) starts the crypto worker
 *      from the bundle embedded as an SEA asset (`eval: true`), so no .js file ships.
 *    `import.meta.url` (absent in CJS) becomes the executable's file URL, and WGTS_VERSION the
 *    package version (src/cli.ts cannot read package.json there). src/tun/native.ts itself
 *    looks beside process.execPath when `node:sea` says it runs as one.
 * 2. `node --experimental-sea-config` makes the blob (with a V8 code cache for faster start).
 * 3. A copy of this Node binary (process.execPath) gets the blob injected by postject, with the
 *    SEA sentinel fuse.
 * 4. The native addons are copied beside it, and `out/wgts --version` must answer.
 *
 * Node 24 only (run through npm: `npm run package`, whose node is the devDependency).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { Plugin } from 'esbuild';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const OUT = resolve(process.env.WGTS_PACKAGE_OUT ?? join(ROOT, 'out'));
const WORK = join(OUT, '.build');
const SENTINEL_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const NATIVE_ADDON = join(ROOT, 'build', 'Release', 'wgts_native.node');
const SODIUM_PREBUILD = join(ROOT, 'node_modules', 'sodium-native', 'prebuilds', `${process.platform}-${process.arch}`, 'sodium-native.node');
const WORKER_ASSET = 'crypto-worker.js';

const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };

function step(what: string): void {
  process.stdout.write(`package: ${what}\n`);
}

function fail(message: string): never {
  process.stderr.write(`package: ${message}\n`);
  process.exit(1);
}

/** What the bundle substitutes so native code is found beside the executable (see the header). */
function seaPlugin(options: { workerShim: boolean }): Plugin {
  const SHIMS = 'wgts-sea';
  const fromSource = (importer: string): boolean => importer.startsWith(join(ROOT, 'src') + '/');
  return {
    name: 'wgts-sea',
    setup(b) {
      b.onResolve({ filter: /^node:module$/ }, (args) => (fromSource(args.importer) ? { path: 'module', namespace: SHIMS } : undefined));
      if (options.workerShim) {
        b.onResolve({ filter: /^node:worker_threads$/ }, (args) => (fromSource(args.importer) ? { path: 'worker_threads', namespace: SHIMS } : undefined));
      }
      b.onLoad({ filter: /.*/, namespace: SHIMS }, (args) => {
        if (args.path === 'module') {
          return {
            resolveDir: ROOT,
            loader: 'js',
            contents: `
              const real = require('node:module');
              export function createRequire() {
                const base = real.createRequire(process.execPath);
                const req = (id) => (id === 'sodium-native' ? require('sodium-native') : base(id));
                req.resolve = base.resolve;
                req.cache = base.cache;
                return req;
              }`,
          };
        }
        return {
          resolveDir: ROOT,
          loader: 'js',
          contents: `
            const real = require('node:worker_threads');
            const { getAsset } = require('node:sea');
            export const { MessageChannel, MessagePort, isMainThread, parentPort, receiveMessageOnPort, workerData } = real;
            export class Worker extends real.Worker {
              constructor(filename, options) {
                if (/crypto-worker\\.js$/.test(String(filename))) super(getAsset(${JSON.stringify(WORKER_ASSET)}, 'utf8'), { ...options, eval: true });
                else super(filename, options);
              }
            }`,
        };
      });
      b.onLoad({ filter: /[\\/]sodium-native[\\/]binding\.js$/ }, () => ({
        loader: 'js',
        contents: `
          const path = require('node:path');
          const file = path.join(path.dirname(process.execPath), 'sodium-native.node');
          const m = { exports: {} };
          process.dlopen(m, file);
          module.exports = m.exports;`,
      }));
    },
  };
}

async function bundle(entry: string, outfile: string, workerShim: boolean): Promise<void> {
  const result = await build({
    entryPoints: [join(ROOT, entry)],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node24',
    minify: process.env.WGTS_PACKAGE_MINIFY !== '0',
    keepNames: true,
    legalComments: 'none',
    logLevel: 'silent',
    // Optional peers some dependencies try to load and fall back from (ws, @kubernetes/client-node).
    external: ['bufferutil', 'utf-8-validate'],
    define: { 'import.meta.url': 'WGTS_SEA_IMPORT_META_URL', WGTS_VERSION: JSON.stringify(version) },
    banner: { js: 'var WGTS_SEA_IMPORT_META_URL = require("node:url").pathToFileURL(process.execPath).href;' },
    plugins: [seaPlugin({ workerShim })],
  });
  for (const w of result.warnings) process.stderr.write(`package: esbuild warning: ${w.text}${w.location ? ` (${w.location.file}:${w.location.line})` : ''}\n`);
}

function run(cmd: string, args: readonly string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: WORK, maxBuffer: 64 << 20 });
  if (r.status !== 0) fail(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}):\n${r.stdout}${r.stderr}${r.error ? String(r.error) : ''}`);
  return r.stdout;
}

async function main(): Promise<void> {
  const started = performance.now();
  if (!process.version.startsWith('v24.') && Number(process.versions.node.split('.')[0]) < 24) fail(`needs Node 24 (this is ${process.version}); run it as \`npm run package\``);
  if (!existsSync(NATIVE_ADDON)) fail(`${relative(ROOT, NATIVE_ADDON)} is missing: run \`npm install\` first (it builds the addon)`);
  // Only what this script writes is removed: OUT may be any directory (WGTS_PACKAGE_OUT).
  for (const f of ['.build', 'wgts', 'wgts_native.node', 'sodium-native.node']) rmSync(join(OUT, f), { recursive: true, force: true });
  mkdirSync(WORK, { recursive: true });

  step('bundling src/cli.ts and the crypto worker (esbuild, CommonJS)');
  const main = join(WORK, 'wgts.cjs');
  const worker = join(WORK, WORKER_ASSET);
  await bundle('src/device/crypto-worker.ts', worker, false);
  await bundle('src/cli.ts', main, true);

  step('making the SEA blob');
  const blob = join(WORK, 'wgts.blob');
  const config = {
    main,
    output: blob,
    disableExperimentalSEAWarning: true,
    useCodeCache: true,
    assets: { [WORKER_ASSET]: worker },
  };
  writeFileSync(join(WORK, 'sea-config.json'), JSON.stringify(config, null, 2));
  run(process.execPath, ['--experimental-sea-config', join(WORK, 'sea-config.json')]);

  step(`injecting it into a copy of ${process.execPath} (postject)`);
  const exe = join(OUT, 'wgts');
  copyFileSync(process.execPath, exe);
  chmodSync(exe, 0o755);
  const postject = join(ROOT, 'node_modules', 'postject', 'dist', 'cli.js');
  if (!existsSync(postject)) fail('postject is not installed: run `npm install` (it is a devDependency)');
  run(process.execPath, [postject, exe, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SENTINEL_FUSE]);

  step('copying the native addons beside it');
  copyFileSync(NATIVE_ADDON, join(OUT, 'wgts_native.node'));
  if (existsSync(SODIUM_PREBUILD)) copyFileSync(SODIUM_PREBUILD, join(OUT, 'sodium-native.node'));
  else process.stderr.write(`package: no sodium-native prebuild for ${process.platform}-${process.arch}: the executable will use the noble backend\n`);

  const answer = spawnSync(exe, ['--version'], { encoding: 'utf8', cwd: '/' });
  if (answer.stdout.trim() !== version) fail(`${exe} --version answered ${JSON.stringify(answer.stdout + answer.stderr)}, not ${version}`);
  if (!process.env.WGTS_PACKAGE_KEEP_BUILD) rmSync(WORK, { recursive: true, force: true });
  const mb = (path: string): string => `${(statSync(path).size / 1e6).toFixed(1)} MB`;
  step(`done in ${((performance.now() - started) / 1000).toFixed(1)} s: ${relative(process.cwd(), exe) || exe} (${mb(exe)}), wgts_native.node${existsSync(join(OUT, 'sodium-native.node')) ? ', sodium-native.node' : ''}; wgts --version: ${version}`);
}

await main();
