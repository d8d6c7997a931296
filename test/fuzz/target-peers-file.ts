/**
 * Target "peers-file": parsePeersFile (src/mesh/peers-file.ts) over YAML text, and what the
 * file source does with a parsed file (findSelf, peersOf, diffPeersFiles).
 *
 * Input: the file's text. Generated from a grammar of peers files — hosts with names,
 * endpoints (IPv4, bracketed IPv6, DNS names), base64 keys, addresses and allowedIPs (flow or
 * block lists, or one string), keepalives — written in varied YAML (quoted or not, flow or
 * block style, comments, anchors and aliases, tags, documents) with values at and past each
 * boundary; mutated line by line (delete, duplicate, swap, indent, rename a key, replace a
 * value) and byte by byte.
 *
 * Properties: nothing is thrown but a PeersFileError, which has at least one problem, each with
 * a line within the file, a column ≥ 1 and a message; an accepted file is well-formed: names
 * unique and in the allowed pattern, keys 32 bytes, non-zero, unique, endpoints with a port 1–
 * 65535 and a canonical IP or a lower-case DNS name, addresses of the right length with
 * prefixes in range, allowedIPs canonical, keepalive 1–65535 or none, routed prefixes of
 * different hosts disjoint; written back as YAML it parses to the same hosts; every host
 * finds itself by its key and by its name and gets every other host as a peer, sorted, with
 * allowed IPs = its addresses as host prefixes plus its allowedIPs; a file diffed against
 * itself is empty, against nothing all added.
 */
import type { Cidr } from '../../src/device/config.ts';
import { diffPeersFiles, findSelf, formatHostEndpoint, hostFingerprint, isEmptyDiff, parsePeersFile, PeersFileError, peersOf, prefixesOverlap, routedPrefixes, type PeersFile } from '../../src/mesh/peers-file.ts';
import { keyToBase64 } from '../../src/util/hex.ts';
import { formatCidr, formatIp, maskInPlace, parseIp } from '../../src/util/ip.ts';
import { equalBytes, Mutator, type Rng } from '../helpers/mutate.ts';
import { check, type FuzzTarget, weighted } from './target.ts';

const FILE = '/etc/wgts/mesh.yaml';
const KEYS = Array.from({ length: 8 }, (_, i) => Buffer.alloc(32, i + 1).toString('base64'));
const NAME_PATTERN = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})$/;
const encoder = new TextEncoder();

function quote(rng: Rng, text: string): string {
  return weighted(rng, [[6, text], [2, JSON.stringify(text)], [1, `'${text.replace(/'/g, "''")}'`]]);
}

export class PeersFileTarget implements FuzzTarget<Uint8Array> {
  readonly name = 'peers-file';
  readonly description = 'parsePeersFile over generated and mutated YAML peers files; accepted files well-formed, round-trip, self/peers/diff consistent';
  private mutator: Mutator | undefined;
  private mutatorRng: Rng | undefined;
  private readonly tally = { accepted: 0, rejected: 0, problems: 0, hosts: 0 };
  private readonly seedList: Uint8Array[];
  /** 1: junk alternatives allowed; 0: valid choices only (see generate()). */
  private junk = 1;

  constructor() {
    const h = (i: number, extra = ''): string =>
      `  - name: h${i}\n    endpoint: 198.18.0.${i}:51820\n    publicKey: ${KEYS[i]}\n    addresses: [100.64.0.${i}/24]\n${extra}`;
    this.seedList = [
      `# the mesh\nhosts:\n${h(1, '    allowedIPs: [10.1.0.0/24, "fd00:10::/64"]\n    persistentKeepalive: 25\n')}${h(2)}`,
      `hosts:\n  - name: alpha\n    endpoint: "[fd00::1]:51820"\n    publicKey: ${KEYS[3]}\n    addresses:\n      - 100.64.0.1/24\n      - fd00:64::1/64\n  - name: beta.example\n    endpoint: beta.example.com:51821\n    publicKey: ${KEYS[4]}\n    addresses: 100.64.0.2\n    allowedIPs: 10.2.0.0/16\n`,
      `hosts: [{name: a, endpoint: "1.2.3.4:1", publicKey: "${KEYS[5]}", addresses: [100.64.1.1/32]}, {name: b, endpoint: "1.2.3.5:65535", publicKey: "${KEYS[6]}", addresses: ["100.64.1.2"]}]\n`,
      `hosts:\n${h(1)}${h(2)}${h(3)}${h(4)}`,
    ].map((s) => encoder.encode(s));
  }

