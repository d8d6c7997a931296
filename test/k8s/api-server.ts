/**
 * A Kubernetes API server for tests: plain node:http on 127.0.0.1 that speaks the wire protocol
 * the real @kubernetes/client-node uses, for Nodes (with the status subresource) and Events
 * (core/v1 and events.k8s.io/v1). Lists, watches (with history replay, bookmarks and
 * "410 Gone"), create, replace, delete and the three patch types, with Status objects for errors
 * — so code under test meets it exactly as it would meet a real API server, restarts included.
 *
 * The semantics follow the real server where a client could tell the difference:
 * - one global resourceVersion counter (as etcd's revision), handed out as strings;
 * - a write that changes nothing keeps the resourceVersion and sends no watch event;
 * - list items carry no kind/apiVersion (watch objects and single reads do);
 * - a watch from a resourceVersion older than the kept history gets one ERROR event with a
 *   410 Expired Status in a 200 response, then the stream ends;
 * - writes to a Node keep its .status; writes to nodes/{name}/status change only .status.
 * See test/k8s/README.md for what is and is not implemented.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

// ---------------------------------------------------------------------------------------------
// Types

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

/** A stored object. metadata is always present on stored objects. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    generateName?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    creationTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface RequestRecord {
  readonly method: string;
  /** The URL path, without the query. */
  readonly path: string;
  /** The raw query string, without the '?'. */
  readonly query: string;
  readonly contentType: string | undefined;
  readonly watch: boolean;
  /** The HTTP status sent (0 until the response head is written). */
  status: number;
  readonly time: number;
}

export interface FakeApiServerOptions {
  /** Bearer token the kubeconfig carries and the server requires (when requireAuth). */
  readonly token?: string;
  /** Answer 401 to requests without `Authorization: Bearer <token>`. Default true. */
  readonly requireAuth?: boolean;
  /** How many watch events are kept for replay; older resourceVersions get 410. Default 1000. */
  readonly historySize?: number;
  /** Interval of BOOKMARK events on watches that allow them. Default 60 000 ms (as the real server, about once a minute). */
  readonly bookmarkIntervalMs?: number;
  /** Server-side timeout of watches that give no timeoutSeconds. Default: none (the real server picks 30–60 min). */
  readonly defaultWatchTimeoutSeconds?: number;
}

export interface FaultSpec {
  readonly method?: string;
  /** Exact path, or a RegExp tested against the path. */
  readonly path?: string | RegExp;
  /** Whether watch requests match. Default: both watches and non-watches match. */
  readonly watch?: boolean;
  readonly status: number;
  readonly reason?: string;
  readonly message?: string;
  /** How many matching requests fail. Default 1. */
  readonly times?: number;
  readonly retryAfterSeconds?: number;
}

interface ResourceType {
  readonly group: string;
  readonly version: string;
  readonly plural: string;
  readonly kind: string;
  readonly namespaced: boolean;
  readonly hasStatus: boolean;
  readonly shortNames: readonly string[];
  /** Field selector labels the real server supports for this resource. */
  readonly fieldLabels: ReadonlyMap<string, (obj: KubeObject) => string>;
  /** Strategic-merge-patch list strategies: dotted path → merge key ('' = merge a list of scalars as a set). */
  readonly mergeKeys: ReadonlyMap<string, string>;
}

interface HistoryEntry {
  readonly rv: number;
  readonly resource: ResourceType;
  readonly type: WatchEventType;
  readonly object: KubeObject;
  /** The object before a MODIFIED, for selector transitions. */
  readonly previous: KubeObject | undefined;
}

interface Watcher {
  readonly res: ServerResponse;
  readonly resource: ResourceType;
  readonly namespace: string | undefined;
  readonly labels: Selector;
  readonly fields: Selector;
  readonly timers: NodeJS.Timeout[];
  closed: boolean;
}

type Selector = (obj: KubeObject) => boolean;

interface Route {
  readonly resource: ResourceType;
  readonly namespace: string | undefined;
  readonly name: string | undefined;
  readonly subresource: string | undefined;
  readonly watchPrefix: boolean;
}

interface ListSnapshot {
  readonly rv: number;
  readonly items: KubeObject[];
}

// ---------------------------------------------------------------------------------------------
// Resources

function path(obj: unknown, dotted: string): unknown {
  let cur: unknown = obj;
  for (const part of dotted.split('.')) {
    if (!isObject(cur)) return undefined;
    cur = cur[part];
  }
  return cur;
}

function fieldString(dotted: string): (obj: KubeObject) => string {
  return (obj) => {
    const v = path(obj, dotted);
    return v === undefined || v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
  };
}

const META_FIELDS: Array<[string, (obj: KubeObject) => string]> = [
  ['metadata.name', fieldString('metadata.name')],
  ['metadata.namespace', fieldString('metadata.namespace')],
];

const OBJECT_META_MERGE_KEYS: Array<[string, string]> = [
  ['metadata.finalizers', ''],
  ['metadata.ownerReferences', 'uid'],
];

const NODES: ResourceType = {
  group: '',
  version: 'v1',
  plural: 'nodes',
  kind: 'Node',
  namespaced: false,
  hasStatus: true,
  shortNames: ['no'],
  fieldLabels: new Map([...META_FIELDS, ['spec.unschedulable', (obj) => String(path(obj, 'spec.unschedulable') === true)]]),
  // From the patchStrategy/patchMergeKey tags of k8s.io/api/core/v1 NodeSpec and NodeStatus.
  mergeKeys: new Map([
    ...OBJECT_META_MERGE_KEYS,
    ['spec.podCIDRs', ''],
    ['status.conditions', 'type'],
    ['status.addresses', 'type'],
  ]),
};

const CORE_EVENTS: ResourceType = {
  group: '',
  version: 'v1',
  plural: 'events',
  kind: 'Event',
  namespaced: true,
  hasStatus: false,
  shortNames: ['ev'],
  fieldLabels: new Map([
    ...META_FIELDS,
    ...['kind', 'namespace', 'name', 'uid', 'apiVersion', 'resourceVersion', 'fieldPath'].map(
      (f): [string, (obj: KubeObject) => string] => [`involvedObject.${f}`, fieldString(`involvedObject.${f}`)],
    ),
    ['reason', fieldString('reason')],
    ['reportingComponent', fieldString('reportingComponent')],
    ['source', fieldString('source.component')],
    ['type', fieldString('type')],
  ]),
  mergeKeys: new Map(OBJECT_META_MERGE_KEYS),
};

const EVENTS_V1_EVENTS: ResourceType = {
  group: 'events.k8s.io',
  version: 'v1',
  plural: 'events',
  kind: 'Event',
  namespaced: true,
  hasStatus: false,
  shortNames: ['ev'],
  fieldLabels: new Map([
    ...META_FIELDS,
    ...['kind', 'namespace', 'name', 'uid', 'apiVersion', 'resourceVersion', 'fieldPath'].map(
      (f): [string, (obj: KubeObject) => string] => [`regarding.${f}`, fieldString(`regarding.${f}`)],
    ),
    ['reason', fieldString('reason')],
    ['reportingController', fieldString('reportingController')],
    ['type', fieldString('type')],
  ]),
  mergeKeys: new Map(OBJECT_META_MERGE_KEYS),
};

