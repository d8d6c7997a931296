/**
 * HostNetwork's pure side: parsing `ip -N -j` output and planning the `ip -batch` text (and the
 * nft ruleset) from current + desired state, without running ip.
 */
import { describe, expect, it } from 'vitest';
import type { Cidr } from '../../src/device/config.ts';
import { failedLine } from '../../src/mesh/iproute.ts';
import type { CurrentHostState, LinkState, RouteState, RuleState } from '../../src/mesh/host-network.ts';
import {
  buildStrictRuleset,
  canonicalDst,
  desiredSysctls,
  digestFromListing,
  emptyChanges,
  parseLink,
  parseRoutes,
  parseRules,
  planHost,
  planRemoval,
  ROUTE_PROTOCOL,
  strictScript,
  totalChanges,
  validateHostConfig,
} from '../../src/mesh/host-network.ts';
import { DEFAULT_TUNNEL_MTU, tunnelMtu } from '../../src/mesh/mtu.ts';
import type { HostConfig } from '../../src/mesh/types.ts';
import { parseCidr, parseIp } from '../../src/util/ip.ts';

const P = ROUTE_PROTOCOL;

/** An interface address keeps its host bits (parseCidr would clear them). */
function address(text: string): Cidr {
  const [ip, len] = text.split('/') as [string, string];
  const parsed = parseIp(ip);
  return { family: parsed.family, address: parsed.bytes, prefix: Number(len) };
}

function config(overrides: Partial<HostConfig> = {}): HostConfig {
  return {
    ifname: 'wgts0',
    addresses: [address('100.64.1.1/32'), address('fd00:64:1::1/128')],
    mtu: 1420,
    table: 51820,
    rulePriority: 99,
    fwmark: 0x51820,
    fwmarkMask: 0xfffff,
    routes: ['100.64.2.0/24', '100.64.3.0/24', 'fd00:64:2::/64'].map(parseCidr),
    throws: ['100.64.1.0/24', 'fd00:64:1::/64'].map(parseCidr),
    ...overrides,
  };
}

function link(overrides: Partial<LinkState> = {}): LinkState {
  return { ifname: 'wgts0', up: true, mtu: 1420, addresses: [], ...overrides };
}

function route(family: 4 | 6, dst: string, overrides: Partial<RouteState> = {}): RouteState {
  return { family, dst, type: 1, dev: 'wgts0', gateway: undefined, multipath: false, protocol: P, metric: family === 4 ? 0 : 1024, ...overrides };
}

function throwRoute(family: 4 | 6, dst: string, overrides: Partial<RouteState> = {}): RouteState {
  return route(family, dst, { type: 9, dev: family === 6 ? 'lo' : undefined, ...overrides });
}

function ourRule(family: 4 | 6, overrides: Partial<RuleState> = {}): RuleState {
  return { family, priority: 99, invert: true, fwmark: 0x51820, fwmask: 0xfffff, table: 51820, protocol: P, other: false, ...overrides };
}

const KERNEL_RULES4: RuleState[] = [
  { family: 4, priority: 0, invert: false, fwmark: undefined, fwmask: undefined, table: 255, protocol: 0, other: false },
  { family: 4, priority: 32766, invert: false, fwmark: undefined, fwmask: undefined, table: 254, protocol: 0, other: false },
];

function state(overrides: { link?: LinkState; routes4?: readonly RouteState[]; routes6?: readonly RouteState[]; rules4?: readonly RuleState[]; rules6?: readonly RuleState[] } = {}): CurrentHostState {
  return {
    link: overrides.link ?? link(),
    routes: { 4: overrides.routes4 ?? [], 6: overrides.routes6 ?? [] },
    rules: { 4: overrides.rules4 ?? KERNEL_RULES4, 6: overrides.rules6 ?? [] },
  };
}

/** The state a full, correct apply of config() leaves. */
function converged(): CurrentHostState {
  return state({
    link: link({
      addresses: [
        { family: 4, local: '100.64.1.1', prefixlen: 32, protocol: undefined },
        { family: 6, local: 'fd00:64:1::1', prefixlen: 128, protocol: undefined },
        { family: 6, local: 'fe80::1', prefixlen: 64, protocol: undefined },
      ],
    }),
    routes4: [route(4, '100.64.2.0/24'), route(4, '100.64.3.0/24'), throwRoute(4, '100.64.1.0/24')],
    routes6: [route(6, 'fd00:64:2::/64'), throwRoute(6, 'fd00:64:1::/64')],
    rules4: [...KERNEL_RULES4, ourRule(4)],
    rules6: [ourRule(6)],
  });
}

