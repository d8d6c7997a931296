/**
 * Benchmark dispatcher: node bench/index.ts <name> [--json FILE] [--quick] [bench options…]
 * (npm run bench -- <name> …). Each benchmark is a module whose run() prints a report and
 * returns its raw results; --json FILE writes those results (with the name and arguments).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { BenchModule } from './lib/types.ts';
import { UsageError } from './lib/types.ts';

/** The benchmarks, by name. Adding one is one line here plus its module. */
const BENCHES: Record<string, { readonly about: string; readonly load: () => Promise<BenchModule> }> = {
  crypto: { about: 'AEAD, transport seal/open, X25519 and full handshakes, sodium vs noble', load: () => import('./crypto.ts') },
  'allowed-ips': { about: 'allowed-IPs trie: lookups/s, inserts/s and memory with 10,000 and 100,000 prefixes', load: () => import('./scale-allowed-ips.ts') },
  e2e: { about: 'through real tunnels in namespaces: iperf3 TCP/UDP, ping, RSS; wgts (sodium, workers 0/1; noble) vs wireguard-go', load: () => import('./e2e.ts') },
  'scale-peers': { about: 'daemon RSS and wg setconf / wg show dump time with 1,000 and 10,000 peers, wgts vs wireguard-go', load: () => import('./scale-peers.ts') },
  alloc: { about: 'JS heap allocated per packet and GC work of the wgts daemons over idle, TCP and UDP windows', load: () => import('./alloc.ts') },
  flood: { about: 'handshake flood in namespaces: victim handshake work (MAC1 only vs MAC1+MAC2) and legitimate handshake latency at 20,000/s', load: () => import('./flood.ts') },
};

function usage(): string {
  const width = Math.max(...Object.keys(BENCHES).map((n) => n.length));
  return [
    'usage: node bench/index.ts <name> [--json FILE] [--quick] [options…]',
    '',
    'benchmarks:',
    ...Object.entries(BENCHES).map(([name, b]) => `  ${name.padEnd(width)}  ${b.about}`),
    '',
    '  --json FILE  also write the raw results to FILE',
    '  --quick      a fast smoke run (few, short rounds; figures not meant to be quoted)',
  ].join('\n');
}

interface Parsed {
  name: string | undefined;
  json: string | undefined;
  quick: boolean;
  help: boolean;
  rest: string[];
}

function parse(argv: readonly string[]): Parsed {
  const parsed: Parsed = { name: undefined, json: undefined, quick: false, help: false, rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--quick') parsed.quick = true;
    else if (arg === '--help' || arg === '-h') parsed.help = true;
    else if (arg === '--json') {
      const file = argv[++i];
      if (file === undefined || file.startsWith('--')) throw new UsageError('--json needs a file name');
      parsed.json = file;
    } else if (arg.startsWith('--json=')) parsed.json = arg.slice('--json='.length);
    else if (parsed.name === undefined && !arg.startsWith('-')) parsed.name = arg;
    else parsed.rest.push(arg);
  }
  return parsed;
}

async function main(argv: readonly string[]): Promise<number> {
  let parsed: Parsed;
  try {
    parsed = parse(argv);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${usage()}\n`);
    return 2;
  }
  if (parsed.help) {
    process.stdout.write(usage() + '\n');
    return 0;
  }
  const name = parsed.name;
  const entry = name === undefined ? undefined : Object.hasOwn(BENCHES, name) ? BENCHES[name] : undefined;
  if (name === undefined || entry === undefined) {
    process.stderr.write(`${name === undefined ? 'no benchmark given' : `unknown benchmark "${name}"`}\n\n${usage()}\n`);
    return 2;
  }
  const bench = await entry.load();
  let result;
  try {
    result = await bench.run({ quick: parsed.quick, args: parsed.rest });
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${name}: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (parsed.json !== undefined) {
    mkdirSync(dirname(parsed.json), { recursive: true });
    writeFileSync(parsed.json, JSON.stringify({ bench: name, argv: [...argv], quick: parsed.quick, ...result }, null, 2) + '\n');
    process.stdout.write(`raw results written to ${parsed.json}\n`);
  }
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
