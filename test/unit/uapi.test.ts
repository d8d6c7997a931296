import { describe, expect, it } from 'vitest';
import { ConfigError, EADDRINUSE, EINVAL, EPROTO, type ConfigTransaction, type DeviceSnapshot } from '../../src/device/config.ts';
import { formatGet, formatSet, parseGet, parseSet, redactLine } from '../../src/device/uapi.ts';
import { publicKeyOf } from '../../src/cli/keys.ts';
import { toHex } from '../../src/util/hex.ts';
import { formatCidr, parseCidr } from '../../src/util/ip.ts';
import { FakeDevice } from '../helpers/fake-device.ts';

const key = (fill: number): Uint8Array => new Uint8Array(32).fill(fill);
const PRIV = Uint8Array.from({ length: 32 }, (_, i) => (i * 7 + 3) & 0xff);
const A = key(0xa1);
const B = key(0xb2);
const C = key(0xc3);
const PSK = key(0x55);
const hex = toHex;

function body(...lines: string[]): string[] {
  return lines;
}

function parseError(lines: string[], firstLineNumber?: number): ConfigError {
  try {
    parseSet(lines, firstLineNumber === undefined ? {} : { firstLineNumber });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`parseSet accepted ${JSON.stringify(lines)}`);
}

const cidrs = (...texts: string[]) => texts.map(parseCidr);

