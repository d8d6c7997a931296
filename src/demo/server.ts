/**
 * The demo's HTTP server: `node server.ts HOST PORT`. Answers every request with 200 and a JSON
 * echo of what it received (method, path, Authorization header, parsed JSON body), so the demo
 * can confirm the secrets arrived intact. Prints `listening HOST:PORT` once it accepts
 * connections; exits on SIGTERM/SIGINT or when its stdin closes (the demo went away).
 */
import { createServer } from 'node:http';

export interface Echo {
  readonly method: string;
  readonly path: string;
  readonly authorization: string | null;
  readonly body: unknown;
  readonly remoteAddress: string | null;
}

const [host, portText] = process.argv.slice(2);
const port = Number(portText);
if (host === undefined || !Number.isInteger(port) || port <= 0 || port > 65535) {
  process.stderr.write('usage: server.ts HOST PORT\n');
  process.exit(2);
}

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const text = Buffer.concat(chunks).toString('utf8');
    let body: unknown = text;
    try {
      body = text.length > 0 ? JSON.parse(text) : null;
    } catch {
      // not JSON: echo the text
    }
    const echo: Echo = {
      method: req.method ?? '',
      path: req.url ?? '',
      authorization: req.headers.authorization ?? null,
      body,
      remoteAddress: req.socket.remoteAddress ?? null,
    };
    const payload = JSON.stringify(echo);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
    res.end(payload);
  });
});
server.keepAliveTimeout = 1_000;

server.listen(port, host, () => {
  process.stdout.write(`listening ${host}:${port}\n`);
});
server.on('error', (err) => {
  process.stderr.write(`server: ${err.message}\n`);
  process.exit(1);
});

const stop = (): void => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 500).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
