/**
 * The peers file of a host mesh (`wgts mesh --peers mesh.yaml`): one YAML file, the same on
 * every host, listing every host of the mesh. Each host finds its own entry by its public key
 * (or --name); every other entry is a peer.
 *
 *   hosts:
 *     - name: alpha
 *       endpoint: 198.18.0.1:51820        # a.b.c.d:port, "[v6]:port" (quoted) or name:port
 *       publicKey: 3i0p…=                 # wgts pubkey < private.key
 *       addresses: [100.64.0.1/24]        # tunnel addresses (bare IP or address/len)
 *       allowedIPs: [10.1.0.0/24]         # optional: more prefixes routed to this host
 *       persistentKeepalive: 25           # optional, seconds: this host is behind NAT
 *
 * What the entries mean:
 * - This host's `addresses` go on its interface as written (100.64.0.1/24 keeps its /24, so the
 *   whole mesh subnet points into the tunnel and an address with no peer is dropped there, never
 *   sent in the clear; a bare IP is a /32 or /128).
 * - A peer's allowed IPs (and the routes into the tunnel) are each of its addresses as a host
 *   prefix plus its `allowedIPs`.
 *
 * Parsing is pure and strict: every problem is reported with its line and column, all at once,
 * and nothing of an invalid file is used. Prefixes of different hosts must not overlap (one
 * containing the other included), names and keys must be unique.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { isMap, isScalar, isSeq, LineCounter, parseDocument } from 'yaml';
import type { Node as YamlNode, Pair, YAMLMap } from 'yaml';
import type { Cidr, EndpointAddress } from '../device/config.ts';
import { keyFromBase64, keyToBase64 } from '../util/hex.ts';
import { formatCidr, formatIp, maskInPlace, parseIp } from '../util/ip.ts';
import type { MeshPeer } from './types.ts';

/** An endpoint as written: an IP literal, or a DNS name resolved at run time. */
export interface HostEndpoint {
  /** IP address text (canonical, no brackets) or DNS name (lower case). */
  readonly host: string;
  readonly port: number;
  /** Whether host is a name to resolve. */
  readonly dns: boolean;
}

export interface Position {
  /** 1-based. */
  readonly line: number;
  /** 1-based. */
  readonly col: number;
}

export interface PeersFileHost {
  readonly name: string;
  readonly endpoint: HostEndpoint;
  readonly publicKey: Uint8Array;
  /** Tunnel addresses as written: host bits kept (100.64.0.1/24), a bare IP as /32 or /128. */
  readonly addresses: readonly Cidr[];
  /** Extra prefixes routed to this host (host bits cleared). */
  readonly allowedIps: readonly Cidr[];
  /** Seconds; undefined: off. */
  readonly persistentKeepalive: number | undefined;
  /** Where the entry and some of its fields are, for messages about it later (self lookup). */
  readonly position: Position;
  readonly positions: { readonly publicKey: Position; readonly endpoint: Position };
}

export interface PeersFile {
  readonly hosts: readonly PeersFileHost[];
  /** Where `hosts:` is (for problems about the file as a whole). */
  readonly position: Position;
}

export interface Problem extends Position {
  readonly message: string;
}

/** An unusable peers file: one or more problems, each with its position. */
export class PeersFileError extends Error {
  override readonly name = 'PeersFileError';
  readonly file: string;
  readonly problems: readonly Problem[];

  constructor(file: string, problems: readonly Problem[]) {
    super(problems.map((p) => `${file}:${p.line}:${p.col}: ${p.message}`).join('\n'));
    this.file = file;
    this.problems = problems;
  }
}

const HOST_KEYS = ['name', 'endpoint', 'publicKey', 'addresses', 'allowedIPs', 'persistentKeepalive'] as const;
const REQUIRED_KEYS = ['name', 'endpoint', 'publicKey', 'addresses'] as const;
const NAME_PATTERN = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})$/;
const HOSTNAME_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;

