/**
 * The Kubernetes deployment (deploy/*.yaml) and the image (Dockerfile, .dockerignore), checked by
 * parsing them: no cluster and no Docker engine needed. Every check is a function returning a
 * list of problems; the real files must give none, and deliberately broken copies (written to a
 * temp dir and loaded the same way) must give the problem they were broken for.
 */
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, posix, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const DEPLOY = join(ROOT, 'deploy');
const PACKAGE = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string; engines?: { node?: string } };

const NAMESPACE = 'wgts-system';
const NAME = 'wgts';
const IMAGE = `ghcr.io/wgts/wgts:${PACKAGE.version}`;

// ---------------------------------------------------------------------------------------------
// What the issue ("Kubernetes mesh") defines, kept here on purpose: the manifests are checked
// against this list, and the list against src/ where the commands exist.

/** `wgts [-f|--foreground] [--persist] [--workers N] <ifname>`: flag → takes a value. */
const DAEMON_FLAGS: ReadonlyMap<string, boolean> = new Map([
  ['-f', false],
  ['--foreground', false],
  ['--persist', false],
  ['--workers', true],
]);
/** `wgts mesh …`: flag → takes a value. */
const MESH_FLAGS: ReadonlyMap<string, boolean> = new Map([
  ['--kubeconfig', true],
  ['--node-name', true],
  ['--interface', true],
  ['--listen-port', true],
  ['--host-encryption', false],
  ['--strict', false],
  ['--rotate-keys', true],
  ['--metrics-listen', true],
  ['--log-level', true],
]);
const MESH_DEFAULTS = { interface: 'wgts0', listenPort: 51820, metricsPort: 9586 };

/** (apiGroup, resource) → verbs: exactly what the agent needs, nothing broader. */
const EXPECTED_GRANTS: ReadonlyMap<string, readonly string[]> = new Map([
  ['core/nodes', ['get', 'list', 'watch', 'patch']],
  ['core/endpoints', ['get']],
  ['core/events', ['create', 'patch']],
  ['events.k8s.io/events', ['create', 'patch']],
]);

/** hostPath → the type it must be declared with. */
const HOST_PATHS: ReadonlyMap<string, string> = new Map([
  ['/var/lib/wgts', 'DirectoryOrCreate'],
  ['/var/run/wireguard', 'DirectoryOrCreate'],
  ['/dev/net/tun', 'CharDevice'],
]);
/** hostPaths allowed besides those (the host's net sysctls, for an unprivileged agent). */
const OPTIONAL_HOST_PATHS: ReadonlyMap<string, string> = new Map([['/proc/sys/net', 'Directory']]);

const API_VERSIONS: ReadonlyMap<string, string> = new Map([
  ['Namespace', 'v1'],
  ['ResourceQuota', 'v1'],
  ['ServiceAccount', 'v1'],
  ['ClusterRole', 'rbac.authorization.k8s.io/v1'],
  ['ClusterRoleBinding', 'rbac.authorization.k8s.io/v1'],
  ['DaemonSet', 'apps/v1'],
]);
const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding']);
const REQUIRED_KINDS = ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'DaemonSet'];

// ---------------------------------------------------------------------------------------------
// Loose shapes of what we read; a broken manifest may hold anything, so reads go through arr/obj.

type Json = Record<string, unknown>;
interface Manifest {
  readonly file: string;
  readonly object: Json;
}
interface Loaded {
  readonly manifests: Manifest[];
  /** file name → text, for the checks that read comments too. */
  readonly texts: Map<string, string>;
  readonly problems: string[];
}

function obj(value: unknown): Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Json) : {};
}
function arr(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}
function str(value: unknown): string | undefined {
  return typeof value === 'string' ? value : typeof value === 'number' ? String(value) : undefined;
}
function strs(value: unknown): string[] {
  return arr(value).map((v) => str(v) ?? JSON.stringify(v));
}
function meta(o: Json): { name?: string; namespace?: string; labels: Json; annotations: Json } {
  const m = obj(o.metadata);
  const name = str(m.name);
  const namespace = str(m.namespace);
  return { ...(name !== undefined ? { name } : {}), ...(namespace !== undefined ? { namespace } : {}), labels: obj(m.labels), annotations: obj(m.annotations) };
}
function ofKind(ms: readonly Manifest[], kind: string): Json[] {
  return ms.filter((m) => m.object.kind === kind).map((m) => m.object);
}

/** Every *.yaml/*.yml in dir, every document (multi-doc), as kubectl apply -f dir reads them. */
function loadManifests(dir: string): Loaded {
  const manifests: Manifest[] = [];
  const texts = new Map<string, string>();
  const problems: string[] = [];
  const files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
  if (files.length === 0) problems.push(`${dir}: no *.yaml files`);
  for (const file of files) {
    const text = readFileSync(join(dir, file), 'utf8');
    texts.set(file, text);
    for (const doc of parseAllDocuments(text)) {
      for (const err of [...doc.errors, ...doc.warnings]) problems.push(`${file}: YAML: ${err.message.split('\n')[0]}`);
      if (doc.errors.length > 0) continue;
      const value: unknown = doc.toJS();
      if (value === null || value === undefined) continue; // an empty document (a trailing ---)
      if (typeof value !== 'object' || Array.isArray(value)) {
        problems.push(`${file}: a document that is not a mapping`);
        continue;
      }
      manifests.push({ file, object: value as Json });
    }
  }
  return { manifests, texts, problems };
}

// ---------------------------------------------------------------------------------------------
// Checks on the manifests.

function checkKinds(ms: readonly Manifest[]): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const { file, object } of ms) {
    const kind = str(object.kind) ?? '(no kind)';
    const { name, namespace } = meta(object);
    const where = `${file}: ${kind} ${name ?? '(no name)'}`;
    const apiVersion = API_VERSIONS.get(kind);
    if (apiVersion === undefined) problems.push(`${where}: unexpected kind (expected one of ${[...API_VERSIONS.keys()].join(', ')})`);
    else if (object.apiVersion !== apiVersion) problems.push(`${where}: apiVersion ${String(object.apiVersion)}, expected ${apiVersion}`);
    if (name === undefined) problems.push(`${where}: no metadata.name`);
    if (CLUSTER_SCOPED.has(kind)) {
      if (namespace !== undefined) problems.push(`${where}: cluster-scoped, but has metadata.namespace`);
    } else if (namespace !== NAMESPACE) {
      problems.push(`${where}: namespace ${namespace ?? '(none: whatever the current context says)'}, expected ${NAMESPACE}`);
    }
    const key = `${kind}/${namespace ?? ''}/${name ?? ''}`;
    if (seen.has(key)) problems.push(`${where}: defined twice`);
    seen.add(key);
  }
  for (const kind of REQUIRED_KINDS) {
    const wanted = kind === 'Namespace' ? NAMESPACE : NAME;
    if (!ofKind(ms, kind).some((o) => meta(o).name === wanted)) problems.push(`no ${kind} named ${wanted}`);
  }
  return problems;
}

