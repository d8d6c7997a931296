/**
 * Target "nodes": nodeFacts and desiredFromNodes (src/mesh/nodes.ts) over lists of
 * V1Node-shaped objects, as the Kubernetes informer hands them over: names, the three wgts
 * annotations, podCIDR/podCIDRs and status addresses, each valid, near-valid, mutated or
 * missing (metadata, spec or status absent; empty strings; lists empty).
 *
 * Properties: neither function throws; each annotation or podCIDR that was present but not
 * taken is reported in problems (and each interface-address item is either taken or reported);
 * every prefix is canonical (4 or 16 bytes, prefix in range, host bits zero); peers have a
 * non-zero 32-byte key, distinct keys, are never the local node, are sorted by name, and have
 * an endpoint that parses back (port 1–65535) or none; every other node ends up in exactly one
 * of peers, unencrypted, or a duplicate-key group; the same input gives the same output
 * (checked on every 16th input).
 */
import type { V1Node, V1NodeAddress } from '@kubernetes/client-node';
import type { Cidr } from '../../src/device/config.ts';
import { desiredFromNodes, nodeFacts, type MeshOptions } from '../../src/mesh/nodes.ts';
import { ANNOTATIONS } from '../../src/mesh/types.ts';
import { formatCidr, maskInPlace, parseEndpoint, parseIp } from '../../src/util/ip.ts';
import { equalBytes, Mutator, type Rng } from '../helpers/mutate.ts';
import { check, type FuzzTarget, weighted } from './target.ts';

export interface NodesInput {
  readonly nodes: readonly V1Node[];
  readonly self: string;
  readonly options: MeshOptions;
}

const NAMES = ['n1', 'n2', 'n3', 'n4', 'self', 'node-a.example', ''];
const KEYS = [1, 2, 3, 4, 5].map((n) => Buffer.alloc(32, n).toString('base64'));
const ZERO_KEY = Buffer.alloc(32).toString('base64');

/** Strings at the edges of what each field's parser accepts. */
const TRICKY: readonly string[] = [
  '', ' ', '\t', ',', ',,', '0', '0.0.0.0', '255.255.255.255', '::', '::1', '1.2.3', '1.2.3.4.5', '01.2.3.4', '1.2.3.04', '256.1.1.1',
  '::ffff:1.2.3.4', '::ffff:1.2.3.400', 'fe80::1%eth0', 'fe80::%', '1.2.3.4%eth0', '[::1]', '[::1]:51820', '1.2.3.4:51820', '1.2.3.4:0',
  '1.2.3.4:65536', '1.2.3.4:99999', '[fe80::1%eth0]:51820', ':51820', '1.2.3.4:', 'host.example:51820', '1.2.3.4/33', '::/129', '1.2.3.4/-1',
  '10.0.0.0/8', 'fd00::/8', '10.0.0.1/8', '1:2:3:4:5:6:7:8:9', '1::2::3', 'g::1', '::1:2:3:4:5:6:7:8', '１.２.３.４', '1.2.3.4\n', '\u0000',
  `${KEYS[0]} `, ` ${KEYS[0]}`, KEYS[0]!.slice(0, 43), `${KEYS[0]}=`, KEYS[0]!.replace('=', 'A'), KEYS[0]!.replace(/A/g, '-'), ZERO_KEY,
  'x'.repeat(300),
];

function ipv4(rng: Rng): string {
  return `${rng.pick([10, 100, 198, 172])}.${rng.below(256)}.${rng.below(256)}.${rng.below(256)}`;
}

function ipv6(rng: Rng): string {
  return rng.pick([`fd00::${rng.below(0xffff).toString(16)}`, `fd00:${rng.below(0xffff).toString(16)}::1`, '::1', 'fe80::1', `2001:db8::${rng.below(256)}`]);
}