  setup(): void {}

  seeds(): readonly Uint8Array[] {
    return this.seedList;
  }

  // ---- generation ----------------------------------------------------------------------------

  private endpoint(rng: Rng): string {
    const port = weighted(rng, [[20, String(rng.pick([51820, 51821, rng.range(1, 65535)]))], [this.junk, rng.pick(['0', '65536', '99999', '051820', ''])]]);
    return weighted<() => string>(rng, [
      [6, () => `198.18.${rng.below(4)}.${rng.below(256)}:${port}`],
      // YAML reads an unquoted [v6]:port as a list: quoted nearly always.
      [2, () => JSON.stringify(`[${rng.pick(['fd00::1', 'fd00::2', '::1', 'fe80::1%eth0', '::ffff:1.2.3.4', 'FD00::A'])}]:${port}`)],
      [0.1 * this.junk, () => `[fd00::1]:${port}`],
      [2, () => `${rng.pick(['host', 'Beta.Example.COM.', 'a-b.c', 'x', `${'a'.repeat(63)}.b`])}:${port}`],
      [this.junk, () => `${rng.pick(['-bad', 'bad-', 'a..b', 'x'.repeat(64), `${'a.'.repeat(130)}b`, 'a_b'])}:${port}`],
      [this.junk * 0.5, () => rng.pick(['fd00::1:51820', '1.2.3.4', '1.2.3:4', '1.2.3.256:1', '01.2.3.4:5', ':5', '[1.2.3.4]:5', 'a b:1', '1.2.3.4:5 '])],
    ])();
  }

  /** Prefixes of host i: its own ranges mostly, so that most files have no overlaps. */
  private prefix(rng: Rng, routed: boolean, i: number): string {
    const own = rng.chance(0.9) ? i : rng.below(8);
    return weighted<() => string>(rng, [
      [12, () => (routed ? rng.pick([`10.${own}.0.0/16`, `10.${own}.${rng.below(4) * 64}.0/${rng.pick([24, 26, 32])}`]) : `100.64.${own}.${rng.below(256)}/${rng.pick([24, 32, 10])}`)],
      [4, () => (routed ? `fd00:${own.toString(16)}::/64` : `fd00:64::${own.toString(16)}/${rng.pick([64, 128])}`)],
      [1, () => (routed ? `10.${own}.0.1/24` : `100.64.${own}.${rng.below(256)}`)],
      [this.junk, () => rng.pick(['0.0.0.0/0', '::/0', '1.2.3.4/33', '::/129', '1.2.3/24', 'fe80::1%eth0/64', '1.2.3.4/', '1.2.3.4/08', 'x', ''])],
    ])();
  }

  private list(rng: Rng, routed: boolean, i: number): string {
    const items = Array.from({ length: weighted(rng, [[this.junk * 0.5, 0], [6, 1], [3, 2], [1, 4]]) }, () => this.prefix(rng, routed, i));
    return weighted<() => string>(rng, [
      [4, () => `[${items.map((i) => quote(rng, i)).join(', ')}]`],
      [3, () => `\n${items.map((i) => `      - ${quote(rng, i)}`).join('\n')}`],
      [2, () => quote(rng, items[0] ?? '')],
      [this.junk * 0.5, () => rng.pick(['', '~', '{}', '[[1.2.3.4]]', '42', 'true', '[1, 2]'])],
    ])();
  }