/** Every (group/resource, verb) the manifests grant, and what is too broad about them. */
function checkRbac(ms: readonly Manifest[]): string[] {
  const problems: string[] = [];
  const granted = new Map<string, Set<string>>();
  for (const role of [...ofKind(ms, 'ClusterRole'), ...ofKind(ms, 'Role')]) {
    const roleName = meta(role).name ?? '(no name)';
    if (role.aggregationRule !== undefined) problems.push(`ClusterRole ${roleName}: aggregationRule grants whatever other roles match`);
    arr(role.rules).forEach((raw, i) => {
      const rule = obj(raw);
      const where = `ClusterRole ${roleName} rule ${i}`;
      const groups = strs(rule.apiGroups);
      const resources = strs(rule.resources);
      const verbs = strs(rule.verbs);
      if (rule.nonResourceURLs !== undefined) problems.push(`${where}: nonResourceURLs are not needed`);
      for (const [field, values] of [['apiGroups', groups], ['resources', resources], ['verbs', verbs]] as const) {
        if (values.length === 0) problems.push(`${where}: no ${field}`);
        if (values.some((v) => v.includes('*'))) problems.push(`${where}: wildcard "*" in ${field}`);
      }
      for (const r of resources) if (/^secrets?(\/|$)/.test(r)) problems.push(`${where}: grants access to ${r}`);
      for (const g of groups) {
        for (const r of resources) {
          const key = `${g === '' ? 'core' : g}/${r}`;
          const set = granted.get(key) ?? new Set<string>();
          for (const v of verbs) set.add(v);
          granted.set(key, set);
        }
      }
    });
  }
  for (const [key, verbs] of granted) {
    const expected = EXPECTED_GRANTS.get(key);
    if (expected === undefined) {
      problems.push(`RBAC grants ${[...verbs].join(',')} on ${key}, which the agent does not need`);
      continue;
    }
    const extra = [...verbs].filter((v) => !expected.includes(v));
    const missing = expected.filter((v) => !verbs.has(v));
    if (extra.length > 0) problems.push(`RBAC grants ${extra.join(',')} on ${key} beyond what the agent needs (${expected.join(',')})`);
    if (missing.length > 0) problems.push(`RBAC lacks ${missing.join(',')} on ${key}, which the agent needs`);
  }
  for (const key of EXPECTED_GRANTS.keys()) if (!granted.has(key)) problems.push(`RBAC grants nothing on ${key}; the agent needs ${EXPECTED_GRANTS.get(key)!.join(',')}`);
  return problems;
}

/** The binding joins a ServiceAccount and a ClusterRole that exist, and the DaemonSet runs as that account. */
function checkBinding(ms: readonly Manifest[]): string[] {
  const problems: string[] = [];
  const accounts = new Set(ofKind(ms, 'ServiceAccount').map((o) => `${meta(o).namespace ?? ''}/${meta(o).name ?? ''}`));
  const roles = new Set(ofKind(ms, 'ClusterRole').map((o) => meta(o).name));
  const bound = new Set<string>();
  for (const binding of ofKind(ms, 'ClusterRoleBinding')) {
    const where = `ClusterRoleBinding ${meta(binding).name ?? '(no name)'}`;
    const ref = obj(binding.roleRef);
    if (ref.apiGroup !== 'rbac.authorization.k8s.io' || ref.kind !== 'ClusterRole') problems.push(`${where}: roleRef must be a ClusterRole of rbac.authorization.k8s.io`);
    if (!roles.has(str(ref.name))) problems.push(`${where}: roleRef names ClusterRole ${String(ref.name)}, which is not defined`);
    const subjects = arr(binding.subjects).map(obj);
    if (subjects.length === 0) problems.push(`${where}: no subjects`);
    for (const s of subjects) {
      const key = `${str(s.namespace) ?? ''}/${str(s.name) ?? ''}`;
      if (s.kind !== 'ServiceAccount') problems.push(`${where}: subject ${String(s.kind)} ${String(s.name)} is not a ServiceAccount`);
      else if (!accounts.has(key)) problems.push(`${where}: subject ServiceAccount ${key} (namespace/name) is not defined`);
      else bound.add(key);
    }
  }
  for (const ds of ofKind(ms, 'DaemonSet')) {
    const spec = obj(obj(obj(ds.spec).template).spec);
    const key = `${meta(ds).namespace ?? ''}/${str(spec.serviceAccountName) ?? 'default'}`;
    if (!accounts.has(key)) problems.push(`DaemonSet ${meta(ds).name ?? ''}: runs as ServiceAccount ${key}, which is not defined`);
    else if (!bound.has(key)) problems.push(`DaemonSet ${meta(ds).name ?? ''}: its ServiceAccount ${key} is bound to no ClusterRole`);
    if (spec.automountServiceAccountToken === false) problems.push(`DaemonSet: automountServiceAccountToken false, but the agent uses the in-cluster config`);
  }
  return problems;
}

interface ParsedArgs {
  readonly flags: Map<string, string | true>;
  readonly positionals: string[];
  readonly problems: string[];
}

/** Parses argv against a flag table as commander would (--flag value, --flag=value). */
function parseArgs(argv: readonly string[], table: ReadonlyMap<string, boolean>, what: string): ParsedArgs {
  const flags = new Map<string, string | true>();
  const positionals: string[] = [];
  const problems: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('-') || arg === '-') {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    const takesValue = table.get(name);
    if (takesValue === undefined) {
      problems.push(`${what}: unknown flag ${name} (known: ${[...table.keys()].join(' ')})`);
      continue;
    }
    if (flags.has(name)) problems.push(`${what}: ${name} given twice`);
    if (!takesValue) {
      if (eq > 0) problems.push(`${what}: ${name} takes no value`);
      flags.set(name, true);
    } else if (eq > 0) {
      flags.set(name, arg.slice(eq + 1));
    } else if (i + 1 < argv.length && !argv[i + 1]!.startsWith('--')) {
      flags.set(name, argv[++i]!);
    } else {
      problems.push(`${what}: ${name} needs a value`);
    }
  }
  return { flags, positionals, problems };
}

interface PodView {
  readonly spec: Json;
  readonly volumes: Map<string, Json>;
  readonly dataplane: Json | undefined;
  readonly agent: Json | undefined;
}

function podView(ds: Json): PodView {
  const spec = obj(obj(obj(ds.spec).template).spec);
  const volumes = new Map<string, Json>();
  for (const v of arr(spec.volumes).map(obj)) volumes.set(str(v.name) ?? '', v);
  const containers = arr(spec.containers).map(obj);
  const agent = containers.find((c) => strs(c.args)[0] === 'mesh');
  const dataplane = containers.find((c) => c !== agent);
  return { spec, volumes, dataplane, agent };
}

/** Where (if anywhere) a container mounts the volume backed by hostPath path. */
function mountOfHostPath(pod: PodView, container: Json, path: string): Json | undefined {
  return arr(container.volumeMounts)
    .map(obj)
    .find((m) => str(obj(pod.volumes.get(str(m.name) ?? '')?.hostPath).path) === path);
}

function envOf(container: Json, name: string): Json | undefined {
  return arr(container.env)
    .map(obj)
    .find((e) => e.name === name);
}

function portNumber(value: unknown): number | undefined {
  const n = Number(value);
  return Number.isInteger(n) && n > 0 && n < 65536 ? n : undefined;
}

/** The port a probe's httpGet port (a number or a named containerPort) resolves to. */
function probePort(container: Json, probe: Json): number | undefined {
  const port = obj(probe.httpGet).port;
  if (typeof port === 'string' && !/^\d+$/.test(port)) {
    const named = arr(container.ports)
      .map(obj)
      .find((p) => p.name === port);
    return named ? portNumber(named.containerPort) : undefined;
  }
  return portNumber(port);
}