/** "host:port" as the file allows it: a.b.c.d:port, [v6]:port, or dns.name:port. */
export function parseHostEndpoint(text: string): HostEndpoint {
  const match = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]\s]+):(\d{1,5})$/.exec(text);
  if (!match) {
    const hint = isIPv6(text) ? ' (an IPv6 endpoint needs brackets and a port: "[fd00::1]:51820")' : '';
    throw new Error(`"${text}" is not an endpoint: expected a.b.c.d:port, "[v6]:port" or name:port${hint}`);
  }
  const host = match[1]!;
  const port = Number(match[2]);
  if (port < 1 || port > 65535) throw new Error(`"${text}": the port must be 1 to 65535`);
  if (text.startsWith('[')) {
    if (!isIPv6(host)) throw new Error(`"${text}": "${host}" in brackets is not an IPv6 address`);
    return { host: formatIp(parseIp(host).bytes), port, dns: false };
  }
  if (isIPv4(host)) return { host: formatIp(parseIp(host).bytes), port, dns: false };
  if (/^[\d.]+$/.test(host)) throw new Error(`"${text}": "${host}" is not an IPv4 address`);
  const name = host.toLowerCase().replace(/\.$/, '');
  if (name.length > 253 || !name.split('.').every((label) => HOSTNAME_LABEL.test(label))) {
    throw new Error(`"${text}": "${host}" is neither an IP address nor a DNS name`);
  }
  return { host: name, port, dns: true };
}

export function formatHostEndpoint(endpoint: HostEndpoint): string {
  return endpoint.host.includes(':') ? `[${endpoint.host}]:${endpoint.port}` : `${endpoint.host}:${endpoint.port}`;
}

/** An interface address: "a.b.c.d/len" keeps its host bits; a bare address is a host prefix. */
export function parseInterfaceAddress(text: string): Cidr {
  const slash = text.indexOf('/');
  const ip = parseIp(slash < 0 ? text : text.slice(0, slash));
  const max = ip.family === 4 ? 32 : 128;
  if (slash < 0) return { family: ip.family, address: ip.bytes, prefix: max };
  const p = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(p) || Number(p) > max) throw new Error(`"${text}": the prefix length must be 0 to ${max}`);
  return { family: ip.family, address: ip.bytes, prefix: Number(p) };
}

/** A prefix routed to a host: host bits must be zero, so "10.1.0.1/24" (a typo for 10.1.0.0/24, or an address) is refused. */
export function parseRoutedPrefix(text: string): Cidr {
  const cidr = parseInterfaceAddress(text);
  const masked = maskInPlace(Uint8Array.from(cidr.address), cidr.prefix);
  if (!masked.every((b, i) => b === cidr.address[i])) {
    throw new Error(`"${text}" has host bits set: the prefix is ${formatIp(masked)}/${cidr.prefix}`);
  }
  return cidr;
}

export function hostPrefix(cidr: Cidr): Cidr {
  return { family: cidr.family, address: cidr.address, prefix: cidr.family === 4 ? 32 : 128 };
}

/** Whether two prefixes share any address (one contains the other). */
export function prefixesOverlap(a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family) return false;
  const prefix = Math.min(a.prefix, b.prefix);
  const x = maskInPlace(Uint8Array.from(a.address), prefix);
  const y = maskInPlace(Uint8Array.from(b.address), prefix);
  return x.every((byte, i) => byte === y[i]);
}

/** Prefixes the other hosts route to this one: its addresses as host prefixes, and its allowedIPs. */
export function routedPrefixes(host: PeersFileHost): Cidr[] {
  return [...host.addresses.map(hostPrefix), ...host.allowedIps];
}

