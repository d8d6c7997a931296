/**
 * The cross-platform configuration protocol (wireguard.com/xplatform) as text, without sockets:
 * `set=1` bodies become a ConfigTransaction, a DeviceSnapshot becomes the `get=1` body.
 *
 * Behaviour follows wireguard-go's device/uapi.go (IpcGetOperation / IpcSetOperation), with one
 * deliberate difference: wireguard-go applies a set line by line and stops at the first bad line,
 * leaving earlier lines applied; here the whole body is validated into one transaction first and
 * the device applies it all or nothing.
 *
 * The get body is byte-for-byte wireguard-go's:
 *
 *   private_key=<hex>                  only when a non-zero key is set
 *   listen_port=<n>                    only when non-zero
 *   fwmark=<n>                         only when non-zero
 *   then per peer:
 *   public_key=<hex>
 *   preshared_key=<hex>                always (all zero when none)
 *   protocol_version=1
 *   endpoint=<a.b.c.d:p | [v6]:p>      only when known
 *   last_handshake_time_sec=<n>        Unix epoch; 0 when never
 *   last_handshake_time_nsec=<n>
 *   tx_bytes=<n>
 *   rx_bytes=<n>
 *   persistent_keepalive_interval=<n>
 *   allowed_ip=<addr/prefix>           one per prefix
 *
 * The trailing `errno=0\n\n` belongs to the server (uapi-server.ts).
 */
import {
  ConfigError,
  EINVAL,
  EPROTO,
  type Cidr,
  type ConfigTransaction,
  type DeviceSnapshot,
  type EndpointAddress,
  type PeerChange,
  type PeerSnapshot,
} from './config.ts';
import { formatCidr, formatEndpoint, parseCidr, parseEndpoint } from '../util/ip.ts';
import { fromHex, toHex } from '../util/hex.ts';

/** Longest accepted protocol line, newline excluded. wg's longest real line is ~60 bytes. */
export const UAPI_MAX_LINE_BYTES = 4096;
/** Largest accepted set request (about 40,000 peers with a few prefixes each). */
export const UAPI_MAX_REQUEST_BYTES = 16 * 1024 * 1024;

const DEVICE_KEYS = new Set(['private_key', 'listen_port', 'fwmark', 'replace_peers']);
const PEER_KEYS = new Set([
  'remove',
  'update_only',
  'preshared_key',
  'endpoint',
  'persistent_keepalive_interval',
  'replace_allowed_ips',
  'allowed_ip',
  'protocol_version',
]);
const GET_ONLY_KEYS = new Set(['last_handshake_time_sec', 'last_handshake_time_nsec', 'rx_bytes', 'tx_bytes', 'errno']);
const SECRET_KEYS = ['private_key', 'preshared_key'];

const KEY_HEX = /^[0-9a-fA-F]{64}$/;
const ZERO_KEY = new Uint8Array(32);

// ---------------------------------------------------------------------------------------------
// Messages that never leak secrets

/**
 * A run of key-alphabet characters (hex, base64, base64url) long enough to be part of a key:
 * 16 characters carry at least 8 bytes of a hex key or 12 of a base64 one. Pure digit runs
 * (an out-of-range port or fwmark) are not key material and stay visible.
 */
const KEY_MATERIAL = /(?=[0-9]*[A-Za-z+/=_-])[A-Za-z0-9+/=_-]{16,}/;
const KEY_MATERIAL_ALL = new RegExp(KEY_MATERIAL.source, 'g');
const KNOWN_KEYS = new Set([...DEVICE_KEYS, ...PEER_KEYS, ...GET_ONLY_KEYS, 'public_key']);

/**
 * The line as it may appear in a log or error message: secret values replaced by <redacted>,
 * anything that looks like key material (a long hex/base64/base64url run) outside a public_key
 * value redacted too — in the value and in an unknown key name alike — and long lines cut.
 */
export function redactLine(line: string): string {
  const trimmed = line.trimStart().toLowerCase();
  for (const secret of SECRET_KEYS) {
    if (trimmed.startsWith(secret)) return `${secret}=<redacted>`;
  }
  const eq = line.indexOf('=');
  if (eq < 0) return KEY_MATERIAL.test(line) ? '<redacted>' : clip(line);
  const key = line.slice(0, eq);
  const value = line.slice(eq + 1);
  if (key === 'public_key') return clip(line);
  return `${redactKeyName(key)}=${KEY_MATERIAL.test(value) ? '<redacted>' : clip(value, 96 - Math.min(key.length, 40))}`;
}