describe('parseSet', () => {
  it('turns what `wg setconf` sends into one transaction', () => {
    const tx = parseSet(
      body(
        `private_key=${hex(PRIV)}`,
        'listen_port=51820',
        'fwmark=1234',
        'replace_peers=true',
        `public_key=${hex(A)}`,
        `preshared_key=${hex(PSK)}`,
        'endpoint=198.18.0.2:51820',
        'persistent_keepalive_interval=25',
        'replace_allowed_ips=true',
        'allowed_ip=100.64.1.0/24',
        'allowed_ip=fd00::1:0/112',
        `public_key=${hex(B)}`,
        'endpoint=[fd00::2]:51821',
        'protocol_version=1',
        '',
      ),
    );
    expect(tx).toEqual({
      privateKey: PRIV,
      listenPort: 51820,
      fwmark: 1234,
      replacePeers: true,
      peers: [
        {
          publicKey: A,
          presharedKey: PSK,
          endpoint: { host: '198.18.0.2', port: 51820 },
          persistentKeepaliveInterval: 25,
          replaceAllowedIps: true,
          addAllowedIps: cidrs('100.64.1.0/24', 'fd00::1:0/112'),
        },
        { publicKey: B, endpoint: { host: 'fd00::2', port: 51821 } },
      ],
    } satisfies ConfigTransaction);
  });

  it('accepts upper-case hex, leading zeros, the bounds of every number, and an empty body', () => {
    const tx = parseSet([`private_key=${hex(PRIV).toUpperCase()}`, 'listen_port=065535', 'fwmark=4294967295', `public_key=${hex(A)}`, 'persistent_keepalive_interval=0']);
    expect(tx.privateKey).toEqual(PRIV);
    expect(tx.listenPort).toBe(65535);
    expect(tx.fwmark).toBe(4294967295);
    expect(tx.peers?.[0]?.persistentKeepaliveInterval).toBe(0);
    expect(parseSet([])).toEqual({});
    expect(parseSet(['listen_port=0']).listenPort).toBe(0);
  });

  it('keeps an all-zero private or preshared key (it means "remove the key")', () => {
    const tx = parseSet([`private_key=${'0'.repeat(64)}`, `public_key=${hex(A)}`, `preshared_key=${'0'.repeat(64)}`]);
    expect(tx.privateKey).toEqual(new Uint8Array(32));
    expect(tx.peers?.[0]?.presharedKey).toEqual(new Uint8Array(32));
  });

  it('parses the newer `allowed_ip=-addr/cidr` removal form', () => {
    const tx = parseSet([`public_key=${hex(A)}`, 'allowed_ip=-100.64.1.0/24', 'allowed_ip=10.0.0.0/8', 'allowed_ip=-fd00::/64']);
    expect(tx.peers).toEqual([{ publicKey: A, addAllowedIps: cidrs('10.0.0.0/8'), removeAllowedIps: cidrs('100.64.1.0/24', 'fd00::/64') }]);
  });

  it('clears host bits of a prefix, as the trie does', () => {
    const tx = parseSet([`public_key=${hex(A)}`, 'allowed_ip=100.64.1.77/24']);
    expect(tx.peers?.[0]?.addAllowedIps?.map(formatCidr)).toEqual(['100.64.1.0/24']);
  });

  it('a peer with remove=true carries nothing else, whatever the order of its lines', () => {
    const tx = parseSet([
      `public_key=${hex(A)}`,
      'endpoint=1.2.3.4:5',
      'remove=true',
      'allowed_ip=10.0.0.0/8',
      'persistent_keepalive_interval=5',
      `public_key=${hex(B)}`,
      'update_only=true',
    ]);
    expect(tx.peers).toEqual([{ publicKey: A, remove: true }, { publicKey: B, updateOnly: true }]);
  });

  it('still validates the lines after remove=true', () => {
    const err = parseError([`public_key=${hex(A)}`, 'remove=true', 'allowed_ip=nonsense/8']);
    expect(err.message).toMatch(/^line 3 /);
  });

  it('replace_allowed_ips discards prefixes named before it in the same section', () => {
    const tx = parseSet([`public_key=${hex(A)}`, 'allowed_ip=10.0.0.0/8', 'allowed_ip=-10.1.0.0/16', 'replace_allowed_ips=true', 'allowed_ip=10.2.0.0/16']);
    expect(tx.peers).toEqual([{ publicKey: A, replaceAllowedIps: true, addAllowedIps: cidrs('10.2.0.0/16') }]);
  });

  it('a prefix added and removed in one section ends in the list of its last operation only', () => {
    const addThenRemove = parseSet([`public_key=${hex(A)}`, 'allowed_ip=10.0.0.0/8', 'allowed_ip=-10.0.0.0/8']);
    expect(addThenRemove.peers).toEqual([{ publicKey: A, removeAllowedIps: cidrs('10.0.0.0/8') }]);
    const removeThenAdd = parseSet([`public_key=${hex(A)}`, 'allowed_ip=-10.0.0.0/8', 'allowed_ip=10.0.0.0/8', 'allowed_ip=10.0.0.0/8']);
    expect(removeThenAdd.peers).toEqual([{ publicKey: A, addAllowedIps: cidrs('10.0.0.0/8') }]);
  });

  it('keeps two sections for the same key in order (applied one after the other)', () => {
    const tx = parseSet([`public_key=${hex(A)}`, 'remove=true', `public_key=${hex(A)}`, 'allowed_ip=10.0.0.0/8']);
    expect(tx.peers).toEqual([{ publicKey: A, remove: true }, { publicKey: A, addAllowedIps: cidrs('10.0.0.0/8') }]);
  });

  it('ignores trailing terminator lines but not an empty line in the middle', () => {
    expect(parseSet(['listen_port=1', '', '']).listenPort).toBe(1);
    const err = parseError(['listen_port=1', '', 'fwmark=1']);
    expect(err.message).toBe('line 2 "": empty line inside a set request');
    expect(err.errno).toBe(EPROTO);
  });

  const P = `public_key=${hex(A)}`;
  const errorCases: [string, string[], number, RegExp][] = [
    ['unknown device key', ['listen_port=1', 'foo=bar'], 2, /unknown key "foo"/],
    ['unknown peer key', [P, 'endpointt=1.2.3.4:1'], 2, /unknown key "endpointt"/],
    ['keys are case-sensitive', ['LISTEN_PORT=1'], 1, /unknown key/],
    ['get-only key', [P, 'rx_bytes=5'], 2, /reported by get/],
    ['errno is not a set key', ['errno=0'], 1, /reported by get/],
    ['device key after a peer', [P, 'listen_port=1'], 2, /device key: it must come before the first public_key/],
    ['peer key before any peer', ['endpoint=1.2.3.4:1'], 1, /peer key: it must follow a public_key line/],
    ['listen_port too big', ['listen_port=65536'], 1, /listen_port must be an integer from 0 to 65535/],
    ['listen_port negative', ['listen_port=-1'], 1, /0 to 65535/],
    ['listen_port empty', ['listen_port='], 1, /0 to 65535/],
    ['listen_port with space', ['listen_port= 1'], 1, /0 to 65535/],
    ['listen_port hex', ['listen_port=0x10'], 1, /0 to 65535/],
    ['listen_port huge', ['listen_port=99999999999999999999999'], 1, /0 to 65535/],
    ['fwmark beyond u32', ['fwmark=4294967296'], 1, /fwmark must be an integer from 0 to 4294967295/],
    ['keepalive too big', [P, 'persistent_keepalive_interval=65536'], 2, /0 to 65535/],
    ['public key short', [`public_key=${hex(A).slice(1)}`], 1, /64 hex characters \(got 63 characters\)/],
    ['public key not hex', [`public_key=${'g'.repeat(64)}`], 1, /not all hex/],
    ['public key base64', ['public_key=oaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaE='], 1, /64 hex characters/],
    ['replace_peers=false', ['replace_peers=false'], 1, /replace_peers accepts only "true"/],
    ['remove=1', [P, 'remove=1'], 2, /remove accepts only "true"/],
    ['update_only=yes', [P, 'update_only=yes'], 2, /update_only accepts only "true"/],
    ['replace_allowed_ips=True', [P, 'replace_allowed_ips=True'], 2, /accepts only "true"/],
    ['protocol_version=2', [P, 'protocol_version=2'], 2, /protocol_version must be 1/],
    ['endpoint without port', [P, 'endpoint=1.2.3.4'], 2, /not an endpoint/],
    ['endpoint v6 without brackets', [P, 'endpoint=fd00::1:51820'], 2, /not an endpoint|not an IP/],
    ['endpoint hostname', [P, 'endpoint=example.com:51820'], 2, /not an IP address/],
    ['endpoint port 70000', [P, 'endpoint=1.2.3.4:70000'], 2, /port must be/],
    ['allowed_ip prefix too long', [P, 'allowed_ip=10.0.0.0/33'], 2, /prefix length must be 0 to 32/],
    ['allowed_ip v6 prefix too long', [P, 'allowed_ip=fd00::/129'], 2, /0 to 128/],
    ['allowed_ip without prefix', [P, 'allowed_ip=10.0.0.1'], 2, /address\/prefix-length/],
    ['allowed_ip not an address', [P, 'allowed_ip=-banana/8'], 2, /not an IP address/],
    ['allowed_ip with zone', [P, 'allowed_ip=fe80::1%eth0/64'], 2, /zone/],
  ];
  it.each(errorCases)('rejects: %s — naming the line', (_name, lines, lineNumber, reason) => {
    const err = parseError(lines);
    expect(err.errno).toBe(EINVAL);
    const bad = lines[lineNumber - 1]!;
    expect(err.message.startsWith(`line ${lineNumber} ${JSON.stringify(bad)}: `)).toBe(true);
    expect(err.message).toMatch(reason);
  });

  it('a line without "=" is a protocol error (EPROTO), as wireguard-go answers', () => {
    const err = parseError(['listen_port=1', 'garbage']);
    expect(err.errno).toBe(EPROTO);
    expect(err.message).toBe('line 2 "garbage": expected key=value');
  });

  it('numbers lines from firstLineNumber (the server counts set=1 as line 1)', () => {
    expect(parseError(['listen_port=1', 'bogus=1'], 2).message).toMatch(/^line 3 "bogus=1"/);
  });

  it('never echoes a private or preshared key value', () => {
    const secret = hex(PRIV);
    const cases: [string[], string][] = [
      [[`private_key=${secret.slice(2)}`], 'private_key=<redacted>'],
      [[`private_key=${secret}zz`], 'private_key=<redacted>'],
      [[P, `private_key=${secret}`], 'private_key=<redacted>'], // device key in peer section
      [[P, `preshared_key=${secret.slice(0, 62)}`], 'preshared_key=<redacted>'],
      [[P, `preshared_key ${secret}`], 'preshared_key=<redacted>'], // no "=" at all
      [[`PRIVATE_KEY=${secret}`], 'private_key=<redacted>'],
      [[`privkey=${secret}`], 'privkey=<redacted>'], // key material under an unknown name
    ];
    for (const [lines, shown] of cases) {
      const err = parseError(lines);
      expect(err.message).toContain(JSON.stringify(shown));
      expect(err.message).not.toContain(secret.slice(0, 40));
    }
    // A public key may be shown.
    expect(redactLine(`public_key=${hex(A)}`)).toBe(`public_key=${hex(A)}`);
  });

  it('cuts very long lines in messages', () => {
    const err = parseError([`bogus=${'x'.repeat(5000)}`]);
    expect(err.message.length).toBeLessThan(300);
  });
});