const RESOURCES: readonly ResourceType[] = [NODES, CORE_EVENTS, EVENTS_V1_EVENTS];

function groupVersion(r: ResourceType): string {
  return r.group === '' ? r.version : `${r.group}/${r.version}`;
}

function resourceKey(r: ResourceType): string {
  return `${groupVersion(r)}/${r.plural}`;
}

function groupResource(r: ResourceType): string {
  return r.group === '' ? r.plural : `${r.plural}.${r.group}`;
}

function objectKey(namespace: string | undefined, name: string): string {
  return `${namespace ?? ''}/${name}`;
}

// ---------------------------------------------------------------------------------------------
// Errors as Status objects

export class ApiError extends Error {
  readonly code: number;
  readonly reason: string;
  readonly details: JsonObject | undefined;
  readonly retryAfterSeconds: number | undefined;
  constructor(code: number, reason: string, message: string, details?: JsonObject, retryAfterSeconds?: number) {
    super(message);
    this.code = code;
    this.reason = reason;
    this.details = details;
    this.retryAfterSeconds = retryAfterSeconds;
  }

  status(): JsonObject {
    const s: JsonObject = {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: this.message,
      reason: this.reason,
      code: this.code,
    };
    if (this.details !== undefined) s.details = this.details;
    return s;
  }
}

function notFound(r: ResourceType, name: string): ApiError {
  return new ApiError(404, 'NotFound', `${groupResource(r)} "${name}" not found`, { name, group: r.group, kind: r.plural });
}

