/**
 * HostNetwork: programs a node for the mesh with iproute2 (and nftables for --strict), and
 * makes the host match a HostConfig exactly, idempotently — in the manner of wg-quick's policy
 * routing and Calico's WireGuard routing table.
 *
 * What it owns, and how it recognises its own things again (so it never touches anyone else's):
 *
 * | thing | written as | recognised by |
 * | --- | --- | --- |
 * | routes into the tunnel | `route replace <prefix> dev <if> table <T> proto 167` | `proto 167` in table T |
 * | local prefixes | `route replace throw <prefix> table <T> proto 167` | `proto 167` in table T |
 * | policy rule (v4 and v6) | `rule add not fwmark <mark>/<mask> table <T> priority <P> protocol 167` | `protocol 167` and lookup T |
 * | interface addresses | `address add <a>/<len> dev <if> [nodad] [proto 167]` | `proto 167` where iproute2 (≥ 6.4) and the kernel (≥ 5.18) support address protocols; otherwise: the ones this instance added |
 * | link | `link set dev <if> [mtu N] up` | — |
 * | sysctls | `net.ipv4.conf.all.src_valid_mark=1`, `net.ipv4.conf.<if>.rp_filter=2` | — (left in place by remove()) |
 * | --strict firewall | nft table `inet wgts`, replaced whole with `nft -f -` | the table; a digest of the ruleset in its comment |
 *
 * 167 (0xa7) is ROUTE_PROTOCOL: unassigned in /etc/iproute2/rt_protos and by the kernel
 * (RTPROT_* stops at 99 below the routing daemons' 186–192), so no routing daemon claims it.
 *
 * Reads use `ip -N -j` (numeric protocols, types and tables). Writes go through one
 * `ip -4 -batch -` and one `ip -6 -batch -` per call, ordered so that a failure leaves the host
 * routable: link, new addresses, new/changed routes and throws, the new rule, and only then the
 * removal of stale rules, routes and addresses. ip aborts a batch at the first failing line,
 * which the error names. The planning is pure (planHost, planRemoval, buildStrictRuleset), so
 * it is unit-tested without a kernel.
 */
import { createHash } from 'node:crypto';
import type { Cidr } from '../device/config.ts';
import type { Logger } from '../device/logger.ts';
import { silentLogger } from '../device/logger.ts';
import { formatIp, maskInPlace, parseCidr } from '../util/ip.ts';
import { HostCommandError, IpRunner, run } from './iproute.ts';
import type { HostConfig, StrictExemption } from './types.ts';

/** Route, rule and address protocol value marking what HostNetwork added (0xa7). */
export const ROUTE_PROTOCOL = 0xa7;
/** The nftables table of --strict (family inet). */
export const NFT_TABLE = 'wgts';

const RTPROT_BOOT = 3;
const RTN_UNICAST = 1;
const RTN_THROW = 9;
const RTN_NAMES: Record<number, string> = { 1: 'unicast', 2: 'local', 3: 'broadcast', 4: 'anycast', 5: 'multicast', 6: 'blackhole', 7: 'unreachable', 8: 'prohibit', 9: 'throw', 10: 'nat' };
const RTN_NUMBERS: Record<string, number> = Object.fromEntries(Object.entries(RTN_NAMES).map(([n, name]) => [name, Number(n)]));
/** IPv6 routes added without a metric get 1024 (IP6_RT_PRIO_USER); IPv4 ones 0. */
const DEFAULT_METRIC = { 4: 0, 6: 1024 } as const;

export interface HostChanges {
  addressesAdded: number;
  addressesRemoved: number;
  /** Routes into the tunnel added or changed in place (replace). */
  routesAdded: number;
  routesRemoved: number;
  throwsAdded: number;
  throwsRemoved: number;
  rulesAdded: number;
  rulesRemoved: number;
  /** Link attributes set: up, MTU. */
  link: number;
  sysctls: number;
  /** The --strict nft table replaced or deleted. */
  firewall: number;
}

export function emptyChanges(): HostChanges {
  return {
    addressesAdded: 0,
    addressesRemoved: 0,
    routesAdded: 0,
    routesRemoved: 0,
    throwsAdded: 0,
    throwsRemoved: 0,
    rulesAdded: 0,
    rulesRemoved: 0,
    link: 0,
    sysctls: 0,
    firewall: 0,
  };
}

/** Sum of all counts: 0 means the host already matched. */
export function totalChanges(changes: HostChanges): number {
  return Object.values(changes).reduce((sum: number, n: number) => sum + n, 0);
}