export class NodesTarget implements FuzzTarget<NodesInput> {
  readonly name = 'nodes';
  readonly description = 'nodeFacts/desiredFromNodes over V1Node-shaped objects with mutated annotations, podCIDRs and addresses: never throw, problems reported, output well-formed';
  private mutator: Mutator | undefined;
  private mutatorRng: Rng | undefined;
  private runs = 0;
  private readonly tally = { nodes: 0, peers: 0, unencrypted: 0, duplicates: 0, problems: 0 };

  setup(): void {}

  seeds(): readonly NodesInput[] {
    const node = (name: string, ip: string, pods: string[], annotations: Record<string, string>): V1Node => ({
      metadata: { name, annotations },
      spec: { podCIDRs: pods, podCIDR: pods[0] },
      status: { addresses: [{ type: 'InternalIP', address: ip }, { type: 'Hostname', address: name }] },
    });
    const options = { hostEncryption: false, defaultPort: 51820 };
    return [
      {
        self: 'n1',
        options,
        nodes: [
          node('n1', '198.18.1.1', ['100.64.1.0/24', 'fd00:1::/64'], { [ANNOTATIONS.publicKey]: KEYS[0]! }),
          node('n2', '198.18.1.2', ['100.64.2.0/24'], { [ANNOTATIONS.publicKey]: KEYS[1]!, [ANNOTATIONS.endpoint]: '198.18.9.2:51999', [ANNOTATIONS.interfaceAddress]: '100.64.2.0' }),
          node('n3', '198.18.1.3', ['100.64.3.0/24'], {}),
          node('n4', '198.18.1.4', ['100.64.4.0/24'], { [ANNOTATIONS.publicKey]: KEYS[3]!, [ANNOTATIONS.endpoint]: '[fd00::4]:51820', [ANNOTATIONS.interfaceAddress]: '100.64.4.0, fd00:4::' }),
        ],
      },
      {
        self: 'n1',
        options: { hostEncryption: true, defaultPort: 51820 },
        nodes: [
          node('n1', '198.18.1.1', ['100.64.1.0/24'], { [ANNOTATIONS.publicKey]: KEYS[0]! }),
          node('n4', 'fd00::1:4', ['fd00:4::/64'], { [ANNOTATIONS.publicKey]: KEYS[3]! }),
          node('n5', '198.18.1.5', ['100.64.5.0/24'], { [ANNOTATIONS.publicKey]: KEYS[3]! }),
        ],
      },
    ];
  }

  // ---- generation ----------------------------------------------------------------------------

  private text(rng: Rng, valid: () => string): string {
    return weighted<() => string>(rng, [
      [6, valid],
      [2, () => this.mutateText(rng, valid())],
      [1, () => rng.pick(TRICKY)],
      [0.3, () => Buffer.from(rng.bytes(rng.below(48))).toString('latin1')],
    ])();
  }

  private mutateText(rng: Rng, text: string): string {
    if (rng.chance(0.5)) {
      if (this.mutatorRng !== rng) {
        this.mutatorRng = rng;
        this.mutator = new Mutator(rng, { weights: { bitflip: 2, byte: 3, truncate: 2, extend: 1, length: 1 }, lengths: [0, 1, 7, 15, 18, 39, 43, 44, 45], maxExtend: 8 });
      }
      return Buffer.from(this.mutator!.mutate(new TextEncoder().encode(text)).bytes).toString('utf8');
    }
    const at = rng.below(text.length + 1);
    return weighted<() => string>(rng, [
      [3, () => `${text.slice(0, at)}${rng.pick([':', '/', '%', '.', ' ', ',', '[', ']', '=', '0', '9', 'f', '+', '-', '\u00e9'])}${text.slice(at)}`],
      [2, () => `${text.slice(0, at)}${text.slice(at + 1)}`],
      [1, () => `${text.slice(0, at)}${text.slice(at, at + rng.range(1, 6))}${text.slice(at)}`],
      [1, () => text.toUpperCase()],
    ])();
  }