function checkDaemonSet(ms: readonly Manifest[]): string[] {
  const all = ofKind(ms, 'DaemonSet');
  const ds = all.find((o) => meta(o).name === NAME);
  if (!ds) return [`no DaemonSet ${NAME}`];
  const problems: string[] = [];
  const dsSpec = obj(ds.spec);
  const template = obj(dsSpec.template);
  const pod = podView(ds);
  const { spec } = pod;

  // Selector and update strategy.
  const labels = meta(template).labels;
  const selector = obj(obj(dsSpec.selector).matchLabels);
  if (Object.keys(selector).length === 0) problems.push('DaemonSet: no selector.matchLabels');
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) problems.push(`DaemonSet: selector ${k}=${String(v)} does not match the pod template's labels`);
  const strategy = obj(dsSpec.updateStrategy);
  if (strategy.type !== 'RollingUpdate') problems.push('DaemonSet: updateStrategy.type must be RollingUpdate');
  if (String(obj(strategy.rollingUpdate).maxUnavailable) !== '1') problems.push('DaemonSet: updateStrategy.rollingUpdate.maxUnavailable must be 1 (one node at a time)');

  // Pod-level settings.
  if (spec.hostNetwork !== true) problems.push('pod: hostNetwork must be true (the TUN, routes and UDP port are the node\'s)');
  if (spec.dnsPolicy !== 'ClusterFirstWithHostNet') problems.push('pod: dnsPolicy must be ClusterFirstWithHostNet with hostNetwork');
  if (spec.priorityClassName !== 'system-node-critical') problems.push('pod: priorityClassName must be system-node-critical');
  const grace = spec.terminationGracePeriodSeconds;
  if (typeof grace !== 'number' || grace < 1 || grace > 300) problems.push('pod: terminationGracePeriodSeconds must be set (1..300)');
  if (spec.hostPID === true || spec.hostIPC === true) problems.push('pod: hostPID/hostIPC are not needed');
  const tolerations = arr(spec.tolerations).map(obj);
  if (!tolerations.some((t) => t.operator === 'Exists' && t.key === undefined && t.effect === undefined)) {
    problems.push('pod: tolerations must include { operator: Exists } (no key, no effect) so every node runs wgts');
  }

  // Volumes: each hostPath is one we expect, with its type.
  for (const [name, volume] of pod.volumes) {
    const hostPath = volume.hostPath === undefined ? undefined : obj(volume.hostPath);
    if (!hostPath) continue;
    const path = str(hostPath.path) ?? '';
    const type = HOST_PATHS.get(path) ?? OPTIONAL_HOST_PATHS.get(path);
    if (type === undefined) problems.push(`volume ${name}: hostPath ${path} is not one wgts needs (${[...HOST_PATHS.keys(), ...OPTIONAL_HOST_PATHS.keys()].join(', ')})`);
    else if (hostPath.type !== type) problems.push(`volume ${name}: hostPath ${path} must have type ${type}, has ${String(hostPath.type ?? '(none)')}`);
  }
  for (const path of HOST_PATHS.keys()) {
    if (![...pod.volumes.values()].some((v) => str(obj(v.hostPath).path) === path)) problems.push(`no hostPath volume for ${path}`);
  }
  if (pod.volumes.size !== arr(spec.volumes).length) problems.push('pod: two volumes share a name');

  const containers = arr(spec.containers).map(obj);
  if (containers.length !== 2) problems.push(`pod: ${containers.length} containers, expected 2 (dataplane and agent)`);
  if (!pod.agent) problems.push('pod: no agent container (args starting with "mesh")');
  if (!pod.dataplane) problems.push('pod: no data plane container');

  for (const c of containers) {
    const who = `container ${str(c.name) ?? '(no name)'}`;
    if (c.image !== IMAGE) problems.push(`${who}: image ${String(c.image)}, expected ${IMAGE} (package.json version)`);
    if (c.command !== undefined && !/dist\/cli\.js$/.test(strs(c.command).at(-1) ?? '')) problems.push(`${who}: command overrides the image's entrypoint (node /app/dist/cli.js)`);
    for (const m of arr(c.volumeMounts).map(obj)) {
      if (!pod.volumes.has(str(m.name) ?? '')) problems.push(`${who}: volumeMount ${String(m.name)} is not a defined volume`);
    }
    const sc = obj(c.securityContext);
    if (sc.privileged === true) problems.push(`${who}: privileged; NET_ADMIN is all it needs`);
    if (sc.allowPrivilegeEscalation !== false) problems.push(`${who}: allowPrivilegeEscalation must be false`);
    const caps = obj(sc.capabilities);
    const add = strs(caps.add);
    if (!add.includes('NET_ADMIN')) problems.push(`${who}: capabilities.add must include NET_ADMIN`);
    for (const cap of add) if (cap !== 'NET_ADMIN') problems.push(`${who}: capability ${cap} is not needed`);
    if (!strs(caps.drop).includes('ALL')) problems.push(`${who}: capabilities.drop must be [ALL]`);
    const resources = obj(c.resources);
    const requests = obj(resources.requests);
    if (requests.cpu === undefined || requests.memory === undefined) problems.push(`${who}: resources.requests needs cpu and memory`);
    if (obj(resources.limits).memory === undefined) problems.push(`${who}: resources.limits needs memory`);
    for (const e of arr(c.env).map(obj)) {
      if (e.value === undefined && e.valueFrom === undefined) problems.push(`${who}: env ${String(e.name)} has no value`);
    }
  }

  let ifname: string | undefined;
  const dp = pod.dataplane;
  if (dp) {
    const who = `container ${str(dp.name) ?? 'dataplane'}`;
    const args = parseArgs(strs(dp.args), DAEMON_FLAGS, `${who} args`);
    problems.push(...args.problems);
    if (!args.flags.has('-f') && !args.flags.has('--foreground')) problems.push(`${who}: needs -f (--foreground), or the daemon detaches and the container exits`);
    if (!args.flags.has('--persist')) problems.push(`${who}: needs --persist, so a restart keeps the interface and the routes into it`);
    if (args.positionals.length !== 1) problems.push(`${who}: expected one interface name, got ${JSON.stringify(args.positionals)}`);
    ifname = args.positionals[0];
    if (ifname !== undefined && !/^[A-Za-z0-9_.-]{1,15}$/.test(ifname)) problems.push(`${who}: ${ifname} is not a valid interface name`);
    const tun = mountOfHostPath(pod, dp, '/dev/net/tun');
    if (str(tun?.mountPath) !== '/dev/net/tun') problems.push(`${who}: must mount the /dev/net/tun hostPath at /dev/net/tun`);
    if (str(mountOfHostPath(pod, dp, '/var/run/wireguard')?.mountPath) !== '/var/run/wireguard') problems.push(`${who}: must mount /var/run/wireguard (its UAPI socket) at the same path`);
    if (mountOfHostPath(pod, dp, '/var/lib/wgts')) problems.push(`${who}: must not mount /var/lib/wgts: the private key is the agent's`);
    const exec = strs(obj(obj(dp.livenessProbe).exec).command);
    if (exec.length > 0 && ifname !== undefined && !exec.includes(ifname)) problems.push(`${who}: liveness probe ${exec.join(' ')} does not name ${ifname}`);
    const udp = arr(dp.ports)
      .map(obj)
      .find((p) => p.protocol === 'UDP');
    const agentPort = pod.agent ? parseArgs(strs(pod.agent.args).slice(1), MESH_FLAGS, 'agent').flags.get('--listen-port') : undefined;
    const listenPort = agentPort === undefined || agentPort === true ? MESH_DEFAULTS.listenPort : portNumber(agentPort);
    if (udp && portNumber(udp.containerPort) !== listenPort) problems.push(`${who}: UDP containerPort ${String(udp.containerPort)} differs from the agent's --listen-port ${String(listenPort)}`);
  }

  const agent = pod.agent;
  if (agent) {
    const who = `container ${str(agent.name) ?? 'agent'}`;
    const args = parseArgs(strs(agent.args).slice(1), MESH_FLAGS, `${who} args`);
    problems.push(...args.problems);
    if (args.positionals.length > 0) problems.push(`${who}: unexpected arguments ${JSON.stringify(args.positionals)}`);
    if (args.flags.get('--node-name') !== '$(NODE_NAME)') problems.push(`${who}: --node-name must be $(NODE_NAME)`);
    const nodeName = envOf(agent, 'NODE_NAME');
    if (str(obj(obj(nodeName?.valueFrom).fieldRef).fieldPath) !== 'spec.nodeName') problems.push(`${who}: env NODE_NAME must come from fieldRef spec.nodeName`);
    const iface = args.flags.get('--interface') ?? MESH_DEFAULTS.interface;
    if (ifname !== undefined && iface !== ifname) problems.push(`${who}: --interface ${String(iface)} is not the data plane's ${ifname}`);
    if (args.flags.has('--kubeconfig')) problems.push(`${who}: --kubeconfig: in a pod the agent uses the in-cluster config`);

    const metricsListen = args.flags.get('--metrics-listen');
    const metricsPort = metricsListen === undefined ? MESH_DEFAULTS.metricsPort : portNumber(/:(\d+)$/.exec(String(metricsListen))?.[1]);
    const declared = arr(agent.ports)
      .map(obj)
      .find((p) => p.name === 'metrics');
    if (!declared) problems.push(`${who}: no containerPort named metrics`);
    else if (portNumber(declared.containerPort) !== metricsPort) problems.push(`${who}: containerPort metrics ${String(declared.containerPort)} is not --metrics-listen's port ${String(metricsPort)}`);
    for (const [kind, path] of [['readinessProbe', '/readyz'], ['livenessProbe', '/healthz']] as const) {
      const probe = agent[kind];
      if (probe === undefined) {
        problems.push(`${who}: no ${kind}`);
        continue;
      }
      const p = obj(probe);
      if (obj(p.httpGet).path !== path) problems.push(`${who}: ${kind} must be httpGet ${path}`);
      if (probePort(agent, p) !== metricsPort) problems.push(`${who}: ${kind} port does not reach the metrics port ${String(metricsPort)}`);
    }
    const annotations = meta(template).annotations;
    if (annotations['prometheus.io/scrape'] !== 'true') problems.push('pod: annotation prometheus.io/scrape must be "true"');
    if (annotations['prometheus.io/port'] !== String(metricsPort)) problems.push(`pod: annotation prometheus.io/port must be "${String(metricsPort)}"`);
    if (annotations['prometheus.io/path'] !== undefined && annotations['prometheus.io/path'] !== '/metrics') problems.push('pod: annotation prometheus.io/path must be /metrics');

    if (str(mountOfHostPath(pod, agent, '/var/lib/wgts')?.mountPath) !== '/var/lib/wgts') problems.push(`${who}: must mount /var/lib/wgts (the key) at the same path`);
    if (str(mountOfHostPath(pod, agent, '/var/run/wireguard')?.mountPath) !== '/var/run/wireguard') problems.push(`${who}: must mount /var/run/wireguard (the data plane's socket) at the same path`);
    for (const path of ['/var/lib/wgts', '/var/run/wireguard']) if (mountOfHostPath(pod, agent, path)?.readOnly === true) problems.push(`${who}: ${path} must be writable`);

    // /proc/sys is read-only in an unprivileged container: the host's /proc/sys/net must be
    // mounted where WGTS_PROC_SYS says the agent writes sysctls.
    if (obj(agent.securityContext).privileged !== true) {
      const root = str(envOf(agent, 'WGTS_PROC_SYS')?.value);
      const sysNet = mountOfHostPath(pod, agent, '/proc/sys/net');
      if (root === undefined || !sysNet || str(sysNet.mountPath) !== posix.join(root, 'net') || sysNet.readOnly === true) {
        problems.push(`${who}: writes net sysctls; /proc/sys is read-only unprivileged, so mount hostPath /proc/sys/net writable at $WGTS_PROC_SYS/net`);
      }
    }
  }
  return problems;
}

