/**
 * The seed lab: a small Kubernetes-shaped cluster in network namespaces, for the mesh e2e tests.
 *
 *        ┌──────────── <prefix>-ul: bridge br0 (the underlay L2; tcpdump -i any -Q in here) ────────────┐
 *        │ p254                  p1                         p2                         p3            │
 *   <prefix>-api            <prefix>-n1                <prefix>-n2                <prefix>-n3
 *   198.18.50.254           eth0 198.18.50.1           eth0 198.18.50.2           eth0 198.18.50.3
 *   test/k8s/serve.ts       cbr0 100.64.1.1/24         cbr0 100.64.2.1/24         cbr0 100.64.3.1/24
 *                            ├ <prefix>-n1a .2          ├ <prefix>-n2a .2          ├ …
 *                            └ <prefix>-n1b .3          └ <prefix>-n2b .3
 *
 * Nodes forward IP and reach each other's pod CIDRs with plain host-gw routes (the baseline
 * CNI: `100.64.j.0/24 via 198.18.50.j`). Each Node exists in the fake API server with its
 * podCIDRs and InternalIP. Every namespace runs a NsTool (test/e2e/ns-tool.ts) the test drives
 * over stdin/stdout; the API server process is driven the same way. wgts (the data plane) and
 * `wgts mesh` (the agent) are started per node by the tests, with interface names unique on
 * the machine (all namespaces share /var/run/wireguard).
 *
 * Everything is owned by a NetnsBed: cleanup() stops processes by PID, deletes the namespaces
 * and removes UAPI sockets and temporary files, also when a test failed halfway.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { keyFromBase64, keyToBase64 } from '../../src/util/hex.ts';
import { publicKeyOf } from '../../src/cli/keys.ts';
import type { DeviceSnapshot } from '../../src/device/config.ts';
import { RemoteDevice, uapiRequest, uapiSocketPath } from '../../src/device/uapi-client.ts';
import { LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW, parsePcap, summarize, wireGuardMessageType } from '../../src/util/pcap.ts';
import type { NetnsBed, TrackedProcess } from '../netns/helpers/netns.ts';
import { linkState, waitFor } from '../netns/helpers/netns.ts';
import { NODE, REPO_ROOT, WGTS_CLI } from '../netns/helpers/wgts.ts';

export const NS_TOOL = join(REPO_ROOT, 'test/e2e/ns-tool.ts');
export const API_SERVE = join(REPO_ROOT, 'test/k8s/serve.ts');
export const UNDERLAY_PREFIX = '198.18.50';
export const API_ADDRESS = `${UNDERLAY_PREFIX}.254`;
export const API_PORT = 6443;
export const METRICS = '127.0.0.1:9586';
export const HTTP_PORT = 8080;
export const ECHO_PORT = 7000;
/** The node tools' echo server on the node address (host-to-host traffic). */
export const NODE_ECHO_PORT = 7001;
export const WG_PORT = 51820;

export interface Secrets {
  readonly token: string;
  readonly apiKey: string;
  readonly password: string;
}

export function randomSecrets(): Secrets {
  const r = (): string => randomBytes(12).toString('hex');
  return { token: `tok-${r()}`, apiKey: `key-${r()}`, password: `pw-${r()}` };
}

// ---------------------------------------------------------------------------------------------
// JSON-line child processes

interface Answer {
  readonly id?: number;
  readonly ok?: boolean;
  readonly result?: unknown;
  readonly error?: string;
  readonly ready?: boolean;
  readonly event?: string;
  readonly [key: string]: unknown;
}

/** A child process spoken to with one JSON object per line on stdin/stdout. */
export class JsonLineProcess {
  readonly name: string;
  readonly proc: TrackedProcess;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private readonly listeners: Array<(line: Answer) => void> = [];
  private stderr = '';
  readonly ready: Promise<Answer>;