  private node(rng: Rng, names: readonly string[]): V1Node {
    const annotations: Record<string, string> = {};
    if (rng.chance(0.8)) annotations[ANNOTATIONS.publicKey] = this.text(rng, () => (rng.chance(0.9) ? rng.pick(KEYS) : ZERO_KEY));
    if (rng.chance(0.4)) annotations[ANNOTATIONS.endpoint] = this.text(rng, () => (rng.chance(0.7) ? `${ipv4(rng)}:${rng.range(1, 65535)}` : `[${ipv6(rng)}]:${rng.range(1, 65535)}`));
    if (rng.chance(0.4)) {
      annotations[ANNOTATIONS.interfaceAddress] = this.text(rng, () => Array.from({ length: rng.range(1, 3) }, () => (rng.chance(0.6) ? ipv4(rng) : ipv6(rng))).join(rng.pick([',', ', ', ' , '])));
    }
    if (rng.chance(0.1)) annotations['wgts.io/other'] = 'x';
    const cidr = (): string => (rng.chance(0.7) ? `100.64.${rng.below(256)}.0/${rng.pick([24, 16, 32, 0])}` : `fd00:${rng.below(0xffff).toString(16)}::/${rng.pick([64, 48, 128, 0])}`);
    const pods = Array.from({ length: weighted(rng, [[2, 0], [6, 1], [2, 2], [1, 3]]) }, () => this.text(rng, cidr));
    const spec = weighted(rng, [
      [5, { podCIDRs: pods, podCIDR: pods[0] }],
      [2, { podCIDRs: pods }],
      [1, { podCIDR: pods[0] }],
      [1, {}],
      [1, undefined],
    ]);
    const types = ['InternalIP', 'ExternalIP', 'Hostname', 'InternalDNS', 'internalip'];
    const addresses: V1NodeAddress[] = Array.from({ length: weighted(rng, [[1, 0], [5, 1], [3, 2], [1, 4]]) }, () => ({
      type: rng.chance(0.7) ? 'InternalIP' : rng.pick(types),
      address: this.text(rng, () => (rng.chance(0.8) ? ipv4(rng) : ipv6(rng))),
    }));
    const status = weighted(rng, [[8, { addresses }], [1, {}], [1, undefined]]);
    const name = rng.chance(0.9) ? rng.pick(names) : this.text(rng, () => rng.pick(names));
    const metadata = weighted(rng, [[10, { name, annotations }], [1, { name }], [1, { annotations }], [0.5, undefined]]);
    return { metadata, spec, status };
  }

  generate(rng: Rng): NodesInput {
    const names = NAMES.slice(0, rng.range(2, NAMES.length));
    const n = weighted(rng, [[1, 0], [3, 1], [5, rng.range(2, 5)], [1, rng.range(6, 20)]]);
    const nodes = Array.from({ length: n }, () => this.node(rng, names));
    if (rng.chance(0.95)) uniqueNames(nodes);
    return { nodes, self: rng.chance(0.9) ? rng.pick(names) : 'absent', options: { hostEncryption: rng.chance(0.4), defaultPort: rng.chance(0.9) ? 51820 : rng.pick([1, 65535]) } };
  }