function checkNamespace(ms: readonly Manifest[]): string[] {
  const ns = ofKind(ms, 'Namespace').find((o) => meta(o).name === NAMESPACE);
  if (!ns) return [];
  return meta(ns).labels['pod-security.kubernetes.io/enforce'] === 'privileged'
    ? []
    : ['Namespace: label pod-security.kubernetes.io/enforce=privileged (hostNetwork, hostPath, NET_ADMIN are beyond baseline)'];
}

/** Every --flag written anywhere in the manifests (args and the commented options) is a real one. */
function flagsInText(texts: ReadonlyMap<string, string>): Set<string> {
  const flags = new Set<string>();
  for (const text of texts.values()) for (const m of text.matchAll(/(?<![\w-])--[a-z][a-z0-9-]*/g)) flags.add(m[0]);
  return flags;
}
function checkFlagsInText(texts: ReadonlyMap<string, string>): string[] {
  return [...flagsInText(texts)].filter((f) => !DAEMON_FLAGS.has(f) && !MESH_FLAGS.has(f)).map((f) => `deploy/ mentions ${f}, which is not a wgts flag`);
}

function checkManifestDir(dir: string): string[] {
  const { manifests, texts, problems } = loadManifests(dir);
  return [
    ...problems,
    ...checkKinds(manifests),
    ...checkNamespace(manifests),
    ...checkRbac(manifests),
    ...checkBinding(manifests),
    ...checkDaemonSet(manifests),
    ...checkFlagsInText(texts),
  ];
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile: instructions, stages, and where the build's artifacts land.

interface Instruction {
  readonly keyword: string;
  readonly args: string;
  readonly line: number;
}
interface Stage {
  readonly image: string;
  readonly name: string | undefined;
  readonly index: number;
  readonly instructions: Instruction[];
}

/** Instructions with `\` continuations joined and comments (including parser directives) dropped. */
function parseDockerfile(text: string): { globalArgs: Map<string, string>; stages: Stage[] } {
  const instructions: Instruction[] = [];
  let pending = '';
  let start = 0;
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (/^\s*#/.test(line)) return; // a comment, also between continuation lines
    if (pending === '' && line.trim() === '') return;
    if (pending === '') start = i + 1;
    const continued = /\\\s*$/.test(line);
    pending += (pending ? ' ' : '') + (continued ? line.replace(/\\\s*$/, '') : line).trim();
    if (!continued) {
      const match = /^(\S+)\s*(.*)$/.exec(pending)!;
      instructions.push({ keyword: match[1]!.toUpperCase(), args: match[2]!, line: start });
      pending = '';
    }
  });
  if (pending) throw new Error('Dockerfile ends inside a continued line');
  const globalArgs = new Map<string, string>();
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const words = ins.args.split(/\s+/).filter((w) => !w.startsWith('--'));
      const as = words.findIndex((w) => w.toUpperCase() === 'AS');
      stages.push({ image: words[0] ?? '', name: as >= 0 ? words[as + 1] : undefined, index: stages.length, instructions: [] });
    } else if (stages.length === 0) {
      if (ins.keyword === 'ARG') {
        const [k, v] = ins.args.split('=');
        globalArgs.set(k!.trim(), (v ?? '').trim());
      }
    } else {
      stages.at(-1)!.instructions.push(ins);
    }
  }
  return { globalArgs, stages };
}