  constructor(name: string, proc: TrackedProcess) {
    this.name = name;
    this.proc = proc;
    let markReady!: (a: Answer) => void;
    let failReady!: (e: Error) => void;
    this.ready = new Promise<Answer>((resolve, reject) => {
      markReady = resolve;
      failReady = reject;
    });
    this.ready.catch(() => {});
    proc.child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-16_000);
    });
    const lines = createInterface({ input: proc.child.stdout! });
    lines.on('line', (text) => {
      let line: Answer;
      try {
        line = JSON.parse(text) as Answer;
      } catch {
        this.stderr = (this.stderr + `[stdout] ${text}\n`).slice(-16_000);
        return;
      }
      if (line.ready) markReady(line);
      if (line.id !== undefined && this.pending.has(line.id)) {
        const p = this.pending.get(line.id)!;
        this.pending.delete(line.id);
        clearTimeout(p.timer);
        if (line.ok) p.resolve(line.result);
        else p.reject(new Error(`${this.name}: ${line.error ?? 'failed'}`));
        return;
      }
      for (const l of this.listeners) l(line);
    });
    void proc.exited.then(({ code, signal }) => {
      const err = new Error(`${this.name} exited (${code ?? signal}) ${this.stderr.slice(-2000)}`);
      failReady(err);
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(err);
      }
      this.pending.clear();
    });
  }

  onLine(listener: (line: Answer) => void): void {
    this.listeners.push(listener);
  }

  call<T = unknown>(op: string, args: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.name}: ${op} got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.proc.child.stdin!.write(`${JSON.stringify({ id, op, ...args })}\n`);
    });
  }

  log(): string {
    return this.stderr;
  }
}

export interface LoopResult {
  readonly start: number;
  readonly end: number;
  readonly status: number;
  readonly error?: string;
}

export interface StreamStatus {
  readonly sent: number;
  readonly received: number;
  readonly lastEchoAt: number;
  readonly maxGapMs: number;
  readonly error: string | null;
  readonly closed: boolean;
}

// ---------------------------------------------------------------------------------------------
// The lab

export interface Pod {
  readonly name: string;
  readonly ns: string;
  readonly address: string;
  tool: JsonLineProcess;
}

export interface AgentOptions {
  readonly hostEncryption?: boolean;
  readonly rotateKeys?: string;
}

export interface LabNode {
  readonly name: string;
  readonly index: number;
  readonly ns: string;
  readonly address: string;
  readonly podCidr: string;
  readonly ifname: string;
  readonly keyFile: string;
  readonly pods: Pod[];
  tool: JsonLineProcess;
  dataPlane: TrackedProcess | undefined;
  agent: TrackedProcess | undefined;
  /** Output of earlier agent and data-plane processes of this node (restarts), for diagnostics. */
  history: string;
}

export interface NodeEvent {
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED';
  readonly name: string;
  readonly annotations?: Record<string, string>;
  readonly time: number;
}

export class Lab {
  readonly bed: NetnsBed;
  readonly secrets = randomSecrets();
  readonly nodes: LabNode[] = [];
  readonly events: NodeEvent[] = [];
  switchNs = '';
  apiNs = '';
  api!: JsonLineProcess;
  kubeconfig = '';
  private dir = '';
  private captureCounter = 0;
  private readonly tools: JsonLineProcess[] = [];

  constructor(bed: NetnsBed) {
    this.bed = bed;
  }

  /** The underlay switch, the API server and nodes 1..count with two pods each, host-gw routed. */
  async build(count: number): Promise<void> {
    await this.bed.sweepStale();
    this.dir = this.bed.tempDir();
    this.switchNs = await this.bed.createNamespace('ul');
    await this.bed.exec(this.switchNs, 'ip', ['link', 'add', 'br0', 'type', 'bridge']);
    await this.bed.exec(this.switchNs, 'ip', ['link', 'set', 'br0', 'up']);
    this.apiNs = await this.bed.createNamespace('api');
    await this.plug(this.apiNs, 254);
    const api = this.bed.spawn(this.apiNs, NODE, [API_SERVE, API_ADDRESS, String(API_PORT)], { stdio: 'pipe' });
    this.api = new JsonLineProcess('api server', api);
    this.api.onLine((line) => {
      if (line.event === 'node') this.events.push(line as unknown as NodeEvent);
    });
    const ready = await withTimeout(this.api.ready, 15_000, 'the API server to start');
    this.kubeconfig = join(this.dir, 'kubeconfig');
    writeFileSync(this.kubeconfig, String(ready.kubeconfig), { mode: 0o600 });
    await Promise.all(Array.from({ length: count }, (_, i) => this.addNode(i + 1, { pods: 2 })));
    await Promise.all(this.nodes.map((n) => this.hostGwRoutes(n)));
  }