  mutate(rng: Rng, input: NodesInput): NodesInput {
    const nodes = input.nodes.map((n) => structuredClone(n));
    const op = weighted(rng, [[6, 'field'], [1, 'drop'], [1, 'add'], [1, 'duplicate'], [1, 'self'], [1, 'options']] as const);
    const at = rng.below(Math.max(1, nodes.length));
    const node = nodes[at];
    switch (op) {
      case 'field': {
        if (!node) break;
        const meta = (node.metadata ??= {});
        const annotations = (meta.annotations ??= {});
        const which = rng.below(6);
        if (which === 0) annotations[ANNOTATIONS.publicKey] = this.mutateText(rng, annotations[ANNOTATIONS.publicKey] ?? rng.pick(KEYS));
        else if (which === 1) annotations[ANNOTATIONS.endpoint] = this.mutateText(rng, annotations[ANNOTATIONS.endpoint] ?? '198.18.0.1:51820');
        else if (which === 2) annotations[ANNOTATIONS.interfaceAddress] = this.mutateText(rng, annotations[ANNOTATIONS.interfaceAddress] ?? '100.64.0.1');
        else if (which === 3) {
          const spec = (node.spec ??= {});
          const pods = spec.podCIDRs ?? (spec.podCIDR ? [spec.podCIDR] : ['100.64.0.0/24']);
          const i = rng.below(pods.length);
          pods[i] = this.mutateText(rng, pods[i] ?? '100.64.0.0/24');
          spec.podCIDRs = pods;
          if (rng.chance(0.5)) spec.podCIDR = pods[0];
        } else if (which === 4) {
          const status = (node.status ??= {});
          const addrs = (status.addresses ??= [{ type: 'InternalIP', address: '198.18.0.1' }]);
          const a = addrs[rng.below(addrs.length)];
          if (a) a.address = this.mutateText(rng, a.address);
        } else {
          meta.name = this.mutateText(rng, meta.name ?? 'n1');
        }
        break;
      }
      case 'drop':
        nodes.splice(at, 1);
        break;
      case 'add':
        nodes.push(this.node(rng, NAMES));
        break;
      case 'duplicate':
        if (node) nodes.push(structuredClone(node));
        break;
      case 'self':
        return { ...input, nodes, self: rng.pick([...NAMES, 'absent']) };
      case 'options':
        return { ...input, nodes, options: { hostEncryption: !input.options.hostEncryption, defaultPort: input.options.defaultPort } };
    }
    if (rng.chance(0.95)) uniqueNames(nodes);
    return { ...input, nodes };
  }

  // ---- properties ----------------------------------------------------------------------------

