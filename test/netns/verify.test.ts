/**
 * `wgts verify` (runVerify), for real: two "nodes" A and B (namespaces) on a veth underlay,
 * each running wireguard-go configured with `wg set`, a "pod" address behind each (on the
 * node's loopback: 100.64.1.1 in A, 100.64.2.1 in B; each side's pod /24 routed over the tunnel).
 *
 *   (a) pod-to-pod ping and TCP through the tunnel while verify captures in A (run as a child
 *       inside namespace A, as an operator would run it, with --json) → exit 0, B encrypted;
 *   (b) the same traffic with the pod routes pointed at the veth instead (plaintext on the
 *       underlay; verify in-process with the netns option, table output) → exit 1, the clear
 *       flows listed.
 *
 * The classifier is checked first on hand-built captures (no root needed).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generatePrivateKey, publicKeyOf } from '../../src/cli/keys.ts';
import type { VerifyContext } from '../../src/mesh/verify.ts';
import { classifyCapture, formatReport, runVerify } from '../../src/mesh/verify.ts';
import { keyToBase64 } from '../../src/util/hex.ts';
import { parseCidr } from '../../src/util/ip.ts';
import type { TrackedProcess, VethPair } from './helpers/netns.ts';
import { NetnsBed, skipUnlessRoot, waitFor } from './helpers/netns.ts';
import { WireguardGo } from './helpers/wireguard-go.ts';
import { ethernet, icmp, ipv4, ipv6, pcap, tcp, udp } from '../helpers/packets.ts';

// ---------- hand-built captures ----------

const v4 = (body: Uint8Array): Uint8Array => ethernet(0x0800, body);
const v6 = (body: Uint8Array): Uint8Array => ethernet(0x86dd, body);

const NODE_A = [198, 18, 77, 1];
const NODE_B = [198, 18, 77, 2];
const API = [198, 18, 77, 9];
const STRANGER = [198, 18, 77, 50];
const POD_A = [100, 64, 1, 1];
const POD_B = [100, 64, 2, 1];
const POD_C = [100, 64, 3, 1];
const V6_POD_A = [0xfd, 0, 0, 0, 0, 0, 0, 1, ...new Array<number>(7).fill(0), 1];
const V6_POD_B = [0xfd, 0, 0, 0, 0, 0, 0, 2, ...new Array<number>(7).fill(0), 1];
const initiation = new Uint8Array(148);
initiation[0] = 1;
const data = new Uint8Array(32 + 64);
data[0] = 4;
const garbage = Uint8Array.of(4, 1, 2, 3, 5, 6, 7, 8);

const KEY_B = 'B'.repeat(43) + '=';
const KEY_C = 'C'.repeat(43) + '=';

function context(hostEncryption: boolean): VerifyContext {
  return {
    localAddresses: ['198.18.77.1'],
    localPrefixes: ['100.64.1.0/24', '100.64.0.1/32', 'fd00:0:0:1::/64'].map(parseCidr),
    exempt: [parseCidr('198.18.77.9/32')],
    listenPort: 51820,
    peers: [
      {
        publicKey: KEY_B,
        node: '198.18.77.2',
        port: 51821,
        allowedIps: ['100.64.2.0/24', '100.64.0.2/32', 'fd00:0:0:2::/64', ...(hostEncryption ? ['198.18.77.2/32'] : [])].map(parseCidr),
      },
      { publicKey: KEY_C, node: undefined, port: undefined, allowedIps: [parseCidr('100.64.3.0/24')] },
    ],
  };
}

describe('verify classifier', () => {
  const encryptedOnly = [
    v4(ipv4(17, NODE_A, NODE_B, udp(51820, 51821, initiation))),
    v4(ipv4(17, NODE_B, NODE_A, udp(51821, 51820, data))),
    // B behind NAT: another source port, but to our listen port.
    v4(ipv4(17, NODE_B, NODE_A, udp(40001, 51820, data))),
    ethernet(0x0806, new Uint8Array(28)),
    v4(ipv4(6, NODE_A, API, tcp(40000, 6443))),
    v4(ipv4(6, NODE_A, STRANGER, tcp(40000, 22))),
    // Not WireGuard-shaped, between the nodes, on the WireGuard port: other without host encryption.
    v4(ipv4(17, NODE_A, NODE_B, udp(51820, 51821, garbage))),
    v4(ipv4(1, NODE_A, NODE_B, icmp())),
  ];

  it('counts WireGuard between the nodes as encrypted and the rest as other', () => {
    const report = classifyCapture(pcap(encryptedOnly), context(false));
    expect(report.ok).toBe(true);
    const [b, c] = report.peers;
    expect(b).toMatchObject({ node: '198.18.77.2', hostEncryption: false, encrypted: { packets: 3 }, clear: { packets: 0, bytes: 0, flows: [] } });
    expect(b!.encrypted.bytes).toBe(encryptedOnly.slice(0, 3).reduce((n, f) => n + f.length, 0));
    expect(c).toMatchObject({ node: undefined, encrypted: { packets: 0 }, clear: { packets: 0 } });
    expect(report.other.packets).toBe(5);
    expect(report.captured.packets).toBe(encryptedOnly.length);
  });

  it('finds pod and tunnel traffic in the clear, attributed to the peer whose prefixes it uses', () => {
    const leaks = [
      v4(ipv4(6, POD_A, POD_B, tcp(40000, 8080, new TextEncoder().encode('hello')))),
      v4(ipv4(1, POD_B, POD_A, icmp())),
      v4(ipv4(1, POD_B, POD_A, icmp())),
      // A host process on B's node talking to our pod in the clear: ours, with B's node on the other side.
      v4(ipv4(6, NODE_B, POD_A, tcp(5000, 80))),
      // C has no endpoint; its prefix still counts.
      v4(ipv4(17, POD_C, POD_A, udp(53, 53))),
      v6(ipv6(6, V6_POD_A, V6_POD_B, tcp(1234, 80))),
      // Our pod with a stranger: reported, not a failure.
      v4(ipv4(6, STRANGER, POD_A, tcp(5000, 80))),
    ];
    const report = classifyCapture(pcap([...encryptedOnly, ...leaks]), context(false));
    expect(report.ok).toBe(false);
    const [b, c] = report.peers;
    expect(b!.encrypted.packets).toBe(3);
    expect(b!.clear.packets).toBe(5);
    expect(b!.clear.flows.map((f) => [f.flow, f.packets])).toEqual([
      ['TCP 100.64.1.1:40000 → 100.64.2.1:8080', 1],
      ['ICMP 100.64.2.1 → 100.64.1.1', 2],
      ['TCP 198.18.77.2:5000 → 100.64.1.1:80', 1],
      ['TCP [fd00:0:0:1::1]:1234 → [fd00:0:0:2::1]:80', 1],
    ]);
    expect(c!.clear.flows.map((f) => f.flow)).toEqual(['UDP 100.64.3.1:53 → 100.64.1.1:53']);
    expect(report.unattributedClear.flows.map((f) => f.flow)).toEqual(['TCP 198.18.77.50:5000 → 100.64.1.1:80']);
    expect(report.other.packets).toBe(5);

    const text = formatReport(
      { interface: 'eth0', wgInterface: 'wgts0', seconds: 5, listenPort: 51820, localAddresses: ['198.18.77.1'], localPrefixes: ['100.64.1.0/24'], exempt: ['198.18.77.9/32'], droppedByKernel: undefined },
      report,
    ).join('\n');
    expect(text).toMatch(/^PEER NODE\s+KEY\s+ENCRYPTED\s+IN THE CLEAR\s+VERDICT$/m);
    expect(text).toMatch(/^198\.18\.77\.2:51821\s+BBBBBBBB…\s+3 pkts \d+ B\s+5 pkts \d+ B\s+CLEAR$/m);
    expect(text).toMatch(/^\(no endpoint\)\s+CCCCCCCC…\s+0 pkts 0 B\s+1 pkts \d+ B\s+CLEAR$/m);
    expect(text).toContain('    ICMP 100.64.2.1 → 100.64.1.1  (2 pkts');
    expect(text).toMatch(/result: LEAK, \d+ bytes in the clear with 2 peers/);
  });

  it('with host encryption (the node IP among the allowed IPs), any non-WireGuard packet between the nodes is clear', () => {
    const report = classifyCapture(pcap(encryptedOnly), context(true));
    const b = report.peers[0]!;
    expect(b.hostEncryption).toBe(true);
    expect(b.encrypted.packets).toBe(3);
    expect(b.clear.flows.map((f) => f.flow)).toEqual(['UDP 198.18.77.1:51820 → 198.18.77.2:51821', 'ICMP 198.18.77.1 → 198.18.77.2']);
    // The exempt API server and the stranger stay other.
    expect(report.other.packets).toBe(3);
  });

  it('lists the first flows and counts the rest', () => {
    const many = Array.from({ length: 9 }, (_, i) => v4(ipv4(6, POD_A, POD_B, tcp(40000 + i, 80))));
    const b = classifyCapture(pcap([...many, many[0]!]), context(false)).peers[0]!;
    expect(b.clear.packets).toBe(10);
    expect(b.clear.flows).toHaveLength(5);
    expect(b.clear.flows[0]!.packets).toBe(2);
    expect(b.clear.moreFlows).toBe(4);
  });
});

// ---------- the real thing ----------

const WG_PORT_A = 51820;
const WG_PORT_B = 51821;
const TCP_PORT = 8080;
const SECONDS = 3;

describe.skipIf(skipUnlessRoot('wgts verify'))('wgts verify in namespaces', () => {
  const bed = new NetnsBed('vfy');
  let nsA = '';
  let nsB = '';
  let link: VethPair;
  let wgA: WireguardGo;
  let server: TrackedProcess;

  beforeAll(async () => {
    await bed.sweepStale();
    nsA = await bed.createNamespace('a');
    nsB = await bed.createNamespace('b');
    link = await bed.createVethPair(nsA, nsB);
    const keyA = generatePrivateKey();
    const keyB = generatePrivateKey();
    const [a, b] = await Promise.all([WireguardGo.start(bed, nsA, { logLevel: 'error' }), WireguardGo.start(bed, nsB, { logLevel: 'error' })]);
    wgA = a;
    await a.configure({
      privateKey: keyA,
      listenPort: WG_PORT_A,
      addresses: ['100.64.0.1/32'],
      peers: [{ publicKey: publicKeyOf(keyB), endpoint: `${link.b.address4}:${WG_PORT_B}`, allowedIps: ['100.64.2.0/24', '100.64.0.2/32'] }],
    });
    await b.configure({
      privateKey: keyB,
      listenPort: WG_PORT_B,
      addresses: ['100.64.0.2/32'],
      peers: [{ publicKey: publicKeyOf(keyA), endpoint: `${link.a.address4}:${WG_PORT_A}`, allowedIps: ['100.64.1.0/24', '100.64.0.1/32'] }],
    });
    // The "pods": an address on loopback in each node (the dummy module may not be loadable here).
    for (const [ns, wg, pod, remotePod] of [
      [nsA, a, '100.64.1.1/32', '100.64.2.0/24'],
      [nsB, b, '100.64.2.1/32', '100.64.1.0/24'],
    ] as const) {
      await bed.exec(ns, 'ip', ['addr', 'add', pod, 'dev', 'lo']);
      await bed.exec(ns, 'ip', ['route', 'add', remotePod, 'dev', wg.ifname]);
    }
    // A "pod" service in B: answers each line with its upper case.
    server = bed.spawn(nsB, process.execPath, [
      '-e',
      `require('node:net').createServer((s) => s.on('data', (d) => s.end(String(d).toUpperCase()))).listen(${TCP_PORT}, '100.64.2.1', () => console.log('listening'))`,
    ]);
    await waitFor(() => server.output().includes('listening') || (server.hasExited() && Promise.reject(new Error(server.output()))), {
      timeoutMs: 10_000,
      what: 'the pod service in B',
    });
  }, 30_000);

  afterAll(() => bed.cleanup(), 30_000);

  /** Pod A → pod B: three pings and one TCP exchange, from A's pod address. */
  async function podTraffic(): Promise<void> {
    await bed.exec(nsA, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', '-I', '100.64.1.1', '100.64.2.1']);
    const client = await bed.exec(nsA, process.execPath, [
      '-e',
      `const s = require('node:net').connect({ host: '100.64.2.1', port: ${TCP_PORT}, localAddress: '100.64.1.1' }, () => s.write('hello pod')); s.on('data', (d) => process.stdout.write(d));`,
    ]);
    expect(client.stdout).toBe('HELLO POD');
  }

  it('usage errors exit 2', async () => {
    const lines: string[] = [];
    const log = (line: string): void => void lines.push(line);
    expect(await runVerify({ interface: 'nosuch0', seconds: 1, wgInterface: wgA.ifname, netns: nsA, log })).toBe(2);
    expect(await runVerify({ interface: link.a.ifname, seconds: 1, wgInterface: 'wgnosuch0', netns: nsA, log })).toBe(2);
    expect(await runVerify({ interface: link.a.ifname, seconds: 0, wgInterface: wgA.ifname, netns: nsA, log })).toBe(2);
    expect(lines[0]).toBe(`wgts verify: no such interface nosuch0 in namespace ${nsA}`);
    expect(lines[1]).toMatch(/no WireGuard interface answers at \/var\/run\/wireguard\/wgnosuch0\.sock/);
    expect(lines[2]).toMatch(/positive number of seconds/);
  });

  it('(a) pod traffic through the tunnel: exit 0, all encrypted', async () => {
    const options = { interface: link.a.ifname, seconds: SECONDS, wgInterface: wgA.ifname, json: true };
    const script = `import { runVerify } from ${JSON.stringify(new URL('../../src/mesh/verify.ts', import.meta.url).pathname)};
process.exitCode = await runVerify(JSON.parse(process.argv[1]));`;
    const child = bed.spawn(nsA, process.execPath, ['--input-type=module', '-e', script, JSON.stringify(options)], { stdio: 'pipe' });
    let stdout = '';
    let stderr = '';
    child.child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    await waitFor(() => stderr.includes('capturing on') || (child.hasExited() && Promise.reject(new Error(`verify exited:\n${stderr}`))), {
      timeoutMs: 10_000,
      what: 'verify to start capturing',
    });
    await podTraffic();
    const { code } = await child.exited;
    process.stdout.write(`[verify (a)] exit ${code}\n${stdout}${stderr}`);
    expect(code).toBe(0);
    const report = JSON.parse(stdout) as {
      ok: boolean;
      listenPort: number;
      peers: { node: string; port: number; encrypted: { packets: number; bytes: number }; clear: { packets: number; bytes: number } }[];
    };
    expect(report.ok).toBe(true);
    expect(report.listenPort).toBe(WG_PORT_A);
    expect(report.peers).toHaveLength(1);
    expect(report.peers[0]).toMatchObject({ node: link.b.address4, port: WG_PORT_B, clear: { packets: 0, bytes: 0 } });
    // Handshake, 3 pings and their replies, the TCP exchange: all of it WireGuard.
    expect(report.peers[0]!.encrypted.packets).toBeGreaterThanOrEqual(8);
    expect(report.peers[0]!.encrypted.bytes).toBeGreaterThan(0);
  }, 30_000);

  it('(b) the same traffic routed around the tunnel: exit 1, the clear flows listed', async () => {
    await bed.exec(nsA, 'ip', ['route', 'replace', '100.64.2.0/24', 'via', link.b.address4, 'dev', link.a.ifname]);
    await bed.exec(nsB, 'ip', ['route', 'replace', '100.64.1.0/24', 'via', link.a.address4, 'dev', link.b.ifname]);
    const lines: string[] = [];
    let capturing = false;
    const stopper = new AbortController();
    const result = runVerify({
      interface: link.a.ifname,
      seconds: 20,
      wgInterface: wgA.ifname,
      netns: nsA,
      signal: stopper.signal,
      log: (line) => {
        lines.push(line);
        if (line.startsWith('capturing on')) capturing = true;
      },
    });
    await waitFor(() => capturing, { timeoutMs: 10_000, what: 'verify to start capturing' });
    const started = performance.now();
    await podTraffic();
    stopper.abort();
    const code = await result;
    process.stdout.write(`[verify (b)] exit ${code}\n${lines.join('\n')}\n`);
    expect(performance.now() - started).toBeLessThan(10_000);
    expect(code).toBe(1);
    const text = lines.join('\n');
    expect(text).toMatch(new RegExp(`^${link.b.address4.replaceAll('.', '\\.')}:${WG_PORT_B}\\s+\\S+…\\s+\\d+ pkts \\d+ B\\s+[1-9]\\d* pkts [1-9]\\d* B\\s+CLEAR$`, 'm'));
    expect(text).toContain('    ICMP 100.64.1.1 → 100.64.2.1  (3 pkts');
    expect(text).toContain('    ICMP 100.64.2.1 → 100.64.1.1  (3 pkts');
    expect(text).toMatch(new RegExp(`^    TCP 100\\.64\\.1\\.1:\\d+ → 100\\.64\\.2\\.1:${TCP_PORT}  \\(\\d+ pkts`, 'm'));
    expect(text).toMatch(/^result: LEAK, \d+ bytes in the clear with 1 peer \(/m);
    // tcpdump is gone: nothing but wireguard-go runs in A.
    const pids = await bed.exec(undefined, 'ip', ['netns', 'pids', nsA]);
    expect(pids.stdout.split(/\s+/).filter(Boolean).map(Number)).toEqual([wgA.process.pid]);
  }, 30_000);
});