/** Parses and validates a peers file; throws PeersFileError listing every problem with its position. */
export function parsePeersFile(text: string, file: string): PeersFile {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number | undefined): Position => {
    const pos = lineCounter.linePos(offset ?? 0);
    return { line: pos.line, col: pos.col };
  };
  const problems: Problem[] = [];
  const problem = (node: YamlNode | Pair | null | undefined, message: string, fallback?: Position): void => {
    const offset = node && 'range' in node && node.range ? node.range[0] : isPairNode(node) ? (node.key as YamlNode | null)?.range?.[0] : undefined;
    problems.push({ ...(offset === undefined ? (fallback ?? { line: 1, col: 1 }) : at(offset)), message });
  };

  if (doc.errors.length > 0) {
    const lines = text.split('\n');
    for (const err of doc.errors) {
      const pos = at(err.pos[0]);
      const line = lines[pos.line - 1] ?? '';
      const hint = /^\s*-?\s*endpoint:\s*\[/.test(line) ? ' (an IPv6 endpoint must be quoted: endpoint: "[fd00::1]:51820")' : '';
      problems.push({ ...pos, message: `invalid YAML: ${err.message}${hint}` });
    }
    throw new PeersFileError(file, problems);
  }

  const root = doc.contents;
  if (root === null || (isScalar(root) && (root.value === null || root.value === ''))) {
    throw new PeersFileError(file, [{ line: 1, col: 1, message: 'the file is empty: expected "hosts:" with a list of hosts' }]);
  }
  if (!isMap(root)) {
    problem(root, 'expected a mapping with "hosts:" at the top level');
    throw new PeersFileError(file, problems);
  }
  let hostsPair: Pair | undefined;
  for (const pair of root.items) {
    const key = keyText(pair);
    if (key === 'hosts') hostsPair = pair;
    else problem(pair, `unknown top-level key ${JSON.stringify(key)}: the file has only "hosts:"`);
  }
  if (!hostsPair) {
    problem(root, 'no "hosts:" list');
    throw new PeersFileError(file, problems);
  }
  const hostsNode = hostsPair.value as YamlNode | null;
  const filePosition = at((hostsPair.key as YamlNode).range?.[0]);
  if (!isSeq(hostsNode)) {
    problem(hostsNode ?? hostsPair, '"hosts" must be a list of hosts ("- name: …" entries)', filePosition);
    throw new PeersFileError(file, problems);
  }

  const parsed: ParsedHost[] = [];
  for (const item of hostsNode.items) {
    const node = item as YamlNode | null;
    if (!isMap(node)) {
      problem(node, 'a host must be a mapping with name, endpoint, publicKey and addresses', filePosition);
      continue;
    }
    const host = parseHost(node, problem, at);
    if (host) parsed.push(host);
  }
  if (hostsNode.items.length === 0) problem(hostsNode, 'the "hosts" list is empty', filePosition);
  checkUnique(parsed, problems);
  if (problems.length > 0) throw new PeersFileError(file, sortProblems(problems));
  return { hosts: parsed.map((p) => p.host), position: filePosition };
}

/** A host and where each prefix it routes was written (for overlap messages). */
interface ParsedHost {
  readonly host: PeersFileHost;
  readonly prefixes: readonly { readonly cidr: Cidr; readonly field: 'addresses' | 'allowedIPs'; readonly position: Position }[];
}

type Report = (node: YamlNode | Pair | null | undefined, message: string, fallback?: Position) => void;

function isPairNode(node: unknown): node is Pair {
  return typeof node === 'object' && node !== null && 'key' in node && 'value' in node;
}

function keyText(pair: Pair): string {
  const key = pair.key as YamlNode | null;
  return isScalar(key) ? String(key.value) : String(key);
}

function stringValue(pair: Pair, field: string, report: Report): string | undefined {
  const value = pair.value as YamlNode | null;
  if (isScalar(value) && typeof value.value === 'string' && value.value.trim() !== '') return value.value.trim();
  report(value ?? pair, `${field} must be a non-empty string`);
  return undefined;
}