  run(input: NodesInput): void {
    for (const node of input.nodes) {
      const f = nodeFacts(node);
      const annotations = node.metadata?.annotations ?? {};
      const mentions = (name: string) => f.problems.filter((p) => p.includes(name)).length;
      if (annotations[ANNOTATIONS.publicKey] !== undefined && !f.publicKey) check(mentions(ANNOTATIONS.publicKey) > 0, 'a public-key annotation was dropped without a problem');
      if (annotations[ANNOTATIONS.endpoint] !== undefined && !f.endpoint) check(mentions(ANNOTATIONS.endpoint) > 0, 'an endpoint annotation was dropped without a problem');
      const items = (annotations[ANNOTATIONS.interfaceAddress] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
      check(f.interfaceAddresses.length + mentions(ANNOTATIONS.interfaceAddress) === items.length, () => `${items.length} interface-address items, ${f.interfaceAddresses.length} taken, ${mentions(ANNOTATIONS.interfaceAddress)} reported`);
      const podTexts = node.spec?.podCIDRs?.length ? node.spec.podCIDRs : node.spec?.podCIDR ? [node.spec.podCIDR] : [];
      check(f.podCidrs.length + mentions('podCIDR') === podTexts.length, () => `${podTexts.length} podCIDRs, ${f.podCidrs.length} taken, ${mentions('podCIDR')} reported`);
      const internal = (node.status?.addresses ?? []).filter((a) => a.type === 'InternalIP').length;
      check(f.internalIps.length + mentions('InternalIP') === internal, () => `${internal} InternalIPs, ${f.internalIps.length} taken, ${mentions('InternalIP')} reported`);
      for (const ip of f.internalIps) checkEndpoint({ host: ip, port: 1 });
      for (const c of [...f.podCidrs, ...f.interfaceAddresses]) checkCidr(c);
      if (f.publicKey) check(f.publicKey.length === 32 && !f.publicKey.every((b) => b === 0), 'bad public key taken');
      if (f.endpoint) checkEndpoint(f.endpoint);
      this.tally.problems += f.problems.length;
    }
    const d = desiredFromNodes(input.nodes, input.self, input.options, true);
    if ((++this.runs & 15) === 0) {
      const again = desiredFromNodes(input.nodes, input.self, input.options, true);
      check(render(d) === render(again), 'desiredFromNodes is not deterministic');
    }
    const keys = new Set<string>();
    let previous = '';
    for (const p of d.peers) {
      check(p.publicKey.length === 32 && !p.publicKey.every((b) => b === 0), 'a peer with a bad key');
      const hex = Buffer.from(p.publicKey).toString('hex');
      check(!keys.has(hex), 'two peers share a key');
      keys.add(hex);
      check(p.name !== input.self, 'the local node is a peer');
      check(previous.localeCompare(p.name) <= 0, 'peers are not sorted by name');
      previous = p.name;
      if (p.endpoint) checkEndpoint(p.endpoint);
      for (const c of p.allowedIps) checkCidr(c);
    }
    for (const u of d.unencrypted) for (const c of u.prefixes) checkCidr(c);
    for (const c of d.blackholed) checkCidr(c);
    // Node names are unique in a cluster (the informer's cache is keyed by them); inputs that
    // break that still must not throw, but only unique ones can be counted.
    const names = input.nodes.map((n) => n.metadata?.name ?? '');
    if (new Set(names).size === names.length) {
      const others = names.filter((name) => name !== input.self).length;
      const duplicated = d.duplicates.flat().filter((name) => name !== input.self).length;
      check(d.peers.length + d.unencrypted.length + duplicated === others, () => `${others} other nodes, but ${d.peers.length} peers + ${d.unencrypted.length} unencrypted + ${duplicated} duplicates`);
    }
    this.tally.nodes += input.nodes.length;
    this.tally.peers += d.peers.length;
    this.tally.unencrypted += d.unencrypted.length;
    this.tally.duplicates += d.duplicates.length;
  }

  stats(): Record<string, number> {
    return { ...this.tally };
  }

  encode(input: NodesInput): Uint8Array {
    return new TextEncoder().encode(JSON.stringify(input));
  }

  decode(bytes: Uint8Array): NodesInput {
    return JSON.parse(new TextDecoder().decode(bytes)) as NodesInput;
  }

  describe(input: NodesInput): string {
    const text = JSON.stringify(input);
    return text.length > 1500 ? `${text.slice(0, 1500)}…` : text;
  }

  teardown(): void {}
}

/** Renames nodes whose name is taken (as a cluster would never hold them). */
function uniqueNames(nodes: V1Node[]): void {
  const seen = new Set<string>();
  for (const node of nodes) {
    let name = node.metadata?.name ?? '';
    if (!seen.has(name)) {
      seen.add(name);
      continue;
    }
    for (let i = 2; seen.has(name); i++) name = `${node.metadata?.name ?? ''}-${i}`;
    seen.add(name);
    node.metadata = { ...node.metadata, name };
  }
}

function checkCidr(c: Cidr): void {
  const max = c.family === 4 ? 32 : 128;
  check((c.family === 4 || c.family === 6) && c.address.length === max / 8, () => `prefix of family ${c.family} with ${c.address.length} address bytes`);
  check(Number.isInteger(c.prefix) && c.prefix >= 0 && c.prefix <= max, () => `prefix length ${c.prefix}`);
  check(equalBytes(maskInPlace(Uint8Array.from(c.address), c.prefix), c.address), () => `host bits set in ${formatCidr(c)}`);
}

function checkEndpoint(e: { host: string; port: number }): void {
  check(Number.isInteger(e.port) && e.port >= 1 && e.port <= 65535, () => `endpoint port ${e.port}`);
  let ok = true;
  try {
    parseIp(e.host);
    parseEndpoint(e.host.includes(':') ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`);
  } catch {
    ok = false;
  }
  check(ok, () => `endpoint host ${JSON.stringify(e.host)} is not an IP address`);
}

function render(d: ReturnType<typeof desiredFromNodes>): string {
  return JSON.stringify(d, (_k, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v));
}