function conflict(r: ResourceType, name: string): ApiError {
  return new ApiError(
    409,
    'Conflict',
    `Operation cannot be fulfilled on ${groupResource(r)} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
    { name, group: r.group, kind: r.plural },
  );
}

function badRequest(message: string): ApiError {
  return new ApiError(400, 'BadRequest', message);
}

function invalid(r: ResourceType, name: string, message: string): ApiError {
  return new ApiError(422, 'Invalid', `${r.kind} "${name}" is invalid: ${message}`, { name, group: r.group, kind: r.kind });
}

function expired(message: string): ApiError {
  return new ApiError(410, 'Expired', message);
}

// ---------------------------------------------------------------------------------------------
// JSON helpers

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

/** Stored objects are shared by the store, the watch history and open watches: freeze them, so that no code path can change one in place. */
function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a).filter((k) => a[k] !== undefined);
    const kb = Object.keys(b).filter((k) => b[k] !== undefined);
    return ka.length === kb.length && ka.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]));
  }
  return false;
}

function nowTimestamp(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
}

function metaOf(obj: KubeObject): NonNullable<KubeObject['metadata']> {
  if (!isObject(obj.metadata)) obj.metadata = {};
  return obj.metadata as NonNullable<KubeObject['metadata']>;
}

// ---------------------------------------------------------------------------------------------
// Patches

/** RFC 7386 JSON merge patch. */
export function applyMergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return clone(patch);
  const out: Record<string, unknown> = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = applyMergePatch(out[k], v);
  }
  return out;
}

/**
 * The subset of strategic merge patch this server implements: maps merge recursively, `null`
 * deletes a key, lists are replaced — except the lists whose Go type declares a merge strategy
 * (mergeKeys: status.conditions and status.addresses by `type`, spec.podCIDRs and
 * metadata.finalizers as sets, metadata.ownerReferences by `uid`), where patch elements are merged
 * into the existing list by key. Directives: `$patch: replace|delete` in maps and list elements,
 * `$deleteFromPrimitiveList/<field>`, `$retainKeys`; `$setElementOrder/<field>` is accepted and ignored.
 */
export function applyStrategicMergePatch(target: unknown, patch: unknown, mergeKeys: ReadonlyMap<string, string>, at = ''): unknown {
  if (Array.isArray(patch)) return mergeList(target, patch, mergeKeys, at);
  if (!isObject(patch)) return clone(patch);
  const directive = patch.$patch;
  if (directive === 'delete') return undefined;
  if (directive === 'replace') return stripDirectives(patch);
  if (directive !== undefined) throw badRequest(`unknown patch type: ${String(directive)}`);
  const out: Record<string, unknown> = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$deleteFromPrimitiveList/')) {
      const field = k.slice('$deleteFromPrimitiveList/'.length);
      if (!Array.isArray(v)) throw badRequest(`${k} must be a list`);
      const cur = out[field];
      if (Array.isArray(cur)) out[field] = cur.filter((x) => !v.some((d) => deepEqual(d, x)));
      continue;
    }
    if (k.startsWith('$setElementOrder/') || k === '$retainKeys') continue;
    if (k.startsWith('$')) throw badRequest(`unknown strategic merge patch directive: ${k}`);
    if (v === null) {
      delete out[k];
      continue;
    }
    const merged = applyStrategicMergePatch(out[k], v, mergeKeys, at === '' ? k : `${at}.${k}`);
    if (merged === undefined) delete out[k];
    else out[k] = merged;
  }
  const retain = patch.$retainKeys;
  if (retain !== undefined) {
    if (!Array.isArray(retain)) throw badRequest('$retainKeys must be a list');
    for (const k of Object.keys(out)) if (!retain.includes(k)) delete out[k];
  }
  return out;
}

function stripDirectives(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripDirectives);
  if (!isObject(v)) return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) if (!k.startsWith('$')) out[k] = stripDirectives(x);
  return out;
}

function mergeList(target: unknown, patch: unknown[], mergeKeys: ReadonlyMap<string, string>, at: string): unknown {
  const key = mergeKeys.get(at);
  if (key === undefined || patch.some((e) => isObject(e) && e.$patch === 'replace')) {
    return stripDirectives(patch.filter((e) => !(isObject(e) && e.$patch === 'replace')));
  }
  const out: unknown[] = Array.isArray(target) ? target.map((x) => clone(x)) : [];
  if (key === '') {
    for (const e of patch) if (!out.some((x) => deepEqual(x, e))) out.push(clone(e));
    return out;
  }
  for (const e of patch) {
    if (!isObject(e) || e[key] === undefined) throw badRequest(`map: ${JSON.stringify(e)} does not contain declared merge key: ${key}`);
    const i = out.findIndex((x) => isObject(x) && deepEqual(x[key], e[key]));
    if (e.$patch === 'delete') {
      if (i >= 0) out.splice(i, 1);
      continue;
    }
    if (i >= 0) out[i] = applyStrategicMergePatch(out[i], e, mergeKeys, at);
    else out.push(stripDirectives(e));
  }
  return out;
}

class JsonPatchError extends Error {}

function parsePointer(pointer: string): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) throw new JsonPatchError(`invalid JSON pointer: ${JSON.stringify(pointer)}`);
  return pointer
    .slice(1)
    .split('/')
    .map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function arrayIndex(token: string, length: number, allowEnd: boolean): number {
  if (allowEnd && token === '-') return length;
  if (!/^(0|[1-9][0-9]*)$/.test(token)) throw new JsonPatchError(`invalid array index: ${token}`);
  const i = Number(token);
  if (i > length || (!allowEnd && i === length)) throw new JsonPatchError(`array index out of bounds: ${token}`);
  return i;
}

function pointerGet(doc: unknown, tokens: string[]): unknown {
  let cur = doc;
  for (const t of tokens) {
    if (Array.isArray(cur)) cur = cur[arrayIndex(t, cur.length, false)];
    else if (isObject(cur) && Object.hasOwn(cur, t)) cur = cur[t];
    else throw new JsonPatchError(`path /${tokens.join('/')} does not exist`);
  }
  return cur;
}

/** RFC 6902 JSON patch (add, remove, replace, move, copy, test) on a copy of doc. */
export function applyJsonPatch(doc: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw badRequest('json patch must be a list of operations');
  let root = clone(doc);
  const parentOf = (tokens: string[]): { parent: unknown; last: string } => ({
    parent: pointerGet(root, tokens.slice(0, -1)),
    last: tokens[tokens.length - 1] as string,
  });
  const add = (tokens: string[], value: unknown): void => {
    if (tokens.length === 0) {
      root = value;
      return;
    }
    const { parent, last } = parentOf(tokens);
    if (Array.isArray(parent)) parent.splice(arrayIndex(last, parent.length, true), 0, value);
    else if (isObject(parent)) parent[last] = value;
    else throw new JsonPatchError(`cannot add to a non-container at /${tokens.join('/')}`);
  };
  const remove = (tokens: string[]): unknown => {
    if (tokens.length === 0) throw new JsonPatchError('cannot remove the whole document');
    const { parent, last } = parentOf(tokens);
    if (Array.isArray(parent)) return parent.splice(arrayIndex(last, parent.length, false), 1)[0];
    if (isObject(parent) && Object.hasOwn(parent, last)) {
      const v = parent[last];
      delete parent[last];
      return v;
    }
    throw new JsonPatchError(`path /${tokens.join('/')} does not exist`);
  };
  for (const op of ops) {
    if (!isObject(op) || typeof op.op !== 'string' || typeof op.path !== 'string') {
      throw badRequest(`invalid json patch operation: ${JSON.stringify(op)}`);
    }
    const tokens = parsePointer(op.path);
    const needValue = (): unknown => {
      if (!Object.hasOwn(op, 'value')) throw badRequest(`json patch ${op.op} at ${op.path} has no value`);
      return clone(op.value);
    };
    const from = (): string[] => {
      if (typeof op.from !== 'string') throw badRequest(`json patch ${op.op} at ${op.path} has no from`);
      return parsePointer(op.from);
    };
    switch (op.op) {
      case 'add':
        add(tokens, needValue());
        break;
      case 'remove':
        remove(tokens);
        break;
      case 'replace': {
        const value = needValue();
        pointerGet(root, tokens);
        if (tokens.length === 0) root = value;
        else {
          remove(tokens);
          add(tokens, value);
        }
        break;
      }
      case 'move': {
        const f = from();
        if (tokens.length > f.length && f.every((t, i) => tokens[i] === t)) throw new JsonPatchError('cannot move a value into itself');
        add(tokens, remove(f));
        break;
      }
      case 'copy':
        add(tokens, clone(pointerGet(root, from())));
        break;
      case 'test':
        if (!deepEqual(pointerGet(root, tokens), needValue())) throw new JsonPatchError(`testing value ${op.path} failed`);
        break;
      default:
        throw badRequest(`unexpected json patch operation: ${op.op}`);
    }
  }
  return root;
}

// ---------------------------------------------------------------------------------------------
// Selectors

function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === ',' && depth === 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts.map((p) => p.trim()).filter((p) => p !== '');
}

const LABEL_KEY = String.raw`(?:[a-z0-9A-Z.\-]+/)?[a-zA-Z0-9](?:[a-zA-Z0-9_.\-]*[a-zA-Z0-9])?`;
const LABEL_VALUE = String.raw`(?:[a-zA-Z0-9](?:[a-zA-Z0-9_.\-]*[a-zA-Z0-9])?)?`;

/** Kubernetes label selector syntax: =, ==, !=, in, notin, exists, !exists, gt, lt. */
export function parseLabelSelector(text: string): Selector {
  const reqs: Selector[] = [];
  for (const part of splitTopLevel(text)) {
    let m: RegExpExecArray | null;
    const labels = (o: KubeObject): Record<string, string> => o.metadata?.labels ?? {};
    if ((m = new RegExp(String.raw`^!\s*(${LABEL_KEY})$`).exec(part))) {
      const k = m[1] as string;
      reqs.push((o) => !Object.hasOwn(labels(o), k));
    } else if ((m = new RegExp(String.raw`^(${LABEL_KEY})\s+(in|notin)\s*\(([^)]*)\)$`).exec(part))) {
      const k = m[1] as string;
      const op = m[2];
      const values = (m[3] as string).split(',').map((v) => v.trim()).filter((v) => v !== '');
      for (const v of values) if (!new RegExp(`^${LABEL_VALUE}$`).test(v)) throw badRequest(`unable to parse requirement: invalid label value: "${v}"`);
      if (op === 'in') reqs.push((o) => Object.hasOwn(labels(o), k) && values.includes(labels(o)[k] as string));
      else reqs.push((o) => !Object.hasOwn(labels(o), k) || !values.includes(labels(o)[k] as string));
    } else if ((m = new RegExp(String.raw`^(${LABEL_KEY})\s*(==|=|!=)\s*(${LABEL_VALUE})$`).exec(part))) {
      const k = m[1] as string;
      const v = m[3] as string;
      if (m[2] === '!=') reqs.push((o) => labels(o)[k] !== v);
      else reqs.push((o) => Object.hasOwn(labels(o), k) && labels(o)[k] === v);
    } else if ((m = new RegExp(String.raw`^(${LABEL_KEY})\s*(>|<)\s*(-?[0-9]+)$`).exec(part))) {
      const k = m[1] as string;
      const bound = Number(m[3]);
      const gt = m[2] === '>';
      reqs.push((o) => {
        const v = labels(o)[k];
        if (v === undefined || !/^-?[0-9]+$/.test(v)) return false;
        return gt ? Number(v) > bound : Number(v) < bound;
      });
    } else if ((m = new RegExp(String.raw`^(${LABEL_KEY})$`).exec(part))) {
      const k = m[1] as string;
      reqs.push((o) => Object.hasOwn(labels(o), k));
    } else {
      throw badRequest(`unable to parse requirement: ${JSON.stringify(part)}`);
    }
  }
  return (o) => reqs.every((r) => r(o));
}

/** Field selectors: `field=value`, `field==value`, `field!=value`, comma-separated, for the fields the resource supports. */
export function parseFieldSelector(text: string, r: ResourceType): Selector {
  const reqs: Selector[] = [];
  for (const part of splitTopLevel(text)) {
    const m = /^([^=!]+?)\s*(==|=|!=)\s*(.*)$/.exec(part);
    if (!m) throw badRequest(`invalid selector: '${text}'; can't understand '${part}'`);
    const field = m[1] as string;
    const value = m[3] as string;
    const get = r.fieldLabels.get(field);
    if (get === undefined) throw badRequest(`field label not supported: ${field}`);
    if (m[2] === '!=') reqs.push((o) => get(o) !== value);
    else reqs.push((o) => get(o) === value);
  }
  return (o) => reqs.every((q) => q(o));
}