  /** A veth from ns (eth0, 198.18.50.<host>/24) into the switch's bridge. */
  private async plug(ns: string, host: number): Promise<void> {
    const port = `p${host}`;
    await this.bed.exec(undefined, 'ip', ['link', 'add', 'eth0', 'netns', ns, 'type', 'veth', 'peer', 'name', port, 'netns', this.switchNs]);
    await this.bed.exec(this.switchNs, 'ip', ['link', 'set', port, 'master', 'br0', 'up']);
    await this.bed.exec(ns, 'ip', ['addr', 'add', `${UNDERLAY_PREFIX}.${host}/24`, 'dev', 'eth0']);
    await this.bed.exec(ns, 'ip', ['link', 'set', 'eth0', 'up']);
    await waitFor(async () => (await linkState(ns, 'eth0')) === 'UP', { timeoutMs: 5_000, what: `${ns} eth0 up` });
  }

  private async startTool(ns: string, name: string): Promise<JsonLineProcess> {
    const tool = new JsonLineProcess(name, this.bed.spawn(ns, NODE, [NS_TOOL], { stdio: 'pipe' }));
    this.tools.push(tool);
    await withTimeout(tool.ready, 15_000, `${name} tool to start`);
    return tool;
  }

  /** Node n<i>: namespace, underlay port, pod bridge and pods, tools, the Node object. */
  async addNode(index: number, options: { pods: number }): Promise<LabNode> {
    const name = `n${index}`;
    const ns = await this.bed.createNamespace(name);
    const address = `${UNDERLAY_PREFIX}.${index}`;
    const podCidr = `100.64.${index}.0/24`;
    await this.plug(ns, index);
    await this.bed.exec(ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    await this.bed.exec(ns, 'ip', ['link', 'add', 'cbr0', 'type', 'bridge']);
    await this.bed.exec(ns, 'ip', ['addr', 'add', `100.64.${index}.1/24`, 'dev', 'cbr0']);
    await this.bed.exec(ns, 'ip', ['link', 'set', 'cbr0', 'up']);
    const keyDir = join(this.dir, name);
    const node: LabNode = {
      name,
      index,
      ns,
      address,
      podCidr,
      ifname: this.bed.ifname(`wn${index}`),
      keyFile: join(keyDir, 'private.key'),
      pods: [],
      tool: undefined as unknown as JsonLineProcess,
      dataPlane: undefined,
      agent: undefined,
      history: '',
    };
    this.bed.trackPath(uapiSocketPath(node.ifname));
    const pods = await Promise.all(
      Array.from({ length: options.pods }, async (_, p) => {
        const letter = String.fromCharCode(97 + p);
        const podNs = await this.bed.createNamespace(`${name}${letter}`);
        const podAddress = `100.64.${index}.${p + 2}`;
        await this.bed.exec(undefined, 'ip', ['link', 'add', 'eth0', 'netns', podNs, 'type', 'veth', 'peer', 'name', `v${letter}`, 'netns', ns]);
        await this.bed.exec(ns, 'ip', ['link', 'set', `v${letter}`, 'master', 'cbr0', 'up']);
        await this.bed.exec(podNs, 'ip', ['addr', 'add', `${podAddress}/24`, 'dev', 'eth0']);
        await this.bed.exec(podNs, 'ip', ['link', 'set', 'eth0', 'up']);
        await this.bed.exec(podNs, 'ip', ['route', 'add', 'default', 'via', `100.64.${index}.1`]);
        const tool = await this.startTool(podNs, `${name}${letter}`);
        await tool.call('httpServe', { port: HTTP_PORT, secrets: this.secrets });
        await tool.call('tcpEcho', { port: ECHO_PORT });
        return { name: `${name}${letter}`, ns: podNs, address: podAddress, tool };
      }),
    );
    node.pods.push(...pods);
    node.tool = await this.startTool(ns, name);
    await node.tool.call('tcpEcho', { port: NODE_ECHO_PORT, host: address });
    this.nodes.push(node);
    await this.api.call('upsertNode', {
      node: {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name, labels: { 'kubernetes.io/hostname': name }, annotations: {} },
        spec: { podCIDR: podCidr, podCIDRs: [podCidr] },
        status: {
          addresses: [
            { type: 'InternalIP', address },
            { type: 'Hostname', address: name },
          ],
        },
      },
    });
    return node;
  }

  /** The baseline CNI: on each node, `100.64.j.0/24 via 198.18.50.j` for every other node j. */
  private async hostGwRoutes(node: LabNode): Promise<void> {
    for (const other of this.nodes) {
      if (other === node) continue;
      await this.bed.exec(node.ns, 'ip', ['route', 'replace', other.podCidr, 'via', other.address]);
    }
  }

