/**
 * Target "uapi-parse": SetParser / parseSet over `set=1` bodies, and the transactions they
 * yield applied to a real Device (in-memory transport) and to the FakeDevice model.
 *
 * Input: the body as bytes (decoded as UTF-8 and split on '\n', as the server does).
 * Generated from the set grammar (uapi-grammar.ts) or random; mutated line by line or byte by
 * byte.
 *
 * Properties: parsing throws nothing but a ConfigError with errno EINVAL or EPROTO; parseSet and
 * a SetParser fed line by line agree; an error message never contains the value of a
 * private_key or preshared_key line; an accepted transaction is well-formed (32-byte keys,
 * ports and intervals in range, canonical prefixes) and formatSet → parseSet gives it back;
 * applied to the real Device and to FakeDevice it is accepted by both or rejected by both with
 * the same errno; a rejected transaction leaves both snapshots exactly as they were; an
 * accepted one leaves them equal to each other.
 */
import { ConfigError, EADDRINUSE, EINVAL, EPROTO, type Cidr, type ConfigTransaction, type DeviceSnapshot } from '../../src/device/config.ts';
import type { DatagramTransport, TransportFactory } from '../../src/device/device.ts';
import { Device } from '../../src/device/device.ts';
import { formatSet, parseSet, SetParser } from '../../src/device/uapi.ts';
import { createBackend } from '../../src/noise/crypto/index.ts';
import { fromHex, toHex } from '../../src/util/hex.ts';
import { formatCidr, maskInPlace, parseCidr } from '../../src/util/ip.ts';
import { FakeDevice } from '../helpers/fake-device.ts';
import { equalBytes, hexOf, Mutator, type Rng } from '../helpers/mutate.ts';
import { check, type FuzzTarget } from './target.ts';
import { generateSetLines, mutateLines, PEER_KEYS, PRIVATE_KEYS, seedSetBodies } from './uapi-grammar.ts';

const PORTS_IN_USE = [51821, 60000];
const NOW = 50_000_000;
/** Back to the baseline configuration every this many inputs, so the peer table stays small. */
const RESET_EVERY = 128;

const encoder = new TextEncoder();

function joinLines(lines: readonly string[], rng?: Rng): Uint8Array {
  const eol = rng && rng.chance(0.05) ? '\r\n' : '\n';
  const tail = rng ? rng.pick(['', '', '\n', eol + '\n']) : '';
  return encoder.encode(lines.join(eol) + tail);
}

export function bodyLines(bytes: Uint8Array): string[] {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('utf8').split('\n');
}

/** A snapshot as comparable text: sorted peers, sorted prefixes, no counters. */
export function canonicalSnapshot(s: DeviceSnapshot): string {
  const peers = s.peers
    .map((p) => ({
      publicKey: toHex(p.publicKey),
      presharedKey: toHex(p.presharedKey),
      // Known difference, not a failure: the Device keeps endpoints in the UDP layer's records,
      // which store an IPv4-mapped IPv6 address as IPv4, so get shows [::ffff:a.b.c.d]:p as
      // a.b.c.d:p where wireguard-go (and the model) keep the mapped form.
      endpoint: p.endpoint ? `${p.endpoint.host.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i, '$1')}|${p.endpoint.port}` : null,
      keepalive: p.persistentKeepaliveInterval,
      allowedIps: p.allowedIps.map(formatCidr).sort(),
    }))
    .sort((a, b) => a.publicKey.localeCompare(b.publicKey));
  const privateKey = s.privateKey && !s.privateKey.every((b) => b === 0) ? toHex(s.privateKey) : null;
  return JSON.stringify({ privateKey, listenPort: s.listenPort, fwmark: s.fwmark, peers });
}

function isCanonicalCidr(c: Cidr): boolean {
  const max = c.family === 4 ? 32 : 128;
  if (c.address.length !== max / 8 || !Number.isInteger(c.prefix) || c.prefix < 0 || c.prefix > max) return false;
  return equalBytes(maskInPlace(Uint8Array.from(c.address), c.prefix), c.address);
}