function jsonArray(args: string): string[] | undefined {
  try {
    const value: unknown = JSON.parse(args);
    return Array.isArray(value) && value.every((v) => typeof v === 'string') ? value : undefined;
  } catch {
    return undefined;
  }
}

/** Packages named by `apt-get install` in a RUN. */
function aptPackages(run: string): string[] {
  const packages: string[] = [];
  for (const m of run.matchAll(/apt-get\s+install\s+([^;&|]*)/g)) packages.push(...m[1]!.split(/\s+/).filter((w) => w && !w.startsWith('-')));
  return packages;
}

interface Copy {
  readonly from: string | undefined;
  readonly sources: string[];
  readonly dest: string;
}
function parseCopy(args: string): Copy {
  const words = args.split(/\s+/).filter(Boolean);
  let from: string | undefined;
  const rest: string[] = [];
  for (const w of words) {
    if (w.startsWith('--from=')) from = w.slice('--from='.length);
    else if (!w.startsWith('--')) rest.push(w);
  }
  const json = jsonArray(rest.join(' '));
  const parts = json ?? rest;
  return { from, sources: parts.slice(0, -1), dest: parts.at(-1) ?? '' };
}

/** The working directory before each instruction of a stage. */
function workdirs(stage: Stage): string[] {
  let wd = '/';
  return stage.instructions.map((ins) => {
    const before = wd;
    if (ins.keyword === 'WORKDIR') wd = posix.resolve(wd, ins.args.trim());
    return before;
  });
}

function finalWorkdir(stage: Stage): string {
  return stage.instructions.reduce((wd, ins) => (ins.keyword === 'WORKDIR' ? posix.resolve(wd, ins.args.trim()) : wd), '/');
}

/** A .dockerignore as BuildKit applies it: the last matching pattern wins; a directory match covers its contents. */
function dockerignore(text: string): (path: string) => boolean {
  const patterns = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const body = posix.normalize((negate ? l.slice(1) : l).trim()).replace(/^\/+|\/+$/g, '');
      // `**` is any number of directories (none too); `*` and `?` stay within one path element.
      const re = body
        .split('/')
        .map((part, i, parts) => (part === '**' ? (i === parts.length - 1 ? '.*' : '(?:.*/)?') : `${part.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')}/`))
        .join('')
        .replace(/\/$/, '');
      return { negate, re: new RegExp(`^${re}$`) };
    });
  return (path: string) => {
    const parts = path.replace(/^\/+|\/+$/g, '').split('/');
    const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
    let ignored = false;
    for (const p of patterns) if (prefixes.some((prefix) => p.re.test(prefix))) ignored = !p.negate;
    return ignored;
  };
}

function filesUnder(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path).flatMap((e) => filesUnder(join(path, e)));
}

/** Builder-relative paths the runtime needs, and whether each is a file. */
const ARTIFACTS: ReadonlyMap<string, boolean> = new Map([
  ['package.json', true],
  ['dist', false],
  ['node_modules', false],
  ['build/Release/wgts_native.node', true],
]);