  node(name: string): LabNode {
    const n = this.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  pod(name: string): Pod {
    for (const n of this.nodes) for (const p of n.pods) if (p.name === name) return p;
    throw new Error(`no pod ${name}`);
  }

  // ---- wgts -----------------------------------------------------------------------------------

  /** `wgts -f --persist <ifname>` in the node; resolves when it answers on its UAPI socket. */
  async startDataPlane(node: LabNode): Promise<void> {
    if (node.dataPlane && !node.dataPlane.hasExited()) throw new Error(`${node.name}: data plane already running`);
    const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'info', WGTS_WORKERS: '0' };
    const proc = this.bed.spawn(node.ns, NODE, [WGTS_CLI, '-f', '--persist', node.ifname], { env });
    node.dataPlane = proc;
    try {
      await waitFor(
        async () => {
          if (proc.hasExited()) throw new Error('exited');
          if ((await linkState(node.ns, node.ifname)) === undefined) return false;
          const answer = await uapiRequest(node.ifname, 'get=1\n\n', undefined, 1_000);
          return answer.errno === 0;
        },
        { timeoutMs: 15_000, intervalMs: 20, what: `${node.name} data plane ${node.ifname}` },
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- data plane output ---\n${proc.output()}`);
    }
  }

  /** SIGKILL the data plane (by PID); the persistent TUN and the stale socket file stay. */
  async killDataPlane(node: LabNode): Promise<void> {
    const proc = node.dataPlane;
    if (!proc) return;
    if (!proc.hasExited()) process.kill(proc.pid, 'SIGKILL');
    await proc.exited;
    node.history += `--- data plane pid ${proc.pid} (killed)\n${proc.output().slice(-3000)}\n`;
    node.dataPlane = undefined;
  }

  /** `wgts mesh` in the node; resolves when /readyz answers 200. */
  async startAgent(node: LabNode, options: AgentOptions = {}): Promise<void> {
    if (node.agent && !node.agent.hasExited()) throw new Error(`${node.name}: agent already running`);
    const args = [
      WGTS_CLI,
      'mesh',
      '--kubeconfig', this.kubeconfig,
      '--node-name', node.name,
      '--interface', node.ifname,
      '--key-file', node.keyFile,
      '--metrics-listen', METRICS,
      ...(options.hostEncryption ? ['--host-encryption'] : []),
      ...(options.rotateKeys ? ['--rotate-keys', options.rotateKeys] : []),
    ];
    const proc = this.bed.spawn(node.ns, NODE, args);
    node.agent = proc;
    try {
      await waitFor(
        async () => {
          if (proc.hasExited()) throw new Error('exited');
          return (await this.readyz(node)) === 200;
        },
        { timeoutMs: 20_000, intervalMs: 50, what: `${node.name} agent /readyz 200` },
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- agent output ---\n${proc.output()}`);
    }
  }

  async readyz(node: LabNode): Promise<number> {
    try {
      const r = await node.tool.call<{ status: number }>('fetch', { url: `http://${METRICS}/readyz`, timeoutMs: 1_000 }, 3_000);
      return r.status;
    } catch {
      return 0;
    }
  }

  async metrics(node: LabNode): Promise<string> {
    const r = await node.tool.call<{ status: number; body: string }>('fetch', { url: `http://${METRICS}/metrics`, timeoutMs: 2_000 }, 4_000);
    return r.body;
  }

  /** SIGTERM (graceful) or SIGKILL the agent, by PID; resolves once it has exited. */
  async stopAgent(node: LabNode, signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    const proc = node.agent;
    if (!proc) return;
    if (signal === 'SIGTERM') await this.bed.stop(proc, 5_000);
    else {
      if (!proc.hasExited()) process.kill(proc.pid, 'SIGKILL');
      await proc.exited;
    }
    node.history += `--- agent pid ${proc.pid} (${signal})\n${proc.output().slice(-3000)}\n`;
    node.agent = undefined;
  }

  device(node: LabNode): Promise<DeviceSnapshot> {
    return new RemoteDevice(node.ifname).get();
  }

