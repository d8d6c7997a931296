/**
 * The demo's HTTP client: `node client.ts URL COUNT` with the secrets in the environment
 * (WGTS_DEMO_TOKEN, WGTS_DEMO_PASSWORD — not on the command line, where `ps` would show them).
 * Sends COUNT POST requests carrying `Authorization: Bearer <token>` and `{"password": …}`,
 * checks that each answer echoes both back, and prints one JSON line: a ClientReport.
 */
import { request } from 'node:http';
import type { Echo } from './server.ts';

export interface RequestResult {
  readonly status: number | null;
  /** The server echoed the token and the password back unchanged. */
  readonly delivered: boolean;
  readonly ms: number;
  readonly error?: string;
}

export interface ClientReport {
  readonly url: string;
  readonly results: readonly RequestResult[];
}

const REQUEST_TIMEOUT_MS = 4_000;

function post(url: string, token: string, password: string): Promise<RequestResult> {
  const started = performance.now();
  const body = JSON.stringify({ user: 'demo', password });
  return new Promise((resolve) => {
    const finish = (status: number | null, delivered: boolean, error?: string): void =>
      resolve({ status, delivered, ms: Math.round(performance.now() - started), ...(error === undefined ? {} : { error }) });
    const req = request(
      url,
      {
        method: 'POST',
        agent: false,
        timeout: REQUEST_TIMEOUT_MS,
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          try {
            const echo = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Echo;
            const echoed = echo.body as { password?: unknown } | null;
            finish(res.statusCode ?? null, res.statusCode === 200 && echo.authorization === `Bearer ${token}` && echoed?.password === password);
          } catch (err) {
            finish(res.statusCode ?? null, false, `bad answer: ${(err as Error).message}`);
          }
        });
        res.on('error', (err) => finish(res.statusCode ?? null, false, err.message));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', (err) => finish(null, false, err.message));
    req.end(body);
  });
}

const [url, countText] = process.argv.slice(2);
const token = process.env['WGTS_DEMO_TOKEN'];
const password = process.env['WGTS_DEMO_PASSWORD'];
const count = Number(countText ?? '3');
if (url === undefined || token === undefined || password === undefined || !Number.isInteger(count) || count < 1) {
  process.stderr.write('usage: WGTS_DEMO_TOKEN=… WGTS_DEMO_PASSWORD=… client.ts URL [COUNT]\n');
  process.exit(2);
}

const results: RequestResult[] = [];
for (let i = 0; i < count; i++) results.push(await post(url, token, password));
const report: ClientReport = { url, results };
process.stdout.write(JSON.stringify(report) + '\n');