describe('formatSet', () => {
  it('round-trips with parseSet', () => {
    const lines = [
      `private_key=${hex(PRIV)}`,
      'listen_port=51820',
      'fwmark=0',
      'replace_peers=true',
      `public_key=${hex(A)}`,
      'update_only=true',
      `preshared_key=${hex(PSK)}`,
      'endpoint=[fd00::2]:51820',
      'persistent_keepalive_interval=25',
      'replace_allowed_ips=true',
      'allowed_ip=-10.9.0.0/16',
      'allowed_ip=100.64.1.0/24',
      'allowed_ip=fd00:1::/64',
      'allowed_ip=::ffff:1.2.3.4/128',
      `public_key=${hex(B)}`,
      'remove=true',
    ];
    const text = `${lines.join('\n')}\n`;
    expect(formatSet(parseSet(lines))).toBe(text);
  });
});

function sampleSnapshot(): DeviceSnapshot {
  return {
    privateKey: PRIV,
    listenPort: 51820,
    fwmark: 0x51820,
    peers: [
      {
        publicKey: A,
        presharedKey: PSK,
        endpoint: { host: '198.18.0.2', port: 51820 },
        lastHandshakeEpochMs: 1_700_000_000_123.5, // exact in a double
        rxBytes: 2_000_000,
        txBytes: 1_000,
        persistentKeepaliveInterval: 25,
        allowedIps: cidrs('100.64.1.0/24', 'fd00::1:0/112', '0.0.0.0/0'),
      },
      {
        publicKey: B,
        presharedKey: new Uint8Array(32),
        endpoint: undefined,
        lastHandshakeEpochMs: 0,
        rxBytes: 0,
        txBytes: 0,
        persistentKeepaliveInterval: 0,
        allowedIps: [],
      },
    ],
  };
}

