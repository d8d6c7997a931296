/**
 * `wgts verify`: the mesh's "nothing leaks" proof as one command. It asks the WireGuard device
 * (over UAPI, as `wg show` does) who its peers are, captures on the underlay with tcpdump for a
 * while, and sorts every captured packet:
 *
 * - **encrypted** — UDP between this node and a peer's node address (its endpoint host) on a
 *   WireGuard port (our listen port, or the peer's endpoint port) whose payload is a WireGuard
 *   message (type 1–4, zero reserved bytes, a valid length for the type);
 * - **in the clear** — any other IP packet whose source or destination lies in a peer's allowed
 *   IPs (its pod CIDRs, its tunnel address and, with host encryption, its node IP) — counted for
 *   that peer — or in this node's own prefixes (the tunnel interface's addresses, the local
 *   prefixes the mesh throws out of its routing table, `localPrefixes`) with a peer's node
 *   address on the other side. Own-prefix traffic with a host that is not a peer is listed as
 *   "clear, not between peers" but does not fail the check;
 * - **other** — everything else: ARP, unrelated hosts, traffic to or from addresses the mesh
 *   exempts from the tunnel (host-length throw routes, e.g. the Kubernetes API server).
 *
 * The exit status is 0 when no peer saw a byte in the clear, 1 when one did, and 2 when the
 * check could not run (not root, no tcpdump, no such interface, no WireGuard device).
 *
 * The classification (classifyCapture) and the report (formatReport) are pure, so they are
 * tested on hand-built captures; runVerify does the I/O.
 */
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, isAbsolute, join } from 'node:path';
import { AllowedIps } from '../device/allowed-ips.ts';
import type { Cidr, DeviceSnapshot } from '../device/config.ts';
import { RemoteDevice, uapiSocketPath } from '../device/uapi-client.ts';
import { keyToBase64 } from '../util/hex.ts';
import { formatCidr, formatIp, parseCidr, parseIp } from '../util/ip.ts';
import type { PacketSummary } from '../util/pcap.ts';
import { parsePcap, summarize, wireGuardMessageType } from '../util/pcap.ts';
import { MESH_DEFAULTS } from './types.ts';

export interface VerifyOptions {
  /** The underlay interface to capture on, e.g. eth0. */
  readonly interface: string;
  /** How long to capture. */
  readonly seconds: number;
  /** The WireGuard interface whose peers are checked, e.g. wgts0. */
  readonly wgInterface: string;
  /** Where <wgInterface>.sock lives (default /var/run/wireguard). */
  readonly uapiDir?: string;
  /** Output lines (default: stdout; usage errors go to stderr when no log is given). */
  readonly log?: (line: string) => void;
  /** One JSON document instead of the table. */
  readonly json?: boolean;
  /**
   * Capture and read addresses inside this named network namespace (`ip netns exec`) instead
   * of the current one. The UAPI socket directory is shared by all namespaces.
   */
  readonly netns?: string;
  /** More prefixes of this node that must travel only encrypted (e.g. a pod CIDR the mesh does not know). */
  readonly localPrefixes?: readonly string[];
  /** The mesh's routing table, read for local prefixes and exemptions (default 51820). */
  readonly table?: number;
  /** Ends the capture early (the report covers what was captured). */
  readonly signal?: AbortSignal;
}

/** Who a packet may be attributed to: one WireGuard peer. */
export interface VerifyPeer {
  readonly publicKey: string;
  /** The peer's node (underlay) address: its endpoint host; undefined when it has no endpoint. */
  readonly node: string | undefined;
  readonly port: number | undefined;
  readonly allowedIps: readonly Cidr[];
}

export interface VerifyContext {
  /** This node's underlay addresses. */
  readonly localAddresses: readonly string[];
  /** This node's prefixes that must only travel encrypted. */
  readonly localPrefixes: readonly Cidr[];
  /** Addresses the mesh deliberately routes outside the tunnel: traffic with them is "other". */
  readonly exempt: readonly Cidr[];
  /** The device's listen port. */
  readonly listenPort: number;
  readonly peers: readonly VerifyPeer[];
}