  private host(rng: Rng, i: number): string {
    const fields: [string, string][] = [];
    if (rng.chance(1 - 0.03 * this.junk)) fields.push(['name', quote(rng, rng.chance(1 - 0.1 * this.junk) ? `h${i}` : rng.pick(['h1', '', '-x', 'a b', 'é', 'x'.repeat(64), '1', 'null', '~']))]);
    if (rng.chance(1 - 0.03 * this.junk)) {
      const endpoint = this.endpoint(rng);
      fields.push(['endpoint', endpoint.startsWith('"') ? endpoint : quote(rng, endpoint)]);
    }
    if (rng.chance(1 - 0.03 * this.junk)) {
      const key = weighted<() => string>(rng, [
        [10, () => KEYS[i % KEYS.length]!],
        [this.junk * 0.3, () => rng.pick(KEYS)],
        [this.junk * 0.3, () => Buffer.alloc(32).toString('base64')],
        [this.junk * 0.5, () => rng.pick([KEYS[0]!.slice(0, 43), `${KEYS[0]}=`, KEYS[0]!.replace('=', ''), Buffer.from(rng.bytes(32)).toString('hex'), '~', '12345'])],
      ])();
      fields.push(['publicKey', quote(rng, key)]);
    }
    if (rng.chance(1 - 0.03 * this.junk)) fields.push(['addresses', this.list(rng, false, i)]);
    if (rng.chance(0.4)) fields.push(['allowedIPs', this.list(rng, true, i)]);
    if (rng.chance(0.3)) fields.push(['persistentKeepalive', rng.chance(1 - 0.3 * this.junk) ? String(rng.pick([25, 0, 1, 65535, rng.below(65536)])) : rng.pick(['65536', '-1', '2.5', '"25"', '0x19', '~', '1e3'])]);
    if (rng.chance(0.05 * this.junk)) fields.push([rng.pick(['allowedIps', 'public_key', 'Endpoint', 'port', 'keepalive']), '1']);
    if (rng.chance(0.02 * this.junk)) fields.splice(rng.below(fields.length + 1), 0, fields[rng.below(fields.length)] ?? ['name', 'dup']);
    if (rng.chance(0.15)) {
      // Flow style for the whole host.
      return `  - {${fields.map(([k, v]) => `${k}: ${v.startsWith('\n') ? `[${v.trim().split('\n').map((l) => l.replace(/^\s*- /, '')).join(', ')}]` : v}`).join(', ')}}\n`;
    }
    return fields.map(([k, v], j) => `${j === 0 ? '  - ' : '    '}${k}: ${v}${rng.chance(0.05) ? ' # note' : ''}\n`).join('');
  }

  generate(rng: Rng): Uint8Array {
    // Half the files are built from valid choices only, to get past validation into the rest.
    this.junk = rng.chance(0.5) ? 1 : 0;
    try {
      return this.generateFile(rng);
    } finally {
      this.junk = 1;
    }
  }

  private generateFile(rng: Rng): Uint8Array {
    if (rng.chance(0.04 * this.junk)) {
      return encoder.encode(rng.pick(['', '\n', '---\n', 'hosts:', 'hosts: []', 'hosts: ~', 'hosts: 1', '[]', 'hosts:\n  - ~', 'a: &x [*x]', 'hosts: &a\n  - *a', 'hosts:\n\t- name: a', `hosts:\n  - &h {name: a}\n  - *h`, '%YAML 1.2\n---\nhosts: []', 'hosts: !!str x', '? hosts\n: []']));
    }
    const n = weighted(rng, [[1, 1], [5, rng.range(2, 4)], [1, rng.range(5, 12)]]);
    let text = rng.chance(0.2) ? '# wgts mesh\n' : '';
    if (rng.chance(0.03 * this.junk)) text += rng.pick(['version: 1\n', 'peers:\n', '---\n']);
    text += 'hosts:\n';
    for (let i = 1; i <= n; i++) text += this.host(rng, i);
    if (rng.chance(0.03 * this.junk)) text += rng.pick(['---\nhosts: []\n', '...\n', 'hosts:\n']);
    return encoder.encode(text);
  }