/** A key name as it may appear in a message: known names as they are, unknown ones unless they look like key material. */
export function redactKeyName(key: string): string {
  if (KNOWN_KEYS.has(key)) return key;
  return KEY_MATERIAL.test(key) ? '<redacted>' : clip(key, 40);
}

function clip(text: string, max = 96): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

function lineError(lineNumber: number, line: string, reason: string, errno: number = EINVAL): ConfigError {
  return new ConfigError(`line ${lineNumber} ${JSON.stringify(redactLine(line))}: ${reason}`, errno);
}

// ---------------------------------------------------------------------------------------------
// set

export interface SetParserOptions {
  /**
   * Number given to the first line fed. Default 1; the server passes 2 because the request's
   * first line is `set=1`.
   */
  readonly firstLineNumber?: number;
}

interface PeerBuilder {
  publicKey: Uint8Array;
  remove: boolean;
  updateOnly: boolean;
  presharedKey: Uint8Array | undefined;
  endpoint: EndpointAddress | undefined;
  persistentKeepaliveInterval: number | undefined;
  replaceAllowedIps: boolean;
  /** Keyed by canonical text, in first-seen order; a prefix is never in both maps. */
  add: Map<string, Cidr>;
  removeIps: Map<string, Cidr>;
}

/**
 * Incremental `set=1` body parser: feed lines (without their newline) as they arrive, then
 * finish(). feed() throws a ConfigError naming the line on the first bad one; the parser is
 * then spent.
 *
 * Allowed-IP semantics mirror sequential application within one peer section:
 * `replace_allowed_ips=true` discards prefixes added or removed earlier in the same section, and
 * a prefix added then removed (or removed then added) ends up only in the list of its last
 * operation, so a device may apply removeAllowedIps and addAllowedIps in either order.
 */
export class SetParser {
  private lineNumber: number;
  private failed = false;
  private privateKey: Uint8Array | undefined;
  private listenPort: number | undefined;
  private fwmark: number | undefined;
  private replacePeers = false;
  private readonly peers: PeerChange[] = [];
  private peer: PeerBuilder | undefined;

  constructor(options: SetParserOptions = {}) {
    this.lineNumber = (options.firstLineNumber ?? 1) - 1;
  }

  feed(line: string): void {
    if (this.failed) throw new ConfigError('set parser used after an error', EINVAL);
    this.lineNumber++;
    try {
      this.parseLine(line);
    } catch (err) {
      this.failed = true;
      throw err;
    }
  }

  finish(): ConfigTransaction {
    if (this.failed) throw new ConfigError('set parser used after an error', EINVAL);
    this.flushPeer();
    const tx: { -readonly [K in keyof ConfigTransaction]: ConfigTransaction[K] } = {};
    if (this.privateKey !== undefined) tx.privateKey = this.privateKey;
    if (this.listenPort !== undefined) tx.listenPort = this.listenPort;
    if (this.fwmark !== undefined) tx.fwmark = this.fwmark;
    if (this.replacePeers) tx.replacePeers = true;
    if (this.peers.length > 0) tx.peers = this.peers;
    this.failed = true; // one transaction per parser
    return tx;
  }

  private parseLine(line: string): void {
    const n = this.lineNumber;
    const eq = line.indexOf('=');
    if (eq < 0) {
      throw lineError(n, line, line === '' ? 'empty line inside a set request' : 'expected key=value', EPROTO);
    }
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);

    if (key === 'public_key') {
      this.flushPeer();
      this.peer = {
        publicKey: parseKey(n, line, value),
        remove: false,
        updateOnly: false,
        presharedKey: undefined,
        endpoint: undefined,
        persistentKeepaliveInterval: undefined,
        replaceAllowedIps: false,
        add: new Map(),
        removeIps: new Map(),
      };
      return;
    }