// ---------------------------------------------------------------------------------------------
// Current state, parsed from `ip -N -j`.

export interface AddressState {
  readonly family: 4 | 6;
  /** Canonical text of the local address. */
  readonly local: string;
  readonly prefixlen: number;
  /** Address protocol when the tools report one (IFA_PROTO). */
  readonly protocol: number | undefined;
}

export interface LinkState {
  readonly ifname: string;
  readonly up: boolean;
  readonly mtu: number;
  readonly addresses: readonly AddressState[];
}

export interface RouteState {
  readonly family: 4 | 6;
  /** Canonical prefix text, e.g. 100.64.2.0/24 (a host route as /32 or /128, default as /0). */
  readonly dst: string;
  /** RTN_* number (1 unicast, 9 throw). */
  readonly type: number;
  readonly dev: string | undefined;
  readonly gateway: string | undefined;
  readonly multipath: boolean;
  readonly protocol: number;
  readonly metric: number;
}

export interface RuleState {
  readonly family: 4 | 6;
  readonly priority: number;
  readonly invert: boolean;
  readonly fwmark: number | undefined;
  readonly fwmask: number | undefined;
  /** Table looked up; undefined for goto/nop/blackhole… rules. */
  readonly table: number | undefined;
  readonly protocol: number;
  /** Selectors or actions besides priority/not/fwmark/table (from, to, iif, suppress_…). */
  readonly other: boolean;
}

export interface CurrentHostState {
  readonly link: LinkState;
  readonly routes: { readonly 4: readonly RouteState[]; readonly 6: readonly RouteState[] };
  readonly rules: { readonly 4: readonly RuleState[]; readonly 6: readonly RuleState[] };
}

type Json = Record<string, unknown>;

function toNumber(value: unknown, names: Record<string, number> = {}): number | undefined {
  if (typeof value === 'number') return value;
  if (typeof value !== 'string') return undefined;
  if (/^0x[0-9a-f]+$/i.test(value)) return parseInt(value, 16);
  if (/^\d+$/.test(value)) return Number(value);
  return names[value];
}

/** Route/rule/address protocol names iproute2 prints without -N (only equality with ours matters). */
const PROTOCOL_NAMES: Record<string, number> = { unspec: 0, redirect: 1, kernel: 2, boot: 3, static: 4, ra: 9, dhcp: 16 };
const TABLE_NAMES: Record<string, number> = { default: 253, main: 254, local: 255 };

/** Canonical prefix text for a route dst as ip prints it ("default", "a.b.c.d", "x::/64"). */
export function canonicalDst(dst: string, family: 4 | 6): string {
  if (dst === 'default') return family === 4 ? '0.0.0.0/0' : '::/0';
  const cidr = parseCidr(dst);
  return `${formatIp(cidr.address)}/${cidr.prefix}`;
}

/** The link and its addresses from `ip -N -j addr show dev <if>`. */
export function parseLink(json: readonly unknown[], ifname: string): LinkState {
  const link = json.find((entry) => (entry as Json).ifname === ifname) as Json | undefined;
  if (!link) throw new Error(`interface ${ifname} does not exist`);
  const flags = Array.isArray(link.flags) ? (link.flags as string[]) : [];
  const addresses: AddressState[] = [];
  for (const info of (Array.isArray(link.addr_info) ? link.addr_info : []) as Json[]) {
    if (info.family !== 'inet' && info.family !== 'inet6') continue;
    if (typeof info.local !== 'string' || typeof info.prefixlen !== 'number') continue;
    const family = info.family === 'inet' ? 4 : 6;
    addresses.push({
      family,
      local: canonicalAddress(info.local),
      prefixlen: info.prefixlen,
      protocol: toNumber(info.protocol, PROTOCOL_NAMES),
    });
  }
  return { ifname, up: flags.includes('UP'), mtu: typeof link.mtu === 'number' ? link.mtu : 0, addresses };
}

function canonicalAddress(text: string): string {
  return formatIp(parseCidr(text).address);
}

/** Routes from `ip -N -j -4|-6 route show table <T>`. */
export function parseRoutes(json: readonly unknown[], family: 4 | 6): RouteState[] {
  const routes: RouteState[] = [];
  for (const entry of json as Json[]) {
    if (typeof entry.dst !== 'string') continue;
    let dst: string;
    try {
      dst = canonicalDst(entry.dst, family);
    } catch {
      continue; // not a prefix we could have written (e.g. a multicast listing quirk)
    }
    routes.push({
      family,
      dst,
      type: entry.type === undefined ? RTN_UNICAST : (toNumber(entry.type, RTN_NUMBERS) ?? -1),
      dev: typeof entry.dev === 'string' ? entry.dev : undefined,
      gateway: typeof entry.gateway === 'string' ? entry.gateway : undefined,
      multipath: Array.isArray(entry.nexthops),
      // ip leaves out "proto boot" (the default of `ip route add`) unless asked for details.
      protocol: toNumber(entry.protocol, PROTOCOL_NAMES) ?? RTPROT_BOOT,
      metric: typeof entry.metric === 'number' ? entry.metric : 0,
    });
  }
  return routes;
}

