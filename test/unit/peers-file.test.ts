import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generatePrivateKey, publicKeyOf } from '../../src/cli/keys.ts';
import type { Logger } from '../../src/device/logger.ts';
import { FileSource } from '../../src/mesh/file-source.ts';
import {
  diffPeersFiles,
  findSelf,
  isEmptyDiff,
  parseHostEndpoint,
  parsePeersFile,
  PeersFileError,
  peersOf,
  prefixesOverlap,
} from '../../src/mesh/peers-file.ts';
import { Reconciler } from '../../src/mesh/reconciler.ts';
import { keyToBase64 } from '../../src/util/hex.ts';
import { formatCidr, formatEndpoint, formatIp, parseCidr } from '../../src/util/ip.ts';
import { FakeDevice } from '../helpers/fake-device.ts';

const FILE = '/etc/wgts/mesh.yaml';
const keys = Array.from({ length: 5 }, () => generatePrivateKey());
const pub = (i: number): string => keyToBase64(publicKeyOf(keys[i]!));

interface HostSpec {
  name: string;
  endpoint?: string;
  addresses?: string;
  extra?: string;
}
function host(i: number, spec: Partial<HostSpec> = {}): string {
  const lines = [
    `  - name: ${spec.name ?? `h${i}`}`,
    `    endpoint: ${spec.endpoint ?? `198.18.0.${i}:51820`}`,
    `    publicKey: ${pub(i)}`,
    `    addresses: ${spec.addresses ?? `[100.64.0.${i}/24]`}`,
  ];
  if (spec.extra) lines.push(spec.extra);
  return lines.join('\n') + '\n';
}
const file = (...hosts: string[]): string => `# the mesh\nhosts:\n${hosts.join('')}`;

/** The PeersFileError problems of text, as "line:col message". */
function problemsOf(text: string): string[] {
  try {
    parsePeersFile(text, FILE);
  } catch (err) {
    expect(err).toBeInstanceOf(PeersFileError);
    return (err as PeersFileError).problems.map((p) => `${p.line}:${p.col} ${p.message}`);
  }
  throw new Error('expected the file to be rejected');
}

describe('peers file: parsing', () => {
  it('reads hosts: endpoints of every form, addresses as written, allowed prefixes, keepalive', () => {
    const text = file(
      host(1, { extra: '    allowedIPs: [10.1.0.0/24, "fd00:10::/64"]\n    persistentKeepalive: 25' }),
      host(2, { endpoint: '"[fd00::2]:51821"', addresses: '[100.64.0.2/24, fd00:64::2/64]' }),
      host(3, { endpoint: 'Node3.Example.:51820', addresses: '100.64.0.3' }),
    );
    const peers = parsePeersFile(text, FILE);
    expect(peers.hosts.map((h) => h.name)).toEqual(['h1', 'h2', 'h3']);
    const [h1, h2, h3] = peers.hosts;
    expect(h1!.endpoint).toEqual({ host: '198.18.0.1', port: 51820, dns: false });
    expect(h1!.allowedIps.map(formatCidr)).toEqual(['10.1.0.0/24', 'fd00:10::/64']);
    expect(h1!.persistentKeepalive).toBe(25);
    expect(h1!.position).toEqual({ line: 3, col: 5 });
    // Interface addresses keep their host bits and length.
    expect(h2!.addresses.map((c) => `${formatIp(c.address)}/${c.prefix}`)).toEqual(['100.64.0.2/24', 'fd00:64::2/64']);
    expect(h2!.endpoint).toEqual({ host: 'fd00::2', port: 51821, dns: false });
    expect(h3!.endpoint).toEqual({ host: 'node3.example', port: 51820, dns: true });
    expect(h3!.addresses[0]!.prefix).toBe(32);
    expect(h3!.persistentKeepalive).toBeUndefined();
  });

  it('endpoints: IPv4, bracketed IPv6 and DNS names; everything else is refused with the reason', () => {
    expect(parseHostEndpoint('198.18.0.1:1')).toEqual({ host: '198.18.0.1', port: 1, dns: false });
    expect(parseHostEndpoint('[FD00:0::1]:51820')).toEqual({ host: 'fd00::1', port: 51820, dns: false });
    expect(parseHostEndpoint('wg.example.org:51820')).toEqual({ host: 'wg.example.org', port: 51820, dns: true });
    expect(() => parseHostEndpoint('fd00::1')).toThrow(/IPv6 endpoint needs brackets/);
    expect(() => parseHostEndpoint('198.18.0.1')).toThrow(/not an endpoint/);
    expect(() => parseHostEndpoint('198.18.0.1:70000')).toThrow(/port must be 1 to 65535/);
    expect(() => parseHostEndpoint('198.18.0.300:1')).toThrow(/not an IPv4 address/);
    expect(() => parseHostEndpoint('[198.18.0.1]:1')).toThrow(/not an IPv6 address/);
    expect(() => parseHostEndpoint('bad_name.example:1')).toThrow(/neither an IP address nor a DNS name/);
  });

  it('prefix overlap is containment either way, per family', () => {
    expect(prefixesOverlap(parseCidr('10.0.0.0/8'), parseCidr('10.1.2.3/32'))).toBe(true);
    expect(prefixesOverlap(parseCidr('10.1.2.3/32'), parseCidr('10.0.0.0/8'))).toBe(true);
    expect(prefixesOverlap(parseCidr('10.0.0.0/24'), parseCidr('10.0.1.0/24'))).toBe(false);
    expect(prefixesOverlap(parseCidr('::/0'), parseCidr('0.0.0.0/0'))).toBe(false);
  });
});