describe('planHost', () => {
  it('from nothing: link, addresses, routes, throws and the rule, per family', () => {
    const plan = planHost(state({ link: link({ up: false, mtu: 1500 }) }), config());
    expect(plan.batch4).toEqual([
      'link set dev wgts0 mtu 1420 up',
      'address add 100.64.1.1/32 dev wgts0',
      'route replace throw 100.64.1.0/24 table 51820 proto 167',
      'route replace 100.64.2.0/24 dev wgts0 table 51820 proto 167',
      'route replace 100.64.3.0/24 dev wgts0 table 51820 proto 167',
      'rule add not fwmark 0x51820/0xfffff table 51820 priority 99 protocol 167',
    ]);
    expect(plan.batch6).toEqual([
      'address add fd00:64:1::1/128 dev wgts0 nodad',
      'route replace throw fd00:64:1::/64 table 51820 proto 167',
      'route replace fd00:64:2::/64 dev wgts0 table 51820 proto 167',
      'rule add not fwmark 0x51820/0xfffff table 51820 priority 99 protocol 167',
    ]);
    expect(plan.changes).toEqual({ ...emptyChanges(), link: 2, addressesAdded: 2, routesAdded: 3, throwsAdded: 2, rulesAdded: 2 });
    expect(plan.addedAddresses).toEqual(['100.64.1.1/32', 'fd00:64:1::1/128']);
  });

  it('tags addresses with the protocol when ip supports it', () => {
    const plan = planHost(state(), config(), { addressProtocol: true });
    expect(plan.batch4).toContain('address add 100.64.1.1/32 dev wgts0 proto 167');
    expect(plan.batch6).toContain('address add fd00:64:1::1/128 dev wgts0 nodad proto 167');
  });

  it('nothing to do when the host already matches', () => {
    const plan = planHost(converged(), config());
    expect(plan.batch4).toEqual([]);
    expect(plan.batch6).toEqual([]);
    expect(totalChanges(plan.changes)).toBe(0);
  });

  it('one route removed and one added: adds before removals, foreign routes and addresses untouched', () => {
    const current = converged();
    const withForeign = state({
      link: link({ addresses: [...current.link.addresses, { family: 4, local: '100.64.9.9', prefixlen: 32, protocol: undefined }] }),
      routes4: [...current.routes[4], route(4, '100.64.50.0/24', { protocol: 4 }), route(4, '10.0.0.0/8', { protocol: 0, dev: 'eth0' })],
      routes6: [...current.routes[6]],
      rules4: [...current.rules[4], { ...ourRule(4), priority: 200, protocol: 0, invert: false }],
      rules6: [...current.rules[6]],
    });
    const plan = planHost(withForeign, config({ routes: ['100.64.2.0/24', '100.64.4.0/24', 'fd00:64:2::/64'].map(parseCidr) }));
    expect(plan.batch4).toEqual([
      'route replace 100.64.4.0/24 dev wgts0 table 51820 proto 167',
      'route del unicast 100.64.3.0/24 table 51820 proto 167 metric 0',
    ]);
    expect(plan.batch6).toEqual([]);
    expect(plan.changes).toEqual({ ...emptyChanges(), routesAdded: 1, routesRemoved: 1 });
  });

  it('a prefix that turns from route into throw is replaced in place, not deleted', () => {
    const plan = planHost(converged(), config({ routes: ['100.64.2.0/24', 'fd00:64:2::/64'].map(parseCidr), throws: ['100.64.1.0/24', '100.64.3.0/24', 'fd00:64:1::/64'].map(parseCidr) }));
    expect(plan.batch4).toEqual(['route replace throw 100.64.3.0/24 table 51820 proto 167']);
    expect(plan.changes).toEqual({ ...emptyChanges(), throwsAdded: 1 });
  });

  it('a route of ours with the wrong device or metric is corrected; stale ones go highest metric first', () => {
    const current = converged();
    const plan = planHost(
      state({
        link: current.link,
        routes4: [route(4, '100.64.2.0/24', { dev: 'wgts9' }), route(4, '100.64.3.0/24'), route(4, '100.64.3.0/24', { metric: 5 }), throwRoute(4, '100.64.1.0/24'), route(4, '100.64.7.0/24', { metric: 7 }), route(4, '100.64.7.0/24')],
        routes6: [route(6, 'fd00:64:2::/64', { metric: 100 }), throwRoute(6, 'fd00:64:1::/64'), throwRoute(6, 'fd00:64:9::/64')],
        rules4: current.rules[4],
        rules6: current.rules[6],
      }),
      config(),
    );
    expect(plan.batch4).toEqual([
      'route replace 100.64.2.0/24 dev wgts0 table 51820 proto 167',
      'route del unicast 100.64.7.0/24 table 51820 proto 167 metric 7',
      'route del unicast 100.64.3.0/24 table 51820 proto 167 metric 5',
      'route del unicast 100.64.7.0/24 table 51820 proto 167 metric 0',
    ]);
    expect(plan.batch6).toEqual([
      'route replace fd00:64:2::/64 dev wgts0 table 51820 proto 167',
      'route del throw fd00:64:9::/64 table 51820 proto 167 metric 1024',
      'route del unicast fd00:64:2::/64 table 51820 proto 167 metric 100',
    ]);
    expect(plan.changes).toEqual({ ...emptyChanges(), routesAdded: 2, routesRemoved: 4, throwsRemoved: 1 });
  });

  it('a foreign route for a wanted prefix is taken over (replace), a foreign one at another metric left alone', () => {
    const current = converged();
    const plan = planHost(
      state({ ...current, link: current.link, routes4: [route(4, '100.64.2.0/24', { protocol: 4 }), route(4, '100.64.3.0/24'), route(4, '100.64.3.0/24', { protocol: 3, metric: 50 }), throwRoute(4, '100.64.1.0/24')], routes6: current.routes[6], rules4: current.rules[4], rules6: current.rules[6] }),
      config(),
    );
    expect(plan.batch4).toEqual(['route replace 100.64.2.0/24 dev wgts0 table 51820 proto 167']);
  });

  it('the rule: re-created when it differs (new first), duplicates of ours removed, a foreign identical one accepted, another table’s left', () => {
    const current = converged();
    const plan = planHost(
      state({
        link: current.link,
        routes4: current.routes[4],
        routes6: current.routes[6],
        rules4: [...KERNEL_RULES4, ourRule(4, { priority: 98 }), ourRule(4, { fwmask: 0xffffffff }), ourRule(4, { table: 51821, priority: 100 })],
        rules6: [ourRule(6), ourRule(6)],
      }),
      config(),
    );
    expect(plan.batch4).toEqual([
      'rule add not fwmark 0x51820/0xfffff table 51820 priority 99 protocol 167',
      'rule del priority 98 not fwmark 0x51820/0xfffff table 51820 protocol 167',
      'rule del priority 99 not fwmark 0x51820/0xffffffff table 51820 protocol 167',
    ]);
    expect(plan.batch6).toEqual(['rule del priority 99 not fwmark 0x51820/0xfffff table 51820 protocol 167']);
    expect(plan.changes).toEqual({ ...emptyChanges(), rulesAdded: 1, rulesRemoved: 3 });

    const foreign = planHost(state({ ...current, link: current.link, routes4: current.routes[4], routes6: current.routes[6], rules4: [ourRule(4, { protocol: 0 })], rules6: [ourRule(6, { protocol: 3 })] }), config());
    expect(foreign.batch4).toEqual([]);
    expect(foreign.batch6).toEqual([]);
  });

  it('a rule with extra selectors is not ours to keep', () => {
    const current = converged();
    const plan = planHost(state({ link: current.link, routes4: current.routes[4], routes6: current.routes[6], rules4: [ourRule(4, { other: true })], rules6: current.rules[6] }), config());
    expect(plan.batch4).toEqual([
      'rule add not fwmark 0x51820/0xfffff table 51820 priority 99 protocol 167',
      'rule del priority 99 not fwmark 0x51820/0xfffff table 51820 protocol 167',
    ]);
  });

  it('addresses: removes only those it owns (tagged, or remembered), never foreign ones or link-locals', () => {
    const current = link({
      addresses: [
        { family: 4, local: '100.64.1.1', prefixlen: 32, protocol: undefined },
        { family: 4, local: '100.64.1.7', prefixlen: 32, protocol: undefined }, // remembered
        { family: 4, local: '100.64.1.8', prefixlen: 32, protocol: P }, // tagged
        { family: 4, local: '192.0.2.1', prefixlen: 24, protocol: undefined }, // foreign
        { family: 6, local: 'fd00:64:1::7', prefixlen: 128, protocol: undefined }, // remembered
        { family: 6, local: 'fe80::1', prefixlen: 64, protocol: 3 }, // kernel link-local
      ],
    });
    const c = converged();
    const plan = planHost(
      state({ link: current, routes4: c.routes[4], routes6: c.routes[6], rules4: c.rules[4], rules6: c.rules[6] }),
      config(),
      { ownedAddresses: new Set(['100.64.1.7/32', 'fd00:64:1::7/128']) },
    );
    expect(plan.batch4).toEqual(['address del 100.64.1.7/32 dev wgts0', 'address del 100.64.1.8/32 dev wgts0']);
    expect(plan.batch6).toEqual(['address add fd00:64:1::1/128 dev wgts0 nodad', 'address del fd00:64:1::7/128 dev wgts0']);
    expect(plan.removedAddresses).toEqual(['100.64.1.7/32', '100.64.1.8/32', 'fd00:64:1::7/128']);
  });

  it('an interface address keeps its host bits; routes are masked', () => {
    const plan = planHost(state(), config({ addresses: [address('100.64.1.1/24')], routes: [address('100.64.2.9/24')], throws: [] }));
    expect(plan.batch4).toContain('address add 100.64.1.1/24 dev wgts0');
    expect(plan.batch4).toContain('route replace 100.64.2.0/24 dev wgts0 table 51820 proto 167');
  });

  it('a prefix both routed and thrown keeps the throw and is reported', () => {
    const plan = planHost(state(), config({ routes: [parseCidr('100.64.1.0/24')], throws: [parseCidr('100.64.1.0/24')] }));
    expect(plan.batch4.filter((l) => l.includes('100.64.1.0/24'))).toEqual(['route replace throw 100.64.1.0/24 table 51820 proto 167']);
    expect(plan.conflicts).toEqual(['100.64.1.0/24']);
  });

  it('without IPv6: no IPv6 rule; IPv6 in the config is an error', () => {
    const v4only = config({ addresses: [address('100.64.1.1/32')], routes: [parseCidr('100.64.2.0/24')], throws: [] });
    expect(planHost(state(), v4only, { ipv6: false }).batch6).toEqual([]);
    expect(() => planHost(state(), config(), { ipv6: false })).toThrow(/no IPv6/);
  });

  it('no MTU in the config leaves the link MTU alone', () => {
    const plan = planHost(converged(), config({ mtu: undefined }));
    expect(totalChanges(plan.changes)).toBe(0);
    const other = planHost(state({ ...converged(), link: link({ ...converged().link, mtu: 1380 }), routes4: converged().routes[4], routes6: converged().routes[6], rules4: converged().rules[4], rules6: converged().rules[6] }), config());
    expect(other.batch4).toEqual(['link set dev wgts0 mtu 1420']);
  });
});