/** What makes a transaction well-formed, whatever text it came from. */
export function checkTransaction(tx: ConfigTransaction): void {
  check(tx.privateKey === undefined || tx.privateKey.length === 32, 'private key not 32 bytes');
  check(tx.listenPort === undefined || (Number.isInteger(tx.listenPort) && tx.listenPort >= 0 && tx.listenPort <= 65535), () => `listen_port ${tx.listenPort}`);
  check(tx.fwmark === undefined || (Number.isInteger(tx.fwmark) && tx.fwmark >= 0 && tx.fwmark <= 0xffff_ffff), () => `fwmark ${tx.fwmark}`);
  for (const p of tx.peers ?? []) {
    check(p.publicKey.length === 32, 'public key not 32 bytes');
    check(p.presharedKey === undefined || p.presharedKey.length === 32, 'preshared key not 32 bytes');
    const ka = p.persistentKeepaliveInterval;
    check(ka === undefined || (Number.isInteger(ka) && ka >= 0 && ka <= 65535), () => `keepalive ${ka}`);
    check(p.endpoint === undefined || (Number.isInteger(p.endpoint.port) && p.endpoint.port >= 1 && p.endpoint.port <= 65535), () => `endpoint ${JSON.stringify(p.endpoint)}`);
    for (const c of [...(p.addAllowedIps ?? []), ...(p.removeAllowedIps ?? [])]) check(isCanonicalCidr(c), () => `allowed IP not canonical: ${formatCidr(c)}`);
    const added = new Set((p.addAllowedIps ?? []).map(formatCidr));
    for (const c of p.removeAllowedIps ?? []) check(!added.has(formatCidr(c)), () => `${formatCidr(c)} both added and removed`);
  }
}

/** Values of secret lines (private_key=, preshared_key=) that an error message must not repeat. */
export function secretValues(lines: readonly string[]): string[] {
  const secrets: string[] = [];
  const others: string[] = [];
  for (const line of lines) {
    const m = /^\s*(?:private_key|preshared_key)\s*=(.*)$/i.exec(line);
    const value = m?.[1]?.trim();
    if (value && value.length >= 16) secrets.push(value.toLowerCase());
    else others.push(line.toLowerCase());
  }
  // A value that also sits on a non-secret line (say, a key used as both a public and a
  // preshared key) may be quoted from that line.
  return secrets.filter((s) => !others.some((line) => line.includes(s)));
}

export function checkNoSecret(text: string, secrets: readonly string[], where: string): void {
  const lower = text.toLowerCase();
  for (const s of secrets) check(!lower.includes(s.toLowerCase()), () => `${where} repeats a secret value: ${JSON.stringify(text.slice(0, 200))}`);
}

function memoryTransport(): TransportFactory {
  return (port): DatagramTransport => {
    if (PORTS_IN_USE.includes(port)) throw Object.assign(new Error(`bind :${port}: Address already in use`), { code: 'EADDRINUSE' });
    return { port, setMark: () => {}, close: () => {}, send: (_s, _o, _l, _a, count) => count };
  };
}

const BASELINE: ConfigTransaction = {
  privateKey: fromHex(PRIVATE_KEYS[0]!),
  listenPort: 51820,
  fwmark: 0,
  replacePeers: true,
  peers: [
    { publicKey: fromHex(PEER_KEYS[0]!), endpoint: { host: '198.18.0.2', port: 51820 }, addAllowedIps: [parseCidr('100.64.0.2/32')] },
    { publicKey: fromHex(PEER_KEYS[1]!), addAllowedIps: [parseCidr('100.64.1.0/24'), parseCidr('fd00::/64')] },
  ],
};

export class UapiParseTarget implements FuzzTarget<Uint8Array> {
  readonly name = 'uapi-parse';
  readonly description = 'SetParser/parseSet over set bodies; parsed transactions applied to a real Device and to the FakeDevice model, all or nothing';
  private device!: Device;
  private fake!: FakeDevice;
  private mutator: Mutator | undefined;
  private mutatorRng: Rng | undefined;
  private inputs = 0;
  private readonly tally = { accepted: 0, rejected_parse: 0, rejected_apply: 0, errno_einval: 0, errno_eproto: 0, errno_eaddrinuse: 0 };
  private readonly seedList = seedSetBodies().map((lines) => joinLines(lines));

  async setup(): Promise<void> {
    this.device = new Device({ backend: createBackend('sodium'), tun: { mtu: 1420, write: (_s, _o, _l, n) => n }, openTransport: memoryTransport(), now: () => NOW });
    this.fake = new FakeDevice({ portsInUse: PORTS_IN_USE });
    await this.reset();
  }

  private async reset(): Promise<void> {
    await this.device.apply(BASELINE);
    await this.fake.apply(BASELINE);
    this.fake.transactions.length = 0;
    check(canonicalSnapshot(this.device.snapshot()) === canonicalSnapshot(this.fake.snapshot()), () => `baseline differs: device ${canonicalSnapshot(this.device.snapshot())} fake ${canonicalSnapshot(this.fake.snapshot())}`);
  }

  seeds(): readonly Uint8Array[] {
    return this.seedList;
  }

  generate(rng: Rng): Uint8Array {
    if (rng.chance(0.05)) return rng.bytes(rng.below(300));
    return joinLines(generateSetLines(rng), rng);
  }