/** Keys of `ip -j rule show` entries that the rule we write has (anything else makes it a different rule). */
const RULE_KEYS = new Set(['priority', 'not', 'src', 'fwmark', 'fwmask', 'table', 'protocol', 'flags']);

/** Rules from `ip -N -j -4|-6 rule show`. */
export function parseRules(json: readonly unknown[], family: 4 | 6): RuleState[] {
  return (json as Json[]).map((entry) => ({
    family,
    priority: toNumber(entry.priority) ?? 0,
    invert: 'not' in entry,
    fwmark: toNumber(entry.fwmark),
    fwmask: entry.fwmark === undefined ? undefined : (toNumber(entry.fwmask) ?? 0xffffffff),
    table: toNumber(entry.table, TABLE_NAMES),
    protocol: toNumber(entry.protocol, PROTOCOL_NAMES) ?? 0,
    other: Object.keys(entry).some((key) => !RULE_KEYS.has(key)) || (entry.src !== undefined && entry.src !== 'all'),
  }));
}

// ---------------------------------------------------------------------------------------------
// Planning: current + desired → batch lines and counts, without running anything.

export interface PlanOptions {
  /** Keys (`local/prefixlen`) of addresses on the interface this instance added (when the kernel/tools cannot tag them). */
  readonly ownedAddresses?: ReadonlySet<string>;
  /** Whether `ip address add … proto N` is supported (iproute2 ≥ 6.4): then new addresses are tagged. */
  readonly addressProtocol?: boolean;
  /** Whether the host has IPv6 (false: no IPv6 rule, and IPv6 addresses/routes are an error). Default true. */
  readonly ipv6?: boolean;
}

export interface HostPlan {
  /** Lines for `ip -4 -batch -` (link changes included). */
  readonly batch4: string[];
  /** Lines for `ip -6 -batch -`. */
  readonly batch6: string[];
  readonly changes: HostChanges;
  /** Address keys (`local/prefixlen`) the batches add and remove. */
  readonly addedAddresses: string[];
  readonly removedAddresses: string[];
  /** Prefixes in both routes and throws (the throw wins: local traffic stays local). */
  readonly conflicts: string[];
}

function cidrText(cidr: Cidr): string {
  return `${formatIp(maskInPlace(Uint8Array.from(cidr.address), cidr.prefix))}/${cidr.prefix}`;
}

/** An interface address keeps its host bits: 100.64.1.1/24 stays so. */
function addressKey(cidr: Cidr): string {
  return `${formatIp(cidr.address)}/${cidr.prefix}`;
}

const hex = (n: number): string => `0x${(n >>> 0).toString(16)}`;

function ruleSpec(config: HostConfig): string {
  return `not fwmark ${hex(config.fwmark)}/${hex(config.fwmarkMask)} table ${config.table} priority ${config.rulePriority} protocol ${ROUTE_PROTOCOL}`;
}

function ruleMatches(rule: RuleState, config: HostConfig): boolean {
  return (
    !rule.other &&
    rule.invert &&
    rule.priority === config.rulePriority &&
    rule.table === config.table &&
    rule.fwmark === config.fwmark >>> 0 &&
    rule.fwmask === config.fwmarkMask >>> 0
  );
}

/**
 * A rule this config's HostNetwork added: our protocol, looking up our table (so a second mesh
 * with its own table on the same host keeps its rule).
 */
function ownRule(rule: RuleState, config: HostConfig): boolean {
  return rule.protocol === ROUTE_PROTOCOL && rule.table === config.table;
}

function ruleDelete(rule: RuleState): string {
  const parts = ['rule del', `priority ${rule.priority}`];
  if (rule.invert) parts.push('not');
  if (rule.fwmark !== undefined) parts.push(`fwmark ${hex(rule.fwmark)}/${hex(rule.fwmask ?? 0xffffffff)}`);
  if (rule.table !== undefined) parts.push(`table ${rule.table}`);
  parts.push(`protocol ${rule.protocol}`);
  return parts.join(' ');
}