export interface Tally {
  packets: number;
  bytes: number;
}

export interface FlowTally extends Tally {
  /** "TCP 100.64.1.1:40000 → 100.64.2.1:8080", "ICMP 100.64.1.1 → 100.64.2.1". */
  readonly flow: string;
}

export interface ClearTally extends Tally {
  /** The first MAX_LISTED_FLOWS distinct flows, in order of first appearance. */
  readonly flows: FlowTally[];
  /** Distinct flows beyond those listed. */
  moreFlows: number;
}

export interface PeerResult {
  readonly publicKey: string;
  readonly node: string | undefined;
  readonly port: number | undefined;
  readonly allowedIps: readonly string[];
  /** The peer's node address is among its allowed IPs: host-to-host traffic must be encrypted too. */
  readonly hostEncryption: boolean;
  readonly encrypted: Tally;
  readonly clear: ClearTally;
}

export interface VerifyReport {
  /** True when no peer saw a packet in the clear. */
  readonly ok: boolean;
  readonly captured: { readonly packets: number; readonly bytes: number; readonly truncated: boolean };
  readonly peers: readonly PeerResult[];
  /** Own-prefix traffic in the clear with a host that is not a peer (reported, never a failure). */
  readonly unattributedClear: ClearTally;
  readonly other: Tally;
}

/** Distinct clear flows listed per peer. */
export const MAX_LISTED_FLOWS = 5;

const EXIT_OK = 0;
const EXIT_CLEAR = 1;
const EXIT_USAGE = 2;

// ---------- classification (pure) ----------

/** An address as the peer table knows it: IPv4-mapped IPv6 is the IPv4 address. */
function canonicalBytes(bytes: Uint8Array): Uint8Array {
  if (bytes.length === 16 && bytes[10] === 0xff && bytes[11] === 0xff && bytes.subarray(0, 10).every((b) => b === 0)) return bytes.subarray(12);
  return bytes;
}

function canonicalText(text: string): string {
  return formatIp(canonicalBytes(parseIp(text).bytes));
}

/** One peer while classifying: its canonical node address, its result, the flows not listed. */
interface PeerState {
  readonly peer: VerifyPeer;
  readonly result: PeerResult;
  readonly unlisted: Set<string>;
}

function newClear(): ClearTally {
  return { packets: 0, bytes: 0, flows: [], moreFlows: 0 };
}

function flowText(summary: PacketSummary): string {
  const end = (address: string, port: number | undefined): string =>
    port === undefined ? address : address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
  return `${summary.protocol} ${end(summary.source ?? '?', summary.sourcePort)} → ${end(summary.destination ?? '?', summary.destinationPort)}`;
}

function countClear(tally: ClearTally, summary: PacketSummary, bytes: number, seen: Set<string>): void {
  tally.packets++;
  tally.bytes += bytes;
  const flow = flowText(summary);
  const listed = tally.flows.find((f) => f.flow === flow);
  if (listed) {
    listed.packets++;
    listed.bytes += bytes;
  } else if (tally.flows.length < MAX_LISTED_FLOWS) {
    tally.flows.push({ flow, packets: 1, bytes });
  } else if (!seen.has(flow)) {
    seen.add(flow);
    tally.moreFlows++;
  }
}