function checkDockerfile(dockerfileText: string, dockerignoreText: string, root: string): string[] {
  const problems: string[] = [];
  let parsed;
  try {
    parsed = parseDockerfile(dockerfileText);
  } catch (err) {
    return [`Dockerfile: ${(err as Error).message}`];
  }
  const { globalArgs, stages } = parsed;
  if (stages.length < 2) return [`Dockerfile: ${stages.length} stage(s); expected a builder and a runtime stage`];
  const runtime = stages.at(-1)!;
  const nodeMajor = /(\d+)/.exec(PACKAGE.engines?.node ?? '')?.[1];
  for (const stage of stages) {
    const major = /^(?:docker\.io\/(?:library\/)?)?node:(\d+)/.exec(stage.image)?.[1];
    if (major === undefined) problems.push(`Dockerfile: stage ${stage.name ?? stage.index} is FROM ${stage.image}, not an official node image`);
    else if (nodeMajor !== undefined && major !== nodeMajor) problems.push(`Dockerfile: stage ${stage.name ?? stage.index} has Node ${major}; package.json wants ${nodeMajor}`);
  }
  if (runtime.image.split(':')[1]?.replace(/^\d+-?/, '') !== stages[0]!.image.split(':')[1]?.replace(/^\d+-?/, '')) {
    problems.push('Dockerfile: builder and runtime must share a distribution (the addon links against its libc)');
  }
  const ignored = dockerignore(dockerignoreText);

  // Context copies: they exist, and .dockerignore keeps them in the context.
  const builderCopies = new Set<string>();
  for (const stage of stages) {
    for (const ins of stage.instructions.filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD')) {
      const copy = parseCopy(ins.args);
      if (copy.from !== undefined) continue;
      for (const source of copy.sources) {
        const rel = posix.normalize(source).replace(/\/+$/, '');
        if (stage !== runtime) builderCopies.add(rel);
        const abs = join(root, rel);
        if (!existsSync(abs)) {
          problems.push(`Dockerfile line ${ins.line}: COPY ${source}: no such file in the repository`);
          continue;
        }
        for (const file of filesUnder(abs)) {
          const relFile = relative(root, file).split('\\').join('/');
          if (/\.(ts|c|h|json|gyp)$|^\.npmrc$/.test(basename(file)) && ignored(relFile)) {
            problems.push(`Dockerfile line ${ins.line}: COPY ${source}: ${relFile} is excluded by .dockerignore`);
            break;
          }
        }
      }
    }
  }
  for (const needed of ['package.json', 'package-lock.json', 'binding.gyp', 'tsconfig.json', 'tsconfig.build.json', 'src']) {
    if (!builderCopies.has(needed)) problems.push(`Dockerfile: the builder does not copy ${needed}, which npm ci needs`);
  }
  for (const path of ['node_modules/x', 'dist/cli.js', 'build/Release/wgts_native.node', '.git/HEAD', 'test/unit/x.test.ts', 'bench/out/x']) {
    if (!ignored(path)) problems.push(`.dockerignore: ${path.split('/')[0]}${path.startsWith('bench/') ? '/out' : ''} is not excluded`);
  }

  // The builder: compilers, the Node headers, npm ci, prune.
  const builders = stages.slice(0, -1);
  const builderRuns = builders.flatMap((s) => s.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args)).join('\n');
  if (!/\bnpm\s+ci\b/.test(builderRuns)) problems.push('Dockerfile: the builder never runs npm ci');
  if (!/\bnpm\s+prune\b[^\n&;]*--omit=dev/.test(builderRuns)) problems.push('Dockerfile: the builder never runs npm prune --omit=dev');
  if (builders.some((s) => /slim/.test(s.image))) {
    const packages = new Set(builders.flatMap((s) => s.instructions.filter((i) => i.keyword === 'RUN').flatMap((i) => aptPackages(i.args))));
    for (const p of ['python3', 'make', 'g++']) if (!packages.has(p)) problems.push(`Dockerfile: a slim builder needs ${p} for node-gyp`);
  }
  if (builderCopies.has('.npmrc') && /^\s*nodedir\s*=/m.test(readFileSync(join(root, '.npmrc'), 'utf8'))) {
    const sets = builders.some((s) => s.instructions.some((i) => (i.keyword === 'ENV' || i.keyword === 'ARG') && /npm_config_nodedir\s*=?\s*\S/.test(i.args)));
    if (!sets && !/npm_config_nodedir=|sed[^\n]*nodedir/.test(builderRuns)) problems.push("Dockerfile: .npmrc's nodedir (this machine's headers) is not overridden for the image's Node");
  }

  // The runtime: tools, artifacts in the right layout, entrypoint.
  const runtimeRuns = runtime.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args);
  const runtimePackages = new Set(runtimeRuns.flatMap(aptPackages));
  for (const p of ['iproute2', 'wireguard-tools', 'nftables', 'tcpdump']) if (!runtimePackages.has(p)) problems.push(`Dockerfile: the runtime stage does not install ${p}`);
  if (runtimeRuns.some((r) => /apt-get\s+install/.test(r) && !/--no-install-recommends/.test(r))) problems.push('Dockerfile: apt-get install without --no-install-recommends');
  const builderNames = new Set(builders.flatMap((s) => [String(s.index), ...(s.name ? [s.name] : [])]));
  const builderWorkdir = finalWorkdir(builders.at(-1)!);
  const wds = workdirs(runtime);
  const landed = new Map<string, string>();
  runtime.instructions.forEach((ins, i) => {
    if (ins.keyword !== 'COPY') return;
    const copy = parseCopy(ins.args);
    if (copy.from === undefined || !builderNames.has(copy.from)) return;
    const destBase = posix.resolve(wds[i]!, copy.dest);
    for (const source of copy.sources) {
      const src = posix.relative(builderWorkdir, posix.resolve(builderWorkdir, source));
      for (const [artifact, isFile] of ARTIFACTS) {
        if (src === artifact) {
          landed.set(artifact, isFile && copy.dest.endsWith('/') ? posix.join(destBase, posix.basename(artifact)) : destBase);
        } else if (src === '' || artifact.startsWith(`${src}/`)) {
          landed.set(artifact, posix.join(destBase, posix.relative(src, artifact)));
        }
      }
    }
  });
  for (const artifact of ARTIFACTS.keys()) if (!landed.has(artifact)) problems.push(`Dockerfile: the runtime stage does not copy ${artifact} from the builder`);
  const app = landed.has('package.json') ? posix.dirname(landed.get('package.json')!) : undefined;
  if (app !== undefined) {
    for (const [artifact, at] of landed) {
      if (at !== posix.join(app, artifact)) problems.push(`Dockerfile: ${artifact} lands at ${at}, not ${posix.join(app, artifact)} beside package.json`);
    }
  }
  const entrypoints = runtime.instructions.filter((i) => i.keyword === 'ENTRYPOINT');
  const entrypoint = jsonArray(entrypoints.at(-1)?.args ?? '');
  if (!entrypoint) {
    problems.push('Dockerfile: ENTRYPOINT must be in exec (JSON) form');
  } else {
    const i = runtime.instructions.indexOf(entrypoints.at(-1)!);
    const script = entrypoint[1] === undefined ? '' : posix.resolve(wds[i]!, entrypoint[1]);
    if (entrypoint[0] !== 'node' || entrypoint.length !== 2 || (app !== undefined && script !== posix.join(app, 'dist/cli.js'))) {
      problems.push(`Dockerfile: ENTRYPOINT ${JSON.stringify(entrypoint)} must be ["node", "<app>/dist/cli.js"]`);
    }
  }
  const cmd = runtime.instructions.filter((i) => i.keyword === 'CMD').at(-1);
  if (!cmd || !jsonArray(cmd.args)) problems.push('Dockerfile: CMD must be in exec (JSON) form (["--help"])');
  if (!runtimeRuns.some((r) => /--version\b/.test(r))) problems.push('Dockerfile: the runtime stage should run `--version` so a broken image fails its build');
  const user = runtime.instructions.filter((i) => i.keyword === 'USER').at(-1)?.args.trim();
  if (user !== undefined && user !== 'root' && user !== '0') problems.push(`Dockerfile: USER ${user}: wgts needs root with NET_ADMIN (see the Dockerfile)`);

  // OCI labels, the version resolved from the ARG default.
  const labels = new Map<string, string>();
  for (const ins of runtime.instructions.filter((i) => i.keyword === 'LABEL')) {
    for (const m of ins.args.matchAll(/([\w.-]+)=("(?:[^"\\]|\\.)*"|\S+)/g)) labels.set(m[1]!, m[2]!.replace(/^"|"$/g, ''));
  }
  for (const key of ['title', 'description', 'version', 'licenses', 'source']) {
    if (!labels.has(`org.opencontainers.image.${key}`)) problems.push(`Dockerfile: no org.opencontainers.image.${key} label`);
  }
  const version = labels.get('org.opencontainers.image.version')?.replace(/\$\{?(\w+)\}?/g, (_, name: string) => globalArgs.get(name) ?? '');
  if (version !== undefined && version !== PACKAGE.version) problems.push(`Dockerfile: image version label ${version}, package.json says ${PACKAGE.version}`);
  return problems;
}

function readRoot(file: string): string {
  return readFileSync(join(ROOT, file), 'utf8');
}

// ---------------------------------------------------------------------------------------------
// The CLI and the sources, where they exist.

function sourceText(...paths: string[]): string {
  return paths
    .map((p) => join(ROOT, p))
    .filter((p) => existsSync(p))
    .flatMap((p) => filesUnder(p))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => readFileSync(f, 'utf8'))
    .join('\n');
}
const CLI_SOURCE = sourceText('src/cli.ts', 'src/cli');
const HAS_MESH_COMMAND = /\.command\(\s*['"]mesh['"]/.test(CLI_SOURCE);
/** Whether the CLI source defines flag (as commander option text: '-f, --foreground', '--persist <x>'). */
function cliDefines(flag: string): boolean {
  const escaped = flag.replace(/[-]/g, '\\-');
  return new RegExp(`['"\`][^'"\`]*(?<![\\w-])${escaped}(?![\\w-])[^'"\`]*['"\`]`).test(CLI_SOURCE);
}

// ---------------------------------------------------------------------------------------------

const temps: string[] = [];
afterAll(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'wgts-manifests-'));
  temps.push(dir);
  return dir;
}

