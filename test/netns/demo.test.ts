/**
 * `wgts demo`, for real: both runs (through the tunnel and --plaintext) in namespaces, checking
 * the verdict, what the wire carried, and that nothing — namespace, interface, UAPI socket,
 * daemon, temporary directory — is left afterwards. The daemon is wgts unless WGTS_DEMO_IMPL
 * names another (e.g. WGTS_DEMO_IMPL=wireguard-go).
 *
 * The pcap reader the demo relies on is checked first on hand-built captures (no root needed).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { judge, runDemo } from '../../src/demo/demo.ts';
import { analyzeCapture, LINKTYPE_ETHERNET, parsePcap, summarize, textAround, wireGuardMessageType } from '../../src/demo/pcap.ts';
import { listNamespaces, skipUnlessRoot } from './helpers/netns.ts';
import { ethernet, ipv4, pcap, tcp, udp } from '../helpers/packets.ts';

// ---------- hand-built captures ----------

const A = [198, 18, 77, 1];
const B = [198, 18, 77, 2];
const initiation = new Uint8Array(148);
initiation[0] = 1;
const data = new Uint8Array(32 + 64);
data[0] = 4;
const http = new TextEncoder().encode('POST /login HTTP/1.1\r\nauthorization: Bearer s3cr3t-token\r\n\r\n{"password":"hunter2-pw"}');
const frames = [
  ethernet(0x0800, ipv4(17, A, B, udp(51820, 51820, initiation))),
  ethernet(0x0800, ipv4(17, B, A, udp(51820, 51820, data))),
  ethernet(0x0800, ipv4(6, A, B, tcp(40000, 8080, http))),
  ethernet(0x0806, new Uint8Array(28)),
];
const secrets = { token: Buffer.from('s3cr3t-token'), password: Buffer.from('hunter2-pw') };

describe('demo pcap reader', () => {
  for (const little of [true, false]) {
    for (const nanos of [false, true]) {
      it(`reads a ${little ? 'little' : 'big'}-endian ${nanos ? 'nanosecond' : 'microsecond'} capture`, () => {
        const file = pcap(frames, { little, nanos });
        const parsed = parsePcap(file);
        expect(parsed.linkType).toBe(LINKTYPE_ETHERNET);
        expect(parsed.records).toHaveLength(4);
        expect(parsed.records[0]!.time).toBeCloseTo(1_700_000_000 + (nanos ? 500e-9 : 500e-6), 9);
        expect(parsed.truncated).toBe(false);
      });
    }
  }

  it('labels flows, counts WireGuard messages and finds secrets', () => {
    const report = analyzeCapture(pcap(frames, { little: true, nanos: false }), secrets, [51820, 8080]);
    expect(report.packets).toBe(4);
    expect(Object.fromEntries(report.flows)).toEqual({ 'UDP 51820': 2, 'TCP 8080': 1, ARP: 1 });
    expect(Object.fromEntries(report.wireGuard)).toEqual({ initiation: 1, data: 1 });
    expect(Object.fromEntries(report.secretHits)).toEqual({ token: 1, password: 1 });
    expect(textAround(report.secretFrames.get('token')!, secrets.token)).toBe('authorization: Bearer s3cr3t-token');
    expect(textAround(report.secretFrames.get('password')!, secrets.password)).toBe('{"password":"hunter2-pw"}');
  });

  it('describes ports and payloads of single frames', () => {
    const summary = summarize(frames[2]!, LINKTYPE_ETHERNET);
    expect(summary).toMatchObject({ protocol: 'TCP', network: 'IPv4', source: '198.18.77.1', destination: '198.18.77.2', sourcePort: 40000, destinationPort: 8080 });
    expect(Buffer.from(summary.payload!).toString()).toBe(Buffer.from(http).toString());
    expect(summarize(new Uint8Array(5), LINKTYPE_ETHERNET).protocol).toBe('unknown');
    expect(wireGuardMessageType(initiation)).toBe('initiation');
    expect(wireGuardMessageType(initiation.subarray(0, 100))).toBeUndefined();
  });

  it('flags a capture cut inside a record and rejects what is not pcap', () => {
    const file = pcap(frames, { little: true, nanos: false });
    const cut = parsePcap(file.subarray(0, file.length - 3));
    expect(cut.truncated).toBe(true);
    expect(cut.records).toHaveLength(3);
    expect(() => parsePcap(new Uint8Array(24))).toThrow(/not a pcap file/);
    expect(() => parsePcap(new Uint8Array(3))).toThrow(/not a pcap file/);
  });

  it('judges: an encrypted run with anything but UDP 51820 or a secret on the wire fails', () => {
    const wgOnly = analyzeCapture(pcap(frames.slice(0, 2), { little: true, nanos: false }), secrets, [51820, 8080]);
    expect(judge(wgOnly, false, 3).problems).toEqual([]);
    expect(judge(wgOnly, false, 3).summary).toBe('underlay carried 2 packets, all UDP 51820; token found: no; password found: no → encrypted');
    expect(judge(wgOnly, false, 2).problems).toHaveLength(1);
    const mixed = analyzeCapture(pcap(frames, { little: true, nanos: false }), secrets, [51820, 8080]);
    expect(judge(mixed, false, 3).problems.join('\n')).toMatch(/more than UDP 51820[\s\S]*secret appeared/);
    expect(judge(wgOnly, true, 3).problems.join('\n')).toMatch(/token did not show/);
  });
});

// ---------- the real thing ----------

const impl = process.env['WGTS_DEMO_IMPL'];

interface Run {
  readonly code: number;
  readonly text: string;
  readonly daemonPids: number[];
}

async function demo(plaintext: boolean): Promise<Run> {
  const lines: string[] = [];
  const started = performance.now();
  const code = await runDemo({ plaintext, impl, log: (line) => lines.push(line) });
  const seconds = (performance.now() - started) / 1000;
  const text = lines.join('\n');
  process.stderr.write(`--- wgts demo${plaintext ? ' --plaintext' : ''} (${impl ?? 'wgts'}), ${seconds.toFixed(1)} s, exit ${code} ---\n${text}\n`);
  const tunnelLine = lines.find((line) => line.includes('tunnel up:')) ?? '';
  const daemonPids = [...tunnelLine.matchAll(/\(pid ([\d,]+)\)/g)].flatMap((m) => m[1]!.split(',').map(Number));
  return { code, text, daemonPids };
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

async function expectNothingLeft(run: Run): Promise<void> {
  const tag = `wgtsdemo-${process.pid}`;
  expect((await listNamespaces()).filter((ns) => ns.startsWith(tag)), 'namespaces left').toEqual([]);
  for (const side of ['a', 'b']) expect(existsSync(`/var/run/wireguard/wgd${process.pid}${side}.sock`), `UAPI socket ${side}`).toBe(false);
  expect(readdirSync(tmpdir()).filter((name) => name.startsWith(`${tag}-`)), 'temporary directories left').toEqual([]);
  expect(run.daemonPids.filter(alive), 'daemons still running').toEqual([]);
}

describe.skipIf(skipUnlessRoot('wgts demo'))(`wgts demo (daemon: ${impl ?? 'wgts'})`, () => {
  it('through the tunnel: only UDP 51820 on the wire, no secret, exit 0', async () => {
    const run = await demo(false);
    expect(run.code, run.text).toBe(0);
    expect(run.text).toMatch(/underlay carried \d+ packets, all UDP 51820; token found: no; password found: no → encrypted/);
    expect(run.text).toMatch(/^ {2}UDP 51820 +\d+ packets +WireGuard: 1 initiation, 1 response, \d+ data$/m);
    expect(run.text).toMatch(/latest handshake:/);
    expect(run.daemonPids.length).toBeGreaterThanOrEqual(2);
    await expectNothingLeft(run);
  }, 60_000);

  it('--plaintext: the token and the password show on the wire, exit 0', async () => {
    const run = await demo(true);
    expect(run.code, run.text).toBe(0);
    expect(run.text).toMatch(/underlay carried \d+ packets, all TCP 8080; token found: YES \(in \d+ packets?\); password found: YES \(in \d+ packets?\)/);
    expect(run.text).toMatch(/token seen in a packet: authorization: Bearer [0-9a-f]{32}/);
    await expectNothingLeft(run);
  }, 60_000);
});