  /** The public key a node's Node object publishes, from the API server. */
  async publishedKey(name: string): Promise<string | undefined> {
    const n = await this.api.call<{ metadata?: { annotations?: Record<string, string> } } | null>('getNode', { name });
    return n?.metadata?.annotations?.['wgts.io/public-key'];
  }

  /** The public key of the node's key file. */
  fileKey(node: LabNode): string {
    return keyToBase64(publicKeyOf(keyFromBase64(readFileSync(node.keyFile, 'utf8').trim())));
  }

  /**
   * Every running node's device has exactly the other running nodes' published keys as peers,
   * its own key is the one it publishes, and (when handshakes) each peer has had a handshake.
   * Returns undefined when so, else what differs.
   */
  async meshProblem(nodes: readonly LabNode[], options: { handshakes?: boolean } = {}): Promise<string | undefined> {
    const keys = new Map<string, string | undefined>();
    for (const n of nodes) keys.set(n.name, await this.publishedKey(n.name));
    for (const n of nodes) {
      const dev = await this.device(n);
      const own = dev.privateKey ? keyToBase64(publicKeyOf(dev.privateKey)) : undefined;
      if (!own || own !== keys.get(n.name)) return `${n.name}: device key ${own} is not the published ${keys.get(n.name)}`;
      const want = nodes.filter((o) => o !== n).map((o) => keys.get(o.name)).sort();
      const have = dev.peers.map((p) => keyToBase64(p.publicKey)).sort();
      if (JSON.stringify(want) !== JSON.stringify(have)) return `${n.name}: peers ${have.join(',')} want ${want.join(',')}`;
      if (options.handshakes) {
        const missing = dev.peers.filter((p) => p.lastHandshakeEpochMs === 0);
        if (missing.length > 0) return `${n.name}: no handshake yet with ${missing.map((p) => keyToBase64(p.publicKey)).join(',')}`;
      }
    }
    return undefined;
  }

  /** Routes (dst → "dev X" / "throw") in the node's table 51820. */
  async table(node: LabNode): Promise<Map<string, string>> {
    const r = await this.bed.exec(node.ns, 'ip', ['-j', '-4', 'route', 'show', 'table', '51820'], { allowFailure: true });
    const out = new Map<string, string>();
    if (r.code !== 0) return out;
    for (const route of JSON.parse(r.stdout || '[]') as Array<{ dst: string; dev?: string; type?: string }>) {
      const dst = route.dst.includes('/') ? route.dst : `${route.dst}/32`;
      out.set(dst, route.type === 'throw' ? 'throw' : `dev ${route.dev}`);
    }
    return out;
  }

  /** rx/tx packet counters of the node's tunnel interface (ip -j -s link). */
  async linkCounters(node: LabNode): Promise<{ rx: number; tx: number }> {
    const r = await this.bed.exec(node.ns, 'ip', ['-j', '-s', 'link', 'show', 'dev', node.ifname]);
    const link = (JSON.parse(r.stdout) as Array<{ stats64: { rx: { packets: number }; tx: { packets: number } } }>)[0]!;
    return { rx: link.stats64.rx.packets, tx: link.stats64.tx.packets };
  }

  /** One ping from a namespace; true when answered. */
  async ping(ns: string, address: string, options: { source?: string } = {}): Promise<boolean> {
    const r = await this.bed.exec(ns, 'ping', ['-c', '1', '-W', '1', '-n', '-q', ...(options.source ? ['-I', options.source] : []), address], { allowFailure: true, timeoutMs: 5_000 });
    return r.code === 0;
  }

  /** One HTTP POST with the secrets from a pod; resolves with the status (0 on failure). */
  async request(from: Pod, to: string): Promise<{ status: number; error?: string }> {
    return from.tool.call('http', { url: `http://${to}:${HTTP_PORT}/login`, secrets: this.secrets, timeoutMs: 3_000 });
  }

  /** The time the node's published key (or any annotation of it) first satisfied pred. */
  async waitForEvent(pred: (e: NodeEvent) => boolean, timeoutMs: number, what: string): Promise<NodeEvent> {
    return waitFor(() => this.events.find(pred), { timeoutMs, intervalMs: 5, what });
  }