describe('peers file: invalid files are rejected with file:line:col and the reason', () => {
  it('bad indentation: the YAML error with its position', () => {
    const text = 'hosts:\n  - name: h1\n   endpoint: 198.18.0.1:51820\n';
    const problems = problemsOf(text);
    expect(problems[0]).toMatch(/^3:1 invalid YAML: /);
    expect(() => parsePeersFile(text, FILE)).toThrow(/^\/etc\/wgts\/mesh\.yaml:3:1: invalid YAML/);
  });

  it('an unquoted IPv6 endpoint gets a hint', () => {
    const problems = problemsOf(file(host(1, { endpoint: '[fd00::1]:51820' })));
    expect(problems[0]).toMatch(/^4:24 invalid YAML: .*must be quoted: endpoint: "\[fd00::1\]:51820"/);
  });

  it('an invalid key: the position of the value', () => {
    const text = file(host(1), host(2).replace(pub(2), 'not-a-key'));
    expect(problemsOf(text)).toEqual([`9:16 publicKey "not-a-key" is not a WireGuard key: a key is 44 characters of base64 ending in "=" (wgts pubkey < private.key prints it)`]);
  });

  it('unknown keys (with a suggestion), missing keys, wrong types, bad values — all reported together, in file order', () => {
    const text = [
      'hosts:',
      '  - name: h1', // 2
      `    publicKey: ${pub(1)}`,
      '    addresses: [100.64.0.1/24]',
      '    allowedIps: [10.0.0.0/8]', // 5: unknown key
      '  - name: "bad name"', // 6
      '    endpoint: 198.18.0.2', // 7: no port
      `    publicKey: ${pub(2)}`,
      '    addresses: [100.64.0.2/24, 100.64.0.300]', // 9
      '    allowedIPs: [10.2.0.1/24]', // 10: host bits
      '    persistentKeepalive: often', // 11
      '  - 42', // 12
      '',
    ].join('\n');
    expect(problemsOf(text)).toEqual([
      '2:5 host "h1" has no endpoint',
      '5:5 unknown key "allowedIps" (did you mean "allowedIPs"?): a host has name, endpoint, publicKey, addresses, allowedIPs, persistentKeepalive',
      `6:11 name "bad name": use letters, digits, '.', '_' and '-' (at most 63, starting with a letter or digit)`,
      '7:15 endpoint: "198.18.0.2" is not an endpoint: expected a.b.c.d:port, "[v6]:port" or name:port',
      '9:32 addresses: "100.64.0.300" is not an IP address',
      '10:18 allowedIPs: "10.2.0.1/24" has host bits set: the prefix is 10.2.0.0/24',
      '11:26 persistentKeepalive must be a whole number of seconds from 0 to 65535',
      '12:5 a host must be a mapping with name, endpoint, publicKey and addresses',
    ]);
  });

  it('duplicate names and keys: the second one, naming the line of the first', () => {
    const dupName = file(host(1), host(2, { name: 'h1' }));
    expect(problemsOf(dupName)).toEqual(['7:5 name "h1" is already used by the host at line 3']);
    const dupKey = file(host(1), host(2).replace(pub(2), pub(1)));
    expect(problemsOf(dupKey)).toEqual([`9:16 host "h2" has the same publicKey as "h1" (line 5): every host needs its own key`]);
  });

  it('overlapping prefixes of different hosts: where, and with what', () => {
    const text = file(host(1, { extra: '    allowedIPs: [10.1.0.0/16]' }), host(2, { extra: '    allowedIPs: [10.1.2.0/24]' }), host(3, { addresses: '[100.64.0.1/24]' }));
    expect(problemsOf(text)).toEqual([
      '12:18 allowedIPs 10.1.2.0/24 of "h2" overlaps 10.1.0.0/16 of "h1" (allowedIPs, line 7): a prefix can belong to one host only',
      '16:17 addresses 100.64.0.1/32 of "h3" overlaps 100.64.0.1/32 of "h1" (addresses, line 6): a prefix can belong to one host only',
    ]);
  });

  it('an empty file, a file without hosts, a top-level typo', () => {
    expect(problemsOf('')).toEqual(['1:1 the file is empty: expected "hosts:" with a list of hosts']);
    expect(problemsOf('# nothing yet\n')).toEqual(['1:1 the file is empty: expected "hosts:" with a list of hosts']);
    expect(problemsOf('- a\n')).toEqual(['1:1 expected a mapping with "hosts:" at the top level']);
    expect(problemsOf('host:\n  - name: a\n')).toEqual(['1:1 unknown top-level key "host": the file has only "hosts:"', '1:1 no "hosts:" list']);
    expect(problemsOf('hosts: []\n')).toEqual(['1:8 the "hosts" list is empty']);
  });
});

