import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { BUNDLED_VECTORS_DIR, bundledVectorFiles, runConformance } from '../../src/conformance.ts';
import { createBackend } from '../../src/noise/crypto/index.ts';

const backends = [createBackend('sodium'), createBackend('noble')];

describe('conformance vectors', () => {
  it('every bundled vector passes on both backends', async () => {
    const failures: string[] = [];
    const result = await runConformance(bundledVectorFiles(), backends, (line) => failures.push(line));
    expect(failures).toEqual([]);
    // Each file contributes: a missing file would silently shrink coverage.
    const names = bundledVectorFiles().map((f) => f.slice(BUNDLED_VECTORS_DIR.length + 1));
    expect(names).toEqual(expect.arrayContaining([
      'blake2s.json', 'chacha20poly1305.json', 'wireguard-handshake.json', 'wireguard-kdf.json', 'x25519.json', 'xchacha20poly1305.json',
    ]));
    expect(result.passed).toBeGreaterThan(140);
  });

  it('a single altered byte in a handshake vector is reported as a failure on each backend', async () => {
    const doc = JSON.parse(readFileSync(join(BUNDLED_VECTORS_DIR, 'wireguard-handshake.json'), 'utf8'));
    const response: string = doc.handshakes[0].response;
    doc.handshakes[0].response = response.slice(0, 100) + (response[100] === '0' ? '1' : '0') + response.slice(101);
    const dir = mkdtempSync(join(tmpdir(), 'wgts-vec-'));
    const file = join(dir, 'tampered.json');
    writeFileSync(file, JSON.stringify(doc));
    const lines: string[] = [];
    const result = await runConformance([file], backends, (l) => lines.push(l));
    expect(result.failed).toBe(2);
    expect(lines.every((l) => l.includes('response'))).toBe(true);
  });

  it('an unknown section is an error, not a silent skip', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wgts-vec-'));
    const file = join(dir, 'typo.json');
    writeFileSync(file, JSON.stringify({ handshake: [] }));
    const result = await runConformance([file], backends);
    expect(result.failed).toBe(1);
    expect(result.failures[0]).toContain('unknown section "handshake"');
  });

  it('`wgts conformance` prints the closing line and exits non-zero on failure', () => {
    const out = execFileSync(process.execPath, ['src/cli.ts', 'conformance'], { encoding: 'utf8' });
    expect(out).toMatch(/^conformance: \d+ passed, 0 failed$/m);
    const dir = mkdtempSync(join(tmpdir(), 'wgts-vec-'));
    const file = join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify({ x25519: [{ private: '00'.repeat(32), public: '09' + '00'.repeat(31), shared: '11'.repeat(32) }] }));
    let status = 0;
    let stdout = '';
    try {
      execFileSync(process.execPath, ['src/cli.ts', 'conformance', file], { encoding: 'utf8' });
    } catch (err) {
      status = (err as { status: number }).status;
      stdout = (err as { stdout: string }).stdout;
    }
    expect(status).toBe(1);
    expect(stdout).toMatch(/^conformance: 0 passed, 2 failed$/m);
  });
});