  /** A capture of the whole underlay: every frame once, as it enters the switch. */
  async startCapture(label: string): Promise<Capture> {
    const file = join(this.dir, `${label}-${this.captureCounter++}.pcap`);
    const proc = this.bed.spawn(this.switchNs, 'tcpdump', ['-i', 'any', '-Q', 'in', '-w', file, '-U', '-n', '-s', '0', '--immediate-mode', '-Z', 'root']);
    await waitFor(
      () => {
        if (proc.hasExited()) throw new Error(`tcpdump exited: ${proc.output()}`);
        return /listening on/.test(proc.output());
      },
      { timeoutMs: 10_000, what: 'tcpdump listening' },
    );
    return new Capture(this, proc, file);
  }

  // ---- diagnostics ----------------------------------------------------------------------------

  async diagnostics(): Promise<string> {
    const parts: string[] = [];
    const safely = async (what: string, f: () => Promise<string>): Promise<string> => {
      try {
        return await f();
      } catch (err) {
        return `(${what} failed: ${(err as Error).message.split('\n')[0]})`;
      }
    };
    for (const n of this.nodes) {
      parts.push(`===== ${n.name} ${n.address} ${n.podCidr} ifname ${n.ifname} (data plane pid ${n.dataPlane?.pid ?? '-'}, agent pid ${n.agent?.pid ?? '-'})`);
      parts.push('--- wg show');
      parts.push(await safely('wg show', async () => (await this.bed.exec(n.ns, 'wg', ['show', n.ifname])).stdout));
      parts.push('--- ip rule / ip route show table 51820 / ip route');
      parts.push(await safely('ip rule', async () => (await this.bed.exec(n.ns, 'ip', ['rule'])).stdout));
      parts.push(await safely('table 51820', async () => (await this.bed.exec(n.ns, 'ip', ['route', 'show', 'table', '51820'])).stdout));
      parts.push(await safely('ip route', async () => (await this.bed.exec(n.ns, 'ip', ['route'])).stdout));
      parts.push('--- earlier processes');
      parts.push(n.history.slice(-4000));
      parts.push('--- agent (tail)');
      parts.push(n.agent?.output().slice(-4000) ?? '(none)');
      parts.push('--- data plane (tail)');
      parts.push(n.dataPlane?.output().slice(-2000) ?? '(none)');
    }
    parts.push('===== api server (stderr tail)');
    parts.push(this.api?.log().slice(-2000) ?? '');
    return parts.join('\n');
  }

  /** Runs fn; on failure prints the lab's diagnostics and adds them to the error. */
  async withDiagnostics<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const text = await this.diagnostics().catch((e: Error) => `(diagnostics failed: ${e.message})`);
      process.stderr.write(`\n[seed-lab diagnostics]\n${text}\n`);
      if (err instanceof Error) err.message = `${err.message}\n[seed-lab diagnostics]\n${text}`;
      throw err;
    }
  }

  async cleanup(): Promise<void> {
    // Closing stdin ends the tools and the API server; the bed then stops whatever is left by PID.
    for (const t of this.tools) t.proc.child.stdin?.end();
    this.api?.proc.child.stdin?.end();
    await this.bed.cleanup();
  }
}

// ---------------------------------------------------------------------------------------------
// Captures

export interface Analysis {
  readonly packets: number;
  /** WireGuard messages between node addresses on 51820 ↔ 51820. */
  readonly wireguard: number;
  /** Of those, data messages carrying more than a keepalive, per "a-b" node pair (sorted addresses). */
  readonly wgData: Map<string, number>;
  /** TCP with the API server's address and port (exempt: TLS in a real cluster). */
  readonly api: number;
  /** ICMP destination-unreachable between node addresses quoting a datagram to or from the WireGuard port. */
  readonly icmpWireGuard: number;
  /** Everything else that involves a pod address or is IP between node addresses: each as a flow line. */
  readonly clear: string[];
  /** Which of the secrets appear anywhere in the captured bytes. */
  readonly secretsFound: string[];
  /** ARP, IPv6 link-local chatter and the like. */
  readonly other: number;
}

function ipOffset(linkType: number): number | undefined {
  switch (linkType) {
    case LINKTYPE_ETHERNET:
      return 14;
    case LINKTYPE_LINUX_SLL:
      return 16;
    case LINKTYPE_LINUX_SLL2:
      return 20;
    case LINKTYPE_RAW:
      return 0;
    default:
      return undefined;
  }
}