describe('peers file: this host, its peers, and what an edit changed', () => {
  const three = file(host(1), host(2, { extra: '    allowedIPs: [10.2.0.0/24]\n    persistentKeepalive: 25' }), host(3, { endpoint: 'h3.example:51820' }));

  it('finds this host by public key or by --name, and gives every other host as a peer', () => {
    const peers = parsePeersFile(three, FILE);
    const self = findSelf(peers, FILE, { publicKey: publicKeyOf(keys[1]!) });
    expect(self.name).toBe('h1');
    expect(findSelf(peers, FILE, { name: 'h1', publicKey: publicKeyOf(keys[1]!) })).toBe(self);
    const resolved = peersOf(peers, self, (e) => (e.dns ? { host: '198.18.0.33', port: e.port } : { host: e.host, port: e.port }));
    expect(resolved.map((p) => [p.name, p.endpoint && formatEndpoint(p.endpoint), p.allowedIps.map(formatCidr), p.persistentKeepalive])).toEqual([
      ['h2', '198.18.0.2:51820', ['100.64.0.2/32', '10.2.0.0/24'], 25],
      ['h3', '198.18.0.33:51820', ['100.64.0.3/32'], undefined],
    ]);
    // A host marked for keepalive (behind NAT) keeps alive towards every peer.
    const fromH2 = peersOf(peers, findSelf(peers, FILE, { publicKey: publicKeyOf(keys[2]!) }), (e) => ({ host: e.host, port: e.port }));
    expect(fromH2.map((p) => [p.name, p.persistentKeepalive])).toEqual([
      ['h1', 25],
      ['h3', 25],
    ]);
  });

  it('no entry for this host, a --name whose key is not ours, a port that is not the listen port: errors with positions', () => {
    const peers = parsePeersFile(three, FILE);
    const expectProblem = (f: () => unknown, pattern: RegExp): void => {
      try {
        f();
      } catch (err) {
        expect((err as Error).message).toMatch(pattern);
        return;
      }
      throw new Error('expected an error');
    };
    expectProblem(() => findSelf(peers, FILE, { publicKey: publicKeyOf(keys[4]!) }), new RegExp(`^${FILE}:2:1: no host has this host's public key ${escape(pub(4))}`));
    expectProblem(() => findSelf(peers, FILE, { name: 'h9', publicKey: publicKeyOf(keys[1]!) }), /:2:1: no host named "h9" \(--name\)/);
    expectProblem(() => findSelf(peers, FILE, { name: 'h2', publicKey: publicKeyOf(keys[1]!) }), new RegExp(`:9:16: the publicKey of "h2" is not this host's: its key file gives ${escape(pub(1))}`));
    expectProblem(() => findSelf(peers, FILE, { publicKey: publicKeyOf(keys[1]!), listenPort: 51999 }), /:4:15: the endpoint of "h1" \(this host\) has port 51820, but the data plane listens on 51999/);
  });

  it('diff: layout and comments change nothing; hosts added, removed and changed by name', () => {
    const before = parsePeersFile(three, FILE);
    const reformatted = parsePeersFile(three.replace('# the mesh', '# the mesh, reviewed').replace('[100.64.0.1/24]', '\n      - 100.64.0.1/24'), FILE);
    expect(isEmptyDiff(diffPeersFiles(before, reformatted))).toBe(true);
    const edited = parsePeersFile(file(host(1), host(2, { extra: '    allowedIPs: [10.2.0.0/24]\n    persistentKeepalive: 30' }), host(4)), FILE);
    expect(diffPeersFiles(before, edited)).toEqual({ added: ['h4'], removed: ['h3'], changed: ['h2'] });
    expect(diffPeersFiles(undefined, before).added).toEqual(['h1', 'h2', 'h3']);
  });

  it('through the reconciler, adding a host to the file adds one peer and leaves the others untouched', async () => {
    const device = new FakeDevice();
    const reconciler = new Reconciler({ get: async () => device.snapshot(), set: (tx) => device.apply(tx) });
    const desired = (text: string) => {
      const peers = parsePeersFile(text, FILE);
      const self = findSelf(peers, FILE, { publicKey: publicKeyOf(keys[1]!) });
      return { privateKey: keys[1]!, listenPort: 51820, fwmark: 0x51820, removeStale: true, peers: peersOf(peers, self, (e) => ({ host: e.dns ? '198.18.0.3' : e.host, port: e.port })) };
    };
    const first = await reconciler.reconcile(desired(three));
    expect(first.added).toHaveLength(2);
    const transactions = device.transactions.length;
    const again = await reconciler.reconcile(desired(three.replace('# the mesh', '# edited')));
    expect(again.changed).toBe(false);
    expect(device.transactions.length).toBe(transactions);
    const added = await reconciler.reconcile(desired(three + host(4)));
    expect(added).toMatchObject({ added: [Buffer.from(publicKeyOf(keys[4]!)).toString('hex')], updated: [], removed: [] });
    const tx = device.transactions.at(-1)!;
    expect(tx.peers).toHaveLength(1);
    const removed = await reconciler.reconcile(desired(file(host(1), host(2, { extra: '    allowedIPs: [10.2.0.0/24]\n    persistentKeepalive: 25' }))));
    expect(removed.removed).toHaveLength(2);
    expect(removed.updated).toEqual([]);
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

// ---------------------------------------------------------------------------------------------
// FileSource on a real file

const temps: string[] = [];
afterAll(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

function captureLogger(): Logger & { lines: { level: string; obj: object | string; msg?: string | undefined }[] } {
  const lines: { level: string; obj: object | string; msg?: string | undefined }[] = [];
  const log = (level: string) => (obj: object | string, msg?: string) => lines.push({ level, obj, msg });
  return { lines, error: log('error'), warn: log('warn'), info: log('info'), debug: log('debug') };
}

async function until<T>(f: () => T | undefined | false, timeoutMs = 3_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('FileSource', () => {
  function setup(text: string, options: { lookup?: (host: string) => Promise<string>; name?: string } = {}) {
    const dir = mkdtempSync(join(tmpdir(), 'wgts-peers-'));
    temps.push(dir);
    const path = join(dir, 'mesh.yaml');
    writeFileSync(path, text);
    const logger = captureLogger();
    let changes = 0;
    const source = new FileSource({
      path,
      publicKey: () => publicKeyOf(keys[1]!),
      listenPort: 51820,
      logger,
      ...(options.lookup ? { lookup: options.lookup } : {}),
      ...(options.name ? { name: options.name } : {}),
    });
    /** Replaces the file as editors do: write a temp file, rename it over. */
    const replace = (next: string): void => {
      writeFileSync(`${path}.tmp`, next);
      renameSync(`${path}.tmp`, path);
    };
    return { path, dir, logger, source, replace, changes: () => changes, start: () => source.start(() => changes++) };
  }

  it('loads, applies edits within a second, keeps the last good file on a bad edit, and logs file:line:col', async () => {
    const s = setup(file(host(1), host(2)));
    await s.start();
    try {
      expect(s.source.self()).toMatchObject({ name: 'h1', underlayAddress: '198.18.0.1', localPrefixes: [] });
      expect(s.source.self().interfaceAddresses.map((c) => `${formatIp(c.address)}/${c.prefix}`)).toEqual(['100.64.0.1/24']);
      expect(s.source.current().peers.map((p) => p.name)).toEqual(['h2']);
      expect(s.source.current().synced).toBe(true);

      expect(s.changes()).toBe(1); // the first load
      const t0 = Date.now();
      s.replace(file(host(1), host(2), host(3)));
      await until(() => s.changes() >= 2);
      expect(Date.now() - t0).toBeLessThan(1_000);
      expect(s.source.current().peers.map((p) => p.name)).toEqual(['h2', 'h3']);

      s.replace(file(host(1), host(2), host(3)).replace(`    publicKey: ${pub(3)}`, '    publicKey: nope'));
      const error = await until(() => s.logger.lines.find((l) => l.level === 'error' && /mesh\.yaml:13:16: publicKey "nope"/.test(String(l.msg))));
      expect(error.obj).toMatchObject({ line: 13, col: 16 });
      expect(s.logger.lines.some((l) => /rejected; the last good configuration stays in force/.test(String(l.msg)))).toBe(true);
      expect(s.source.current().peers.map((p) => p.name)).toEqual(['h2', 'h3']);
      const changesBefore = s.changes();

      // This host missing is an error too: nothing is torn down.
      s.replace(file(host(2), host(3)));
      await until(() => s.logger.lines.some((l) => /no host has this host's public key/.test(String(l.msg))));
      expect(s.source.current().peers.map((p) => p.name)).toEqual(['h2', 'h3']);

      // A comment-only edit is not passed on.
      s.replace('# touched\n' + file(host(1), host(2), host(3)));
      await until(() => s.source.applied === 2 && s.logger.lines.some((l) => l.msg === 'peers file rewritten without changes'));
      expect(s.changes()).toBe(changesBefore);

      s.replace(file(host(1), host(3)));
      await until(() => s.changes() > changesBefore);
      expect(s.source.current().peers.map((p) => p.name)).toEqual(['h3']);
    } finally {
      await s.source.stop();
    }
  });

  it('waits for a usable file at start (this host not in it yet), then starts when it is', async () => {
    const s = setup(file(host(2), host(3)));
    let started = false;
    const starting = s.start().then(() => (started = true));
    await until(() => s.logger.lines.some((l) => l.level === 'error' && /no host has this host's public key/.test(String(l.msg))));
    expect(started).toBe(false);
    s.replace(file(host(1), host(2), host(3)));
    await starting;
    expect(s.source.self().name).toBe('h1');
    await s.source.stop();
  });

  it('resolves DNS endpoints, again when a handshake is stale, and passes a new address on', async () => {
    const answers = new Map([['h2.example', '198.18.7.2'], ['h1.example', '198.18.7.1']]);
    const s = setup(file(host(1, { endpoint: 'h1.example:51820' }), host(2, { endpoint: 'h2.example:51820' })), {
      lookup: async (name) => {
        const a = answers.get(name);
        if (!a) throw new Error('ENOTFOUND');
        return a;
      },
    });
    await s.start();
    try {
      expect(s.source.self().underlayAddress).toBe('198.18.7.1');
      expect(s.source.current().peers[0]!.endpoint).toEqual({ host: '198.18.7.2', port: 51820 });
      answers.set('h2.example', '198.18.7.22');
      // Not stale, not due: nothing looked up.
      const before = s.changes();
      await s.source.refreshDns(Date.now());
      expect(s.source.current().peers[0]!.endpoint!.host).toBe('198.18.7.2');
      // Five minutes on: due periodically.
      await s.source.refreshDns(Date.now() + 5 * 60_000 + 1);
      expect(s.source.current().peers[0]!.endpoint!.host).toBe('198.18.7.22');
      expect(s.changes()).toBe(before + 1);
      // A failed lookup keeps the last address.
      answers.delete('h2.example');
      await s.source.refreshDns(Date.now() + 10 * 60_000 + 2);
      expect(s.source.current().peers[0]!.endpoint!.host).toBe('198.18.7.22');
      expect(s.logger.lines.some((l) => l.level === 'warn' && l.msg === 'cannot resolve an endpoint name')).toBe(true);
    } finally {
      await s.source.stop();
    }
  });

  it('re-resolves a peer whose handshake is stale', async () => {
    let address = '198.18.8.2';
    const dir = mkdtempSync(join(tmpdir(), 'wgts-peers-'));
    temps.push(dir);
    const path = join(dir, 'mesh.yaml');
    writeFileSync(path, file(host(1), host(2, { endpoint: 'h2.example:51820' })));
    const h2 = Buffer.from(publicKeyOf(keys[2]!)).toString('hex');
    let handshake = Date.now();
    const source = new FileSource({
      path,
      publicKey: () => publicKeyOf(keys[1]!),
      listenPort: 51820,
      logger: captureLogger(),
      lookup: async () => address,
      handshakes: async () => new Map([[h2, handshake]]),
    });
    let changes = 0;
    await source.start(() => changes++);
    try {
      address = '198.18.8.22';
      await source.refreshDns();
      expect(source.current().peers[0]!.endpoint!.host).toBe('198.18.8.2');
      handshake = Date.now() - 136_000;
      await source.refreshDns();
      expect(source.current().peers[0]!.endpoint!.host).toBe('198.18.8.22');
      expect(changes).toBe(2); // the first load, then the new address
    } finally {
      await source.stop();
    }
  });
});