describe('formatGet', () => {
  it("prints wireguard-go's lines in wireguard-go's order", () => {
    expect(formatGet(sampleSnapshot())).toBe(
      [
        `private_key=${hex(PRIV)}`,
        'listen_port=51820',
        'fwmark=333856',
        `public_key=${hex(A)}`,
        `preshared_key=${hex(PSK)}`,
        'protocol_version=1',
        'endpoint=198.18.0.2:51820',
        'last_handshake_time_sec=1700000000',
        'last_handshake_time_nsec=123500000',
        'tx_bytes=1000',
        'rx_bytes=2000000',
        'persistent_keepalive_interval=25',
        'allowed_ip=100.64.1.0/24',
        'allowed_ip=fd00::1:0/112',
        'allowed_ip=0.0.0.0/0',
        `public_key=${hex(B)}`,
        `preshared_key=${'0'.repeat(64)}`,
        'protocol_version=1',
        'last_handshake_time_sec=0',
        'last_handshake_time_nsec=0',
        'tx_bytes=0',
        'rx_bytes=0',
        'persistent_keepalive_interval=0',
        '',
      ].join('\n'),
    );
  });

  it('omits private_key when none or all zero, listen_port and fwmark when 0', () => {
    expect(formatGet({ privateKey: undefined, listenPort: 0, fwmark: 0, peers: [] })).toBe('');
    expect(formatGet({ privateKey: new Uint8Array(32), listenPort: 0, fwmark: 0, peers: [] })).toBe('');
    expect(formatGet({ privateKey: undefined, listenPort: 1, fwmark: 0, peers: [] })).toBe('listen_port=1\n');
  });

  it('brackets IPv6 endpoints and prints IPv4-mapped addresses as Go does', () => {
    const s = sampleSnapshot();
    const peer = { ...s.peers[0]!, endpoint: { host: 'fd00::2', port: 1 }, allowedIps: cidrs('::ffff:10.0.0.1/128', '2001:db8:0:0:1::/80') };
    const text = formatGet({ ...s, peers: [peer] });
    expect(text).toContain('\nendpoint=[fd00::2]:1\n');
    expect(text).toContain('\nallowed_ip=::ffff:10.0.0.1/128\nallowed_ip=2001:db8:0:0:1::/80\n');
  });

  it('round-trips through parseGet', () => {
    const s = sampleSnapshot();
    const parsed = parseGet(`${formatGet(s)}errno=0\n\n`);
    expect(parsed.errno).toBe(0);
    expect(parsed.snapshot.privateKey).toEqual(s.privateKey);
    expect(parsed.snapshot.listenPort).toBe(s.listenPort);
    expect(parsed.snapshot.fwmark).toBe(s.fwmark);
    expect(parsed.snapshot.peers.length).toBe(2);
    const [a, b] = parsed.snapshot.peers;
    expect({ ...a, lastHandshakeEpochMs: 0 }).toEqual({ ...s.peers[0], lastHandshakeEpochMs: 0 });
    expect(a!.lastHandshakeEpochMs).toBeCloseTo(s.peers[0]!.lastHandshakeEpochMs, 3);
    expect(b).toEqual(s.peers[1]);
    expect(formatGet(parsed.snapshot)).toBe(formatGet(s));
  });
});

