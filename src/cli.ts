#!/usr/bin/env node
/** The `wgts` command: `wgts [-f] <ifname>` runs the daemon (as `wireguard-go <ifname>`); the rest are subcommands. */
import { Command, InvalidArgumentError, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { isSea } from 'node:sea';
import { runConformanceCommand } from './cli/conformance.ts';
import { genkey, pubkey } from './cli/keys.ts';
import { launchInBackground } from './cli/launcher.ts';

/** Defined by scripts/package.ts in the single executable, which has no package.json beside it. */
declare const WGTS_VERSION: string | undefined;
const version =
  typeof WGTS_VERSION === 'string' ? WGTS_VERSION : (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** LOG_LEVEL as wireguard-go reads it (verbose|error|silent), plus pino's names. */
export function logLevelFromEnv(value: string | undefined): string {
  switch (value) {
    case undefined:
    case '':
      return 'info';
    case 'verbose':
      return 'debug';
    case 'silent':
      return 'silent';
    default:
      return ['fatal', 'error', 'warn', 'info', 'debug', 'trace'].includes(value) ? value : 'info';
  }
}

function parsePort(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new InvalidArgumentError('a port from 1 to 65535');
  return n;
}

function parseWorkers(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 64) throw new InvalidArgumentError('a whole number from 0 to 64');
  return n;
}

const program = new Command()
  .name('wgts')
  .description('Userspace WireGuard in TypeScript.\n\n  wgts [-f] <ifname>   create the TUN <ifname> and serve its UAPI socket, like wireguard-go')
  .version(version, '-v, --version')
  .argument('[ifname]', 'interface to create and serve')
  .option('-f, --foreground', 'stay in the foreground (also WG_PROCESS_FOREGROUND=1)')
  .addOption(new Option('--persist', 'keep the interface, its addresses and routes when the daemon exits'))
  .addOption(new Option('--workers <n>', 'crypto worker threads (0: all on the main thread; default: by CPU count)').env('WGTS_WORKERS').argParser(parseWorkers))
  .addOption(new Option('--offload', 'TUN TCP segmentation offload: split super-packets on read, coalesce on write (default; WGTS_TUN_OFFLOAD=0 turns it off)'))
  .addOption(new Option('--no-offload', 'one packet per TUN read and write'))
  .action(async (ifname: string | undefined, options: { foreground?: boolean; persist?: boolean; workers?: number; offload?: boolean }) => {
    if (!ifname) {
      program.help();
      return;
    }
    const foreground = options.foreground || process.env.WG_PROCESS_FOREGROUND === '1';
    if (!foreground) {
      // A single executable sees [exe, argv0, ...args]: re-executing it takes the args alone.
      process.exitCode = await launchInBackground(process.argv.slice(isSea() ? 2 : 1), process.env.WGTS_LOG_FILE);
      return;
    }
    const { runDaemon } = await import('./daemon/daemon.ts');
    process.exitCode = await runDaemon({
      ifname,
      persist: options.persist ?? false,
      logLevel: logLevelFromEnv(process.env.LOG_LEVEL),
      ...(options.workers !== undefined ? { workers: options.workers } : {}),
      ...(options.offload !== undefined ? { offload: options.offload } : {}),
    });
  });

program
  .command('genkey')
  .description('print a new base64 private key (like wg genkey)')
  .action(() => genkey(process.stdout));

program
  .command('pubkey')
  .description('read a base64 private key on stdin, print its public key (like wg pubkey)')
  .action(() => pubkey(process.stdin, process.stdout));

program
  .command('mesh')
  .description('the mesh agent: peers from a peers file (--peers, a host mesh) or from Kubernetes Nodes, configuring the data plane (wgts --persist <interface>) over UAPI')
  .option('--peers <file>', 'host mesh: the YAML file listing every host (reloaded when it changes); no Kubernetes')
  .option('--name <name>', 'with --peers: this host\'s entry by name (default: the entry with this host\'s public key)')
  .option('--kubeconfig <file>', 'kubeconfig file (default: in-cluster config)')
  .option('--node-name <name>', 'this node (default: $NODE_NAME)')
  .option('--interface <ifname>', 'the data plane interface', 'wgts0')
  .option('--listen-port <port>', 'WireGuard UDP port of this node', (v) => parsePort(v), 51820)
  .option('--key-file <path>', 'private key file (created 0600 on first start)', '/var/lib/wgts/private.key')
  .option('--host-encryption', 'also encrypt host-to-host traffic between node addresses')
  .option('--strict', 'drop traffic to and from nodes that are not encrypted instead of sending it in the clear')
  .option('--rotate-keys <duration>', 'rotate the node key on this schedule (e.g. 24h); off by default')
  .option('--metrics-listen <addr>', 'serve /metrics, /healthz, /readyz on [host]:port', ':9586')
  .option('--log-level <level>', 'error|warn|info|debug', 'info')
  .action(async (options: { peers?: string; name?: string; kubeconfig?: string; nodeName?: string; interface: string; listenPort: number; keyFile: string; hostEncryption?: boolean; strict?: boolean; rotateKeys?: string; metricsListen: string; logLevel: string }) => {
    const { runMesh } = await import('./mesh/run.ts');
    process.exitCode = await runMesh(options);
  });

program
  .command('verify')
  .description('capture the underlay and report, per peer node, bytes seen encrypted vs in the clear; exit 1 if anything leaked')
  .option('-i, --interface <ifname>', 'underlay interface to capture on', 'eth0')
  .option('-s, --seconds <n>', 'how long to capture', (v) => Number(v), 10)
  .option('--wg-interface <ifname>', 'the WireGuard interface whose peers to check', 'wgts0')
  .option('--json', 'one JSON document on stdout')
  .action(async (options: { interface: string; seconds: number; wgInterface: string; json?: boolean }) => {
    const { runVerify } = await import('./mesh/verify.ts');
    const abort = new AbortController();
    process.once('SIGINT', () => abort.abort());
    process.exitCode = await runVerify({ interface: options.interface, seconds: options.seconds, wgInterface: options.wgInterface, json: options.json ?? false, signal: abort.signal });
  });

program
  .command('demo')
  .description('two namespaces, a WireGuard tunnel, an HTTP login across it, and a capture of the wire showing no secret leaks')
  .option('--plaintext', 'the same run without the tunnel: the secrets show on the wire')
  .action(async (options: { plaintext?: boolean }) => {
    const { runDemo } = await import('./demo/demo.ts');
    process.exitCode = await runDemo({ plaintext: options.plaintext ?? false });
  });

program
  .command('show')
  .description("print a wgts interface's counters: drops by reason and handshake work (wg show has the rest)")
  .argument('<ifname>')
  .option('--json', 'as JSON')
  .action(async (ifname: string, options: { json?: boolean }) => {
    const { readStats } = await import('./device/uapi-client.ts');
    try {
      const stats = await readStats(ifname);
      process.stdout.write(options.json ? JSON.stringify(stats) + '\n' : Object.entries(stats).map(([k, v]) => `${k}: ${v}`).join('\n') + '\n');
    } catch (err) {
      process.stderr.write(`wgts show ${ifname}: ${(err as Error).message}\n`);
      process.exitCode = 1;
    }
  });

program
  .command('conformance')
  .description('check test vectors on every crypto backend (no FILE: the bundled set)')
  .argument('[files...]', 'vector files (JSON)')
  .option('--backend <name>', 'check only this backend (noble|sodium)')
  .action(async (files: string[], options: { backend?: string }) => {
    process.exitCode = await runConformanceCommand(files, options.backend);
  });

// Not a top-level await: the single executable runs this module bundled as CommonJS.
program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`wgts: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exitCode = 1;
});