  mutate(rng: Rng, input: Uint8Array): Uint8Array {
    if (rng.chance(0.6)) {
      let lines = bodyLines(input);
      while (lines.length > 0 && lines.at(-1) === '') lines.pop();
      lines = mutateLines(rng, lines);
      return joinLines(lines, rng);
    }
    if (this.mutatorRng !== rng) {
      this.mutatorRng = rng;
      this.mutator = new Mutator(rng, {
        donors: this.seedList,
        weights: { bitflip: 2, bitflips: 1, byte: 3, truncate: 2, extend: 1, splice: 3, length: 1 },
        lengths: [0, 1, 10, 64, 65, 100, 4096, 4097],
        maxExtend: 80,
      });
    }
    return this.mutator!.mutate(input).bytes;
  }

  async run(input: Uint8Array): Promise<void> {
    if (++this.inputs % RESET_EVERY === 0) await this.reset();
    const lines = bodyLines(input);
    const secrets = secretValues(lines);
    let tx: ConfigTransaction | undefined;
    let error: unknown;
    try {
      tx = parseSet(lines);
    } catch (err) {
      error = err;
    }
    // The incremental parser, fed as the server feeds it, must agree.
    let txIncremental: ConfigTransaction | undefined;
    let errorIncremental: unknown;
    try {
      const parser = new SetParser();
      let end = lines.length;
      while (end > 0 && lines[end - 1] === '') end--;
      for (let i = 0; i < end; i++) parser.feed(lines[i]!);
      txIncremental = parser.finish();
    } catch (err) {
      errorIncremental = err;
    }
    if (error !== undefined) {
      check(error instanceof ConfigError, () => `parseSet threw ${(error as Error)?.name}: ${(error as Error)?.message}`);
      check(error.errno === EINVAL || error.errno === EPROTO, () => `parse error with errno ${error.errno}`);
      checkNoSecret(error.message, secrets, 'a parse error');
      check(errorIncremental instanceof ConfigError && errorIncremental.message === error.message, () => `SetParser disagrees: ${String(errorIncremental)} vs ${error.message}`);
      this.tally.rejected_parse++;
      this.tally[error.errno === EPROTO ? 'errno_eproto' : 'errno_einval']++;
      return;
    }
    check(tx !== undefined && errorIncremental === undefined && formatSet(txIncremental!) === formatSet(tx), () => `SetParser disagrees with parseSet: ${String(errorIncremental)}`);
    checkTransaction(tx);
    const text = formatSet(tx);
    const again = parseSet(text.split('\n'));
    check(formatSet(again) === text, () => `formatSet/parseSet round trip changed the transaction:\n${text}\n→\n${formatSet(again)}`);

    const beforeDevice = canonicalSnapshot(this.device.snapshot());
    const beforeFake = canonicalSnapshot(this.fake.snapshot());
    const outcome = async (apply: Promise<void>): Promise<ConfigError | undefined> => {
      try {
        await apply;
        return undefined;
      } catch (err) {
        check(err instanceof ConfigError, () => `apply threw ${(err as Error)?.name}: ${(err as Error)?.message}`);
        return err;
      }
    };
    const deviceError = await outcome(this.device.apply(tx));
    const fakeError = await outcome(this.fake.apply(tx));
    this.fake.transactions.length = 0;
    const afterDevice = canonicalSnapshot(this.device.snapshot());
    const afterFake = canonicalSnapshot(this.fake.snapshot());
    check((deviceError === undefined) === (fakeError === undefined), () => `Device ${deviceError ? `rejected (${deviceError.message})` : 'accepted'} but the model ${fakeError ? `rejected (${fakeError.message})` : 'accepted'}:\n${text}`);
    if (deviceError) {
      check(deviceError.errno === fakeError!.errno, () => `errno ${deviceError.errno} vs model ${fakeError!.errno}`);
      check(afterDevice === beforeDevice, () => `a rejected set (${deviceError.message}) changed the Device:\n${text}`);
      check(afterFake === beforeFake, 'a rejected set changed the model');
      checkNoSecret(deviceError.message, secrets, 'an apply error');
      this.tally.rejected_apply++;
      if (deviceError.errno === EADDRINUSE) this.tally.errno_eaddrinuse++;
      return;
    }
    check(afterDevice === afterFake, () => `after an accepted set the Device and the model differ:\n${text}\ndevice ${afterDevice}\nmodel  ${afterFake}`);
    this.tally.accepted++;
  }

  async check(): Promise<void> {
    await this.reset();
  }

  stats(): Record<string, number> {
    return { ...this.tally, peers_now: this.device.peers.size };
  }

  encode(input: Uint8Array): Uint8Array {
    return input;
  }

  decode(bytes: Uint8Array): Uint8Array {
    return bytes;
  }

  describe(input: Uint8Array): string {
    const text = Buffer.from(input).toString('utf8');
    return `${input.length} bytes: ${JSON.stringify(text.length > 600 ? `${text.slice(0, 600)}…` : text)}${/[\x00-\x08\x80-\xff]/.test(Buffer.from(input).toString('latin1')) ? ` (hex ${hexOf(input.subarray(0, 80))})` : ''}`;
  }

  teardown(): void {
    this.device?.close();
  }
}