    if (DEVICE_KEYS.has(key)) {
      if (this.peer) throw lineError(n, line, `${key} is a device key: it must come before the first public_key`);
      switch (key) {
        case 'private_key':
          this.privateKey = parseKey(n, line, value);
          return;
        case 'listen_port':
          this.listenPort = parseUint(n, line, key, value, 0xffff);
          return;
        case 'fwmark':
          this.fwmark = parseUint(n, line, key, value, 0xffffffff);
          return;
        case 'replace_peers':
          parseTrue(n, line, key, value);
          this.replacePeers = true;
          return;
      }
    }

    if (PEER_KEYS.has(key)) {
      const peer = this.peer;
      if (!peer) throw lineError(n, line, `${key} is a peer key: it must follow a public_key line`);
      switch (key) {
        case 'remove':
          parseTrue(n, line, key, value);
          peer.remove = true;
          return;
        case 'update_only':
          parseTrue(n, line, key, value);
          peer.updateOnly = true;
          return;
        case 'preshared_key':
          peer.presharedKey = parseKey(n, line, value);
          return;
        case 'endpoint':
          peer.endpoint = parseWith(n, line, () => parseEndpoint(value));
          return;
        case 'persistent_keepalive_interval':
          peer.persistentKeepaliveInterval = parseUint(n, line, key, value, 0xffff);
          return;
        case 'replace_allowed_ips':
          parseTrue(n, line, key, value);
          peer.replaceAllowedIps = true;
          peer.add.clear();
          peer.removeIps.clear();
          return;
        case 'allowed_ip': {
          const removing = value.startsWith('-');
          const cidr = parseAllowedIp(n, line, removing ? value.slice(1) : value);
          const text = formatCidr(cidr);
          if (removing) {
            peer.add.delete(text);
            peer.removeIps.set(text, cidr);
          } else {
            peer.removeIps.delete(text);
            peer.add.set(text, cidr);
          }
          return;
        }
        case 'protocol_version':
          if (value !== '1') throw lineError(n, line, 'protocol_version must be 1');
          return;
      }
    }

    if (GET_ONLY_KEYS.has(key)) throw lineError(n, line, `${key} is reported by get; set does not accept it`);
    throw lineError(n, line, `unknown key ${JSON.stringify(redactKeyName(key))}`);
  }

  private flushPeer(): void {
    const p = this.peer;
    if (!p) return;
    this.peer = undefined;
    if (p.remove) {
      this.peers.push({ publicKey: p.publicKey, remove: true });
      return;
    }
    const change: { -readonly [K in keyof PeerChange]: PeerChange[K] } = { publicKey: p.publicKey };
    if (p.updateOnly) change.updateOnly = true;
    if (p.presharedKey !== undefined) change.presharedKey = p.presharedKey;
    if (p.endpoint !== undefined) change.endpoint = p.endpoint;
    if (p.persistentKeepaliveInterval !== undefined) change.persistentKeepaliveInterval = p.persistentKeepaliveInterval;
    if (p.replaceAllowedIps) change.replaceAllowedIps = true;
    if (p.add.size > 0) change.addAllowedIps = [...p.add.values()];
    if (p.removeIps.size > 0) change.removeAllowedIps = [...p.removeIps.values()];
    this.peers.push(change);
  }
}

/**
 * Parses the lines of a `set=1` body (the lines after `set=1`, without newlines). Trailing empty
 * lines (the terminator) are allowed; an empty line before other lines is an error.
 */
export function parseSet(lines: Iterable<string>, options: SetParserOptions = {}): ConfigTransaction {
  const all = [...lines];
  let end = all.length;
  while (end > 0 && all[end - 1] === '') end--;
  const parser = new SetParser(options);
  for (let i = 0; i < end; i++) parser.feed(all[i]!);
  return parser.finish();
}

function parseKey(n: number, line: string, value: string): Uint8Array {
  if (!KEY_HEX.test(value)) throw lineError(n, line, `a key is exactly 64 hex characters (got ${value.length} characters${/^[0-9a-fA-F]*$/.test(value) ? '' : ', not all hex'})`);
  return fromHex(value);
}

function parseUint(n: number, line: string, key: string, value: string, max: number): number {
  const digits = value.replace(/^0+(?=\d)/, '');
  if (!/^\d+$/.test(value) || digits.length > String(max).length || Number(digits) > max) {
    throw lineError(n, line, `${key} must be an integer from 0 to ${max}`);
  }
  return Number(digits);
}