/** An IPv4 ICMP destination-unreachable whose quoted datagram is UDP from or to port. */
function icmpQuotesUdpPort(frame: Uint8Array, linkType: number, port: number): boolean {
  const at = ipOffset(linkType);
  if (at === undefined) return false;
  const ip = frame.subarray(at);
  if (ip.length < 20 || ip[0]! >> 4 !== 4 || ip[9] !== 1) return false;
  const icmp = ip.subarray((ip[0]! & 0x0f) * 4);
  if (icmp.length < 8 || icmp[0] !== 3) return false;
  const inner = icmp.subarray(8);
  if (inner.length < 28 || inner[9] !== 17) return false;
  const udp = inner.subarray((inner[0]! & 0x0f) * 4);
  const sport = (udp[0]! << 8) | udp[1]!;
  const dport = (udp[2]! << 8) | udp[3]!;
  return sport === port || dport === port;
}

export function analyzeCapture(file: Uint8Array, context: { nodeAddresses: readonly string[]; secrets: readonly string[] }): Analysis {
  const pcap = parsePcap(file);
  const nodes = new Set(context.nodeAddresses);
  const bytes = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  const secretsFound = context.secrets.filter((s) => bytes.includes(Buffer.from(s)));
  const wgData = new Map<string, number>();
  const clear: string[] = [];
  let wireguard = 0;
  let api = 0;
  let icmpWireGuard = 0;
  let other = 0;
  for (const record of pcap.records) {
    const s = summarize(record.data, pcap.linkType);
    if (!s.source || !s.destination) {
      other++;
      continue;
    }
    const flow = `${s.protocol} ${s.source}${s.sourcePort === undefined ? '' : `:${s.sourcePort}`} → ${s.destination}${s.destinationPort === undefined ? '' : `:${s.destinationPort}`}`;
    const pod = (a: string): boolean => a.startsWith('100.') && Number(a.split('.')[1]) >= 64 && Number(a.split('.')[1]) < 128;
    if (pod(s.source) || pod(s.destination)) {
      clear.push(flow);
      continue;
    }
    const betweenNodes = nodes.has(s.source) && nodes.has(s.destination);
    if (betweenNodes && s.protocol === 'UDP' && s.sourcePort === WG_PORT && s.destinationPort === WG_PORT && s.payload && wireGuardMessageType(s.payload)) {
      wireguard++;
      if (wireGuardMessageType(s.payload) === 'data' && s.payload.length > 32) {
        const pair = [s.source, s.destination].sort().join('-');
        wgData.set(pair, (wgData.get(pair) ?? 0) + 1);
      }
      continue;
    }
    if ((s.source === API_ADDRESS && s.sourcePort === API_PORT) || (s.destination === API_ADDRESS && s.destinationPort === API_PORT)) {
      if (s.protocol === 'TCP') {
        api++;
        continue;
      }
    }
    if (betweenNodes && s.protocol === 'ICMP' && icmpQuotesUdpPort(record.data, pcap.linkType, WG_PORT)) {
      icmpWireGuard++;
      continue;
    }
    if (nodes.has(s.source) || nodes.has(s.destination)) {
      clear.push(flow);
      continue;
    }
    other++;
  }
  return { packets: pcap.records.length, wireguard, wgData, api, icmpWireGuard, clear, secretsFound, other };
}

export class Capture {
  private readonly lab: Lab;
  private readonly proc: TrackedProcess;
  readonly file: string;

  constructor(lab: Lab, proc: TrackedProcess, file: string) {
    this.lab = lab;
    this.proc = proc;
    this.file = file;
  }

  /** Stops tcpdump (SIGINT: it flushes) and analyzes what it wrote. */
  async stop(extraSecrets: readonly string[] = []): Promise<Analysis> {
    if (!this.proc.hasExited()) process.kill(this.proc.pid, 'SIGINT');
    await withTimeout(this.proc.exited, 10_000, 'tcpdump to exit');
    const bytes = readFileSync(this.file);
    rmSync(this.file, { force: true });
    const s = this.lab.secrets;
    return analyzeCapture(bytes, {
      nodeAddresses: this.lab.nodes.map((n) => n.address),
      secrets: [s.token, s.apiKey, s.password, ...extraSecrets],
    });
  }
}

export function summary(a: Analysis): string {
  const data = [...a.wgData].map(([k, v]) => `${k}:${v}`).join(' ');
  return `${a.packets} frames: ${a.wireguard} WireGuard (data ${data || 'none'}), ${a.api} API, ${a.icmpWireGuard} ICMP-unreachable(WG), ${a.clear.length} clear, ${a.other} other; secrets found: ${a.secretsFound.length}`;
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

