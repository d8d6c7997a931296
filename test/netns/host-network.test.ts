/**
 * HostNetwork against a real kernel, in namespaces this file creates:
 *
 *   host (H): wgts stand-in (a veth whose peer stays in H, so it has carrier) + underlay veth
 *   peer (P): the other end of the underlay (198.18.n.2, fd00:0:0:n::2), TCP listeners
 *
 * apply → exactly the configured addresses, routes, throws, rule (v4 and v6), link, sysctls;
 * apply again → zero changes; a changed config changes only the difference and leaves foreign
 * routes/addresses alone; `ip route get` sends pod traffic into the tunnel via table 51820,
 * marked traffic and local (thrown) prefixes via main; MTU detection; --strict with nft (pings to
 * dropped prefixes fail, an exempt address:port still works); remove() leaves nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Cidr } from '../../src/device/config.ts';
import type { HostChanges } from '../../src/mesh/host-network.ts';
import { emptyChanges, HostNetwork, NFT_TABLE, ROUTE_PROTOCOL, totalChanges } from '../../src/mesh/host-network.ts';
import { HostCommandError, IpRunner } from '../../src/mesh/iproute.ts';
import { detectUnderlayMtu, tunnelMtu } from '../../src/mesh/mtu.ts';
import type { HostConfig } from '../../src/mesh/types.ts';
import { MESH_DEFAULTS } from '../../src/mesh/types.ts';
import { parseCidr, parseIp } from '../../src/util/ip.ts';
import type { TrackedProcess, VethPair } from './helpers/netns.ts';
import { NetnsBed, skipUnlessRoot, waitFor } from './helpers/netns.ts';

const EXEMPT_PORT = 7443;
const OTHER_PORT = 7444;

function address(text: string): Cidr {
  const [ip, len] = text.split('/') as [string, string];
  const parsed = parseIp(ip);
  return { family: parsed.family, address: parsed.bytes, prefix: Number(len) };
}

interface RouteJson {
  dst: string;
  type?: string;
  dev?: string;
  protocol?: string;
  metric?: number;
  table?: string;
  gateway?: string;
}

describe.skipIf(skipUnlessRoot('host network'))('host network (iproute2, nft) in a namespace', () => {
  const bed = new NetnsBed('hnet');
  let nsH: string;
  let nsP: string;
  let underlay: VethPair;
  let wg: string;
  let host: HostNetwork;
  let base: HostConfig;
  let ip: IpRunner;

  const ipJson = <T>(args: string[]): Promise<T[]> => ip.ipJson<T>(args);
  const tableRoutes = async (family: 4 | 6): Promise<RouteJson[]> => ipJson<RouteJson>([`-${family}`, 'route', 'show', 'table', String(MESH_DEFAULTS.table)]);
  const summary = (routes: RouteJson[]): string[] =>
    routes.map((r) => `${r.type === '9' ? 'throw ' : ''}${r.dst}${r.type === '9' ? '' : ` dev ${r.dev}`} proto ${r.protocol ?? '3'}`).sort();
  const addresses = async (): Promise<string[]> => {
    const [link] = await ipJson<{ addr_info: Array<{ local: string; prefixlen: number; scope: string }> }>(['addr', 'show', 'dev', wg]);
    return link!.addr_info.filter((a) => a.scope !== '253').map((a) => `${a.local}/${a.prefixlen}`).sort();
  };
  const ourRules = async (family: 4 | 6): Promise<unknown[]> =>
    (await ipJson<{ protocol?: string }>([`-${family}`, 'rule', 'show'])).filter((r) => r.protocol === String(ROUTE_PROTOCOL));
  const routeGet = async (target: string, mark?: number): Promise<RouteJson> => {
    const args = [target.includes(':') ? '-6' : '-4', 'route', 'get', target, ...(mark === undefined ? [] : ['mark', `0x${mark.toString(16)}`])];
    const [route] = await ipJson<RouteJson>(args);
    return route!;
  };
  const pingOk = async (ns: string, target: string): Promise<boolean> =>
    (await bed.exec(ns, 'ping', ['-c', '1', '-W', '1', '-n', target], { allowFailure: true })).code === 0;
  /** Connects from H to P's address:port with node; true when the TCP handshake completed. */
  const tcpOk = async (target: string, port: number): Promise<boolean> => {
    const script = `const s=require('net').connect({host:${JSON.stringify(target)},port:${port}});s.setTimeout(1500,()=>process.exit(2));s.on('connect',()=>{s.destroy();process.exit(0)});s.on('error',()=>process.exit(1))`;
    return (await bed.exec(nsH, process.execPath, ['-e', script], { allowFailure: true })).code === 0;
  };
  const sysctl = async (key: string): Promise<string> => (await bed.exec(nsH, 'sysctl', ['-n', key])).stdout.trim();
  const nftTable = async (): Promise<string | undefined> => {
    const result = await bed.exec(nsH, 'nft', ['list', 'table', 'inet', NFT_TABLE], { allowFailure: true });
    return result.code === 0 ? result.stdout : undefined;
  };
  const only = (counts: Partial<HostChanges>): HostChanges => ({ ...emptyChanges(), ...counts });

  beforeAll(async () => {
    await bed.sweepStale();
    nsH = await bed.createNamespace('h');
    nsP = await bed.createNamespace('p');
    underlay = await bed.createVethPair(nsH, nsP, { ipv6: true, mtu: 1500 });
    ip = new IpRunner({ netns: nsH });
    // The wgts0 stand-in: a veth whose peer stays in H and is up, so the link has carrier.
    wg = bed.ifname('wgts');
    const wgPeer = bed.ifname('wgp');
    await ip.ip(['link', 'add', wg, 'type', 'veth', 'peer', 'name', wgPeer]);
    await ip.ip(['link', 'set', wgPeer, 'up']);
    // The main table: everything else goes to the underlay (as a node's default route would).
    await ip.ip(['-4', 'route', 'add', 'default', 'via', underlay.b.address4]);
    await ip.ip(['-6', 'route', 'add', 'default', 'via', underlay.b.address6!]);
    host = new HostNetwork({ netns: nsH });
    base = {
      ifname: wg,
      addresses: [address('100.64.1.1/32'), address('fd00:64:1::1/128')],
      mtu: tunnelMtu(await detectUnderlayMtu(underlay.a.address4, { netns: nsH }), 4),
      table: MESH_DEFAULTS.table,
      rulePriority: MESH_DEFAULTS.rulePriority,
      fwmark: MESH_DEFAULTS.fwmark,
      fwmarkMask: MESH_DEFAULTS.fwmarkMask,
      routes: ['100.64.2.0/24', '100.64.3.0/24', 'fd00:64:2::/64', 'fd00:64:3::/64'].map(parseCidr),
      throws: ['100.64.1.0/24', 'fd00:64:1::/64'].map(parseCidr),
    };
  });

  afterAll(async () => {
    await bed.cleanup();
  });

  it('detects the underlay MTU from the veth: 1500 → tunnel 1440 (IPv4), 1420 (IPv6); 1420 when unknown', async () => {
    expect(await detectUnderlayMtu(underlay.a.address4, { netns: nsH })).toBe(1500);
    expect(tunnelMtu(await detectUnderlayMtu(underlay.a.address4, { netns: nsH }), 4)).toBe(1440);
    expect(await detectUnderlayMtu(underlay.a.address6!, { netns: nsH })).toBe(1500);
    expect(tunnelMtu(await detectUnderlayMtu(underlay.a.address6!, { netns: nsH }), 6)).toBe(1420);
    await ip.ip(['link', 'set', underlay.a.ifname, 'mtu', '9000']);
    try {
      expect(await detectUnderlayMtu(underlay.a.address4, { netns: nsH })).toBe(9000);
    } finally {
      await ip.ip(['link', 'set', underlay.a.ifname, 'mtu', '1500']);
    }
    expect(await detectUnderlayMtu('198.19.255.254', { netns: nsH })).toBeUndefined();
    expect(tunnelMtu(await detectUnderlayMtu('198.19.255.254', { netns: nsH }), 4)).toBe(1420);
  });

  it('apply: exactly the configured addresses, routes, throws, rules, link state and sysctls', async () => {
    const changes = await host.apply(base);
    expect(changes).toEqual(only({ addressesAdded: 2, routesAdded: 4, throwsAdded: 2, rulesAdded: 2, link: 2, sysctls: 2 }));

    expect(await addresses()).toEqual(['100.64.1.1/32', 'fd00:64:1::1/128']);
    const [link] = await ipJson<{ mtu: number; flags: string[] }>(['link', 'show', 'dev', wg]);
    expect(link!.mtu).toBe(1440);
    expect(link!.flags).toContain('UP');
    expect(summary(await tableRoutes(4))).toEqual([
      `100.64.2.0/24 dev ${wg} proto 167`,
      `100.64.3.0/24 dev ${wg} proto 167`,
      'throw 100.64.1.0/24 proto 167',
    ]);
    expect(summary(await tableRoutes(6))).toEqual([
      `fd00:64:2::/64 dev ${wg} proto 167`,
      `fd00:64:3::/64 dev ${wg} proto 167`,
      'throw fd00:64:1::/64 proto 167',
    ]);
    const expectedRule = { priority: 99, not: null, src: 'all', fwmark: '0x51820', fwmask: '0xfffff', table: '51820', protocol: '167' };
    expect(await ourRules(4)).toEqual([expectedRule]);
    expect(await ourRules(6)).toEqual([expectedRule]);
    expect(await sysctl('net.ipv4.conf.all.src_valid_mark')).toBe('1');
    expect(await sysctl(`net/ipv4/conf/${wg}/rp_filter`)).toBe('2');
  });

  it('apply again with the same config: zero changes', async () => {
    expect(totalChanges(await host.apply(base))).toBe(0);
    // A fresh instance (an agent restart) also finds nothing to do.
    expect(totalChanges(await new HostNetwork({ netns: nsH }).apply(base))).toBe(0);
  });

  it('ip route get: pod traffic into the tunnel via the table; marked traffic and local prefixes via main', async () => {
    for (const target of ['100.64.2.7', 'fd00:64:2::7']) {
      const route = await routeGet(target);
      expect(route.dev, target).toBe(wg);
      expect(route.table, target).toBe('51820');
      const marked = await routeGet(target, MESH_DEFAULTS.fwmark);
      expect(marked.dev, `${target} marked`).toBe(underlay.a.ifname);
      expect(marked.table ?? '254', `${target} marked`).toBe('254');
    }
    for (const target of ['100.64.1.7', 'fd00:64:1::7']) {
      const route = await routeGet(target);
      expect(route.dev, `${target} (thrown)`).toBe(underlay.a.ifname);
      expect(route.table ?? '254', `${target} (thrown)`).toBe('254');
    }
  });

  it('a route removed and one added: only that changes; foreign routes and addresses survive', async () => {
    // Someone else's routes in the same table and address on the same interface.
    await ip.ip(['-4', 'route', 'add', '100.64.99.0/24', 'dev', wg, 'table', '51820']);
    await ip.ip(['-6', 'route', 'add', 'fd00:64:99::/64', 'dev', wg, 'table', '51820', 'proto', 'static']);
    await ip.ip(['-4', 'address', 'add', '100.64.88.1/32', 'dev', wg]);
    await ip.ip(['-6', 'address', 'add', 'fd00:64:88::1/128', 'dev', wg, 'nodad']);

    const next: HostConfig = { ...base, routes: ['100.64.2.0/24', '100.64.4.0/24', 'fd00:64:2::/64', 'fd00:64:4::/64'].map(parseCidr) };
    expect(await host.apply(next)).toEqual(only({ routesAdded: 2, routesRemoved: 2 }));
    expect(summary(await tableRoutes(4))).toEqual([
      `100.64.2.0/24 dev ${wg} proto 167`,
      `100.64.4.0/24 dev ${wg} proto 167`,
      `100.64.99.0/24 dev ${wg} proto 3`,
      'throw 100.64.1.0/24 proto 167',
    ]);
    expect(summary(await tableRoutes(6))).toEqual([
      `fd00:64:2::/64 dev ${wg} proto 167`,
      `fd00:64:4::/64 dev ${wg} proto 167`,
      `fd00:64:99::/64 dev ${wg} proto 4`,
      'throw fd00:64:1::/64 proto 167',
    ]);
    expect(await addresses()).toEqual(['100.64.1.1/32', '100.64.88.1/32', 'fd00:64:1::1/128', 'fd00:64:88::1/128']);
    expect(totalChanges(await host.apply(next))).toBe(0);
    base = next;
  });

  it('a prefix moves from the routes to the throws (and back): replaced in place', async () => {
    const moved: HostConfig = { ...base, routes: ['100.64.2.0/24', 'fd00:64:2::/64'].map(parseCidr), throws: [...base.throws, ...['100.64.4.0/24', 'fd00:64:4::/64'].map(parseCidr)] };
    expect(await host.apply(moved)).toEqual(only({ throwsAdded: 2 }));
    expect(summary(await tableRoutes(4))).toContain('throw 100.64.4.0/24 proto 167');
    expect(summary(await tableRoutes(6))).toContain('throw fd00:64:4::/64 proto 167');
    expect(await host.apply(base)).toEqual(only({ routesAdded: 2 }));
    expect(summary(await tableRoutes(6))).toContain(`fd00:64:4::/64 dev ${wg} proto 167`);
  });

  it('addresses: a changed address replaces only its predecessor; the rule is re-created when it differs', async () => {
    const next: HostConfig = { ...base, addresses: [address('100.64.1.2/32'), address('fd00:64:1::1/128')], rulePriority: 98 };
    expect(await host.apply(next)).toEqual(only({ addressesAdded: 1, addressesRemoved: 1, rulesAdded: 2, rulesRemoved: 2 }));
    expect(await addresses()).toEqual(['100.64.1.2/32', '100.64.88.1/32', 'fd00:64:1::1/128', 'fd00:64:88::1/128']);
    expect((await ourRules(4)).map((r) => (r as { priority: number }).priority)).toEqual([98]);
    expect((await ourRules(6)).map((r) => (r as { priority: number }).priority)).toEqual([98]);
    // A rule deleted behind our back comes back.
    await ip.ip(['-6', 'rule', 'del', 'priority', '98']);
    expect(await host.apply(next)).toEqual(only({ rulesAdded: 1 }));
    base = next;
  });

  it('errors name the command and the batch line that failed', async () => {
    const error = await ip
      .ipBatch(4, [`route replace 100.64.77.0/24 dev ${wg} table 51821`, 'route replace 100.64.78.0/24 dev nonexistent0 table 51821'])
      .then(() => undefined, (err: unknown) => err);
    expect(error).toBeInstanceOf(HostCommandError);
    expect((error as HostCommandError).line).toBe(2);
    expect((error as Error).message).toMatch(/ip -n \S+ -4 -batch - failed at line 2 "route replace 100\.64\.78\.0\/24 dev nonexistent0 table 51821": .*nonexistent0/s);
    await ip.ip(['-4', 'route', 'flush', 'table', '51821']);
    await expect(host.apply({ ...base, ifname: 'nonexistent0' })).rejects.toThrow(/nonexistent0/);
    expect(totalChanges(await host.apply(base))).toBe(0);
  });

  describe('--strict (nftables)', () => {
    let listeners: TrackedProcess[] = [];

    beforeAll(async () => {
      listeners = [EXEMPT_PORT, OTHER_PORT].map((port) =>
        bed.spawn(nsP, process.execPath, ['-e', `require('net').createServer((s)=>{s.on('error',()=>{});s.end('ok')}).listen(${port},'0.0.0.0',()=>console.log('listening ${port}'))`]),
      );
      for (const [i, listener] of listeners.entries()) {
        await waitFor(() => listener.output().includes('listening'), { timeoutMs: 10_000, what: `TCP listener ${i} in the peer namespace` });
      }
    });

    afterAll(async () => {
      for (const listener of listeners) await bed.stop(listener);
    });

    it('drops traffic to and from the unencrypted prefixes except the exemptions; loopback untouched', async () => {
      const peer4 = underlay.b.address4;
      const peer6 = underlay.b.address6!;
      expect(await pingOk(nsH, peer4)).toBe(true);
      expect(await pingOk(nsH, peer6)).toBe(true);
      expect(await tcpOk(peer4, OTHER_PORT)).toBe(true);

      const strict: HostConfig = {
        ...base,
        strict: {
          drop: [parseCidr(`${peer4}/32`), parseCidr(`${peer6}/128`), parseCidr('100.64.200.0/24')],
          exempt: [
            { address: parseCidr(`${peer4}/32`), protocol: 'tcp', port: EXEMPT_PORT },
            { address: parseCidr(`${underlay.a.address4}/32`), protocol: 'udp', port: MESH_DEFAULTS.listenPort },
          ],
        },
      };
      expect(await host.apply(strict)).toEqual(only({ firewall: 1 }));
      expect(await pingOk(nsH, peer4)).toBe(false);
      expect(await pingOk(nsH, peer6)).toBe(false);
      expect(await pingOk(nsP, underlay.a.address4)).toBe(false);
      expect(await tcpOk(peer4, EXEMPT_PORT)).toBe(true);
      expect(await tcpOk(peer4, OTHER_PORT)).toBe(false);
      expect(await pingOk(nsH, '127.0.0.1')).toBe(true);
      expect(await pingOk(nsH, '100.64.1.2')).toBe(true);

      // Idempotent; a table changed behind our back is put back.
      expect(totalChanges(await host.apply(strict))).toBe(0);
      expect(totalChanges(await new HostNetwork({ netns: nsH }).apply(strict))).toBe(0);
      await bed.exec(nsH, 'nft', ['flush', 'table', 'inet', NFT_TABLE]);
      expect(await pingOk(nsH, peer4)).toBe(true);
      expect(await host.apply(strict)).toEqual(only({ firewall: 1 }));
      expect(await pingOk(nsH, peer4)).toBe(false);
      const listing = await nftTable();
      expect(listing).toMatch(/comment "wgts:[0-9a-f]{16}"/);
      process.stdout.write(`[host-network] nft ruleset as the kernel holds it:\n${listing}\n`);

      // Without strict the table goes away and traffic flows again.
      expect(await host.apply(base)).toEqual(only({ firewall: 1 }));
      expect(await nftTable()).toBeUndefined();
      expect(await pingOk(nsH, peer4)).toBe(true);
      expect(await tcpOk(peer4, OTHER_PORT)).toBe(true);
      expect(totalChanges(await host.apply(base))).toBe(0);
      // Leave it on for remove().
      expect(await host.apply(strict)).toEqual(only({ firewall: 1 }));
    });
  });

  it('remove(): takes away everything it added and nothing else', async () => {
    const changes = await host.remove(base);
    expect(changes).toEqual(only({ rulesRemoved: 2, routesRemoved: 4, throwsRemoved: 2, addressesRemoved: 2, firewall: 1 }));
    expect(await ourRules(4)).toEqual([]);
    expect(await ourRules(6)).toEqual([]);
    expect(summary(await tableRoutes(4))).toEqual([`100.64.99.0/24 dev ${wg} proto 3`]);
    expect(summary(await tableRoutes(6))).toEqual([`fd00:64:99::/64 dev ${wg} proto 4`]);
    expect(await addresses()).toEqual(['100.64.88.1/32', 'fd00:64:88::1/128']);
    expect(await nftTable()).toBeUndefined();
    expect(totalChanges(await host.remove(base))).toBe(0);
  });

  it('remove() after the interface is gone still takes away the rules, the throws and the nft table', async () => {
    const gone = bed.ifname('wgts');
    const gonePeer = bed.ifname('wgp');
    await ip.ip(['link', 'add', gone, 'type', 'veth', 'peer', 'name', gonePeer]);
    await ip.ip(['link', 'set', gonePeer, 'up']);
    const other = new HostNetwork({ netns: nsH });
    const config: HostConfig = {
      ...base,
      ifname: gone,
      table: 51822,
      strict: { drop: [parseCidr('100.64.201.0/24')], exempt: [] },
    };
    const applied = await other.apply(config);
    expect(applied.rulesAdded).toBe(2);
    expect(applied.firewall).toBe(1);
    await ip.ip(['link', 'delete', gone]);
    // The device routes went with the link; the throws (no device) are still there to remove.
    expect(await other.remove(config)).toEqual(only({ rulesRemoved: 2, throwsRemoved: 2, firewall: 1 }));
    expect(await ip.ipJson(['-4', 'route', 'show', 'table', '51822']).catch(() => [])).toEqual([]);
    expect(await ip.ipJson(['-6', 'route', 'show', 'table', '51822']).catch(() => [])).toEqual([]);
    const leftover = (await ipJson<{ table?: string }>(['-4', 'rule', 'show'])).filter((r) => r.table === '51822');
    expect(leftover).toEqual([]);
    expect(await nftTable()).toBeUndefined();
  });
});