describe('planRemoval', () => {
  it('removes our rules, our table routes and our addresses; nothing foreign', () => {
    const c = converged();
    const current = state({
      link: link({ addresses: [...c.link.addresses, { family: 4, local: '100.64.1.8', prefixlen: 32, protocol: P }] }),
      routes4: [...c.routes[4], route(4, '100.64.50.0/24', { protocol: 4 })],
      routes6: c.routes[6],
      rules4: c.rules[4],
      rules6: c.rules[6],
    });
    const plan = planRemoval(current, config(), { ownedAddresses: new Set(['100.64.1.1/32', 'fd00:64:1::1/128']) });
    expect(plan.batch4).toEqual([
      'rule del priority 99 not fwmark 0x51820/0xfffff table 51820 protocol 167',
      'route del unicast 100.64.2.0/24 table 51820 proto 167 metric 0',
      'route del unicast 100.64.3.0/24 table 51820 proto 167 metric 0',
      'route del throw 100.64.1.0/24 table 51820 proto 167 metric 0',
      'address del 100.64.1.1/32 dev wgts0',
      'address del 100.64.1.8/32 dev wgts0',
    ]);
    expect(plan.batch6).toEqual([
      'rule del priority 99 not fwmark 0x51820/0xfffff table 51820 protocol 167',
      'route del unicast fd00:64:2::/64 table 51820 proto 167 metric 1024',
      'route del throw fd00:64:1::/64 table 51820 proto 167 metric 1024',
      'address del fd00:64:1::1/128 dev wgts0',
    ]);
    expect(plan.changes).toEqual({ ...emptyChanges(), rulesRemoved: 2, routesRemoved: 3, throwsRemoved: 2, addressesRemoved: 3 });
  });
});