describe('deploy/ manifests', () => {
  const { manifests, texts, problems } = loadManifests(DEPLOY);

  it('parse as YAML, every document', () => {
    expect(problems).toEqual([]);
    expect(manifests.length).toBeGreaterThanOrEqual(REQUIRED_KINDS.length);
  });

  it('hold the Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding and DaemonSet, in wgts-system', () => {
    expect(checkKinds(manifests)).toEqual([]);
    expect(checkNamespace(manifests)).toEqual([]);
  });

  it('grant exactly what the agent needs: nodes get/list/watch/patch, events create/patch; no wildcard, no secrets', () => {
    expect(checkRbac(manifests)).toEqual([]);
  });

  it('bind the ClusterRole to the ServiceAccount the DaemonSet runs as', () => {
    expect(checkBinding(manifests)).toEqual([]);
  });

  it('run the data plane and the agent on the host network, with their volumes, probes, env and resources', () => {
    expect(checkDaemonSet(manifests)).toEqual([]);
  });

  it('mention only wgts flags the issue defines, in args and in the commented options', () => {
    expect(checkFlagsInText(texts)).toEqual([]);
    expect(flagsInText(texts)).toContain('--persist');
    expect(flagsInText(texts)).toContain('--node-name');
  });

  it("use data plane flags that src/cli.ts defines", () => {
    const ds = ofKind(manifests, 'DaemonSet')[0]!;
    const dp = podView(ds).dataplane!;
    const flags = strs(dp.args).filter((a) => a.startsWith('-'));
    expect(flags.length).toBeGreaterThan(0);
    expect(flags.filter((f) => !cliDefines(f))).toEqual([]);
  });

  it.skipIf(!HAS_MESH_COMMAND)('use mesh flags that the `wgts mesh` command defines', () => {
    const missing = [...flagsInText(texts)].filter((f) => MESH_FLAGS.has(f) && !cliDefines(f));
    expect(missing).toEqual([]);
    // And the issue's whole flag list is there, so this list stays honest.
    expect([...MESH_FLAGS.keys()].filter((f) => !cliDefines(f))).toEqual([]);
  });

  it('set only environment variables that src/ reads', () => {
    const source = sourceText('src');
    const ds = ofKind(manifests, 'DaemonSet')[0]!;
    const names = arr(podView(ds).spec.containers)
      .map(obj)
      .flatMap((c) => arr(c.env).map((e) => str(obj(e).name) ?? ''));
    expect(names).toContain('NODE_NAME');
    expect(names.filter((n) => !new RegExp(`\\b${n}\\b`).test(source))).toEqual([]);
  });
});