  mutate(rng: Rng, input: Uint8Array): Uint8Array {
    if (rng.chance(0.55)) {
      const lines = Buffer.from(input).toString('utf8').split('\n');
      const at = rng.below(lines.length);
      const line = lines[at] ?? '';
      const op = weighted(rng, [[3, 'delete'], [2, 'duplicate'], [2, 'swap'], [2, 'indent'], [3, 'value'], [1, 'key'], [1, 'truncate'], [1, 'insert']] as const);
      switch (op) {
        case 'delete':
          lines.splice(at, 1);
          break;
        case 'duplicate':
          lines.splice(at, 0, line);
          break;
        case 'swap': {
          const other = rng.below(lines.length);
          [lines[at], lines[other]] = [lines[other]!, line];
          break;
        }
        case 'indent':
          lines[at] = rng.chance(0.5) ? ` ${line}` : line.replace(/^ /, rng.pick(['', '\t']));
          break;
        case 'value': {
          const colon = line.indexOf(': ');
          if (colon < 0) break;
          const key = line.slice(0, colon).replace(/^[\s-]*/, '');
          const value = key === 'endpoint' ? quote(rng, this.endpoint(rng)) : key === 'addresses' || key === 'allowedIPs' ? this.list(rng, key === 'allowedIPs', rng.below(8)).split('\n')[0]! : key === 'publicKey' ? quote(rng, rng.pick(KEYS)) : quote(rng, rng.pick(['h1', '1', '~', '', 'x y', '25']));
          lines[at] = `${line.slice(0, colon + 2)}${value}`;
          break;
        }
        case 'key':
          lines[at] = line.replace(/[A-Za-z]+(?=:)/, rng.pick(['name', 'endpoint', 'publicKey', 'addresses', 'allowedIPs', 'persistentKeepalive', 'hosts', 'Name', 'address']));
          break;
        case 'truncate':
          lines[at] = line.slice(0, rng.below(line.length + 1));
          break;
        case 'insert':
          lines.splice(at, 0, rng.pick(['  - name: extra', '    allowedIPs: [10.9.0.0/16]', '# comment', '---', '  -', '    name: again', 'hosts:', '    persistentKeepalive: 25', '  - {}']));
          break;
      }
      return encoder.encode(lines.join('\n'));
    }
    if (this.mutatorRng !== rng) {
      this.mutatorRng = rng;
      this.mutator = new Mutator(rng, { donors: this.seedList, weights: { bitflip: 2, bitflips: 1, byte: 3, truncate: 2, extend: 1, splice: 3 }, maxExtend: 40 });
    }
    return this.mutator!.mutate(input).bytes;
  }

  // ---- properties ----------------------------------------------------------------------------

  run(input: Uint8Array): void {
    const text = Buffer.from(input).toString('utf8');
    let file: PeersFile;
    try {
      file = parsePeersFile(text, FILE);
    } catch (err) {
      check(err instanceof PeersFileError, () => `parsePeersFile threw ${(err as Error)?.name}: ${(err as Error)?.message}`);
      check(err.problems.length > 0, 'a PeersFileError with no problems');
      const lines = text.split('\n').length;
      for (const p of err.problems) {
        check(Number.isInteger(p.line) && p.line >= 1 && p.line <= lines + 1 && Number.isInteger(p.col) && p.col >= 1, () => `problem at ${p.line}:${p.col} in a ${lines}-line file: ${p.message}`);
        check(typeof p.message === 'string' && p.message.length > 0, 'a problem without a message');
      }
      this.tally.rejected++;
      this.tally.problems += err.problems.length;
      return;
    }
    this.tally.accepted++;
    this.tally.hosts += file.hosts.length;
    checkFile(file);
    // Written back as YAML, the file means the same.
    const again = parsePeersFile(formatFile(file), FILE);
    check(again.hosts.length === file.hosts.length && again.hosts.every((h, i) => hostFingerprint(h) === hostFingerprint(file.hosts[i]!)), () => `the file written back parses differently:\n${formatFile(file)}`);
    check(isEmptyDiff(diffPeersFiles(file, again)), 'a file diffed against itself is not empty');
    const fresh = diffPeersFiles(undefined, file);
    check(fresh.added.length === file.hosts.length && fresh.removed.length + fresh.changed.length === 0, 'a file diffed against nothing is not all added');
    for (const self of file.hosts) {
      check(findSelf(file, FILE, { publicKey: self.publicKey }) === self, () => `host ${self.name} does not find itself by key`);
      check(findSelf(file, FILE, { name: self.name, publicKey: self.publicKey, listenPort: self.endpoint.port }) === self, () => `host ${self.name} does not find itself by name`);
      const peers = peersOf(file, self, (e) => (e.dns ? undefined : { host: e.host, port: e.port }));
      check(peers.length === file.hosts.length - 1, 'peersOf lost or added hosts');
      for (let i = 0; i < peers.length; i++) {
        const p = peers[i]!;
        check(!equalBytes(p.publicKey, self.publicKey), 'self is its own peer');
        if (i > 0) check(peers[i - 1]!.name.localeCompare(p.name) <= 0, 'peers are not sorted');
        const host = file.hosts.find((h) => h.name === p.name)!;
        check(JSON.stringify(p.allowedIps.map(formatCidr)) === JSON.stringify(routedPrefixes(host).map(formatCidr)), 'peer allowed IPs are not its routed prefixes');
        for (const c of p.allowedIps) checkCanonical(c, 'a peer allowed IP');
      }
    }
  }