describe('parsing ip -N -j output', () => {
  it('addr show dev', () => {
    const json = JSON.parse(
      '[{"ifindex":3,"link":"w0p","ifname":"w0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"addr_info":[' +
        '{"family":"inet","local":"100.64.1.1","prefixlen":32,"scope":"0","label":"w0"},' +
        '{"family":"inet6","local":"fd00:1:0::1","prefixlen":128,"scope":"0","nodad":true,"protocol":"167"},' +
        '{"family":"inet6","local":"fe80::907a:a8ff:fe79:68fd","prefixlen":64,"scope":"253","tentative":true}]}]',
    ) as unknown[];
    expect(parseLink(json, 'w0')).toEqual({
      ifname: 'w0',
      up: true,
      mtu: 1500,
      addresses: [
        { family: 4, local: '100.64.1.1', prefixlen: 32, protocol: undefined },
        { family: 6, local: 'fd00:1::1', prefixlen: 128, protocol: 167 },
        { family: 6, local: 'fe80::907a:a8ff:fe79:68fd', prefixlen: 64, protocol: undefined },
      ],
    });
    expect(() => parseLink([], 'w0')).toThrow(/w0 does not exist/);
  });

  it('route show table (numeric types, default, host routes, names without -N)', () => {
    const v4 = JSON.parse(
      '[{"dst":"default","dev":"w0","protocol":"167","scope":"253","flags":[]},{"type":"9","dst":"100.64.1.0/24","protocol":"167","flags":[]},' +
        '{"dst":"100.64.3.5","dev":"w0","scope":"253","flags":[]},{"type":"throw","dst":"100.64.4.0/24","protocol":"boot","flags":[]},' +
        '{"dst":"100.64.5.0/24","gateway":"198.18.0.2","dev":"eth0","protocol":"167","metric":20}]',
    ) as unknown[];
    expect(parseRoutes(v4, 4)).toEqual([
      { family: 4, dst: '0.0.0.0/0', type: 1, dev: 'w0', gateway: undefined, multipath: false, protocol: 167, metric: 0 },
      { family: 4, dst: '100.64.1.0/24', type: 9, dev: undefined, gateway: undefined, multipath: false, protocol: 167, metric: 0 },
      { family: 4, dst: '100.64.3.5/32', type: 1, dev: 'w0', gateway: undefined, multipath: false, protocol: 3, metric: 0 },
      { family: 4, dst: '100.64.4.0/24', type: 9, dev: undefined, gateway: undefined, multipath: false, protocol: 3, metric: 0 },
      { family: 4, dst: '100.64.5.0/24', type: 1, dev: 'eth0', gateway: '198.18.0.2', multipath: false, protocol: 167, metric: 20 },
    ]);
    const v6 = JSON.parse('[{"type":"9","dst":"fd00:1::/64","dev":"lo","protocol":"167","metric":1024,"flags":[],"pref":"medium"},{"dst":"default","dev":"w0","protocol":"167","metric":1024}]') as unknown[];
    expect(parseRoutes(v6, 6).map((r) => [r.dst, r.type, r.metric])).toEqual([
      ['fd00:1::/64', 9, 1024],
      ['::/0', 1, 1024],
    ]);
    expect(canonicalDst('fd00:0:0::/48', 6)).toBe('fd00::/48');
  });

  it('rule show', () => {
    const json = JSON.parse(
      '[{"priority":0,"src":"all","table":"255"},{"priority":99,"not":null,"src":"all","fwmark":"0x51820","fwmask":"0xfffff","table":"51820","protocol":"167"},' +
        '{"priority":100,"src":"all","fwmark":"0x1","table":"main"},{"priority":32765,"src":"10.0.0.0","srclen":8,"table":"254"},' +
        '{"priority":32764,"src":"all","table":"254","suppress_prefixlen":0}]',
    ) as unknown[];
    expect(parseRules(json, 4)).toEqual([
      { family: 4, priority: 0, invert: false, fwmark: undefined, fwmask: undefined, table: 255, protocol: 0, other: false },
      { family: 4, priority: 99, invert: true, fwmark: 0x51820, fwmask: 0xfffff, table: 51820, protocol: 167, other: false },
      { family: 4, priority: 100, invert: false, fwmark: 1, fwmask: 0xffffffff, table: 254, protocol: 0, other: false },
      { family: 4, priority: 32765, invert: false, fwmark: undefined, fwmask: undefined, table: 254, protocol: 0, other: true },
      { family: 4, priority: 32764, invert: false, fwmark: undefined, fwmask: undefined, table: 254, protocol: 0, other: true },
    ]);
  });
});