describe('set semantics through the fake device', () => {
  async function device(...lines: string[]): Promise<FakeDevice> {
    const d = new FakeDevice();
    await d.apply(parseSet(lines));
    return d;
  }
  const allowed = (d: FakeDevice, k: Uint8Array) => d.peer(k)?.allowedIps.map(formatCidr);

  it('creates peers in order and reports them back through get', async () => {
    const d = await device(`private_key=${hex(PRIV)}`, 'listen_port=51820', `public_key=${hex(A)}`, 'allowed_ip=10.0.0.0/8', `public_key=${hex(B)}`);
    const text = formatGet(d.snapshot());
    expect(text.split('\n').filter((l) => l.startsWith('public_key=') || l.startsWith('allowed_ip='))).toEqual([
      `public_key=${hex(A)}`,
      'allowed_ip=10.0.0.0/8',
      `public_key=${hex(B)}`,
    ]);
  });

  it('update_only changes an existing peer and never creates one', async () => {
    const d = await device(`public_key=${hex(A)}`);
    await d.apply(parseSet([`public_key=${hex(A)}`, 'update_only=true', 'persistent_keepalive_interval=7', `public_key=${hex(B)}`, 'update_only=true', 'allowed_ip=10.0.0.0/8']));
    expect(d.peer(A)?.persistentKeepaliveInterval).toBe(7);
    expect(d.peer(B)).toBeUndefined();
  });

  it('remove=true deletes the peer (and removing an absent one is fine)', async () => {
    const d = await device(`public_key=${hex(A)}`, 'allowed_ip=10.0.0.0/8', `public_key=${hex(B)}`);
    await d.apply(parseSet([`public_key=${hex(A)}`, 'remove=true', `public_key=${hex(C)}`, 'remove=true']));
    expect(d.snapshot().peers.map((p) => hex(p.publicKey))).toEqual([hex(B)]);
  });

  it('replace_peers drops every peer before the new ones', async () => {
    const d = await device(`public_key=${hex(A)}`, `public_key=${hex(B)}`);
    await d.apply(parseSet(['replace_peers=true', `public_key=${hex(C)}`]));
    expect(d.snapshot().peers.map((p) => hex(p.publicKey))).toEqual([hex(C)]);
  });

  it('replace_allowed_ips, additions and allowed_ip=- removals', async () => {
    const d = await device(`public_key=${hex(A)}`, 'allowed_ip=10.0.0.0/8', 'allowed_ip=10.1.0.0/16');
    await d.apply(parseSet([`public_key=${hex(A)}`, 'allowed_ip=10.2.0.0/16']));
    expect(allowed(d, A)).toEqual(['10.0.0.0/8', '10.1.0.0/16', '10.2.0.0/16']);
    await d.apply(parseSet([`public_key=${hex(A)}`, 'allowed_ip=-10.1.0.0/16', 'allowed_ip=-10.3.0.0/16']));
    expect(allowed(d, A)).toEqual(['10.0.0.0/8', '10.2.0.0/16']);
    await d.apply(parseSet([`public_key=${hex(A)}`, 'replace_allowed_ips=true', 'allowed_ip=fd00::/64']));
    expect(allowed(d, A)).toEqual(['fd00::/64']);
    await d.apply(parseSet([`public_key=${hex(A)}`, 'replace_allowed_ips=true']));
    expect(allowed(d, A)).toEqual([]);
  });

  it('a prefix given to another peer moves to it', async () => {
    const d = await device(`public_key=${hex(A)}`, 'allowed_ip=10.0.0.0/8', `public_key=${hex(B)}`, 'allowed_ip=10.0.0.0/8');
    expect(allowed(d, A)).toEqual([]);
    expect(allowed(d, B)).toEqual(['10.0.0.0/8']);
  });

  it('a peer with the device’s own public key is ignored', async () => {
    const d = await device(`private_key=${hex(PRIV)}`, `public_key=${hex(publicKeyOf(PRIV))}`, 'allowed_ip=10.0.0.0/8', `public_key=${hex(A)}`);
    expect(d.snapshot().peers.map((p) => hex(p.publicKey))).toEqual([hex(A)]);
  });

  it('a failing transaction changes nothing', async () => {
    const d = await device(`public_key=${hex(A)}`, 'allowed_ip=10.0.0.0/8');
    d.portsInUse.add(4242);
    const before = formatGet(d.snapshot());
    await expect(d.apply(parseSet([`private_key=${hex(PRIV)}`, 'listen_port=4242', 'replace_peers=true', `public_key=${hex(B)}`]))).rejects.toMatchObject({
      errno: EADDRINUSE,
    });
    expect(formatGet(d.snapshot())).toBe(before);
  });
});
