/**
 * The host mesh end to end: `wgts mesh --peers mesh.yaml` on hosts in namespaces on one
 * underlay switch, every host with its own data plane (`wgts -f <ifname>`) and agent:
 *
 *        ┌──────────── <prefix>-sw: bridge br0 ────────────┐
 *   h1 eth0 198.18.60.1   h2 .2   h3 .3   h4 .4   (tunnel 100.64.60.<i>/24, fd00:60::<i>/64)
 *
 * One shared peers file lists h1..h3. Checked: ping (v4 and v6) and a TCP transfer between
 * every pair over the tunnel addresses; a fourth host, running but waiting for its entry, added
 * by editing the file → everyone reaches it within 2 s; a host removed → its peer gone
 * everywhere (wg show); malformed edits (bad indentation, an invalid key) → file:line:col in
 * every agent's log, nothing torn down, pings between the others keep flowing and no session is
 * re-handshaked; then a fixed file applies again.
 */
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TrackedProcess } from './helpers/netns.ts';
import { NetnsBed, skipUnlessRoot, waitFor } from './helpers/netns.ts';
import type { KeyPair, WgDaemon } from './helpers/wgts.ts';
import { diagnostics, newKeyPair, NODE, ping, startTransfer, WGTS_CLI, WgtsDaemon } from './helpers/wgts.ts';

const HOSTS = 4;
const PORT = 51820;
const TRANSFER_BYTES = 4 * 1024 * 1024;

interface Host {
  readonly index: number;
  readonly name: string;
  readonly ns: string;
  readonly underlay: string;
  readonly inner4: string;
  readonly inner6: string;
  readonly keys: KeyPair;
  readonly keyFile: string;
  daemon: WgDaemon;
  agent: TrackedProcess;
}