describe('--strict ruleset', () => {
  const strictConfig = config({
    strict: {
      drop: ['198.18.5.0/24', '198.18.5.7/32', '198.18.6.0/24', 'fd00:5::/64'].map(parseCidr),
      exempt: [
        { address: parseCidr('198.18.5.9/32'), protocol: 'tcp', port: 6443 },
        { address: parseCidr('198.18.0.1/32'), protocol: 'udp', port: 51820 },
        { address: parseCidr('::/0'), port: 53 },
        { address: parseCidr('fd00:5::1/128'), protocol: 'tcp' },
        { address: parseCidr('198.18.6.6/32') },
      ],
    },
  });

  it('builds the inet wgts table', () => {
    expect(buildStrictRuleset(strictConfig)).toBe(
      [
        '\tset drop4 {',
        '\t\ttype ipv4_addr',
        '\t\tflags interval',
        '\t\tauto-merge',
        '\t\telements = { 198.18.5.0/24, 198.18.5.7/32, 198.18.6.0/24 }',
        '\t}',
        '\tset drop6 {',
        '\t\ttype ipv6_addr',
        '\t\tflags interval',
        '\t\tauto-merge',
        '\t\telements = { fd00:5::/64 }',
        '\t}',
        '\tchain input {',
        '\t\ttype filter hook input priority filter; policy accept;',
        '\t\tiifname "lo" accept',
        '\t\tiifname "wgts0" accept',
        '\t\tip daddr 198.18.5.9/32 tcp dport 6443 accept',
        '\t\tip saddr 198.18.5.9/32 tcp sport 6443 accept',
        '\t\tip daddr 198.18.0.1/32 udp dport 51820 accept',
        '\t\tip saddr 198.18.0.1/32 udp sport 51820 accept',
        '\t\tmeta nfproto ipv6 meta l4proto { tcp, udp } th dport 53 accept',
        '\t\tmeta nfproto ipv6 meta l4proto { tcp, udp } th sport 53 accept',
        '\t\tip6 daddr fd00:5::1/128 meta l4proto tcp accept',
        '\t\tip6 saddr fd00:5::1/128 meta l4proto tcp accept',
        '\t\tip daddr 198.18.6.6/32 accept',
        '\t\tip saddr 198.18.6.6/32 accept',
        '\t\tip saddr @drop4 drop',
        '\t\tip6 saddr @drop6 drop',
        '\t}',
        '\tchain forward {',
        '\t\ttype filter hook forward priority filter; policy accept;',
        '\t\tiifname "wgts0" accept',
        '\t\toifname "wgts0" accept',
        '\t\tip daddr 198.18.5.9/32 tcp dport 6443 accept',
        '\t\tip saddr 198.18.5.9/32 tcp sport 6443 accept',
        '\t\tip daddr 198.18.0.1/32 udp dport 51820 accept',
        '\t\tip saddr 198.18.0.1/32 udp sport 51820 accept',
        '\t\tmeta nfproto ipv6 meta l4proto { tcp, udp } th dport 53 accept',
        '\t\tmeta nfproto ipv6 meta l4proto { tcp, udp } th sport 53 accept',
        '\t\tip6 daddr fd00:5::1/128 meta l4proto tcp accept',
        '\t\tip6 saddr fd00:5::1/128 meta l4proto tcp accept',
        '\t\tip daddr 198.18.6.6/32 accept',
        '\t\tip saddr 198.18.6.6/32 accept',
        '\t\tip saddr @drop4 drop',
        '\t\tip daddr @drop4 drop',
        '\t\tip6 saddr @drop6 drop',
        '\t\tip6 daddr @drop6 drop',
        '\t}',
        '\tchain output {',
        '\t\ttype filter hook output priority filter; policy accept;',
        '\t\toifname "lo" accept',
        '\t\toifname "wgts0" accept',
        '\t\tmeta mark & 0xfffff == 0x51820 accept',
        '\t\tip daddr 198.18.5.9/32 tcp dport 6443 accept',
        '\t\tip saddr 198.18.5.9/32 tcp sport 6443 accept',
        '\t\tip daddr 198.18.0.1/32 udp dport 51820 accept',
        '\t\tip saddr 198.18.0.1/32 udp sport 51820 accept',
        '\t\tmeta nfproto ipv6 meta l4proto { tcp, udp } th dport 53 accept',
        '\t\tmeta nfproto ipv6 meta l4proto { tcp, udp } th sport 53 accept',
        '\t\tip6 daddr fd00:5::1/128 meta l4proto tcp accept',
        '\t\tip6 saddr fd00:5::1/128 meta l4proto tcp accept',
        '\t\tip daddr 198.18.6.6/32 accept',
        '\t\tip saddr 198.18.6.6/32 accept',
        '\t\tip daddr @drop4 drop',
        '\t\tip6 daddr @drop6 drop',
        '\t}',
      ].join('\n'),
    );
  });

  it('omits empty sets and their rules', () => {
    const body = buildStrictRuleset(config({ strict: { drop: [parseCidr('fd00:5::/64')], exempt: [] } }));
    expect(body).not.toContain('drop4');
    expect(body).toContain('ip6 daddr @drop6 drop');
  });

  it('the script replaces the table in one transaction and carries a digest that follows the content', () => {
    const { script, digest } = strictScript(strictConfig);
    expect(script.split('\n').slice(0, 4)).toEqual(['table inet wgts', 'delete table inet wgts', 'table inet wgts {', `\tcomment "wgts:${digest}"`]);
    expect(digest).toMatch(/^[0-9a-f]{16}$/);
    expect(strictScript(strictConfig).digest).toBe(digest);
    expect(strictScript(config({ strict: { drop: [parseCidr('198.18.5.0/24')], exempt: [] } })).digest).not.toBe(digest);
    expect(digestFromListing(`table inet wgts {\n\tcomment "wgts:${digest}"\n}`)).toBe(digest);
    expect(digestFromListing('table inet wgts {\n}')).toBeUndefined();
  });
});