// ---------------------------------------------------------------------------------------------
// The server

const MAX_BODY_BYTES = 3 * 1024 * 1024;
const SNAPSHOT_LIMIT = 32;
const PATCH_TYPES = ['application/json-patch+json', 'application/merge-patch+json', 'application/strategic-merge-patch+json'];

export class FakeApiServer {
  readonly token: string;
  /** Every request received, in order (including rejected ones). */
  readonly requests: RequestRecord[] = [];

  private readonly requireAuth: boolean;
  private readonly historySize: number;
  private readonly bookmarkIntervalMs: number;
  private readonly defaultWatchTimeoutSeconds: number | undefined;

  private server: Server | undefined;
  private boundPort: number | undefined;
  private readonly store = new Map<string, Map<string, KubeObject>>();
  private history: HistoryEntry[] = [];
  private rv = 0;
  /** Watches from a resourceVersion below this get 410: the events after it are no longer kept. */
  private compactedRv = 0;
  private readonly watchers = new Set<Watcher>();
  private readonly snapshots = new Map<string, ListSnapshot>();
  private readonly faults: Array<FaultSpec & { remaining: number }> = [];

  constructor(options: FakeApiServerOptions = {}) {
    this.token = options.token ?? `wgts-test-${randomBytes(8).toString('hex')}`;
    this.requireAuth = options.requireAuth ?? true;
    this.historySize = options.historySize ?? 1000;
    this.bookmarkIntervalMs = options.bookmarkIntervalMs ?? 60_000;
    this.defaultWatchTimeoutSeconds = options.defaultWatchTimeoutSeconds;
    for (const r of RESOURCES) this.store.set(resourceKey(r), new Map());
  }

  // ---- lifecycle -----------------------------------------------------------------------------