function routeDelete(route: RouteState, table: number): string {
  const type = RTN_NAMES[route.type];
  return `route del ${type === undefined ? '' : `${type} `}${route.dst} table ${table} proto ${ROUTE_PROTOCOL} metric ${route.metric}`;
}

interface Sections {
  link: string[];
  addressAdd: string[];
  routeAdd: string[];
  ruleAdd: string[];
  ruleDel: string[];
  routeDel: string[];
  addressDel: string[];
}

const newSections = (): Sections => ({ link: [], addressAdd: [], routeAdd: [], ruleAdd: [], ruleDel: [], routeDel: [], addressDel: [] });
/** Additions before removals, so a failure part-way leaves the old routing in place, not a hole. */
const flatten = (s: Sections): string[] => [...s.link, ...s.addressAdd, ...s.routeAdd, ...s.ruleAdd, ...s.ruleDel, ...s.routeDel, ...s.addressDel];

/** Checks a HostConfig for values ip would reject or misread; throws naming the field. */
export function validateHostConfig(config: HostConfig): void {
  if (!/^[^\s/:]{1,15}$/.test(config.ifname)) throw new Error(`HostConfig.ifname "${config.ifname}" is not an interface name`);
  const u32 = (name: string, value: number, min = 0): void => {
    if (!Number.isInteger(value) || value < min || value > 0xffffffff) throw new Error(`HostConfig.${name} ${value} must be an integer ${min}–4294967295`);
  };
  u32('table', config.table, 1);
  if ([253, 254, 255].includes(config.table)) throw new Error(`HostConfig.table ${config.table} is a kernel table (default/main/local)`);
  u32('rulePriority', config.rulePriority, 1);
  u32('fwmark', config.fwmark);
  u32('fwmarkMask', config.fwmarkMask);
  if (config.mtu !== undefined && (!Number.isInteger(config.mtu) || config.mtu < 68 || config.mtu > 65535)) {
    throw new Error(`HostConfig.mtu ${config.mtu} must be an integer 68–65535`);
  }
  for (const e of config.strict?.exempt ?? []) {
    if (e.port !== undefined && (!Number.isInteger(e.port) || e.port < 1 || e.port > 65535)) throw new Error(`strict exemption port ${e.port} must be 1–65535`);
  }
}