describe('odds and ends', () => {
  it('sysctls: src_valid_mark and loose rp_filter on the interface, slash keys', () => {
    expect(desiredSysctls('wgts0.5')).toEqual([
      ['net/ipv4/conf/all/src_valid_mark', '1'],
      ['net/ipv4/conf/wgts0.5/rp_filter', '2'],
    ]);
  });

  it('validates the config', () => {
    expect(() => validateHostConfig(config({ ifname: 'has space' }))).toThrow(/ifname/);
    expect(() => validateHostConfig(config({ table: 254 }))).toThrow(/kernel table/);
    expect(() => validateHostConfig(config({ mtu: 40 }))).toThrow(/mtu/);
    expect(() => validateHostConfig(config({ fwmark: -1 }))).toThrow(/fwmark/);
    expect(() => validateHostConfig(config())).not.toThrow();
  });

  it('finds the failing line in ip -batch and nft -f errors', () => {
    expect(failedLine('Cannot find device "nope"\nCommand failed -:2\n')).toBe(2);
    expect(failedLine('/dev/stdin:4:27-27: Error: syntax error, unexpected newline\n')).toBe(4);
    expect(failedLine('RTNETLINK answers: File exists\n')).toBeUndefined();
  });

  it('tunnel MTU: underlay − 60 (IPv4) / − 80 (IPv6); 1420 when unknown', () => {
    expect(tunnelMtu(1500, 4)).toBe(1440);
    expect(tunnelMtu(1500, 6)).toBe(1420);
    expect(tunnelMtu(9001, 4)).toBe(8941);
    expect(tunnelMtu(undefined, 4)).toBe(DEFAULT_TUNNEL_MTU);
    expect(DEFAULT_TUNNEL_MTU).toBe(1420);
  });
});