/** A list of strings, or one string. */
function stringList(pair: Pair, field: string, report: Report): { text: string; node: YamlNode }[] | undefined {
  const value = pair.value as YamlNode | null;
  if (isScalar(value) && typeof value.value === 'string') return [{ text: value.value.trim(), node: value }];
  if (isSeq(value)) {
    const out: { text: string; node: YamlNode }[] = [];
    for (const item of value.items) {
      const node = item as YamlNode | null;
      if (isScalar(node) && typeof node.value === 'string') out.push({ text: node.value.trim(), node });
      else report(node ?? value, `${field}: each entry must be an address or prefix written as a string`);
    }
    return out;
  }
  report(value ?? pair, `${field} must be a list of addresses ([100.64.0.1/24, fd00::1/64])`);
  return undefined;
}

function parseHost(node: YAMLMap, report: Report, at: (offset: number | undefined) => Position): ParsedHost | undefined {
  const pairs = new Map<string, Pair>();
  for (const pair of node.items) {
    const key = keyText(pair);
    if ((HOST_KEYS as readonly string[]).includes(key)) {
      pairs.set(key, pair);
      continue;
    }
    const near = HOST_KEYS.find((k) => k.toLowerCase() === key.toLowerCase().replace(/[-_]/g, ''));
    report(pair, `unknown key ${JSON.stringify(key)}${near ? ` (did you mean "${near}"?)` : ''}: a host has ${HOST_KEYS.join(', ')}`);
  }
  const nameForMessages = (() => {
    const v = pairs.get('name')?.value as YamlNode | null | undefined;
    return isScalar(v) && typeof v.value === 'string' ? ` "${v.value}"` : '';
  })();
  let ok = true;
  for (const key of REQUIRED_KEYS) {
    if (!pairs.has(key)) {
      report(node, `host${nameForMessages} has no ${key}`);
      ok = false;
    }
  }
  const fail = (n: YamlNode | Pair | null | undefined, message: string): undefined => {
    report(n, message);
    ok = false;
    return undefined;
  };

  let name: string | undefined;
  const namePair = pairs.get('name');
  if (namePair) {
    name = stringValue(namePair, 'name', report);
    if (name === undefined) ok = false;
    else if (!NAME_PATTERN.test(name)) fail(namePair.value as YamlNode, `name "${name}": use letters, digits, '.', '_' and '-' (at most 63, starting with a letter or digit)`);
  }

  let endpoint: HostEndpoint | undefined;
  const endpointPair = pairs.get('endpoint');
  if (endpointPair) {
    const text = stringValue(endpointPair, 'endpoint', report);
    if (text === undefined) ok = false;
    else {
      try {
        endpoint = parseHostEndpoint(text);
      } catch (err) {
        fail(endpointPair.value as YamlNode, `endpoint: ${(err as Error).message}`);
      }
    }
  }

  let publicKey: Uint8Array | undefined;
  const keyPair = pairs.get('publicKey');
  if (keyPair) {
    const text = stringValue(keyPair, 'publicKey', report);
    if (text === undefined) ok = false;
    else {
      try {
        publicKey = keyFromBase64(text);
        if (publicKey.every((b) => b === 0)) fail(keyPair.value as YamlNode, 'publicKey is all zero');
      } catch (err) {
        fail(keyPair.value as YamlNode, `publicKey "${text.length > 50 ? text.slice(0, 50) + '…' : text}" is not a WireGuard key: ${(err as Error).message} (wgts pubkey < private.key prints it)`);
      }
    }
  }

  const addresses: Cidr[] = [];
  const prefixes: { cidr: Cidr; field: 'addresses' | 'allowedIPs'; position: Position }[] = [];
  const addressPair = pairs.get('addresses');
  if (addressPair) {
    const list = stringList(addressPair, 'addresses', report);
    if (!list) ok = false;
    else if (list.length === 0) fail(addressPair.value as YamlNode, 'addresses is empty: a host needs at least one tunnel address');
    for (const { text, node: n } of list ?? []) {
      try {
        const address = parseInterfaceAddress(text);
        addresses.push(address);
        // Routed to this host as a host prefix: hosts sharing an interface subnet (the /24s) is expected.
        prefixes.push({ cidr: hostPrefix(address), field: 'addresses', position: at(n.range?.[0]) });
      } catch (err) {
        fail(n, `addresses: ${(err as Error).message}`);
      }
    }
  }

  const allowedIps: Cidr[] = [];
  const allowedPair = pairs.get('allowedIPs');
  if (allowedPair) {
    const list = stringList(allowedPair, 'allowedIPs', report);
    if (!list) ok = false;
    for (const { text, node: n } of list ?? []) {
      try {
        const prefix = parseRoutedPrefix(text);
        allowedIps.push(prefix);
        prefixes.push({ cidr: prefix, field: 'allowedIPs', position: at(n.range?.[0]) });
      } catch (err) {
        fail(n, `allowedIPs: ${(err as Error).message}`);
      }
    }
  }

  let persistentKeepalive: number | undefined;
  const keepalivePair = pairs.get('persistentKeepalive');
  if (keepalivePair) {
    const value = keepalivePair.value as YamlNode | null;
    const n = isScalar(value) ? value.value : undefined;
    if (typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 65535) persistentKeepalive = n === 0 ? undefined : n;
    else fail(value ?? keepalivePair, 'persistentKeepalive must be a whole number of seconds from 0 to 65535');
  }

  if (!ok || name === undefined || endpoint === undefined || publicKey === undefined) return undefined;
  const positions = {
    publicKey: at((keyPair!.value as YamlNode).range?.[0]),
    endpoint: at((endpointPair!.value as YamlNode).range?.[0]),
  };
  const host: PeersFileHost = { name, endpoint, publicKey, addresses, allowedIps, persistentKeepalive, position: at(node.range?.[0]), positions };
  return { host, prefixes };
}

