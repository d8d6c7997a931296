/**
 * A grammar for UAPI `set=1` bodies and request streams, for the uapi-parse and uapi-server
 * targets: lines built from a small pool of keys (so peers get updated and removed, not only
 * added), values at and around every boundary the parser checks, lines out of place, and
 * line-level mutations on top of the byte-level Mutator.
 */
import { createStaticIdentity } from '../../src/noise/handshake.ts';
import { createBackend } from '../../src/noise/crypto/index.ts';
import { toHex } from '../../src/util/hex.ts';
import type { Rng } from '../helpers/mutate.ts';
import { weighted } from './target.ts';

const backend = createBackend('sodium');

function poolKey(i: number): Uint8Array {
  return Uint8Array.from({ length: 32 }, (_, j) => (i * 29 + j * 7 + 1) & 0xff);
}

/** Private keys, and the public keys that go with them (a peer with our own key is a special case). */
export const PRIVATE_KEYS: readonly string[] = [0, 1, 2].map((i) => toHex(poolKey(100 + i)));
export const OWN_PUBLIC_KEYS: readonly string[] = [0, 1, 2].map((i) => toHex(createStaticIdentity(backend, poolKey(100 + i)).publicKey));
export const PEER_KEYS: readonly string[] = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => toHex(poolKey(i)));
const ZERO_HEX = '0'.repeat(64);

function hexKey(rng: Rng, pool: readonly string[]): string {
  return weighted<() => string>(rng, [
    [30, () => rng.pick(pool)],
    [4, () => toHex(rng.bytes(32))],
    [1, () => rng.pick(pool).toUpperCase()],
    [1, () => ZERO_HEX],
    [1, () => rng.pick(pool).slice(0, rng.pick([0, 1, 62, 63]))],
    [1, () => `${rng.pick(pool)}${rng.pick(['0', '00', ' ', '\r', 'g'])}`],
    [1, () => Buffer.from(rng.bytes(32)).toString('base64')],
    [1, () => `${rng.pick(pool).slice(0, 40)}zz${rng.pick(pool).slice(42)}`],
  ])();
}

function uint(rng: Rng, max: number): string {
  return weighted<() => string>(rng, [
    [16, () => String(rng.below(max + 1))],
    [4, () => String(rng.pick([0, 1, max - 1, max, max + 1, 2 ** 32, 2 ** 53, 51820, 25]))],
    [1, () => rng.pick(['', '-1', '+1', ' 1', '1 ', '0x10', '1e3', '01', '00000000000000000051820', '1.0', 'NaN', 'Infinity', '１２', '9'.repeat(40), '0'.repeat(30)])],
  ])();
}

const V6 = ['fd00::1', '::1', '::', 'fe80::1', '2001:db8::ff:1', '::ffff:198.18.0.1', 'fd00:0:0:0:0:0:0:2', 'FD00::A'];

function endpoint(rng: Rng): string {
  const port = () => String(weighted(rng, [[12, rng.range(1, 65535)], [1, rng.pick([0, 65536, 99999, 51820])]]));
  return weighted<() => string>(rng, [
    [5, () => `198.18.${rng.below(256)}.${rng.below(256)}:${port()}`],
    [3, () => `[${rng.pick(V6)}]:${port()}`],
    [1, () => `[fe80::1%${rng.pick(['eth0', '1', '', 'a%b'])}]:${port()}`],
    [0.7, () => rng.pick(['1.2.3.4', '1.2.3.4:', ':51820', '[::1]', '::1:51820', 'example.com:51820', '1.2.3.256:1', '01.2.3.4:5', '[1.2.3.4]:5', '[::1]:5:6', '', ' 1.2.3.4:5', '1.2.3.4:5 ', '[::1]:051820', '1.2.3.4%eth0:80'])],
  ])();
}