/** Sorts every packet of a pcap capture into encrypted / clear per peer, and other. Bytes are frame lengths on the wire. */
export function classifyCapture(file: Uint8Array, context: VerifyContext): VerifyReport {
  const pcap = parsePcap(file);
  const states: PeerState[] = context.peers.map((peer) => {
    const node = peer.node === undefined ? undefined : canonicalText(peer.node);
    const hostEncryption = node !== undefined && peer.allowedIps.some((c) => contains(c, parseIp(node).bytes));
    return {
      peer: { ...peer, node },
      unlisted: new Set<string>(),
      result: {
        publicKey: peer.publicKey,
        node,
        port: peer.port,
        allowedIps: peer.allowedIps.map(formatCidr),
        hostEncryption,
        encrypted: { packets: 0, bytes: 0 },
        clear: newClear(),
      },
    };
  });
  const byAllowedIp = new AllowedIps<PeerState>();
  for (const state of states) for (const cidr of state.peer.allowedIps) byAllowedIp.insert(cidr, state);
  const byNode = new Map<string, PeerState[]>();
  for (const state of states) {
    if (state.peer.node === undefined) continue;
    byNode.set(state.peer.node, [...(byNode.get(state.peer.node) ?? []), state]);
  }
  const own = new AllowedIps<true>();
  for (const cidr of context.localPrefixes) own.insert(cidr, true);
  const exempt = new AllowedIps<true>();
  for (const cidr of context.exempt) exempt.insert(cidr, true);

  const unattributedClear = newClear();
  const unattributedSeen = new Set<string>();
  const other: Tally = { packets: 0, bytes: 0 };
  let capturedBytes = 0;

  for (const record of pcap.records) {
    const bytes = record.originalLength;
    capturedBytes += bytes;
    const summary = summarize(record.data, pcap.linkType);
    if (!summary.sourceBytes || !summary.destinationBytes || !summary.source || !summary.destination) {
      other.packets++;
      other.bytes += bytes;
      continue;
    }
    const source = canonicalBytes(summary.sourceBytes);
    const destination = canonicalBytes(summary.destinationBytes);
    const sourceText = formatIp(source);
    const destinationText = formatIp(destination);

    // Encrypted: WireGuard between a peer's node and us, on a WireGuard port.
    if (summary.protocol === 'UDP' && summary.payload && wireGuardMessageType(summary.payload)) {
      const match = encryptedFor(byNode, context.listenPort, sourceText, summary.sourcePort, destinationText, summary.destinationPort);
      if (match) {
        match.result.encrypted.packets++;
        match.result.encrypted.bytes += bytes;
        continue;
      }
    }
    if (exempt.lookup(source) || exempt.lookup(destination)) {
      other.packets++;
      other.bytes += bytes;
      continue;
    }
    // In the clear: a peer's prefixes (the destination's peer first: where the packet is going).
    const peer = byAllowedIp.lookup(destination) ?? byAllowedIp.lookup(source);
    if (peer) {
      countClear(peer.result.clear, summary, bytes, peer.unlisted);
      continue;
    }
    // In the clear: our own prefixes, with a peer's node on the other side (or someone else).
    const ownSource = own.lookup(source) === true;
    const ownDestination = own.lookup(destination) === true;
    if (ownSource || ownDestination) {
      const remote = ownSource && !ownDestination ? destinationText : ownDestination && !ownSource ? sourceText : undefined;
      const node = remote === undefined ? undefined : byNode.get(remote)?.[0];
      if (node) countClear(node.result.clear, summary, bytes, node.unlisted);
      else countClear(unattributedClear, summary, bytes, unattributedSeen);
      continue;
    }
    other.packets++;
    other.bytes += bytes;
  }
  const peers = states.map((s) => s.result);
  return {
    ok: peers.every((p) => p.clear.packets === 0),
    captured: { packets: pcap.records.length, bytes: capturedBytes, truncated: pcap.truncated },
    peers,
    unattributedClear,
    other,
  };
}

/** The peer a WireGuard datagram belongs to: one side is its node, and a port is its endpoint port or our listen port. */
function encryptedFor(
  byNode: ReadonlyMap<string, readonly PeerState[]>,
  listenPort: number,
  source: string,
  sourcePort: number | undefined,
  destination: string,
  destinationPort: number | undefined,
): PeerState | undefined {
  for (const [node, ourPort, theirPort] of [
    [source, destinationPort, sourcePort],
    [destination, sourcePort, destinationPort],
  ] as const) {
    for (const state of byNode.get(node) ?? []) {
      if ((theirPort !== undefined && theirPort === state.peer.port) || (ourPort !== undefined && ourPort === listenPort)) return state;
    }
  }
  return undefined;
}

