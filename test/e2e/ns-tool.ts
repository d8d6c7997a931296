/**
 * A helper process that lives inside one lab namespace (a pod or a node) and does network
 * things there on request, since the test process itself sits in the root namespace. One JSON
 * object per line on stdin, one answer per line on stdout:
 *
 *   {"id":1,"op":"httpServe","port":8080,"secrets":{…}}          an HTTP backend checking the secrets
 *   {"id":2,"op":"http","url":"http://…","secrets":{…}}          one POST carrying them → {status, ms}
 *   {"id":3,"op":"httpLoopStart","name":"l","url":…,"secrets":…,"intervalMs":50}
 *   {"id":4,"op":"httpLoopStop","name":"l"}                      → the results, one per request
 *   {"id":11,"op":"httpProbe","url":…,"secrets":…,"everyMs":50} → {firstOk: {start, end} | null, attempts}
 *   {"id":5,"op":"tcpEcho","port":7000,"host":"0.0.0.0"}         an echo server
 *   {"id":6,"op":"streamStart","name":"s","host":…,"port":7000,"intervalMs":50,"localAddress"?:…}
 *   {"id":7,"op":"streamStatus","name":"s"}                      → {sent, received, lastEchoAt, error, closed}
 *   {"id":8,"op":"streamStop","name":"s"}
 *   {"id":9,"op":"tcpOnce","host":…,"port":…,"localAddress"?:…,"data":"…"}  → echoed text
 *   {"id":10,"op":"fetch","url":"http://127.0.0.1:9586/readyz"}  → {status, body}
 *
 * Answers: {"id":n,"ok":true,"result":…} or {"id":n,"ok":false,"error":"…"}. First line: {"ready":true}.
 * Exits when stdin closes. Plain node: no imports from the repository, so it starts fast.
 */