function cidr(rng: Rng): string {
  const text = weighted<() => string>(rng, [
    [5, () => `100.64.${rng.below(256)}.${rng.below(256)}/${rng.pick([8, 16, 24, 32, rng.below(33)])}`],
    [3, () => `${rng.pick(V6)}/${rng.pick([0, 8, 64, 128, rng.below(129)])}`],
    [1, () => rng.pick(['0.0.0.0/0', '::/0', '100.64.0.1/32', 'fd00::1/128'])],
    [0.7, () => rng.pick(['1.2.3.4', '1.2.3.4/33', '::/129', '1.2.3.4/-1', '1.2.3.4/08', '1.2.3.4/ 8', 'fe80::1%eth0/64', '1.2.3/24', '/24', '1.2.3.4/', '1.2.3.4/1/2', '1.2.3.4/0032', '::ffff:1.2.3.4/120'])],
  ])();
  return rng.chance(0.15) ? `-${text}` : text;
}

function bool(rng: Rng): string {
  return rng.chance(0.93) ? 'true' : rng.pick(['false', 'TRUE', '', '1', 'true ', 'yes']);
}

/** A device-section line. */
function deviceLine(rng: Rng): string {
  return weighted<() => string>(rng, [
    [1, () => `private_key=${hexKey(rng, PRIVATE_KEYS)}`],
    [3, () => `listen_port=${uint(rng, 0xffff)}`],
    [2, () => `fwmark=${uint(rng, 0xffff_ffff)}`],
    [2, () => `replace_peers=${bool(rng)}`],
  ])();
}

/** A peer-section line (after public_key). */
function peerLine(rng: Rng): string {
  return weighted<() => string>(rng, [
    [1, () => `remove=${bool(rng)}`],
    [1, () => `update_only=${bool(rng)}`],
    [2, () => `preshared_key=${hexKey(rng, PEER_KEYS)}`],
    [3, () => `endpoint=${endpoint(rng)}`],
    [2, () => `persistent_keepalive_interval=${uint(rng, 0xffff)}`],
    [1, () => `replace_allowed_ips=${bool(rng)}`],
    [6, () => `allowed_ip=${cidr(rng)}`],
    [1, () => `protocol_version=${rng.chance(0.9) ? '1' : rng.pick(['0', '2', '', '01'])}`],
  ])();
}

/** A line that does not belong: get-only keys, unknown keys, broken syntax. */
function oddLine(rng: Rng): string {
  return weighted<() => string>(rng, [
    [2, () => `${rng.pick(['last_handshake_time_sec', 'last_handshake_time_nsec', 'rx_bytes', 'tx_bytes', 'errno'])}=${rng.below(1000)}`],
    [2, () => rng.pick(['', '=', '==', 'public_key', 'listen_port', 'set=1', 'get=1', '=1', ' listen_port=1', 'listen_port =1', 'Listen_Port=1', 'listen_port=1\r', '\0', 'private_key==', 'é=1'])],
    [1, () => `${rng.pick(['foo', 'peer', 'allowed_ips', 'endpoint_', 'x'.repeat(100)])}=${rng.below(10)}`],
    [1, () => `private_key=${rng.pick(PRIVATE_KEYS)}`], // a device key inside a peer section
  ])();
}

/** The lines of a `set=1` body (without `set=1` and the blank line). */
export function generateSetLines(rng: Rng): string[] {
  const lines: string[] = [];
  const deviceLines = weighted(rng, [[3, 0], [3, 1], [2, 2], [1, 4]]);
  for (let i = 0; i < deviceLines; i++) lines.push(deviceLine(rng));
  const peers = weighted(rng, [[1, 0], [4, 1], [3, 2], [1, rng.range(3, 6)]]);
  for (let p = 0; p < peers; p++) {
    lines.push(`public_key=${rng.chance(0.1) ? hexKey(rng, OWN_PUBLIC_KEYS) : hexKey(rng, PEER_KEYS)}`);
    const n = weighted(rng, [[1, 0], [4, rng.range(1, 3)], [2, rng.range(4, 8)]]);
    for (let i = 0; i < n; i++) lines.push(peerLine(rng));
  }
  if (rng.chance(0.08)) lines.splice(rng.below(lines.length + 1), 0, oddLine(rng));
  if (rng.chance(0.03)) lines.splice(rng.below(lines.length + 1), 0, deviceLine(rng));
  return lines;
}