function parseTrue(n: number, line: string, key: string, value: string): void {
  if (value !== 'true') throw lineError(n, line, `${key} accepts only "true"`);
}

function parseAllowedIp(n: number, line: string, text: string): Cidr {
  if (!text.includes('/')) throw lineError(n, line, 'allowed_ip must be address/prefix-length');
  if (text.includes('%')) throw lineError(n, line, 'allowed_ip cannot carry an IPv6 zone');
  return parseWith(n, line, () => parseCidr(text));
}

function parseWith<T>(n: number, line: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    // The parsers quote the value they refused: no key material through that door either.
    throw lineError(n, line, (err as Error).message.replace(KEY_MATERIAL_ALL, '<redacted>'));
  }
}

/**
 * The `set=1` body `wg` would send for a transaction (without `set=1` and the blank line).
 * Used by tests and by code that drives another implementation over its UAPI.
 */
export function formatSet(tx: ConfigTransaction): string {
  let out = '';
  const line = (key: string, value: string | number): void => {
    out += `${key}=${value}\n`;
  };
  if (tx.privateKey) line('private_key', toHex(tx.privateKey));
  if (tx.listenPort !== undefined) line('listen_port', tx.listenPort);
  if (tx.fwmark !== undefined) line('fwmark', tx.fwmark);
  if (tx.replacePeers) line('replace_peers', 'true');
  for (const peer of tx.peers ?? []) {
    line('public_key', toHex(peer.publicKey));
    if (peer.remove) {
      line('remove', 'true');
      continue;
    }
    if (peer.updateOnly) line('update_only', 'true');
    if (peer.presharedKey) line('preshared_key', toHex(peer.presharedKey));
    if (peer.endpoint) line('endpoint', formatEndpoint(peer.endpoint));
    if (peer.persistentKeepaliveInterval !== undefined) line('persistent_keepalive_interval', peer.persistentKeepaliveInterval);
    if (peer.replaceAllowedIps) line('replace_allowed_ips', 'true');
    for (const cidr of peer.removeAllowedIps ?? []) line('allowed_ip', `-${formatCidr(cidr)}`);
    for (const cidr of peer.addAllowedIps ?? []) line('allowed_ip', formatCidr(cidr));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// get

/** The `get=1` body for a snapshot, exactly as wireguard-go prints it (see the file comment). */
export function formatGet(snapshot: DeviceSnapshot): string {
  const lines: string[] = [];
  if (snapshot.privateKey && !isZero(snapshot.privateKey)) lines.push(`private_key=${toHex(snapshot.privateKey)}`);
  if (snapshot.listenPort !== 0) lines.push(`listen_port=${snapshot.listenPort}`);
  if (snapshot.fwmark !== 0) lines.push(`fwmark=${snapshot.fwmark >>> 0}`);
  for (const peer of snapshot.peers) {
    lines.push(`public_key=${toHex(peer.publicKey)}`);
    lines.push(`preshared_key=${toHex(peer.presharedKey.length === 32 ? peer.presharedKey : ZERO_KEY)}`);
    lines.push('protocol_version=1');
    if (peer.endpoint) lines.push(`endpoint=${formatEndpoint(peer.endpoint)}`);
    const [sec, nsec] = epochParts(peer.lastHandshakeEpochMs);
    lines.push(`last_handshake_time_sec=${sec}`);
    lines.push(`last_handshake_time_nsec=${nsec}`);
    lines.push(`tx_bytes=${counter(peer.txBytes)}`);
    lines.push(`rx_bytes=${counter(peer.rxBytes)}`);
    lines.push(`persistent_keepalive_interval=${peer.persistentKeepaliveInterval}`);
    for (const cidr of peer.allowedIps) lines.push(`allowed_ip=${formatCidr(cidr)}`);
  }
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

function isZero(bytes: Uint8Array): boolean {
  for (const b of bytes) if (b !== 0) return false;
  return true;
}

/** Milliseconds since the epoch (possibly fractional) → [seconds, nanoseconds]; 0 stays 0. */
function epochParts(ms: number): [string, string] {
  if (!Number.isFinite(ms) || ms <= 0) return ['0', '0'];
  const sec = Math.floor(ms / 1000);
  const nsec = Math.min(999_999_999, Math.max(0, Math.round((ms - sec * 1000) * 1e6)));
  return [String(sec), String(nsec)];
}

function counter(n: number): string {
  return Number.isFinite(n) && n > 0 ? BigInt(Math.trunc(n)).toString() : '0';
}

/** A get response parsed back into a snapshot (for tests, and to read another implementation). */
export interface ParsedGet {
  readonly snapshot: DeviceSnapshot;
  /** The errno line's value, when the text carried one. */
  readonly errno: number | undefined;
}

/**
 * Parses a `get=1` response (body, optionally followed by `errno=N` and the blank line).
 * Strict: an unknown key or a bad value throws a ConfigError naming the line.
 */
export function parseGet(text: string): ParsedGet {
  let privateKey: Uint8Array | undefined;
  let listenPort = 0;
  let fwmark = 0;
  let errno: number | undefined;
  const peers: PeerSnapshot[] = [];
  type MutablePeer = { -readonly [K in keyof PeerSnapshot]: PeerSnapshot[K] } & { allowedIps: Cidr[] };
  let peer: MutablePeer | undefined;
  let lastHandshakeSec = 0;
  let lastHandshakeNsec = 0;
  const flush = (): void => {
    if (!peer) return;
    peer.lastHandshakeEpochMs = lastHandshakeSec * 1000 + lastHandshakeNsec / 1e6;
    peers.push(peer);
    peer = undefined;
  };
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const n = i + 1;
    if (line === '') {
      if (lines.slice(i).every((l) => l === '')) break;
      throw lineError(n, line, 'empty line inside a get response', EPROTO);
    }
    const eq = line.indexOf('=');
    if (eq < 0) throw lineError(n, line, 'expected key=value', EPROTO);
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    if (key === 'errno') {
      if (!/^-?\d+$/.test(value)) throw lineError(n, line, 'errno must be an integer');
      errno = Number(value);
      continue;
    }
    if (key === 'public_key') {
      flush();
      lastHandshakeSec = 0;
      lastHandshakeNsec = 0;
      peer = {
        publicKey: parseKey(n, line, value),
        presharedKey: new Uint8Array(32),
        endpoint: undefined,
        lastHandshakeEpochMs: 0,
        rxBytes: 0,
        txBytes: 0,
        persistentKeepaliveInterval: 0,
        allowedIps: [],
      };
      continue;
    }
    if (!peer) {
      switch (key) {
        case 'private_key':
          privateKey = parseKey(n, line, value);
          continue;
        case 'listen_port':
          listenPort = parseUint(n, line, key, value, 0xffff);
          continue;
        case 'fwmark':
          fwmark = parseUint(n, line, key, value, 0xffffffff);
          continue;
      }
      throw lineError(n, line, `unexpected device key ${JSON.stringify(redactKeyName(key))}`);
    }
    switch (key) {
      case 'preshared_key':
        peer.presharedKey = parseKey(n, line, value);
        continue;
      case 'protocol_version':
        if (value !== '1') throw lineError(n, line, 'protocol_version must be 1');
        continue;
      case 'endpoint':
        peer.endpoint = parseWith(n, line, () => parseEndpoint(value));
        continue;
      case 'last_handshake_time_sec':
        lastHandshakeSec = parseUint(n, line, key, value, Number.MAX_SAFE_INTEGER);
        continue;
      case 'last_handshake_time_nsec':
        lastHandshakeNsec = parseUint(n, line, key, value, 999_999_999);
        continue;
      case 'tx_bytes':
        peer.txBytes = parseUint(n, line, key, value, Number.MAX_SAFE_INTEGER);
        continue;
      case 'rx_bytes':
        peer.rxBytes = parseUint(n, line, key, value, Number.MAX_SAFE_INTEGER);
        continue;
      case 'persistent_keepalive_interval':
        peer.persistentKeepaliveInterval = parseUint(n, line, key, value, 0xffff);
        continue;
      case 'allowed_ip':
        peer.allowedIps.push(parseAllowedIp(n, line, value));
        continue;
    }
    throw lineError(n, line, `unexpected peer key ${JSON.stringify(redactKeyName(key))}`);
  }
  flush();
  return { snapshot: { privateKey, listenPort, fwmark, peers }, errno };
}