/** The batches that make the host match config, from the current state. */
export function planHost(current: CurrentHostState, config: HostConfig, options: PlanOptions = {}): HostPlan {
  const ipv6 = options.ipv6 ?? true;
  const owned = options.ownedAddresses ?? new Set<string>();
  const changes = emptyChanges();
  const sections = { 4: newSections(), 6: newSections() };
  const addedAddresses: string[] = [];
  const removedAddresses: string[] = [];
  const conflicts: string[] = [];
  const { ifname, table } = config;

  if (!ipv6 && [...config.addresses, ...config.routes, ...config.throws].some((c) => c.family === 6)) {
    throw new Error('IPv6 addresses or routes configured, but this host has no IPv6');
  }

  // Link: MTU and up, in the IPv4 batch (link commands are family-independent).
  const linkArgs: string[] = [];
  if (config.mtu !== undefined && current.link.mtu !== config.mtu) {
    linkArgs.push('mtu', String(config.mtu));
    changes.link++;
  }
  if (!current.link.up) {
    linkArgs.push('up');
    changes.link++;
  }
  if (linkArgs.length > 0) sections[4].link.push(`link set dev ${ifname} ${linkArgs.join(' ')}`);

  // Addresses: add the missing; remove the ones we own and no longer want.
  const wanted = new Map<string, Cidr>();
  for (const cidr of config.addresses) wanted.set(addressKey(cidr), cidr);
  const present = new Set(current.link.addresses.map((a) => `${a.local}/${a.prefixlen}`));
  const proto = options.addressProtocol ? ` proto ${ROUTE_PROTOCOL}` : '';
  for (const [key, cidr] of wanted) {
    if (present.has(key)) continue;
    sections[cidr.family].addressAdd.push(`address add ${key} dev ${ifname}${cidr.family === 6 ? ' nodad' : ''}${proto}`);
    addedAddresses.push(key);
    changes.addressesAdded++;
  }
  for (const address of current.link.addresses) {
    const key = `${address.local}/${address.prefixlen}`;
    if (wanted.has(key)) continue;
    if (address.protocol !== ROUTE_PROTOCOL && !owned.has(key)) continue;
    sections[address.family].addressDel.push(`address del ${key} dev ${ifname}`);
    removedAddresses.push(key);
    changes.addressesRemoved++;
  }

  for (const family of [4, 6] as const) {
    const s = sections[family];
    // Routes and throws: one desired entry per prefix; throws win over routes.
    const desired = new Map<string, 'route' | 'throw'>();
    for (const cidr of config.throws) if (cidr.family === family) desired.set(cidrText(cidr), 'throw');
    for (const cidr of config.routes) {
      if (cidr.family !== family) continue;
      const key = cidrText(cidr);
      if (desired.get(key) === 'throw') conflicts.push(key);
      else desired.set(key, 'route');
    }
    const metric = DEFAULT_METRIC[family];
    const satisfied = new Set<string>();
    for (const route of current.routes[family]) {
      const kind = desired.get(route.dst);
      if (kind === undefined || route.protocol !== ROUTE_PROTOCOL || route.metric !== metric) continue;
      const shapeOk =
        kind === 'throw'
          ? route.type === RTN_THROW
          : route.type === RTN_UNICAST && route.dev === ifname && route.gateway === undefined && !route.multipath;
      if (shapeOk) satisfied.add(route.dst);
    }
    for (const [dst, kind] of desired) {
      if (satisfied.has(dst)) continue;
      if (kind === 'throw') {
        s.routeAdd.push(`route replace throw ${dst} table ${table} proto ${ROUTE_PROTOCOL}`);
        changes.throwsAdded++;
      } else {
        s.routeAdd.push(`route replace ${dst} dev ${ifname} table ${table} proto ${ROUTE_PROTOCOL}`);
        changes.routesAdded++;
      }
    }
    // Ours and stale: a prefix no longer wanted, or one at a metric we do not use. Highest metric
    // first: a delete with metric 0 matches any metric.
    const stale = current.routes[family]
      .filter((r) => r.protocol === ROUTE_PROTOCOL && !(desired.has(r.dst) && r.metric === metric))
      .sort((a, b) => b.metric - a.metric);
    for (const route of stale) {
      s.routeDel.push(routeDelete(route, table));
      if (route.type === RTN_THROW) changes.throwsRemoved++;
      else changes.routesRemoved++;
    }

    // The rule: exactly one `not fwmark … lookup <table>` at the priority; others of ours for
    // this table (old priority, mark, duplicates) go after the new one is in.
    if (family === 6 && !ipv6) continue;
    const rules = current.rules[family];
    const matching = rules.filter((r) => ruleMatches(r, config));
    const keep = matching.find((r) => r.protocol === ROUTE_PROTOCOL) ?? matching[0];
    if (keep === undefined) {
      s.ruleAdd.push(`rule add ${ruleSpec(config)}`);
      changes.rulesAdded++;
    }
    for (const rule of rules) {
      if (rule === keep || !ownRule(rule, config)) continue;
      s.ruleDel.push(ruleDelete(rule));
      changes.rulesRemoved++;
    }
  }

  return { batch4: flatten(sections[4]), batch6: flatten(sections[6]), changes, addedAddresses, removedAddresses, conflicts };
}

/** The batches that take away everything HostNetwork added (rules, table routes, addresses). */
export function planRemoval(current: CurrentHostState, config: HostConfig, options: PlanOptions = {}): HostPlan {
  const owned = options.ownedAddresses ?? new Set<string>();
  const changes = emptyChanges();
  const sections = { 4: newSections(), 6: newSections() };
  const removedAddresses: string[] = [];
  for (const family of [4, 6] as const) {
    for (const rule of current.rules[family]) {
      if (!ownRule(rule, config)) continue;
      sections[family].ruleDel.push(ruleDelete(rule));
      changes.rulesRemoved++;
    }
    const ours = current.routes[family].filter((r) => r.protocol === ROUTE_PROTOCOL).sort((a, b) => b.metric - a.metric);
    for (const route of ours) {
      sections[family].routeDel.push(routeDelete(route, config.table));
      if (route.type === RTN_THROW) changes.throwsRemoved++;
      else changes.routesRemoved++;
    }
  }
  for (const address of current.link.addresses) {
    const key = `${address.local}/${address.prefixlen}`;
    if (address.protocol !== ROUTE_PROTOCOL && !owned.has(key)) continue;
    sections[address.family].addressDel.push(`address del ${key} dev ${config.ifname}`);
    removedAddresses.push(key);
    changes.addressesRemoved++;
  }
  return { batch4: flatten(sections[4]), batch6: flatten(sections[6]), changes, addedAddresses: [], removedAddresses, conflicts: [] };
}

// ---------------------------------------------------------------------------------------------
// Sysctls.