describe.skipIf(skipUnlessRoot('host mesh'))('host mesh: wgts mesh --peers FILE in namespaces', () => {
  const bed = new NetnsBed('hmesh');
  const hosts: Host[] = [];
  let meshFile: string;
  let sw: string;

  const yamlFor = (members: readonly Host[]): string =>
    '# wgts host mesh (test)\nhosts:\n' +
    members
      .map((h) =>
        [
          `  - name: ${h.name}`,
          `    endpoint: ${h.underlay}:${PORT}`,
          `    publicKey: ${h.keys.publicKey}`,
          `    addresses: [${h.inner4}/24, "${h.inner6}/64"]`,
        ].join('\n'),
      )
      .join('\n') +
    '\n';
  /** Replaces the file as editors do (write a temporary file, rename it over). */
  const writeMesh = (text: string): void => {
    writeFileSync(`${meshFile}.tmp`, text);
    renameSync(`${meshFile}.tmp`, meshFile);
  };
  const running = (): Host[] => hosts.filter((h) => h.agent !== undefined);
  const dumpAll = async (members: readonly Host[]): Promise<string> =>
    (await diagnostics(members.map((h) => h.daemon))) + members.map((h) => `\n===== agent ${h.name}\n${h.agent.output().slice(-3000)}`).join('');

  /** Whether h's data plane has exactly the peers of `expected` and h's table routes them. */
  async function configured(h: Host, expected: readonly Host[]): Promise<boolean> {
    const peers = (await h.daemon.dump()).peers.map((p) => p.publicKey).sort();
    const want = expected.filter((o) => o !== h).map((o) => o.keys.publicKey).sort();
    if (JSON.stringify(peers) !== JSON.stringify(want)) return false;
    const routes = (await bed.exec(h.ns, 'ip', ['route', 'show', 'table', '51820'])).stdout;
    if (!expected.filter((o) => o !== h).every((o) => routes.includes(o.inner4))) return false;
    const addresses = (await bed.exec(h.ns, 'ip', ['-br', 'addr', 'show', 'dev', h.daemon.ifname])).stdout;
    return addresses.includes(`${h.inner4}/24`);
  }

  async function startAgent(h: Host): Promise<void> {
    h.agent = bed.spawn(h.ns, NODE, [
      WGTS_CLI,
      'mesh',
      '--peers',
      meshFile,
      '--interface',
      h.daemon.ifname,
      '--key-file',
      h.keyFile,
      '--metrics-listen',
      `127.0.0.1:${9590 + h.index}`,
    ]);
  }

  beforeAll(async () => {
    await bed.sweepStale();
    sw = await bed.createNamespace('sw');
    await bed.exec(sw, 'ip', ['link', 'add', 'br0', 'type', 'bridge']);
    await bed.exec(sw, 'ip', ['link', 'set', 'br0', 'up']);
    const dir = bed.tempDir();
    meshFile = join(dir, 'mesh.yaml');
    for (let i = 1; i <= HOSTS; i++) {
      const ns = await bed.createNamespace(`h${i}`);
      await bed.exec(undefined, 'ip', ['link', 'add', 'eth0', 'netns', ns, 'type', 'veth', 'peer', 'name', `p${i}`, 'netns', sw]);
      await bed.exec(sw, 'ip', ['link', 'set', `p${i}`, 'master', 'br0', 'up']);
      await bed.exec(ns, 'ip', ['addr', 'add', `198.18.60.${i}/24`, 'dev', 'eth0']);
      await bed.exec(ns, 'ip', ['link', 'set', 'eth0', 'up']);
      const keys = newKeyPair();
      const keyFile = join(dir, `h${i}.key`);
      writeFileSync(keyFile, keys.privateKey + '\n', { mode: 0o600 });
      const daemon = await WgtsDaemon.start(bed, ns, { ifname: bed.ifname('hm') });
      hosts.push({
        index: i,
        name: `h${i}`,
        ns,
        underlay: `198.18.60.${i}`,
        inner4: `100.64.60.${i}`,
        inner6: `fd00:60::${i}`,
        keys,
        keyFile,
        daemon,
        agent: undefined as unknown as TrackedProcess,
      });
    }
    writeMesh(yamlFor(hosts.slice(0, 3)));
    for (const h of hosts.slice(0, 3)) await startAgent(h);
    const three = hosts.slice(0, 3);
    try {
      await waitFor(async () => (await Promise.all(three.map((h) => configured(h, three)))).every(Boolean), { timeoutMs: 20_000, intervalMs: 50, what: 'h1..h3 configured from the file' });
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${await dumpAll(three)}`);
    }
  }, 60_000);

  afterAll(async () => {
    await bed.cleanup();
  });

  it('every pair of h1..h3 pings (IPv4, IPv6) and moves 4 MiB over TCP through the tunnel', async () => {
    const three = hosts.slice(0, 3);
    try {
      for (const a of three) {
        for (const b of three) {
          if (a === b) continue;
          for (const address of [b.inner4, b.inner6]) {
            const r = await ping(bed, a.ns, address, { count: 2, waitSeconds: 5 });
            expect(r.received, `${a.name} → ${b.name} ${address}\n${r.stdout}${r.stderr}`).toBe(2);
          }
        }
      }
      for (const [a, b] of [[three[0]!, three[1]!], [three[1]!, three[2]!], [three[2]!, three[0]!]] as const) {
        const t = await startTransfer(bed, { from: a.ns, to: b.ns, address: b.inner4, bytes: TRANSFER_BYTES, timeoutMs: 30_000 });
        const { sent, received } = await t.done();
        expect(received.bytes).toBe(TRANSFER_BYTES);
        expect(received.sha256).toBe(sent.sha256);
      }
      // It went through WireGuard: every peer has a handshake and moved bytes.
      for (const h of three) {
        for (const p of (await h.daemon.dump()).peers) {
          expect(p.latestHandshake, `${h.name}: handshake with ${p.publicKey}`).toBeGreaterThan(0);
          expect(p.rxBytes).toBeGreaterThan(0);
        }
      }
    } catch (err) {
      process.stderr.write(await dumpAll(three));
      throw err;
    }
  });

  it('a fourth host, added by editing the file, is reached by all within 2 s', async () => {
    const h4 = hosts[3]!;
    // Its agent runs before the file has it: it waits, and says why (with its public key).
    await startAgent(h4);
    await waitFor(() => h4.agent.output().includes(`no host has this host's public key ${h4.keys.publicKey}`), {
      timeoutMs: 15_000,
      what: `h4's agent reporting that the file lacks it\n${h4.agent.output()}`,
    });
    const t0 = performance.now();
    writeMesh(yamlFor(hosts));
    const everyone = hosts;
    try {
      await waitFor(async () => (await Promise.all(everyone.map((h) => configured(h, everyone)))).every(Boolean), {
        timeoutMs: 2_000,
        intervalMs: 20,
        what: 'all four hosts configured',
      });
      await Promise.all(
        hosts.slice(0, 3).map(async (h) => {
          await waitFor(async () => (await ping(bed, h.ns, h4.inner4, { count: 1, waitSeconds: 0.5 })).received === 1, {
            timeoutMs: Math.max(100, 2_000 - (performance.now() - t0)),
            intervalMs: 10,
            what: `${h.name} → h4`,
          });
        }),
      );
      const elapsed = performance.now() - t0;
      process.stdout.write(`[host mesh] h4 added: reached by h1..h3 ${elapsed.toFixed(0)} ms after the edit\n`);
      expect(elapsed).toBeLessThan(2_000);
    } catch (err) {
      process.stderr.write(await dumpAll(everyone));
      throw err;
    }
  });

  it('a host removed from the file is gone as a peer everywhere; its own agent keeps its last good configuration', async () => {
    const h3 = hosts[2]!;
    const rest = hosts.filter((h) => h !== h3);
    writeMesh(yamlFor(rest));
    try {
      await waitFor(async () => (await Promise.all(rest.map((h) => configured(h, rest)))).every(Boolean), { timeoutMs: 2_000, intervalMs: 20, what: 'h3 removed everywhere' });
      for (const h of rest) {
        const show = (await bed.exec(h.ns, 'wg', ['show', h.daemon.ifname])).stdout;
        expect(show).not.toContain(h3.keys.publicKey);
        expect((await bed.exec(h.ns, 'ip', ['route', 'show', 'table', '51820'])).stdout).not.toContain(h3.inner4);
      }
      // h3 is no longer in the file: an error on h3, and nothing torn down there.
      await waitFor(() => h3.agent.output().includes(`no host has this host's public key ${h3.keys.publicKey}`) && h3.agent.output().includes('the last good configuration stays in force'), {
        timeoutMs: 2_000,
        what: "h3's agent reporting it is not in the file",
      });
      expect((await h3.daemon.dump()).peers).toHaveLength(3);
    } catch (err) {
      process.stderr.write(await dumpAll(hosts));
      throw err;
    }
  });

  it('malformed edits are reported with file:line:col, change nothing and disturb no session; a fixed file applies again', async () => {
    const h1 = hosts[0]!;
    const h2 = hosts[1]!;
    const h4 = hosts[3]!;
    const members = [h1, h2, h4];
    const agents = members;
    // Sessions between the members now, and traffic that keeps them busy through the edits.
    for (const [a, b] of [[h1, h2], [h2, h4], [h4, h1]] as const) {
      expect((await ping(bed, a.ns, b.inner4, { count: 1, waitSeconds: 2 })).received).toBe(1);
    }
    const handshakes = async (): Promise<Record<string, number>> => {
      const out: Record<string, number> = {};
      for (const h of members) for (const p of (await h.daemon.dump()).peers) out[`${h.name}→${p.publicKey}`] = p.latestHandshake;
      return out;
    };
    const before = await handshakes();
    const pinger = bed.spawn(h1.ns, 'ping', ['-n', '-i', '0.1', '-c', '60', '-W', '1', h2.inner4]);
    const good = yamlFor(members);
    const lines = good.split('\n');
    try {
      // 1. Bad indentation: h2's endpoint one space to the left.
      const endpointLine = lines.findIndex((l) => l.includes(`endpoint: ${h2.underlay}:`));
      const badIndent = lines.map((l, i) => (i === endpointLine ? l.slice(1) : l)).join('\n');
      const countBefore = agents.map((h) => (h.agent.output().match(/invalid YAML/g) ?? []).length);
      writeMesh(badIndent);
      const where = new RegExp(`${escape(meshFile)}:${endpointLine + 1}:\\d+: invalid YAML: `);
      await waitFor(() => agents.every((h, i) => (h.agent.output().match(/invalid YAML/g) ?? []).length > countBefore[i]!), { timeoutMs: 2_000, what: 'every agent reporting the bad indentation' });
      for (const h of agents) expect(h.agent.output(), `${h.name}'s log`).toMatch(where);

      // 2. An invalid key, in place (no rename this time).
      const keyLine = lines.findIndex((l) => l.includes(`publicKey: ${h4.keys.publicKey}`));
      const badKey = lines.map((l, i) => (i === keyLine ? '    publicKey: not-a-key' : l)).join('\n');
      writeFileSync(meshFile, badKey);
      // (The log is JSON: the quotes around the value are escaped there.)
      const keyWhere = new RegExp(`${escape(meshFile)}:${keyLine + 1}:16: publicKey \\\\"not-a-key\\\\" is not a WireGuard key`);
      await waitFor(() => agents.every((h) => keyWhere.test(h.agent.output())), { timeoutMs: 2_000, what: 'every agent reporting the invalid key' });

      // Nothing changed: the same peers everywhere, the sessions not re-handshaked.
      for (const h of members) expect(await configured(h, members), `${h.name} still configured as before`).toBe(true);
      expect(await handshakes()).toEqual(before);

      // 3. Fixed, with h3 back: applies again.
      const t0 = performance.now();
      writeMesh(yamlFor(hosts));
      await waitFor(async () => (await Promise.all(hosts.map((h) => configured(h, hosts)))).every(Boolean), { timeoutMs: 2_000, intervalMs: 20, what: 'the fixed file applied on all four' });
      const h3 = hosts[2]!;
      await waitFor(async () => (await ping(bed, h1.ns, h3.inner4, { count: 1, waitSeconds: 0.5 })).received === 1, { timeoutMs: 5_000, what: 'h1 → h3 again' });
      process.stdout.write(`[host mesh] fixed file: applied and h3 reachable ${(performance.now() - t0).toFixed(0)} ms after the edit\n`);

      // The pings between h1 and h2 ran through all of it.
      const { code } = await pinger.exited;
      const summary = /(\d+) packets transmitted, (\d+) received/.exec(pinger.output());
      expect(summary, pinger.output()).not.toBeNull();
      expect(Number(summary![2]), `pings h1 → h2 during the edits:\n${pinger.output().slice(-400)}`).toBeGreaterThanOrEqual(Number(summary![1]) - 1);
      expect(code).toBe(0);
      expect(await handshakes()).toMatchObject(before);
    } catch (err) {
      process.stderr.write(await dumpAll(hosts));
      throw err;
    } finally {
      await bed.stop(pinger);
    }
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}