function contains(cidr: Cidr, address: Uint8Array): boolean {
  if (address.length !== cidr.address.length) return false;
  for (let bit = 0; bit < cidr.prefix; bit += 8) {
    const take = Math.min(8, cidr.prefix - bit);
    const mask = (0xff << (8 - take)) & 0xff;
    if (((address[bit / 8]! ^ cidr.address[bit / 8]!) & mask) !== 0) return false;
  }
  return true;
}

// ---------- the report ----------

export interface ReportHeader {
  readonly interface: string;
  readonly wgInterface: string;
  readonly seconds: number;
  readonly listenPort: number;
  readonly localAddresses: readonly string[];
  readonly localPrefixes: readonly string[];
  readonly exempt: readonly string[];
  /** tcpdump's "packets dropped by kernel", when it said. */
  readonly droppedByKernel: number | undefined;
}

function shortKey(key: string): string {
  return `${key.slice(0, 8)}…`;
}

function nodeText(peer: PeerResult): string {
  if (peer.node === undefined) return '(no endpoint)';
  const host = peer.node.includes(':') ? `[${peer.node}]` : peer.node;
  return peer.port === undefined ? host : `${host}:${peer.port}`;
}

function tallyText(tally: Tally): string {
  return `${tally.packets} pkts ${tally.bytes} B`;
}