  /** Listens on 127.0.0.1 (port 0 or omitted: a random port). */
  async start(options: { port?: number } = {}): Promise<{ url: string }> {
    if (this.server !== undefined) throw new Error('FakeApiServer already started');
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) this.sendError(res, new ApiError(500, 'InternalError', `internal error: ${String(err)}`));
        else res.destroy();
      });
    });
    // Longer than undici's idle keep-alive (4 s), so the client never reuses a socket the server is closing.
    server.keepAliveTimeout = 65_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '127.0.0.1', port: options.port ?? 0 }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    this.boundPort = (server.address() as AddressInfo).port;
    return { url: this.url };
  }

  /**
   * Stops listening and ends open watches: gracefully (the chunked stream terminates, as when a
   * real API server shuts down) or, with abrupt, by destroying the sockets (as a crash would).
   */
  async stop(options: { abrupt?: boolean } = {}): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    await this.dropWatches(options);
    server.closeAllConnections();
    await closed;
  }

  /** stop() then start() on the same port. dropState loses every object (and expires every resourceVersion handed out). */
  async restart(options: { dropState?: boolean; downtimeMs?: number; abrupt?: boolean } = {}): Promise<{ url: string }> {
    const port = this.port;
    await this.stop({ abrupt: options.abrupt ?? false });
    if (options.dropState) this.dropState();
    if (options.downtimeMs !== undefined && options.downtimeMs > 0) await new Promise((r) => setTimeout(r, options.downtimeMs));
    return this.start({ port });
  }

  get started(): boolean {
    return this.server !== undefined;
  }

  /** The port last listened on. */
  get port(): number {
    if (this.boundPort === undefined) throw new Error('FakeApiServer was never started');
    return this.boundPort;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  kubeconfig(): string {
    return [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: wgts-fake',
      '  cluster:',
      `    server: ${this.url}`,
      '    insecure-skip-tls-verify: true',
      'users:',
      '- name: wgts-fake',
      '  user:',
      `    token: ${this.token}`,
      'contexts:',
      '- name: wgts-fake',
      '  context:',
      '    cluster: wgts-fake',
      '    user: wgts-fake',
      '    namespace: default',
      'current-context: wgts-fake',
      '',
    ].join('\n');
  }

  /** Writes kubeconfig() to dir/fileName (mode 0600) and returns the path. */
  writeKubeconfig(dir: string, fileName = 'kubeconfig'): string {
    mkdirSync(dir, { recursive: true });
    const file = join(dir, fileName);
    writeFileSync(file, this.kubeconfig(), { mode: 0o600 });
    return file;
  }

  // ---- test-side API -------------------------------------------------------------------------

  /** Creates or replaces a Node, bypassing validation and preconditions; watchers see ADDED or MODIFIED. */
  upsertNode(node: KubeObject): KubeObject {
    const obj = clone(node);
    const meta = metaOf(obj);
    if (typeof meta.name !== 'string' || meta.name === '') throw new Error('upsertNode: metadata.name is required');
    const existing = this.bucket(NODES).get(objectKey(undefined, meta.name));
    if (existing === undefined) return clone(this.insert(NODES, obj));
    const m = metaOf(existing);
    meta.uid = m.uid;
    meta.creationTimestamp = m.creationTimestamp;
    return clone(this.update(NODES, existing, obj));
  }

  /** Deletes a Node; watchers see DELETED. False if there was none. */
  deleteNode(name: string): boolean {
    const existing = this.bucket(NODES).get(objectKey(undefined, name));
    if (existing === undefined) return false;
    this.remove(NODES, existing);
    return true;
  }

  getNode(name: string): KubeObject | undefined {
    const obj = this.bucket(NODES).get(objectKey(undefined, name));
    return obj === undefined ? undefined : clone(obj);
  }

  nodes(): KubeObject[] {
    return [...this.bucket(NODES).values()].map(clone);
  }

  /** The stored Events of both API groups (core/v1 first, then events.k8s.io/v1), in creation order. */
  events(): KubeObject[] {
    return [...this.bucket(CORE_EVENTS).values(), ...this.bucket(EVENTS_V1_EVENTS).values()].map(clone);
  }

  /** The requests that could change state: everything but GET (and HEAD). */
  writes(): RequestRecord[] {
    return this.requests.filter((r) => r.method !== 'GET' && r.method !== 'HEAD');
  }

  clearRequests(): void {
    this.requests.length = 0;
  }

  /** The current (global) resourceVersion. */
  get resourceVersion(): string {
    return String(this.rv);
  }

  /**
   * Forgets the watch history: every resourceVersion handed out so far becomes too old, so a
   * watch that resumes from one gets 410 Expired (and a client must re-list).
   */
  compact(): void {
    this.rv++;
    this.compactedRv = this.rv;
    this.history = [];
    this.snapshots.clear();
  }

  /** Ends every open watch (gracefully, or by destroying its socket); returns how many. */
  async dropWatches(options: { abrupt?: boolean } = {}): Promise<number> {
    const open = [...this.watchers];
    const finished = open.map((w) =>
      w.res.writableFinished || w.res.destroyed ? Promise.resolve() : new Promise<void>((resolve) => {
        w.res.once('close', resolve);
        w.res.once('finish', resolve);
      }),
    );
    for (const w of open) this.closeWatch(w, options.abrupt ?? false);
    // The terminating chunk must reach the socket before stop() closes the connections.
    await Promise.race([Promise.all(finished), new Promise((r) => setTimeout(r, 500))]);
    return open.length;
  }

  /** Open watch connections (of one resource, when plural is given: 'nodes', 'events'). */
  openWatches(plural?: string): number {
    let n = 0;
    for (const w of this.watchers) if (plural === undefined || w.resource.plural === plural) n++;
    return n;
  }

  /** Makes the next matching request(s) fail with the given status (a Status object, as the real server sends). */
  injectFault(fault: FaultSpec): void {
    this.faults.push({ ...fault, remaining: fault.times ?? 1 });
  }

  // ---- storage -------------------------------------------------------------------------------

  private bucket(r: ResourceType): Map<string, KubeObject> {
    return this.store.get(resourceKey(r)) as Map<string, KubeObject>;
  }

  private dropState(): void {
    for (const b of this.store.values()) b.clear();
    this.compact();
  }

  private insert(r: ResourceType, obj: KubeObject): KubeObject {
    const meta = metaOf(obj);
    obj.apiVersion = groupVersion(r);
    obj.kind = r.kind;
    meta.uid ??= randomUUID();
    meta.creationTimestamp ??= nowTimestamp();
    meta.resourceVersion = String(++this.rv);
    this.bucket(r).set(objectKey(meta.namespace, meta.name as string), deepFreeze(obj));
    this.record(r, 'ADDED', obj, undefined);
    return obj;
  }

  /** Stores next in place of existing; a change-nothing write keeps the resourceVersion and sends no event. */
  private update(r: ResourceType, existing: KubeObject, next: KubeObject): KubeObject {
    const meta = metaOf(next);
    next.apiVersion = groupVersion(r);
    next.kind = r.kind;
    meta.resourceVersion = existing.metadata?.resourceVersion;
    if (deepEqual(existing, next)) return existing;
    meta.resourceVersion = String(++this.rv);
    this.bucket(r).set(objectKey(meta.namespace, meta.name as string), deepFreeze(next));
    this.record(r, 'MODIFIED', next, existing);
    return next;
  }

  private remove(r: ResourceType, existing: KubeObject): KubeObject {
    const meta = metaOf(existing);
    this.bucket(r).delete(objectKey(meta.namespace, meta.name as string));
    // As etcd's watch does, the DELETED object carries the resourceVersion of the deletion.
    const gone = clone(existing);
    metaOf(gone).resourceVersion = String(++this.rv);
    this.record(r, 'DELETED', deepFreeze(gone), undefined);
    return gone;
  }

  private record(resource: ResourceType, type: WatchEventType, object: KubeObject, previous: KubeObject | undefined): void {
    const entry: HistoryEntry = { rv: this.rv, resource, type, object, previous };
    this.history.push(entry);
    while (this.history.length > this.historySize) {
      const dropped = this.history.shift() as HistoryEntry;
      this.compactedRv = Math.max(this.compactedRv, dropped.rv);
    }
    for (const w of this.watchers) if (w.resource === resource) this.deliver(w, entry);
  }

  // ---- HTTP ----------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const method = (req.method ?? 'GET').toUpperCase();
    const q = url.searchParams;
    const isWatch = q.get('watch') === 'true' || q.get('watch') === '1' || url.pathname.includes('/watch/');
    const record: RequestRecord = {
      method,
      path: url.pathname,
      query: url.search.slice(1),
      contentType: req.headers['content-type'],
      watch: isWatch && method === 'GET',
      status: 0,
      time: Date.now(),
    };
    this.requests.push(record);
    const origWriteHead = res.writeHead.bind(res);
    res.writeHead = ((...args: Parameters<ServerResponse['writeHead']>) => {
      record.status = args[0];
      return origWriteHead(...args);
    }) as ServerResponse['writeHead'];
    try {
      // As on a real cluster, health and version are public (system:public-info-viewer); the rest needs the token.
      const publicPath = /^\/(healthz|livez|readyz|version)\/?$/.test(url.pathname);
      if (this.requireAuth && !publicPath && req.headers.authorization !== `Bearer ${this.token}`) {
        await drain(req);
        throw new ApiError(401, 'Unauthorized', 'Unauthorized');
      }
      const fault = this.faults.find(
        (f) =>
          f.remaining > 0 &&
          (f.method === undefined || f.method.toUpperCase() === method) &&
          (f.watch === undefined || f.watch === record.watch) &&
          (f.path === undefined || (typeof f.path === 'string' ? f.path === url.pathname : f.path.test(url.pathname))),
      );
      if (fault !== undefined) {
        fault.remaining--;
        await drain(req);
        throw new ApiError(fault.status, fault.reason ?? 'InternalError', fault.message ?? `injected fault (${fault.status})`, undefined, fault.retryAfterSeconds);
      }
      if (this.serveDiscovery(url.pathname, method, res)) {
        await drain(req);
        return;
      }
      const route = parseRoute(url.pathname);
      if (route === undefined) {
        await drain(req);
        throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
      }
      await this.serveResource(route, method, q, req, res, isWatch || route.watchPrefix);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      this.sendError(res, err);
    }
  }

  private async serveResource(route: Route, method: string, q: URLSearchParams, req: IncomingMessage, res: ServerResponse, watch: boolean): Promise<void> {
    const { resource: r, namespace, name, subresource } = route;
    if (subresource !== undefined && !(subresource === 'status' && r.hasStatus)) {
      await drain(req);
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    }
    if (name === undefined) {
      if (method === 'GET') {
        await drain(req);
        if (watch) this.watch(r, namespace, q, undefined, res);
        else this.sendJson(res, 200, this.list(r, namespace, q));
        return;
      }
      if (method === 'POST') {
        if (namespace === undefined && r.namespaced) throw new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
        const body = await readJson(req, ['application/json']);
        this.sendJson(res, 201, this.create(r, namespace, body));
        return;
      }
      await drain(req);
      throw new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
    }
    if (r.namespaced && namespace === undefined) {
      await drain(req);
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    }
    switch (method) {
      case 'GET': {
        await drain(req);
        if (watch) {
          this.watch(r, namespace, q, name, res);
          return;
        }
        const obj = this.bucket(r).get(objectKey(namespace, name));
        if (obj === undefined) throw notFound(r, name);
        this.sendJson(res, 200, obj);
        return;
      }
      case 'PUT': {
        const body = await readJson(req, ['application/json']);
        this.sendJson(res, 200, this.replace(r, namespace, name, subresource, body));
        return;
      }
      case 'PATCH': {
        const contentType = mediaType(req.headers['content-type']);
        if (!PATCH_TYPES.includes(contentType)) {
          await drain(req);
          throw new ApiError(
            415,
            'UnsupportedMediaType',
            `the body of the request was in an unknown format - accepted media types include: ${PATCH_TYPES.join(', ')}`,
          );
        }
        const body = await readJson(req, PATCH_TYPES);
        this.sendJson(res, 200, this.patch(r, namespace, name, subresource, contentType, body));
        return;
      }
      case 'DELETE': {
        const body = await readBody(req);
        let options: unknown = undefined;
        if (body.length > 0) options = parseJson(body);
        this.sendJson(res, 200, this.delete(r, namespace, name, options));
        return;
      }
      default:
        await drain(req);
        throw new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
    }
  }

  private serveDiscovery(pathname: string, method: string, res: ServerResponse): boolean {
    if (method !== 'GET') return false;
    const p = pathname.replace(/\/+$/, '') || '/';
    if (p === '/healthz' || p === '/livez' || p === '/readyz') {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('ok');
      return true;
    }
    if (p === '/version') {
      this.sendJson(res, 200, {
        major: '1',
        minor: '33',
        gitVersion: 'v1.33.0-wgts-fake',
        gitCommit: '0000000000000000000000000000000000000000',
        gitTreeState: 'clean',
        buildDate: '2025-01-01T00:00:00Z',
        goVersion: 'go1.24.0',
        compiler: 'gc',
        platform: 'linux/amd64',
      });
      return true;
    }
    if (p === '/api') {
      this.sendJson(res, 200, {
        kind: 'APIVersions',
        versions: ['v1'],
        serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `127.0.0.1:${this.port}` }],
      });
      return true;
    }
    if (p === '/apis') {
      const groups = [...new Set(RESOURCES.filter((r) => r.group !== '').map((r) => r.group))];
      this.sendJson(res, 200, {
        kind: 'APIGroupList',
        apiVersion: 'v1',
        groups: groups.map((g) => {
          const versions = [...new Set(RESOURCES.filter((r) => r.group === g).map((r) => r.version))].map((v) => ({ groupVersion: `${g}/${v}`, version: v }));
          return { name: g, versions, preferredVersion: versions[0] as Json };
        }),
      });
      return true;
    }
    for (const gv of new Set(RESOURCES.map(groupVersion))) {
      if (p === (gv.includes('/') ? `/apis/${gv}` : `/api/${gv}`)) {
        const resources: Json[] = [];
        for (const r of RESOURCES.filter((x) => groupVersion(x) === gv)) {
          resources.push({
            name: r.plural,
            singularName: r.kind.toLowerCase(),
            namespaced: r.namespaced,
            kind: r.kind,
            verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
            shortNames: [...r.shortNames],
          });
          if (r.hasStatus) resources.push({ name: `${r.plural}/status`, singularName: '', namespaced: r.namespaced, kind: r.kind, verbs: ['get', 'patch', 'update'] });
        }
        this.sendJson(res, 200, { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: gv, resources });
        return true;
      }
    }
    return false;
  }

  private sendJson(res: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-cache, private' });
    res.end(text);
  }

  private sendError(res: ServerResponse, err: ApiError): void {
    if (err.retryAfterSeconds !== undefined) res.setHeader('Retry-After', String(err.retryAfterSeconds));
    this.sendJson(res, err.code, err.status());
  }

  // ---- verbs ---------------------------------------------------------------------------------

  private list(r: ResourceType, namespace: string | undefined, q: URLSearchParams): JsonObject {
    const limit = q.has('limit') ? Number(q.get('limit')) : 0;
    if (!Number.isInteger(limit) || limit < 0) throw badRequest(`invalid limit: ${q.get('limit') ?? ''}`);
    const token = q.get('continue') ?? '';
    let snapshot: ListSnapshot;
    let snapshotId: string = randomUUID();
    let offset = 0;
    if (token !== '') {
      let decoded: { id?: unknown; offset?: unknown };
      try {
        decoded = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { id?: unknown; offset?: unknown };
      } catch {
        throw badRequest('continue key is not valid: illegal base64 data');
      }
      const found = typeof decoded.id === 'string' ? this.snapshots.get(decoded.id) : undefined;
      if (found === undefined || typeof decoded.offset !== 'number' || found.rv < this.compactedRv) {
        throw expired(
          'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.',
        );
      }
      snapshot = found;
      snapshotId = decoded.id as string;
      offset = decoded.offset;
    } else {
      const labels = parseLabelSelector(q.get('labelSelector') ?? '');
      const fields = parseFieldSelector(q.get('fieldSelector') ?? '', r);
      const items = [...this.bucket(r).values()]
        .filter((o) => (namespace === undefined || o.metadata?.namespace === namespace) && labels(o) && fields(o))
        .sort((a, b) => objectKey(a.metadata?.namespace, a.metadata?.name ?? '').localeCompare(objectKey(b.metadata?.namespace, b.metadata?.name ?? '')));
      snapshot = { rv: this.rv, items: items.map(clone) };
    }
    const end = limit > 0 ? Math.min(snapshot.items.length, offset + limit) : snapshot.items.length;
    const page = snapshot.items.slice(offset, end).map((o) => {
      // Items of a typed list carry no TypeMeta, as from the real server.
      const item: KubeObject = { ...o };
      delete item.apiVersion;
      delete item.kind;
      return item;
    });
    const metadata: JsonObject = { resourceVersion: String(snapshot.rv) };
    if (end < snapshot.items.length) {
      this.snapshots.set(snapshotId, snapshot);
      while (this.snapshots.size > SNAPSHOT_LIMIT) this.snapshots.delete(this.snapshots.keys().next().value as string);
      metadata.continue = Buffer.from(JSON.stringify({ id: snapshotId, offset: end })).toString('base64url');
      metadata.remainingItemCount = snapshot.items.length - end;
    }
    return { kind: `${r.kind}List`, apiVersion: groupVersion(r), metadata, items: page as Json[] };
  }

  private create(r: ResourceType, namespace: string | undefined, body: unknown): KubeObject {
    if (!isObject(body)) throw badRequest('the body of the request is not a JSON object');
    const obj = clone(body) as KubeObject;
    checkTypeMeta(r, obj);
    const meta = metaOf(obj);
    if (meta.resourceVersion !== undefined && meta.resourceVersion !== '') {
      throw new ApiError(500, 'InternalError', 'resourceVersion should not be set on objects to be created');
    }
    delete meta.resourceVersion;
    if (typeof meta.name !== 'string' || meta.name === '') {
      if (typeof meta.generateName !== 'string' || meta.generateName === '') {
        throw invalid(r, '', 'metadata.name: Required value: name or generateName is required');
      }
      meta.name = meta.generateName + randomBytes(4).toString('hex').slice(0, 5);
    }
    checkNamespace(r, obj, namespace);
    if (this.bucket(r).has(objectKey(namespace, meta.name))) {
      throw new ApiError(409, 'AlreadyExists', `${groupResource(r)} "${meta.name}" already exists`, { name: meta.name, group: r.group, kind: r.plural });
    }
    delete meta.uid;
    delete meta.creationTimestamp;
    delete meta.deletionTimestamp;
    return this.insert(r, obj);
  }

  private replace(r: ResourceType, namespace: string | undefined, name: string, subresource: string | undefined, body: unknown): KubeObject {
    if (!isObject(body)) throw badRequest('the body of the request is not a JSON object');
    const existing = this.bucket(r).get(objectKey(namespace, name));
    if (existing === undefined) throw notFound(r, name);
    const obj = clone(body) as KubeObject;
    checkTypeMeta(r, obj);
    const meta = metaOf(obj);
    if (meta.name !== name) throw badRequest(`the name of the object (${String(meta.name)}) does not match the name on the URL (${name})`);
    checkNamespace(r, obj, namespace);
    const rv = meta.resourceVersion;
    if (rv !== undefined && rv !== '' && rv !== existing.metadata?.resourceVersion) throw conflict(r, name);
    return this.commitWrite(r, existing, obj, subresource);
  }

  private patch(r: ResourceType, namespace: string | undefined, name: string, subresource: string | undefined, contentType: string, body: unknown): KubeObject {
    const existing = this.bucket(r).get(objectKey(namespace, name));
    if (existing === undefined) throw notFound(r, name);
    let patched: unknown;
    if (contentType === 'application/json-patch+json') {
      try {
        patched = applyJsonPatch(existing, body);
      } catch (err) {
        if (err instanceof JsonPatchError) throw new ApiError(422, 'Invalid', err.message);
        throw err;
      }
    } else {
      if (!isObject(body)) throw badRequest('the patch is not a JSON object');
      patched = contentType === 'application/merge-patch+json' ? applyMergePatch(existing, body) : applyStrategicMergePatch(existing, body, r.mergeKeys);
    }
    if (!isObject(patched)) throw new ApiError(422, 'Invalid', 'the patched object is not a JSON object');
    // Merge patches share the untouched subtrees with the stored object: work on a copy.
    const obj = clone(patched) as KubeObject;
    const meta = metaOf(obj);
    const old = metaOf(existing);
    // The patch was applied to the current object, so a resourceVersion that differs came from the patch: a precondition.
    if (meta.resourceVersion !== undefined && meta.resourceVersion !== '' && meta.resourceVersion !== old.resourceVersion) throw conflict(r, name);
    if (meta.uid !== undefined && meta.uid !== old.uid) {
      throw new ApiError(409, 'Conflict', `Precondition failed: UID in precondition: ${String(meta.uid)}, UID in object meta: ${String(old.uid)}`);
    }
    if (meta.name !== name) throw badRequest(`the name of the object (${String(meta.name)}) does not match the name on the URL (${name})`);
    if ((obj.apiVersion ?? groupVersion(r)) !== groupVersion(r) || (obj.kind ?? r.kind) !== r.kind) throw badRequest('a patch may not change apiVersion or kind');
    checkNamespace(r, obj, namespace);
    return this.commitWrite(r, existing, obj, subresource);
  }

  /** The common tail of replace and patch: system fields and the status subresource rules. */
  private commitWrite(r: ResourceType, existing: KubeObject, next: KubeObject, subresource: string | undefined): KubeObject {
    const old = metaOf(existing);
    let obj = next;
    if (r.hasStatus) {
      if (subresource === 'status') {
        // A status write changes only .status.
        obj = clone(existing);
        if (next.status === undefined) delete obj.status;
        else obj.status = clone(next.status);
      } else if (existing.status === undefined) {
        delete obj.status;
      } else {
        obj.status = clone(existing.status);
      }
    }
    const meta = metaOf(obj);
    if (meta.uid !== undefined && meta.uid !== old.uid) {
      throw new ApiError(409, 'Conflict', `Precondition failed: UID in precondition: ${String(meta.uid)}, UID in object meta: ${String(old.uid)}`);
    }
    meta.uid = old.uid;
    meta.creationTimestamp = old.creationTimestamp;
    meta.namespace = old.namespace;
    if (old.namespace === undefined) delete meta.namespace;
    return this.update(r, existing, obj);
  }

  private delete(r: ResourceType, namespace: string | undefined, name: string, options: unknown): JsonObject {
    const existing = this.bucket(r).get(objectKey(namespace, name));
    if (existing === undefined) throw notFound(r, name);
    const pre = isObject(options) && isObject(options.preconditions) ? options.preconditions : {};
    const old = metaOf(existing);
    if (typeof pre.uid === 'string' && pre.uid !== old.uid) {
      throw new ApiError(409, 'Conflict', `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${String(old.uid)}`);
    }
    if (typeof pre.resourceVersion === 'string' && pre.resourceVersion !== old.resourceVersion) {
      throw new ApiError(
        409,
        'Conflict',
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${String(old.resourceVersion)}`,
      );
    }
    this.remove(r, existing);
    return {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Success',
      details: { name, group: r.group, kind: r.plural, uid: old.uid ?? '' },
    };
  }

  // ---- watch ---------------------------------------------------------------------------------

  private watch(r: ResourceType, namespace: string | undefined, q: URLSearchParams, name: string | undefined, res: ServerResponse): void {
    const labels = parseLabelSelector(q.get('labelSelector') ?? '');
    let fields = parseFieldSelector(q.get('fieldSelector') ?? '', r);
    if (name !== undefined) {
      const byField = fields;
      fields = (o) => o.metadata?.name === name && byField(o);
    }
    const bookmarks = q.get('allowWatchBookmarks') === 'true' || q.get('allowWatchBookmarks') === '1';
    const sendInitialEvents = q.get('sendInitialEvents') === 'true';
    const rvText = q.get('resourceVersion') ?? '';
    if (sendInitialEvents && (!bookmarks || q.get('resourceVersionMatch') !== 'NotOlderThan')) {
      throw new ApiError(422, 'Invalid', 'sendInitialEvents requires allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan');
    }
    let from: number | undefined;
    if (rvText !== '' && rvText !== '0') {
      if (!/^[0-9]+$/.test(rvText)) throw badRequest(`invalid resource version: ${rvText}`);
      from = Number(rvText);
    }
    const timeoutText = q.get('timeoutSeconds');
    const timeoutSeconds = timeoutText !== null ? Number(timeoutText) : this.defaultWatchTimeoutSeconds;

    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = { res, resource: r, namespace, labels, fields, timers: [], closed: false };
    const write = (type: string, object: unknown): void => {
      res.write(`${JSON.stringify({ type, object })}\n`);
    };

    if (from !== undefined && from < this.compactedRv) {
      write('ERROR', expired(`too old resource version: ${from} (${this.compactedRv})`).status());
      res.end();
      return;
    }
    if (from !== undefined && from > this.rv) {
      write('ERROR', new ApiError(504, 'Timeout', `Too large resource version: ${from}, current: ${this.rv}`, { retryAfterSeconds: 1 }).status());
      res.end();
      return;
    }
    const matches = (o: KubeObject): boolean => (namespace === undefined || o.metadata?.namespace === namespace) && labels(o) && fields(o);
    if (from === undefined || sendInitialEvents) {
      // No resourceVersion (or "0"): the current state as ADDED events, then changes.
      const items = [...this.bucket(r).values()].filter(matches);
      for (const o of items) write('ADDED', o);
      if (sendInitialEvents) {
        write('BOOKMARK', {
          kind: r.kind,
          apiVersion: groupVersion(r),
          metadata: { resourceVersion: String(this.rv), annotations: { 'k8s.io/initial-events-end': 'true' } },
        });
      }
    }
    if (from !== undefined && !sendInitialEvents) {
      for (const e of this.history) if (e.rv > from && e.resource === r) this.deliver(w, e);
    }
    this.watchers.add(w);
    res.on('close', () => this.closeWatch(w, false));
    if (bookmarks) {
      const t = setInterval(() => write('BOOKMARK', { kind: r.kind, apiVersion: groupVersion(r), metadata: { resourceVersion: String(this.rv) } }), this.bookmarkIntervalMs);
      w.timers.push(t);
    }
    if (timeoutSeconds !== undefined && Number.isFinite(timeoutSeconds) && timeoutSeconds > 0) {
      w.timers.push(setTimeout(() => this.closeWatch(w, false), timeoutSeconds * 1000));
    }
  }

  /** Writes entry to w as the event this watcher should see, given its selectors (ADDED/DELETED when an object enters/leaves them). */
  private deliver(w: Watcher, e: HistoryEntry): void {
    if (w.closed) return;
    const matches = (o: KubeObject | undefined): boolean =>
      o !== undefined && (w.namespace === undefined || o.metadata?.namespace === w.namespace) && w.labels(o) && w.fields(o);
    let type: string | undefined;
    if (e.type !== 'MODIFIED') type = matches(e.object) ? e.type : undefined;
    else {
      const now = matches(e.object);
      const before = matches(e.previous);
      type = now && before ? 'MODIFIED' : now ? 'ADDED' : before ? 'DELETED' : undefined;
    }
    if (type !== undefined) w.res.write(`${JSON.stringify({ type, object: e.object })}\n`);
  }

  private closeWatch(w: Watcher, abrupt: boolean): void {
    if (!this.watchers.delete(w) && w.closed) return;
    w.closed = true;
    for (const t of w.timers) clearTimeout(t);
    if (abrupt) w.res.socket?.destroy();
    else if (!w.res.writableEnded && !w.res.destroyed) w.res.end();
  }
}

// ---------------------------------------------------------------------------------------------
// Request helpers

function parseRoute(pathname: string): Route | undefined {
  const parts = pathname.split('/').filter((p) => p !== '').map(decodeURIComponent);
  let group: string;
  let version: string;
  let rest: string[];
  if (parts[0] === 'api' && parts.length >= 3) {
    group = '';
    version = parts[1] as string;
    rest = parts.slice(2);
  } else if (parts[0] === 'apis' && parts.length >= 4) {
    group = parts[1] as string;
    version = parts[2] as string;
    rest = parts.slice(3);
  } else {
    return undefined;
  }
  let watchPrefix = false;
  if (rest[0] === 'watch') {
    watchPrefix = true;
    rest = rest.slice(1);
  }
  let namespace: string | undefined;
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const [plural, name, subresource, ...extra] = rest;
  if (plural === undefined || extra.length > 0) return undefined;
  const resource = RESOURCES.find((r) => r.group === group && r.version === version && r.plural === plural);
  if (resource === undefined) return undefined;
  if (namespace !== undefined && !resource.namespaced) return undefined;
  if (watchPrefix && subresource !== undefined) return undefined;
  return { resource, namespace, name, subresource, watchPrefix };
}

function mediaType(header: string | undefined): string {
  return (header ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const b = chunk as Buffer;
    size += b.length;
    if (size > MAX_BODY_BYTES) throw new ApiError(413, 'RequestEntityTooLarge', 'Request entity too large: limit is 3145728');
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

async function drain(req: IncomingMessage): Promise<void> {
  if (req.readableEnded) return;
  for await (const _ of req) {
    // discard
  }
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch (err) {
    throw badRequest(`the body of the request was in an unknown format: ${(err as Error).message}`);
  }
}

async function readJson(req: IncomingMessage, accepted: readonly string[]): Promise<unknown> {
  const type = mediaType(req.headers['content-type']);
  if (type !== '' && !accepted.includes(type)) {
    await drain(req);
    throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: ${accepted.join(', ')}`);
  }
  return parseJson(await readBody(req));
}

function checkTypeMeta(r: ResourceType, obj: KubeObject): void {
  if (obj.apiVersion !== undefined && obj.apiVersion !== '' && obj.apiVersion !== groupVersion(r)) {
    throw badRequest(`the API version in the data (${String(obj.apiVersion)}) does not match the expected API version (${groupVersion(r)})`);
  }
  if (obj.kind !== undefined && obj.kind !== '' && obj.kind !== r.kind) {
    throw badRequest(`the kind in the data (${String(obj.kind)}) does not match the expected kind (${r.kind})`);
  }
}

function checkNamespace(r: ResourceType, obj: KubeObject, namespace: string | undefined): void {
  const meta = metaOf(obj);
  if (!r.namespaced) {
    delete meta.namespace;
    return;
  }
  if (meta.namespace !== undefined && meta.namespace !== '' && meta.namespace !== namespace) {
    throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
  }
  meta.namespace = namespace;
}

/** Polls cond every intervalMs until it returns a truthy value (returned) or timeoutMs passes (throws, with what). */
export async function pollUntil<T>(cond: () => T | Promise<T>, what: string, timeoutMs = 10_000, intervalMs = 20): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError === undefined ? '' : ` (last error: ${String(lastError)})`}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