describe('Dockerfile and .dockerignore', () => {
  it('build in a node:24 builder and a slim runtime with iproute2, wireguard-tools, nftables and tcpdump, running dist/cli.js', () => {
    expect(checkDockerfile(readRoot('Dockerfile'), readRoot('.dockerignore'), ROOT)).toEqual([]);
  });

  it('parse as expected: two stages, JSON entrypoint', () => {
    const { stages } = parseDockerfile(readRoot('Dockerfile'));
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const runtime = stages.at(-1)!;
    expect(jsonArray(runtime.instructions.find((i) => i.keyword === 'ENTRYPOINT')!.args)?.at(-1)).toMatch(/dist\/cli\.js$/);
    expect(aptPackages(runtime.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args).join('\n'))).toEqual(
      expect.arrayContaining(['iproute2', 'wireguard-tools']),
    );
  });

  it('.dockerignore: BuildKit semantics (directories, re-inclusion)', () => {
    const ignored = dockerignore('node_modules\ntest\n!test/vectors\n**/*.cpuprofile\nbench/out\n');
    expect(ignored('node_modules/yaml/index.js')).toBe(true);
    expect(ignored('test/unit/a.test.ts')).toBe(true);
    expect(ignored('test/vectors/x25519.json')).toBe(false);
    expect(ignored('src/a/b.cpuprofile')).toBe(true);
    expect(ignored('bench/index.ts')).toBe(false);
    expect(ignored('src/cli.ts')).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// Broken copies: the same checks must catch each of these.

type Mutation = (docs: Json[]) => void;
function dsPod(docs: Json[]): PodView {
  return podView(docs.find((d) => d.kind === 'DaemonSet')!);
}
function container(docs: Json[], role: 'agent' | 'dataplane'): Json {
  return dsPod(docs)[role]!;
}
function role(docs: Json[]): Json {
  return docs.find((d) => d.kind === 'ClusterRole')!;
}

const BROKEN_MANIFESTS: ReadonlyArray<readonly [string, Mutation, RegExp]> = [
  ['hostNetwork off', (d) => void (dsPod(d).spec.hostNetwork = false), /hostNetwork/],
  ['no tolerations', (d) => void delete dsPod(d).spec.tolerations, /tolerations/],
  ['a toleration for one taint only', (d) => void (dsPod(d).spec.tolerations = [{ key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule' }]), /tolerations/],
  ['a mount of an undefined volume', (d) => void (obj(arr(container(d, 'agent').volumeMounts)[0]).name = 'wgts-stat'), /not a defined volume/],
  ['/dev/net/tun as a Directory', (d) => void (obj(dsPod(d).volumes.get('dev-net-tun')!.hostPath).type = 'Directory'), /\/dev\/net\/tun must have type CharDevice/],
  ['the data plane without /dev/net/tun', (d) => void (container(d, 'dataplane').volumeMounts = arr(container(d, 'dataplane').volumeMounts).filter((m) => obj(m).name !== 'dev-net-tun')), /\/dev\/net\/tun/],
  ['the key directory in the data plane', (d) => void arr(container(d, 'dataplane').volumeMounts).push({ name: 'wgts-state', mountPath: '/var/lib/wgts' }), /private key/],
  ['a hostPath of /', (d) => void arr(dsPod(d).spec.volumes).push({ name: 'root', hostPath: { path: '/', type: 'Directory' } }), /hostPath \/ is not one/],
  ['a wildcard verb', (d) => void (obj(arr(role(d).rules)[0]).verbs = ['*']), /wildcard/],
  ['access to secrets', (d) => void arr(role(d).rules).push({ apiGroups: [''], resources: ['secrets'], verbs: ['get'] }), /secrets/],
  ['nodes update as well', (d) => void (obj(arr(role(d).rules)[0]).verbs = ['get', 'list', 'watch', 'patch', 'update']), /update on core\/nodes/],
  ['no nodes watch', (d) => void (obj(arr(role(d).rules)[0]).verbs = ['get', 'list', 'patch']), /lacks watch/],
  ['the binding in the wrong namespace', (d) => void (obj(arr(d.find((x) => x.kind === 'ClusterRoleBinding')!.subjects)[0]).namespace = 'default'), /default\/wgts .* not defined/],
  ['the binding to a missing role', (d) => void (obj(d.find((x) => x.kind === 'ClusterRoleBinding')!.roleRef).name = 'wgts-agent'), /ClusterRole wgts-agent, which is not defined/],
  ['the DaemonSet as another ServiceAccount', (d) => void (dsPod(d).spec.serviceAccountName = 'default'), /ServiceAccount wgts-system\/default/],
  ['a misspelt agent flag', (d) => void (container(d, 'agent').args = strs(container(d, 'agent').args).map((a) => (a === '--node-name' ? '--nodename' : a))), /unknown flag --nodename/],
  ['a data plane that detaches', (d) => void (container(d, 'dataplane').args = strs(container(d, 'dataplane').args).filter((a) => a !== '-f')), /-f \(--foreground\)/],
  ['a data plane without --persist', (d) => void (container(d, 'dataplane').args = strs(container(d, 'dataplane').args).filter((a) => a !== '--persist')), /--persist/],
  ['the agent on another interface', (d) => void (container(d, 'agent').args = strs(container(d, 'agent').args).map((a) => (a === 'wgts0' ? 'wgts1' : a))), /--interface wgts1 is not the data plane's wgts0/],
  ['NODE_NAME from the pod name', (d) => void (obj(obj(obj(envOf(container(d, 'agent'), 'NODE_NAME')!).valueFrom).fieldRef).fieldPath = 'metadata.name'), /spec\.nodeName/],
  ['a readiness probe on another port', (d) => void (obj(obj(container(d, 'agent').readinessProbe).httpGet).port = 9090), /readinessProbe port/],
  ['no liveness probe', (d) => void delete container(d, 'agent').livenessProbe, /no livenessProbe/],
  ['no resource requests', (d) => void delete container(d, 'dataplane').resources, /requests/],
  ['a privileged data plane', (d) => void (obj(container(d, 'dataplane').securityContext).privileged = true), /privileged/],
  ['an extra capability', (d) => void arr(obj(obj(container(d, 'agent').securityContext).capabilities).add).push('SYS_ADMIN'), /SYS_ADMIN is not needed/],
  ['another image tag', (d) => void (container(d, 'agent').image = 'ghcr.io/wgts/wgts:latest'), /image/],
  ['maxUnavailable 10%', (d) => void (obj(obj(obj(d.find((x) => x.kind === 'DaemonSet')!.spec).updateStrategy).rollingUpdate).maxUnavailable = '10%'), /maxUnavailable/],
  ['no sysctl mount for the unprivileged agent', (d) => void (container(d, 'agent').volumeMounts = arr(container(d, 'agent').volumeMounts).filter((m) => obj(m).name !== 'host-proc-sys-net')), /sysctl/],
  ['no Prometheus port annotation', (d) => void delete meta(obj(obj(d.find((x) => x.kind === 'DaemonSet')!.spec).template)).annotations['prometheus.io/port'], /prometheus\.io\/port/],
  ['no DaemonSet at all', (d) => void d.splice(d.findIndex((x) => x.kind === 'DaemonSet'), 1), /no DaemonSet named wgts/],
  ['the ServiceAccount in default', (d) => void (obj(d.find((x) => x.kind === 'ServiceAccount')!.metadata).namespace = 'default'), /namespace default, expected wgts-system/],
];

describe('broken manifests fail the same checks', () => {
  it.each(BROKEN_MANIFESTS)('%s', (_name, mutate, expected) => {
    const { manifests } = loadManifests(DEPLOY);
    const docs = manifests.map((m) => structuredClone(m.object));
    mutate(docs);
    const dir = tempDir();
    writeFileSync(join(dir, 'all.yaml'), docs.map((d) => stringify(d)).join('---\n'));
    const problems = checkManifestDir(dir);
    expect(problems.join('\n')).toMatch(expected);
  });

  it('an unchanged copy passes (so the failures above are the mutations)', () => {
    const dir = tempDir();
    cpSync(DEPLOY, dir, { recursive: true });
    expect(checkManifestDir(dir)).toEqual([]);
    const { manifests } = loadManifests(DEPLOY);
    const single = tempDir();
    writeFileSync(join(single, 'all.yaml'), manifests.map((m) => stringify(m.object)).join('---\n'));
    expect(checkManifestDir(single)).toEqual([]);
  });

  it('a YAML syntax error', () => {
    const dir = tempDir();
    cpSync(DEPLOY, dir, { recursive: true });
    const file = join(dir, readdirSync(dir).find((f) => f.endsWith('.yaml'))!);
    writeFileSync(file, readFileSync(file, 'utf8') + '\n---\nkind: [Namespace\n');
    expect(checkManifestDir(dir).join('\n')).toMatch(/YAML/);
  });

  it('an unknown flag in a commented option', () => {
    const dir = tempDir();
    cpSync(DEPLOY, dir, { recursive: true });
    for (const f of readdirSync(dir)) {
      const path = join(dir, f);
      writeFileSync(path, readFileSync(path, 'utf8').replace('# - --strict', '# - --strict-mode'));
    }
    expect(checkManifestDir(dir).join('\n')).toMatch(/--strict-mode, which is not a wgts flag/);
  });
});

interface BrokenDockerfile {
  readonly name: string;
  readonly dockerfile: (text: string) => string;
  readonly expected: RegExp;
  readonly dockerignore?: (text: string) => string;
}
const BROKEN_DOCKERFILES: readonly BrokenDockerfile[] = [
  { name: 'one stage', dockerfile: (t) => t.slice(t.indexOf('# ---- runtime')).replace(/COPY --from=builder/g, 'COPY'), expected: /stage/ },
  { name: 'no wireguard-tools', dockerfile: (t) => t.replace('iproute2 wireguard-tools nftables', 'iproute2 nftables'), expected: /wireguard-tools/ },
  { name: 'no iproute2', dockerfile: (t) => t.replace('iproute2 wireguard-tools', 'wireguard-tools'), expected: /iproute2/ },
  { name: 'no native addon', dockerfile: (t) => t.replace(/^COPY --from=builder \/src\/build\/.*$/m, ''), expected: /wgts_native\.node/ },
  { name: 'no dist', dockerfile: (t) => t.replace(/^COPY --from=builder \/src\/dist\/ dist\/$/m, ''), expected: /copy dist/ },
  { name: 'dist away from package.json', dockerfile: (t) => t.replace('/src/dist/ dist/', '/src/dist/ /opt/dist/'), expected: /dist lands at \/opt\/dist/ },
  { name: 'another entrypoint', dockerfile: (t) => t.replace('["node", "/app/dist/cli.js"]', '["node", "/app/dist/main.js"]'), expected: /ENTRYPOINT/ },
  { name: 'a shell-form entrypoint', dockerfile: (t) => t.replace('ENTRYPOINT ["node", "/app/dist/cli.js"]', 'ENTRYPOINT node /app/dist/cli.js'), expected: /exec \(JSON\) form/ },
  { name: 'no npm prune', dockerfile: (t) => t.replace(/&& npm prune[^\n]*\n/, '\n'), expected: /npm prune/ },
  { name: 'this machine\'s nodedir', dockerfile: (t) => t.replace(/^ENV npm_config_nodedir=.*$/m, ''), expected: /nodedir/ },
  { name: 'no compilers in a slim builder', dockerfile: (t) => t.replace('python3 make g++', 'python3'), expected: /make/ },
  { name: 'a missing context file', dockerfile: (t) => t.replace('tsconfig.build.json ./', 'tsconfig.build.json tsconfig.missing.json ./'), expected: /tsconfig\.missing\.json: no such file/ },
  { name: 'a non-root user', dockerfile: (t) => t.replace('USER root', 'USER node'), expected: /USER node/ },
  { name: 'a Node 22 runtime', dockerfile: (t) => t.replace(/^FROM node:24-bookworm-slim$/m, 'FROM node:22-bookworm-slim'), expected: /Node 22/ },
  { name: 'an alpine runtime', dockerfile: (t) => t.replace(/^FROM node:24-bookworm-slim$/m, 'FROM node:24-alpine'), expected: /distribution/ },
  { name: 'src excluded from the context', dockerfile: (t) => t, expected: /excluded by \.dockerignore/, dockerignore: (i) => `${i}\nsrc\n` },
  { name: 'node_modules in the context', dockerfile: (t) => t, expected: /node_modules is not excluded/, dockerignore: (i) => i.replace(/^node_modules$/m, '') },
];

describe('broken Dockerfiles fail the same checks', () => {
  it.each(BROKEN_DOCKERFILES)('$name', ({ dockerfile, expected, dockerignore: ignore }) => {
    const dir = tempDir();
    writeFileSync(join(dir, 'Dockerfile'), dockerfile(readRoot('Dockerfile')));
    writeFileSync(join(dir, '.dockerignore'), ignore ? ignore(readRoot('.dockerignore')) : readRoot('.dockerignore'));
    const problems = checkDockerfile(readFileSync(join(dir, 'Dockerfile'), 'utf8'), readFileSync(join(dir, '.dockerignore'), 'utf8'), ROOT);
    expect(problems.join('\n')).toMatch(expected);
  });
});