export const SRC_VALID_MARK = 'net/ipv4/conf/all/src_valid_mark';
export const rpFilterKey = (ifname: string): string => `net/ipv4/conf/${ifname}/rp_filter`;

/**
 * src_valid_mark=1: the fwmark takes part in the reverse-path lookup (as wg-quick sets it);
 * rp_filter=2 (loose) on the tunnel interface: encrypted host-to-host replies arrive on the
 * tunnel from an address the main table routes via the underlay, which strict mode drops.
 * (The effective value is max(all, interface), so 2 here is loose unless all is 2 already.)
 */
export function desiredSysctls(ifname: string): Array<[string, string]> {
  return [
    [SRC_VALID_MARK, '1'],
    [rpFilterKey(ifname), '2'],
  ];
}

// ---------------------------------------------------------------------------------------------
// --strict: the nftables ruleset.

function exemptionMatches(e: StrictExemption, direction: 'to' | 'from'): string {
  const addr = direction === 'to' ? 'daddr' : 'saddr';
  const port = direction === 'to' ? 'dport' : 'sport';
  const parts: string[] = [];
  if (e.address.prefix === 0) parts.push(`meta nfproto ${e.address.family === 4 ? 'ipv4' : 'ipv6'}`);
  else parts.push(`${e.address.family === 4 ? 'ip' : 'ip6'} ${addr} ${cidrText(e.address)}`);
  if (e.protocol !== undefined && e.port !== undefined) parts.push(`${e.protocol} ${port} ${e.port}`);
  else if (e.protocol !== undefined) parts.push(`meta l4proto ${e.protocol}`);
  else if (e.port !== undefined) parts.push(`meta l4proto { tcp, udp } th ${port} ${e.port}`);
  return parts.join(' ');
}

/**
 * The `inet wgts` table for --strict (without the digest comment): drop traffic to and from the
 * unencrypted prefixes in the input, forward and output hooks — but first accept loopback, the
 * tunnel interface (plaintext that is encrypted/was decrypted), the data plane's own encrypted
 * UDP (it carries the fwmark), and each exemption. An exemption names a service (address,
 * protocol, port): packets to it and packets from it (its replies) pass. Our accepts only end
 * evaluation in this table; other tables still see the packet.
 */
export function buildStrictRuleset(config: HostConfig): string {
  const strict = config.strict;
  if (!strict) throw new Error('buildStrictRuleset: no strict configuration');
  const q = JSON.stringify(config.ifname);
  const drop4 = [...new Set(strict.drop.filter((c) => c.family === 4).map(cidrText))];
  const drop6 = [...new Set(strict.drop.filter((c) => c.family === 6).map(cidrText))];
  const exempt: string[] = [];
  for (const e of strict.exempt) exempt.push(`${exemptionMatches(e, 'to')} accept`, `${exemptionMatches(e, 'from')} accept`);
  const dropRules = (dirs: ReadonlyArray<'saddr' | 'daddr'>): string[] => [
    ...(drop4.length > 0 ? dirs.map((d) => `ip ${d} @drop4 drop`) : []),
    ...(drop6.length > 0 ? dirs.map((d) => `ip6 ${d} @drop6 drop`) : []),
  ];
  const set = (name: string, type: string, elements: string[]): string[] =>
    elements.length === 0 ? [] : [`\tset ${name} {`, `\t\ttype ${type}`, '\t\tflags interval', '\t\tauto-merge', `\t\telements = { ${elements.join(', ')} }`, '\t}'];
  const chain = (name: string, hook: string, rules: string[]): string[] => [
    `\tchain ${name} {`,
    `\t\ttype filter hook ${hook} priority filter; policy accept;`,
    ...rules.map((r) => `\t\t${r}`),
    '\t}',
  ];
  return [
    ...set('drop4', 'ipv4_addr', drop4),
    ...set('drop6', 'ipv6_addr', drop6),
    ...chain('input', 'input', ['iifname "lo" accept', `iifname ${q} accept`, ...exempt, ...dropRules(['saddr'])]),
    ...chain('forward', 'forward', [`iifname ${q} accept`, `oifname ${q} accept`, ...exempt, ...dropRules(['saddr', 'daddr'])]),
    ...chain('output', 'output', [
      'oifname "lo" accept',
      `oifname ${q} accept`,
      `meta mark & ${hex(config.fwmarkMask)} == ${hex(config.fwmark & config.fwmarkMask)} accept`,
      ...exempt,
      ...dropRules(['daddr']),
    ]),
  ].join('\n');
}