  stats(): Record<string, number> {
    return { ...this.tally };
  }

  encode(input: Uint8Array): Uint8Array {
    return input;
  }

  decode(bytes: Uint8Array): Uint8Array {
    return bytes;
  }

  describe(input: Uint8Array): string {
    const text = Buffer.from(input).toString('utf8');
    return `${input.length} bytes: ${JSON.stringify(text.length > 1200 ? `${text.slice(0, 1200)}…` : text)}`;
  }

  teardown(): void {}
}

function checkCanonical(c: Cidr, what: string): void {
  const max = c.family === 4 ? 32 : 128;
  check(c.address.length === max / 8 && Number.isInteger(c.prefix) && c.prefix >= 0 && c.prefix <= max, () => `${what} of family ${c.family}: ${c.address.length} bytes /${c.prefix}`);
  check(equalBytes(maskInPlace(Uint8Array.from(c.address), c.prefix), c.address), () => `${what} ${formatCidr(c)} has host bits set`);
}

function checkFile(file: PeersFile): void {
  const names = new Set<string>();
  const keys = new Set<string>();
  for (const h of file.hosts) {
    check(NAME_PATTERN.test(h.name) && !names.has(h.name), () => `host name ${JSON.stringify(h.name)} invalid or repeated`);
    names.add(h.name);
    const hex = Buffer.from(h.publicKey).toString('hex');
    check(h.publicKey.length === 32 && !h.publicKey.every((b) => b === 0) && !keys.has(hex), () => `host ${h.name}: key invalid, zero or repeated`);
    keys.add(hex);
    const e = h.endpoint;
    check(Number.isInteger(e.port) && e.port >= 1 && e.port <= 65535, () => `host ${h.name}: endpoint port ${e.port}`);
    if (e.dns) check(e.host === e.host.toLowerCase() && !e.host.endsWith('.') && e.host.length > 0 && e.host.length <= 253, () => `host ${h.name}: DNS name ${JSON.stringify(e.host)}`);
    else check(formatIp(parseIp(e.host).bytes) === e.host, () => `host ${h.name}: endpoint IP ${JSON.stringify(e.host)} not canonical`);
    check(h.addresses.length > 0, () => `host ${h.name} has no address`);
    for (const a of h.addresses) {
      const max = a.family === 4 ? 32 : 128;
      check(a.address.length === max / 8 && Number.isInteger(a.prefix) && a.prefix >= 0 && a.prefix <= max, () => `host ${h.name}: address ${a.family} ${a.address.length} bytes /${a.prefix}`);
    }
    for (const c of h.allowedIps) checkCanonical(c, `host ${h.name}: allowedIPs`);
    check(h.persistentKeepalive === undefined || (Number.isInteger(h.persistentKeepalive) && h.persistentKeepalive >= 1 && h.persistentKeepalive <= 65535), () => `host ${h.name}: keepalive ${h.persistentKeepalive}`);
  }
  // Routed prefixes of different hosts never overlap.
  for (let i = 0; i < file.hosts.length; i++) {
    for (let j = i + 1; j < file.hosts.length; j++) {
      for (const a of routedPrefixes(file.hosts[i]!)) {
        for (const b of routedPrefixes(file.hosts[j]!)) check(!prefixesOverlap(a, b), () => `${formatCidr(a)} (${file.hosts[i]!.name}) overlaps ${formatCidr(b)} (${file.hosts[j]!.name})`);
      }
    }
  }
}

/** A parsed file as YAML again (every value quoted). */
function formatFile(file: PeersFile): string {
  let out = 'hosts:\n';
  for (const h of file.hosts) {
    out += `  - name: ${JSON.stringify(h.name)}\n`;
    out += `    endpoint: ${JSON.stringify(formatHostEndpoint(h.endpoint))}\n`;
    out += `    publicKey: ${JSON.stringify(keyToBase64(h.publicKey))}\n`;
    out += `    addresses: [${h.addresses.map((c) => JSON.stringify(`${formatIp(c.address)}/${c.prefix}`)).join(', ')}]\n`;
    if (h.allowedIps.length > 0) out += `    allowedIPs: [${h.allowedIps.map((c) => JSON.stringify(formatCidr(c))).join(', ')}]\n`;
    if (h.persistentKeepalive !== undefined) out += `    persistentKeepalive: ${h.persistentKeepalive}\n`;
  }
  return out;
}