/** The human report: a table of peers, the clear flows under each leaking peer, other traffic, the verdict. */
export function formatReport(header: ReportHeader, report: VerifyReport): string[] {
  const lines: string[] = [];
  const secondsText = Number.isInteger(header.seconds) ? `${header.seconds}` : header.seconds.toFixed(1);
  lines.push(
    `captured ${secondsText} s on ${header.interface} (${header.localAddresses.join(', ') || 'no address'}): ` +
      `${report.captured.packets} packets, ${report.captured.bytes} bytes; ${header.wgInterface} listens on ${header.listenPort}, ${report.peers.length} peer${report.peers.length === 1 ? '' : 's'}`,
  );
  if (header.localPrefixes.length > 0) lines.push(`this node's prefixes: ${header.localPrefixes.join(', ')}`);
  if (header.exempt.length > 0) lines.push(`exempt from the tunnel (counted as other): ${header.exempt.join(', ')}`);
  lines.push('');
  const rows = report.peers.map((peer) => [
    nodeText(peer),
    shortKey(peer.publicKey),
    tallyText(peer.encrypted),
    tallyText(peer.clear),
    peer.clear.packets > 0 ? 'CLEAR' : peer.encrypted.packets > 0 ? 'ok' : 'ok (no traffic)',
  ]);
  const head = ['PEER NODE', 'KEY', 'ENCRYPTED', 'IN THE CLEAR', 'VERDICT'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const row = (cells: readonly string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  lines.push(row(head));
  report.peers.forEach((peer, i) => {
    lines.push(row(rows[i]!));
    for (const flow of peer.clear.flows) lines.push(`    ${flow.flow}  (${flow.packets} pkts ${flow.bytes} B)`);
    if (peer.clear.moreFlows > 0) lines.push(`    … and ${peer.clear.moreFlows} more flow${peer.clear.moreFlows === 1 ? '' : 's'}`);
  });
  if (report.peers.length === 0) lines.push('(no peers: nothing to check)');
  lines.push('');
  if (report.unattributedClear.packets > 0) {
    lines.push(`this node's prefixes in the clear with hosts that are not peers: ${tallyText(report.unattributedClear)} (not a failure)`);
    for (const flow of report.unattributedClear.flows) lines.push(`    ${flow.flow}  (${flow.packets} pkts ${flow.bytes} B)`);
  }
  lines.push(`other traffic (ARP, unrelated hosts, exempt addresses): ${tallyText(report.other)}`);
  if (report.captured.truncated) lines.push('warning: the capture file ends inside a packet (that packet is left out)');
  if (header.droppedByKernel) lines.push(`warning: tcpdump reports ${header.droppedByKernel} packets dropped by the kernel: the capture is incomplete`);
  const leaking = report.peers.filter((p) => p.clear.packets > 0);
  const clearBytes = leaking.reduce((n, p) => n + p.clear.bytes, 0);
  lines.push(
    report.ok
      ? 'result: OK, nothing in the clear between encrypted peers'
      : `result: LEAK, ${clearBytes} bytes in the clear with ${leaking.length} peer${leaking.length === 1 ? '' : 's'} (${leaking.map(nodeText).join(', ')})`,
  );
  return lines;
}

/** The JSON document of `--json`. */
export function reportJson(header: ReportHeader, report: VerifyReport): Record<string, unknown> {
  return {
    ok: report.ok,
    interface: header.interface,
    wgInterface: header.wgInterface,
    seconds: header.seconds,
    listenPort: header.listenPort,
    localAddresses: header.localAddresses,
    localPrefixes: header.localPrefixes,
    exempt: header.exempt,
    captured: { ...report.captured, droppedByKernel: header.droppedByKernel ?? null },
    peers: report.peers.map((p) => ({
      publicKey: p.publicKey,
      node: p.node ?? null,
      port: p.port ?? null,
      allowedIps: p.allowedIps,
      hostEncryption: p.hostEncryption,
      encrypted: p.encrypted,
      clear: p.clear,
    })),
    unattributedClear: report.unattributedClear,
    other: report.other,
  };
}

// ---------- I/O ----------

class UsageError extends Error {}

interface CommandResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function inNamespace(netns: string | undefined, argv: readonly string[]): string[] {
  return netns === undefined ? [...argv] : ['ip', 'netns', 'exec', netns, ...argv];
}

function command(argv: readonly string[], timeoutMs = 10_000): Promise<CommandResult> {
  const [file, ...args] = argv;
  return new Promise((resolve, reject) => {
    const child = spawn(file!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${argv.join(' ')}: ${e.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
  });
}

/** The absolute path of an executable on PATH, or undefined. */
function findExecutable(name: string): string | undefined {
  const dirs = (process.env['PATH'] ?? '').split(delimiter).filter((d) => isAbsolute(d));
  for (const dir of [...dirs, '/usr/sbin', '/sbin', '/usr/bin', '/bin']) {
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // next
    }
  }
  return undefined;
}

interface IpAddrJson {
  readonly addr_info?: readonly { readonly local?: string; readonly prefixlen?: number }[];
}

/** Addresses (with prefix lengths) of an interface, or undefined when it does not exist. */
async function interfaceAddresses(netns: string | undefined, ifname: string): Promise<{ address: string; prefix: number }[] | undefined> {
  const result = await command(['ip', ...(netns === undefined ? [] : ['-n', netns]), '-j', 'addr', 'show', 'dev', ifname]);
  if (result.code !== 0) return undefined;
  const links = JSON.parse(result.stdout || '[]') as IpAddrJson[];
  if (links.length === 0) return undefined;
  return links.flatMap((l) => l.addr_info ?? []).flatMap((a) => (a.local === undefined ? [] : [{ address: a.local, prefix: a.prefixlen ?? 0 }]));
}

/** The throw routes of the mesh's table: host-length ones are exemptions, the rest local prefixes. */
async function meshThrows(netns: string | undefined, table: number): Promise<{ local: Cidr[]; exempt: Cidr[] }> {
  const local: Cidr[] = [];
  const exempt: Cidr[] = [];
  for (const family of ['-4', '-6']) {
    const result = await command(['ip', ...(netns === undefined ? [] : ['-n', netns]), family, '-j', 'route', 'show', 'table', String(table), 'type', 'throw']).catch(
      () => undefined,
    );
    if (result?.code !== 0) continue;
    let routes: { dst?: string }[];
    try {
      routes = JSON.parse(result.stdout || '[]') as { dst?: string }[];
    } catch {
      continue;
    }
    for (const route of routes) {
      if (route.dst === undefined || route.dst === 'default') continue;
      let cidr: Cidr;
      try {
        cidr = parseCidr(route.dst);
      } catch {
        continue;
      }
      (cidr.prefix === cidr.address.length * 8 ? exempt : local).push(cidr);
    }
  }
  return { local, exempt };
}

interface Capture {
  readonly file: Uint8Array;
  readonly droppedByKernel: number | undefined;
  /** From tcpdump listening to the stop signal. */
  readonly seconds: number;
}

/**
 * Runs tcpdump on ifname until `seconds` have passed since it said it is listening (or signal
 * aborts), stops it by PID with SIGINT (SIGTERM, then SIGKILL, if it lingers) and returns the file.
 */
async function captureUnderlay(
  tcpdump: string,
  ifname: string,
  seconds: number,
  netns: string | undefined,
  signal: AbortSignal | undefined,
  onListening: () => void,
): Promise<Capture> {
  const dir = mkdtempSync(join(tmpdir(), 'wgts-verify-'));
  const path = join(dir, 'underlay.pcap');
  // setpriv: tcpdump goes away with us even if we are killed; -Z root: it writes into our 0700 directory.
  const setpriv = findExecutable('setpriv');
  const argv = inNamespace(netns, [
    ...(setpriv ? [setpriv, '--pdeathsig', 'SIGTERM', '--'] : []),
    tcpdump, '-i', ifname, '-w', path, '-U', '-n', '-s', '0', '--immediate-mode', '-Z', 'root',
  ]);
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  const killOnExit = (): void => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  let stderr = '';
  const exited = new Promise<void>((resolve) => {
    child.on('close', () => resolve());
    child.on('error', (err) => {
      stderr += `${err.message}\n`;
      resolve();
    });
  });
  let done = false;
  void exited.then(() => (done = true));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`tcpdump did not start listening on ${ifname} within 10 s:\n${stderr.trim()}`)), 10_000);
      child.stderr!.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        if (/listening on /.test(stderr)) {
          clearTimeout(timer);
          resolve();
        }
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`tcpdump exited before it was listening:\n${stderr.trim()}`));
      });
    });
    onListening();
    const listeningAt = performance.now();
    await new Promise<void>((resolve) => {
      if (signal?.aborted) return resolve();
      const finish = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', finish);
        resolve();
      };
      const timer = setTimeout(finish, seconds * 1000);
      signal?.addEventListener('abort', finish, { once: true });
      void exited.then(finish);
    });
    if (done) throw new Error(`tcpdump stopped during the capture:\n${stderr.trim()}`);
    const captureSeconds = (performance.now() - listeningAt) / 1000;
    await stop(child, exited);
    const dropped = /(\d+) packets? dropped by kernel/.exec(stderr);
    return { file: readFileSync(path), droppedByKernel: dropped ? Number(dropped[1]) : undefined, seconds: captureSeconds };
  } finally {
    if (!done) await stop(child, exited);
    process.removeListener('exit', killOnExit);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** SIGINT (tcpdump flushes and exits), then SIGTERM, then SIGKILL; by PID, resolves once it is gone. */
async function stop(child: ChildProcess, exited: Promise<void>): Promise<void> {
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGKILL'] as const) {
    if (child.exitCode !== null || child.signalCode !== null) return;
    try {
      if (child.pid !== undefined) process.kill(child.pid, sig);
    } catch {
      return; // already gone
    }
    const gone = await Promise.race([exited.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 2_000).unref())]);
    if (gone) return;
  }
  await exited;
}