/** Short digest of a ruleset, kept in the table's comment to recognise it on the next apply. */
export function rulesetDigest(body: string): string {
  return createHash('sha256').update(body).digest('hex').slice(0, 16);
}

/** The whole `nft -f -` script: create-then-delete (so the delete never fails) and define, in one transaction. */
export function strictScript(config: HostConfig): { script: string; digest: string } {
  const body = buildStrictRuleset(config);
  const digest = rulesetDigest(body);
  const script = [`table inet ${NFT_TABLE}`, `delete table inet ${NFT_TABLE}`, `table inet ${NFT_TABLE} {`, `\tcomment "wgts:${digest}"`, body, '}', ''].join('\n');
  return { script, digest };
}

export function digestFromListing(listing: string): string | undefined {
  return /comment "wgts:([0-9a-f]+)"/.exec(listing)?.[1];
}

// ---------------------------------------------------------------------------------------------
// The I/O side.

export interface HostNetworkOptions {
  /** Run every command in this network namespace (`ip -n`, `ip netns exec`), for tests. */
  readonly netns?: string;
  readonly logger?: Logger;
}

export class HostNetwork {
  private readonly runner: IpRunner;
  private readonly logger: Logger;
  /** Addresses this instance added, per interface (`ifname|local/len`), for kernels/tools without address protocols. */
  private readonly ownedAddresses = new Set<string>();
  private addressProtocol: boolean | undefined;
  /** What `nft list table` printed after our last replace, to notice a table changed behind our back. */
  private lastNftListing: string | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(options: HostNetworkOptions = {}) {
    this.runner = new IpRunner(options.netns === undefined ? {} : { netns: options.netns });
    this.logger = options.logger ?? silentLogger;
  }

  /** Makes the host match config exactly; returns what changed (all zero when it already did). */
  apply(config: HostConfig): Promise<HostChanges> {
    return this.serialize(() => this.doApply(config));
  }

