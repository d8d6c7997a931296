/**
 * FakeApiServer as a process, for labs where the clients live in other network namespaces:
 *
 *   ip netns exec api node test/k8s/serve.ts 198.18.50.254 6443
 *
 * The server itself listens on 127.0.0.1 (a random port); a plain TCP relay on <addr>:<port>
 * forwards to it, so clients reach it at http://<addr>:<port> (what the kubeconfig says).
 * It is controlled through stdin/stdout, one JSON object per line:
 *
 *   stdout, first line:  {"ready":true,"url":"http://198.18.50.254:6443","token":"…","kubeconfig":"…"}
 *   stdin:   {"id":1,"op":"upsertNode","node":{…}}   → {"id":1,"ok":true,"result":{…}}
 *            {"id":2,"op":"deleteNode","name":"n4"}  → {"id":2,"ok":true,"result":true}
 *            {"id":3,"op":"getNode","name":"n1"}     → {"id":3,"ok":true,"result":{…}|null}
 *            {"id":4,"op":"nodes"}                   → {"id":4,"ok":true,"result":[…]}
 *            {"id":5,"op":"requests"}                → {"id":5,"ok":true,"result":[…]}
 *   errors:  {"id":n,"ok":false,"error":"…"}
 *
 * It also reports every change to a Node as it happens (polled every 5 ms, so `time` — Unix
 * epoch ms — is within a few ms of the write):
 *
 *   {"event":"node","type":"ADDED|MODIFIED|DELETED","name":"n1","resourceVersion":"7","annotations":{…},"time":1700000000000}
 *
 * It exits when stdin closes, or on SIGTERM/SIGINT.
 */
import { createServer, connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { FakeApiServer, type KubeObject } from './api-server.ts';

const [address, portText] = process.argv.slice(2);
if (!address || !portText || !/^\d+$/.test(portText)) {
  process.stderr.write('usage: serve.ts <listen-address> <port>\n');
  process.exit(2);
}
const port = Number(portText);

const api = new FakeApiServer();
await api.start();
const inner = api.port;

const sockets = new Set<Socket>();
const relay = createServer((client) => {
  const upstream = connect({ host: '127.0.0.1', port: inner });
  sockets.add(client);
  sockets.add(upstream);
  const close = (): void => {
    client.destroy();
    upstream.destroy();
    sockets.delete(client);
    sockets.delete(upstream);
  };
  client.on('error', close);
  upstream.on('error', close);
  client.on('close', close);
  upstream.on('close', close);
  client.pipe(upstream);
  upstream.pipe(client);
});
await new Promise<void>((resolve, reject) => {
  relay.once('error', reject);
  relay.listen({ host: address, port }, () => {
    relay.off('error', reject);
    resolve();
  });
});

const host = address.includes(':') ? `[${address}]` : address;
const url = `http://${host}:${port}`;
const kubeconfig = api.kubeconfig().replace(api.url, url);

function write(obj: unknown): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

// Node changes, reported as events.
let known = new Map<string, KubeObject>();
function scan(): void {
  const now = new Map(api.nodes().map((n) => [n.metadata?.name ?? '', n]));
  const time = Date.now();
  for (const [name, node] of now) {
    const before = known.get(name);
    if (before?.metadata?.resourceVersion === node.metadata?.resourceVersion) continue;
    write({ event: 'node', type: before ? 'MODIFIED' : 'ADDED', name, resourceVersion: node.metadata?.resourceVersion, annotations: node.metadata?.annotations ?? {}, time });
  }
  for (const name of known.keys()) if (!now.has(name)) write({ event: 'node', type: 'DELETED', name, time });
  known = now;
}
const scanner = setInterval(scan, 5);

type Request = { id?: number; op?: string; node?: KubeObject; name?: string };

function handle(request: Request): unknown {
  switch (request.op) {
    case 'upsertNode': {
      if (!request.node) throw new Error('upsertNode needs "node"');
      const result = api.upsertNode(request.node);
      scan();
      return result;
    }
    case 'deleteNode': {
      if (!request.name) throw new Error('deleteNode needs "name"');
      const result = api.deleteNode(request.name);
      scan();
      return result;
    }
    case 'getNode':
      if (!request.name) throw new Error('getNode needs "name"');
      return api.getNode(request.name) ?? null;
    case 'nodes':
      return api.nodes();
    case 'requests':
      return api.requests;
    default:
      throw new Error(`unknown op ${String(request.op)}`);
  }
}

let stopping = false;
async function shutdown(): Promise<void> {
  if (stopping) return;
  stopping = true;
  clearInterval(scanner);
  for (const s of sockets) s.destroy();
  await new Promise<void>((resolve) => relay.close(() => resolve()));
  await api.stop({ abrupt: true });
  process.exit(0);
}

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  if (!line.trim()) return;
  let request: Request;
  try {
    request = JSON.parse(line) as Request;
  } catch {
    write({ ok: false, error: `not JSON: ${line.slice(0, 100)}` });
    return;
  }
  try {
    write({ id: request.id, ok: true, result: handle(request) });
  } catch (err) {
    write({ id: request.id, ok: false, error: (err as Error).message });
  }
});
lines.on('close', () => void shutdown());
process.once('SIGTERM', () => void shutdown());
process.once('SIGINT', () => void shutdown());

scan();
write({ ready: true, url, token: api.token, kubeconfig });