/** Reads the device and the host, captures, classifies and reports. 0: nothing in the clear; 1: a leak; 2: could not check. */
export async function runVerify(options: VerifyOptions): Promise<number> {
  const say = options.log ?? ((line: string): void => void process.stdout.write(`${line}\n`));
  const complain = options.log ?? ((line: string): void => void process.stderr.write(`${line}\n`));
  try {
    return await verify(options, say);
  } catch (err) {
    if (err instanceof UsageError) {
      complain(`wgts verify: ${err.message}`);
      return EXIT_USAGE;
    }
    throw err;
  }
}

async function verify(options: VerifyOptions, say: (line: string) => void): Promise<number> {
  if (!Number.isFinite(options.seconds) || options.seconds <= 0) throw new UsageError(`the capture time must be a positive number of seconds, not ${options.seconds}`);
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new UsageError('needs root (tcpdump captures on the underlay; the UAPI socket is root-only); run it with sudo');
  }
  const tcpdump = findExecutable('tcpdump');
  if (!tcpdump) throw new UsageError('tcpdump is not installed; install it with: apt-get install -y tcpdump');
  const underlay = await interfaceAddresses(options.netns, options.interface);
  if (!underlay) throw new UsageError(`no such interface ${options.interface}${options.netns ? ` in namespace ${options.netns}` : ''}`);

  let snapshot: DeviceSnapshot;
  try {
    snapshot = await new RemoteDevice(options.wgInterface, options.uapiDir).get();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' || code === 'ECONNREFUSED' ? 'no WireGuard interface answers at' : 'cannot read the WireGuard interface at';
    throw new UsageError(`${why} ${uapiSocketPath(options.wgInterface, options.uapiDir)} (${(err as Error).message})`);
  }

  const tunnel = (await interfaceAddresses(options.netns, options.wgInterface)) ?? [];
  const throws = await meshThrows(options.netns, options.table ?? MESH_DEFAULTS.table);
  let extra: Cidr[];
  try {
    extra = (options.localPrefixes ?? []).map(parseCidr);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  // The tunnel's own addresses (as host prefixes; not its IPv6 link-local one, which never leaves the link).
  const tunnelAddresses = tunnel.map((a) => parseCidr(a.address)).filter((c) => !(c.family === 6 && c.address[0] === 0xfe && (c.address[1]! & 0xc0) === 0x80));
  const localPrefixes = dedupe([...tunnelAddresses, ...throws.local, ...extra]);
  const context: VerifyContext = {
    localAddresses: underlay.map((a) => a.address),
    localPrefixes,
    exempt: throws.exempt,
    listenPort: snapshot.listenPort,
    peers: snapshot.peers.map((p) => ({
      publicKey: keyToBase64(p.publicKey),
      node: p.endpoint?.host,
      port: p.endpoint?.port,
      allowedIps: p.allowedIps,
    })),
  };

  let capture: Capture;
  try {
    capture = await captureUnderlay(tcpdump, options.interface, options.seconds, options.netns, options.signal, () => {
      const line = `capturing on ${options.interface} for ${options.seconds} s (${context.peers.length} peer${context.peers.length === 1 ? '' : 's'} of ${options.wgInterface})…`;
      // With --json, stdout carries the document alone: progress goes to stderr (or nowhere, given a log).
      if (!options.json) say(line);
      else if (!options.log) process.stderr.write(`${line}\n`);
    });
  } catch (err) {
    throw new UsageError(`could not capture on ${options.interface}: ${(err as Error).message}`);
  }
  const report = classifyCapture(capture.file, context);
  const header: ReportHeader = {
    interface: options.interface,
    wgInterface: options.wgInterface,
    seconds: Math.round(capture.seconds * 10) / 10,
    listenPort: snapshot.listenPort,
    localAddresses: context.localAddresses,
    localPrefixes: localPrefixes.map(formatCidr),
    exempt: throws.exempt.map(formatCidr),
    droppedByKernel: capture.droppedByKernel,
  };
  if (options.json) say(JSON.stringify(reportJson(header, report), null, 2));
  else for (const line of formatReport(header, report)) say(line);
  return report.ok ? EXIT_OK : EXIT_CLEAR;
}

function dedupe(cidrs: readonly Cidr[]): Cidr[] {
  const seen = new Map<string, Cidr>();
  for (const cidr of cidrs) seen.set(formatCidr(cidr), cidr);
  return [...seen.values()];
}