function checkUnique(parsed: readonly ParsedHost[], problems: Problem[]): void {
  const names = new Map<string, PeersFileHost>();
  const keys = new Map<string, PeersFileHost>();
  for (const { host } of parsed) {
    const sameName = names.get(host.name);
    if (sameName) problems.push({ ...host.position, message: `name "${host.name}" is already used by the host at line ${sameName.position.line}` });
    else names.set(host.name, host);
    const hex = Buffer.from(host.publicKey).toString('hex');
    const sameKey = keys.get(hex);
    if (sameKey) problems.push({ ...host.positions.publicKey, message: `host "${host.name}" has the same publicKey as "${sameKey.name}" (line ${sameKey.positions.publicKey.line}): every host needs its own key` });
    else keys.set(hex, host);
  }
  // Prefixes of different hosts must be disjoint: a packet must have exactly one host to go to.
  const seen: { host: PeersFileHost; cidr: Cidr; field: string; position: Position }[] = [];
  for (const { host, prefixes } of parsed) {
    for (const prefix of prefixes) {
      const clash = seen.find((s) => s.host !== host && prefixesOverlap(s.cidr, prefix.cidr));
      if (clash) {
        problems.push({
          ...prefix.position,
          message: `${prefix.field} ${formatCidr(prefix.cidr)} of "${host.name}" overlaps ${formatCidr(clash.cidr)} of "${clash.host.name}" (${clash.field}, line ${clash.position.line}): a prefix can belong to one host only`,
        });
      }
    }
    for (const prefix of prefixes) seen.push({ host, ...prefix });
  }
}

function sortProblems(problems: Problem[]): Problem[] {
  return [...problems].sort((a, b) => a.line - b.line || a.col - b.col);
}

// ---------------------------------------------------------------------------------------------
// Self, peers, and what changed between two versions of the file.

export interface SelfQuery {
  /** --name; undefined: find the entry by publicKey. */
  readonly name?: string | undefined;
  /** This host's public key (from its key file). */
  readonly publicKey: Uint8Array;
  /** The data plane's listen port, which this host's endpoint must name. */
  readonly listenPort?: number;
}