/** Line-level edits: the kinds of mistakes a config generator or a truncated write makes. */
export function mutateLines(rng: Rng, input: readonly string[]): string[] {
  const lines = [...input];
  const at = rng.below(Math.max(1, lines.length));
  const op = weighted(rng, [[3, 'delete'], [2, 'duplicate'], [2, 'swap'], [3, 'insert'], [3, 'value'], [1, 'key'], [1, 'truncate'], [1, 'whitespace'], [1, 'split']] as const);
  switch (op) {
    case 'delete':
      if (lines.length > 0) lines.splice(at, 1);
      break;
    case 'duplicate':
      if (lines.length > 0) lines.splice(at, 0, lines[at]!);
      break;
    case 'swap': {
      const other = rng.below(Math.max(1, lines.length));
      if (lines.length > 1) [lines[at], lines[other]] = [lines[other]!, lines[at]!];
      break;
    }
    case 'insert':
      lines.splice(rng.below(lines.length + 1), 0, weighted<() => string>(rng, [[3, () => peerLine(rng)], [1, () => deviceLine(rng)], [1, () => `public_key=${hexKey(rng, PEER_KEYS)}`], [1, () => oddLine(rng)]])());
      break;
    case 'value': {
      const line = lines[at];
      if (line === undefined) break;
      const key = line.slice(0, Math.max(0, line.indexOf('=')));
      const fresh = ['private_key', 'listen_port', 'fwmark', 'replace_peers'].includes(key) ? deviceLine(rng) : peerLine(rng);
      lines[at] = `${key}=${fresh.slice(fresh.indexOf('=') + 1)}`;
      break;
    }
    case 'key': {
      const line = lines[at];
      if (line === undefined) break;
      const other = rng.chance(0.5) ? peerLine(rng) : deviceLine(rng);
      lines[at] = `${other.slice(0, other.indexOf('='))}${line.slice(Math.max(0, line.indexOf('=')))}`;
      break;
    }
    case 'truncate': {
      const line = lines[at];
      if (line !== undefined) lines[at] = line.slice(0, rng.below(line.length + 1));
      break;
    }
    case 'whitespace': {
      const line = lines[at];
      if (line !== undefined) {
        const pos = rng.below(line.length + 1);
        lines[at] = `${line.slice(0, pos)}${rng.pick([' ', '\t', '\r', '\0', '\u00a0', '\ufeff'])}${line.slice(pos)}`;
      }
      break;
    }
    case 'split': {
      const line = lines[at];
      if (line !== undefined) {
        const pos = rng.below(line.length + 1);
        lines.splice(at, 1, line.slice(0, pos), line.slice(pos));
      }
      break;
    }
  }
  return lines;
}

/** Seed bodies: what `wg set`, `wg setconf` and `wg syncconf` send. */
export function seedSetBodies(): string[][] {
  const [p0, p1, p2] = PEER_KEYS;
  return [
    [`private_key=${PRIVATE_KEYS[0]}`, 'listen_port=51820', 'fwmark=0', 'replace_peers=true', `public_key=${p0}`, `preshared_key=${PEER_KEYS[7]}`, 'endpoint=198.18.0.2:51820', 'persistent_keepalive_interval=25', 'replace_allowed_ips=true', 'allowed_ip=100.64.0.2/32', 'allowed_ip=fd00::2/128', `public_key=${p1}`, 'endpoint=[fd00::3]:51820', 'replace_allowed_ips=true', 'allowed_ip=100.64.1.0/24'],
    [`public_key=${p0}`, 'update_only=true', 'allowed_ip=100.64.9.0/24', 'allowed_ip=-100.64.0.2/32'],
    [`public_key=${p1}`, 'remove=true'],
    ['listen_port=51821'],
    [`public_key=${p2}`, 'endpoint=198.18.0.7:1', 'persistent_keepalive_interval=0', 'protocol_version=1', 'allowed_ip=0.0.0.0/0', 'allowed_ip=::/0'],
    [`private_key=${ZERO_HEX}`],
    ['fwmark=4294967295', `public_key=${OWN_PUBLIC_KEYS[0]}`, 'allowed_ip=100.64.0.0/10'],
  ];
}