  /** Takes away everything apply added: rules, table routes, addresses, the nft table (sysctls and MTU stay). */
  remove(config: HostConfig): Promise<HostChanges> {
    return this.serialize(() => this.doRemove(config));
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => {});
    return next;
  }

  /** Reads the interface, the table's routes and the rules with `ip -N -j`. */
  async readState(config: HostConfig, options: { allowMissingLink?: boolean } = {}): Promise<{ state: CurrentHostState; ipv6: boolean }> {
    const [linkJson, routes4, rules4, v6] = await Promise.all([
      this.runner.ipJson(['addr', 'show', 'dev', config.ifname]).catch((err: unknown) => {
        // remove() after the data plane deleted the interface: its addresses and routes went with it.
        if (options.allowMissingLink && err instanceof HostCommandError && /does not exist/.test(err.stderr)) {
          return [{ ifname: config.ifname, flags: [], mtu: 0, addr_info: [] }];
        }
        throw err;
      }),
      this.tableRoutes(4, config.table),
      this.runner.ipJson(['-4', 'rule', 'show']),
      Promise.all([this.tableRoutes(6, config.table), this.runner.ipJson(['-6', 'rule', 'show'])]).catch((err: unknown) => {
        if (err instanceof HostCommandError && /Address family not supported/i.test(err.stderr)) return undefined;
        throw err;
      }),
    ]);
    const state: CurrentHostState = {
      link: parseLink(linkJson, config.ifname),
      routes: { 4: parseRoutes(routes4, 4), 6: v6 ? parseRoutes(v6[0], 6) : [] },
      rules: { 4: parseRules(rules4, 4), 6: v6 ? parseRules(v6[1], 6) : [] },
    };
    return { state, ipv6: v6 !== undefined };
  }

  /** `ip -N -j route show table T`; a table that does not exist yet (strict dumps say so) is empty. */
  private async tableRoutes(family: 4 | 6, table: number): Promise<unknown[]> {
    try {
      return await this.runner.ipJson([`-${family}`, 'route', 'show', 'table', String(table)]);
    } catch (err) {
      if (err instanceof HostCommandError && /FIB table does not exist/i.test(err.stderr)) return [];
      throw err;
    }
  }

  private async supportsAddressProtocol(): Promise<boolean> {
    if (this.addressProtocol === undefined) {
      const help = await run('ip', ['address', 'help']);
      this.addressProtocol = /\bproto\b/.test(help.stderr + help.stdout);
    }
    return this.addressProtocol;
  }

  private ownedFor(ifname: string): Set<string> {
    const prefix = `${ifname}|`;
    return new Set([...this.ownedAddresses].filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length)));
  }

  private async doApply(config: HostConfig): Promise<HostChanges> {
    validateHostConfig(config);
    const [{ state, ipv6 }, addressProtocol] = await Promise.all([this.readState(config), this.supportsAddressProtocol()]);
    const plan = planHost(state, config, { ownedAddresses: this.ownedFor(config.ifname), addressProtocol, ipv6 });
    if (plan.conflicts.length > 0) this.logger.warn({ prefixes: plan.conflicts }, 'prefixes both routed into the tunnel and thrown: keeping the throw routes');
    await this.runBatches(plan, config.ifname);

    const changes = plan.changes;
    changes.sysctls = await this.applySysctls(config.ifname);
    changes.firewall = await this.applyFirewall(config);
    if (totalChanges(changes) > 0) this.logger.info({ ifname: config.ifname, table: config.table, changes }, 'host network updated');
    return changes;
  }

  private async doRemove(config: HostConfig): Promise<HostChanges> {
    validateHostConfig(config);
    const { state } = await this.readState(config, { allowMissingLink: true });
    const plan = planRemoval(state, config, { ownedAddresses: this.ownedFor(config.ifname) });
    await this.runBatches(plan, config.ifname);
    const changes = plan.changes;
    changes.firewall = (await this.deleteFirewall()) ? 1 : 0;
    this.logger.info({ ifname: config.ifname, table: config.table, changes }, 'host network removed');
    return changes;
  }

  private async runBatches(plan: HostPlan, ifname: string): Promise<void> {
    for (const [family, lines] of [[4, plan.batch4], [6, plan.batch6]] as const) {
      if (lines.length === 0) continue;
      this.logger.debug({ family, lines }, 'ip batch');
      try {
        await this.runner.ipBatch(family, lines);
      } finally {
        // Keep ownership in step with what the kernel now has, even after a partial batch.
        await this.reconcileOwnership(plan, ifname, family).catch(() => {});
      }
    }
  }

  /** Records added addresses as ours and forgets removed ones, by looking at what is really there. */
  private async reconcileOwnership(plan: HostPlan, ifname: string, family: 4 | 6): Promise<void> {
    const ofFamily = (key: string): boolean => (key.includes(':') ? 6 : 4) === family;
    const added = plan.addedAddresses.filter(ofFamily);
    const removed = plan.removedAddresses.filter(ofFamily);
    if (added.length === 0 && removed.length === 0) return;
    const link = parseLink(await this.runner.ipJson(['addr', 'show', 'dev', ifname]), ifname);
    const present = new Set(link.addresses.map((a) => `${a.local}/${a.prefixlen}`));
    for (const key of added) if (present.has(key)) this.ownedAddresses.add(`${ifname}|${key}`);
    for (const key of removed) if (!present.has(key)) this.ownedAddresses.delete(`${ifname}|${key}`);
  }

  private async applySysctls(ifname: string): Promise<number> {
    const wanted = desiredSysctls(ifname);
    const current = await this.runner.readSysctls(wanted.map(([key]) => key));
    const writes = wanted.filter(([, value], i) => current[i] !== value);
    await this.runner.writeSysctls(writes);
    return writes.length;
  }

  /** `nft list table inet wgts`, or undefined when there is no such table (or no nft at all). */
  private async listFirewall(): Promise<string | undefined> {
    let result;
    try {
      result = await this.runner.nft(['list', 'table', 'inet', NFT_TABLE]);
    } catch (err) {
      if (/ENOENT/.test((err as Error).message)) return undefined; // nft not installed: nothing of ours
      throw err;
    }
    if (result.code === 0) return result.stdout;
    if (/No such file or directory/.test(result.stderr)) return undefined;
    throw new HostCommandError(`nft list table inet ${NFT_TABLE}`, result);
  }

  private async applyFirewall(config: HostConfig): Promise<number> {
    if (!config.strict) return (await this.deleteFirewall()) ? 1 : 0;
    const { script, digest } = strictScript(config);
    const listing = await this.listFirewall();
    if (listing !== undefined && digestFromListing(listing) === digest && (this.lastNftListing === undefined || listing === this.lastNftListing)) {
      this.lastNftListing = listing;
      return 0;
    }
    this.logger.debug({ script }, 'nft -f -');
    await this.runner.nftOrThrow(['-f', '-'], script);
    this.lastNftListing = await this.listFirewall();
    return 1;
  }

  private async deleteFirewall(): Promise<boolean> {
    this.lastNftListing = undefined;
    if ((await this.listFirewall()) === undefined) return false;
    await this.runner.nftOrThrow(['delete', 'table', 'inet', NFT_TABLE]);
    return true;
  }
}