import { createServer as createHttpServer, request as httpRequest } from 'node:http';
import { createServer as createTcpServer, connect, type Server, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

interface Secrets {
  readonly token: string;
  readonly apiKey: string;
  readonly password: string;
}

interface Request {
  readonly id: number;
  readonly op: string;
  readonly [key: string]: unknown;
}

interface LoopResult {
  readonly start: number;
  readonly end: number;
  readonly status: number;
  readonly error?: string;
}

interface Loop {
  readonly state: { stop: boolean };
  readonly results: LoopResult[];
  readonly done: Promise<void>;
}

interface Stream {
  readonly socket: Socket;
  readonly timer: NodeJS.Timeout;
  sent: number;
  received: number;
  lastEchoAt: number;
  error: string | undefined;
  closed: boolean;
  /** Largest gap between consecutive echoes, ms. */
  maxGapMs: number;
}

const servers: Server[] = [];
const httpServers: ReturnType<typeof createHttpServer>[] = [];
const loops = new Map<string, Loop>();
const streams = new Map<string, Stream>();
const clientSockets = new Set<Socket>();

function write(obj: unknown): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function str(req: Request, key: string): string {
  const v = req[key];
  if (typeof v !== 'string') throw new Error(`${req.op} needs a string "${key}"`);
  return v;
}

function num(req: Request, key: string, fallback?: number): number {
  const v = req[key];
  if (typeof v === 'number') return v;
  if (fallback !== undefined) return fallback;
  throw new Error(`${req.op} needs a number "${key}"`);
}

function listen(server: Server | ReturnType<typeof createHttpServer>, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** One POST with the secrets; resolves with the status (0 and an error on failure). */
function post(url: string, secrets: Secrets, timeoutMs: number): Promise<{ status: number; body: string; error?: string }> {
  return new Promise((resolve) => {
    const body = JSON.stringify({ user: 'alice', password: secrets.password });
    const req = httpRequest(
      url,
      {
        method: 'POST',
        agent: false,
        headers: {
          authorization: `Bearer ${secrets.token}`,
          'x-api-key': secrets.apiKey,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          connection: 'close',
        },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
        res.on('error', (err) => resolve({ status: 0, body: '', error: err.message }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => resolve({ status: 0, body: '', error: err.message }));
    req.end(body);
  });
}

function get(url: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'GET', agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

async function handle(req: Request): Promise<unknown> {
  switch (req.op) {
    case 'httpServe': {
      const secrets = req.secrets as Secrets;
      let served = 0;
      const server = createHttpServer((request, response) => {
        const chunks: Buffer[] = [];
        request.on('data', (c: Buffer) => chunks.push(c));
        request.on('end', () => {
          let password: unknown;
          try {
            password = (JSON.parse(Buffer.concat(chunks).toString()) as { password?: unknown }).password;
          } catch {
            password = undefined;
          }
          const good =
            request.headers.authorization === `Bearer ${secrets.token}` && request.headers['x-api-key'] === secrets.apiKey && password === secrets.password;
          served++;
          response.writeHead(good ? 200 : 401, { 'content-type': 'application/json', connection: 'close' });
          response.end(JSON.stringify({ ok: good, served }));
        });
      });
      server.keepAliveTimeout = 1;
      await listen(server, num(req, 'port'), typeof req.host === 'string' ? req.host : '0.0.0.0');
      httpServers.push(server);
      return { listening: true };
    }
    case 'http': {
      const t0 = performance.now();
      const r = await post(str(req, 'url'), req.secrets as Secrets, num(req, 'timeoutMs', 3_000));
      return { ...r, ms: performance.now() - t0 };
    }
    case 'httpLoopStart': {
      const name = str(req, 'name');
      const url = str(req, 'url');
      const secrets = req.secrets as Secrets;
      const intervalMs = num(req, 'intervalMs', 50);
      const timeoutMs = num(req, 'timeoutMs', 1_000);
      const results: LoopResult[] = [];
      const state = { stop: false };
      const done = (async () => {
        while (!state.stop) {
          const start = Date.now();
          const r = await post(url, secrets, timeoutMs);
          results.push({ start, end: Date.now(), status: r.status, ...(r.error ? { error: r.error } : {}) });
          const wait = intervalMs - (Date.now() - start);
          if (wait > 0 && !state.stop) await new Promise((resolve) => setTimeout(resolve, wait));
        }
      })();
      const loop: Loop = { state, results, done };
      loops.set(name, loop);
      return { started: true };
    }
    case 'httpProbe': {
      // A fresh request every everyMs, each on its own (none waits for the one before), until
      // one succeeds or deadlineMs passes: when traffic resumed, to within everyMs.
      const url = str(req, 'url');
      const secrets = req.secrets as Secrets;
      const everyMs = num(req, 'everyMs', 50);
      const timeoutMs = num(req, 'timeoutMs', 3_000);
      const deadline = Date.now() + num(req, 'deadlineMs', 10_000);
      let attempts = 0;
      return await new Promise((resolve) => {
        let done = false;
        const finish = (value: unknown): void => {
          if (done) return;
          done = true;
          clearInterval(timer);
          resolve(value);
        };
        const fire = (): void => {
          if (Date.now() > deadline) return finish({ firstOk: null, attempts });
          attempts++;
          const start = Date.now();
          void post(url, secrets, timeoutMs).then((r) => {
            if (r.status === 200) finish({ firstOk: { start, end: Date.now() }, attempts });
          });
        };
        const timer = setInterval(fire, everyMs);
        fire();
      });
    }
    case 'httpLoopPeek': {
      const loop = loops.get(str(req, 'name'));
      if (!loop) throw new Error('no such loop');
      return loop.results.slice(num(req, 'from', 0));
    }
    case 'httpLoopStop': {
      const name = str(req, 'name');
      const loop = loops.get(name);
      if (!loop) throw new Error(`no loop ${name}`);
      loop.state.stop = true;
      await loop.done;
      loops.delete(name);
      return loop.results;
    }
    case 'tcpEcho': {
      const server = createTcpServer((socket) => {
        clientSockets.add(socket);
        socket.on('error', () => {});
        socket.on('close', () => clientSockets.delete(socket));
        socket.pipe(socket);
      });
      await listen(server, num(req, 'port'), typeof req.host === 'string' ? req.host : '0.0.0.0');
      servers.push(server);
      return { listening: true };
    }
    case 'streamStart': {
      const name = str(req, 'name');
      const intervalMs = num(req, 'intervalMs', 50);
      const socket = connect({
        host: str(req, 'host'),
        port: num(req, 'port'),
        ...(typeof req.localAddress === 'string' ? { localAddress: req.localAddress } : {}),
      });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('connect timed out')), num(req, 'timeoutMs', 3_000));
        socket.once('connect', () => {
          clearTimeout(timer);
          resolve();
        });
        socket.once('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
      });
      socket.setNoDelay(true);
      const payload = typeof req.payload === 'string' ? req.payload : 'x'.repeat(200);
      const stream: Stream = {
        socket,
        sent: 0,
        received: 0,
        lastEchoAt: Date.now(),
        error: undefined,
        closed: false,
        maxGapMs: 0,
        timer: setInterval(() => {
          if (stream.closed) return;
          stream.sent++;
          socket.write(`${stream.sent} ${payload}\n`);
        }, intervalMs),
      };
      let buffered = '';
      socket.on('data', (chunk: Buffer) => {
        buffered += chunk.toString();
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          const seq = Number(line.slice(0, line.indexOf(' ')));
          if (seq !== stream.received + 1) {
            stream.error ??= `echo out of order: got ${seq}, expected ${stream.received + 1}`;
          }
          stream.received = seq;
          const now = Date.now();
          stream.maxGapMs = Math.max(stream.maxGapMs, now - stream.lastEchoAt);
          stream.lastEchoAt = now;
        }
      });
      socket.on('error', (err) => (stream.error ??= err.message));
      socket.on('close', () => {
        stream.closed = true;
        clearInterval(stream.timer);
      });
      streams.set(name, stream);
      return { connected: true, localAddress: socket.localAddress, localPort: socket.localPort };
    }
    case 'streamStatus':
    case 'streamStop': {
      const name = str(req, 'name');
      const s = streams.get(name);
      if (!s) throw new Error(`no stream ${name}`);
      const status = { sent: s.sent, received: s.received, lastEchoAt: s.lastEchoAt, maxGapMs: s.maxGapMs, error: s.error ?? null, closed: s.closed };
      if (req.op === 'streamStop') {
        clearInterval(s.timer);
        s.socket.destroy();
        streams.delete(name);
      }
      return status;
    }
    case 'tcpOnce': {
      const data = str(req, 'data');
      const socket = connect({
        host: str(req, 'host'),
        port: num(req, 'port'),
        ...(typeof req.localAddress === 'string' ? { localAddress: req.localAddress } : {}),
      });
      return await new Promise((resolve, reject) => {
        let got = '';
        const timer = setTimeout(() => {
          socket.destroy();
          reject(new Error(`tcpOnce: ${got.length} of ${data.length} bytes echoed in time`));
        }, num(req, 'timeoutMs', 3_000));
        socket.on('connect', () => socket.write(data));
        socket.on('data', (c: Buffer) => {
          got += c.toString();
          if (got.length >= data.length) {
            clearTimeout(timer);
            socket.end();
            resolve({ echoed: got, localAddress: socket.localAddress });
          }
        });
        socket.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
      });
    }
    case 'fetch':
      return await get(str(req, 'url'), num(req, 'timeoutMs', 2_000));
    default:
      throw new Error(`unknown op ${req.op}`);
  }
}

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  if (!line.trim()) return;
  let req: Request;
  try {
    req = JSON.parse(line) as Request;
  } catch {
    write({ ok: false, error: `not JSON: ${line.slice(0, 100)}` });
    return;
  }
  handle(req).then(
    (result) => write({ id: req.id, ok: true, result }),
    (err: unknown) => write({ id: req.id, ok: false, error: err instanceof Error ? err.message : String(err) }),
  );
});
lines.on('close', () => {
  for (const loop of loops.values()) loop.state.stop = true;
  for (const s of streams.values()) s.socket.destroy();
  for (const s of clientSockets) s.destroy();
  for (const s of servers) s.close();
  for (const s of httpServers) s.closeAllConnections();
  process.exit(0);
});
write({ ready: true });