const sameKey = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** This host's entry; throws PeersFileError (with a position) when there is none or it does not match. */
export function findSelf(peers: PeersFile, file: string, query: SelfQuery): PeersFileHost {
  const ours = keyToBase64(query.publicKey);
  let self: PeersFileHost | undefined;
  if (query.name !== undefined) {
    self = peers.hosts.find((h) => h.name === query.name);
    if (!self) {
      throw new PeersFileError(file, [{ ...peers.position, message: `no host named "${query.name}" (--name) in the file; this host's public key is ${ours}` }]);
    }
    if (!sameKey(self.publicKey, query.publicKey)) {
      throw new PeersFileError(file, [
        { ...self.positions.publicKey, message: `the publicKey of "${self.name}" is not this host's: its key file gives ${ours}; peers would fail every handshake` },
      ]);
    }
  } else {
    self = peers.hosts.find((h) => sameKey(h.publicKey, query.publicKey));
    if (!self) {
      throw new PeersFileError(file, [{ ...peers.position, message: `no host has this host's public key ${ours}: add an entry with that publicKey, or pass --name` }]);
    }
  }
  if (query.listenPort !== undefined && self.endpoint.port !== query.listenPort) {
    throw new PeersFileError(file, [
      {
        ...self.positions.endpoint,
        message: `the endpoint of "${self.name}" (this host) has port ${self.endpoint.port}, but the data plane listens on ${query.listenPort} (--listen-port): make them the same`,
      },
    ]);
  }
  return self;
}

/**
 * The peers of self: every other host, with allowed IPs = its addresses as host prefixes + its
 * allowedIPs. persistentKeepalive marks a host behind NAT: it keeps alive towards every peer,
 * and every peer towards it (the shorter interval when both are marked).
 */
export function peersOf(peers: PeersFile, self: PeersFileHost, resolve: (endpoint: HostEndpoint) => EndpointAddress | undefined): MeshPeer[] {
  return peers.hosts
    .filter((h) => h !== self)
    .map((h) => {
      const intervals = [h.persistentKeepalive, self.persistentKeepalive].filter((n): n is number => n !== undefined);
      return {
        name: h.name,
        publicKey: h.publicKey,
        endpoint: resolve(h.endpoint),
        allowedIps: routedPrefixes(h),
        ...(intervals.length > 0 ? { persistentKeepalive: Math.min(...intervals) } : {}),
      };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** A host's meaning as one comparable string (positions and formatting excluded). */
export function hostFingerprint(host: PeersFileHost): string {
  return JSON.stringify([
    host.name,
    formatHostEndpoint(host.endpoint),
    keyToBase64(host.publicKey),
    host.addresses.map((c) => `${formatIp(c.address)}/${c.prefix}`),
    host.allowedIps.map(formatCidr),
    host.persistentKeepalive ?? 0,
  ]);
}

export interface HostsDiff {
  readonly added: string[];
  readonly removed: string[];
  readonly changed: string[];
}

/** Which hosts (by name) an edit added, removed or changed; all empty when only comments or layout changed. */
export function diffPeersFiles(before: PeersFile | undefined, after: PeersFile): HostsDiff {
  const old = new Map((before?.hosts ?? []).map((h) => [h.name, hostFingerprint(h)]));
  const diff: HostsDiff = { added: [], removed: [], changed: [] };
  for (const host of after.hosts) {
    const was = old.get(host.name);
    if (was === undefined) diff.added.push(host.name);
    else if (was !== hostFingerprint(host)) diff.changed.push(host.name);
    old.delete(host.name);
  }
  diff.removed.push(...old.keys());
  return diff;
}

export function isEmptyDiff(diff: HostsDiff): boolean {
  return diff.added.length + diff.removed.length + diff.changed.length === 0;
}
