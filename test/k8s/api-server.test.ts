/**
 * FakeApiServer against the real @kubernetes/client-node 2.x: typed API calls, patches with
 * each content type, Events, the raw watch protocol, and an informer through watch drops,
 * server restarts and 410 Gone. Every wait polls with a deadline; nothing sleeps a fixed time.
 */
import {
  ApiException,
  CoreV1Api,
  KubernetesObjectApi,
  EventsV1Api,
  KubeConfig,
  makeInformer,
  PatchStrategy,
  setHeaderOptions,
  type Informer,
  type ObjectCache,
  type V1Node,
} from '@kubernetes/client-node';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  applyJsonPatch,
  applyMergePatch,
  applyStrategicMergePatch,
  FakeApiServer,
  parseLabelSelector,
  pollUntil,
  type KubeObject,
} from './api-server.ts';

function node(name: string, opts: { labels?: Record<string, string>; annotations?: Record<string, string>; ip?: string } = {}): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: opts.labels ?? {}, annotations: opts.annotations ?? {} },
    spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'] },
    status: {
      addresses: [{ type: 'InternalIP', address: opts.ip ?? '198.18.0.1' }, { type: 'Hostname', address: name }],
      conditions: [{ type: 'Ready', status: 'True' }],
    },
  };
}

/** The error a client-node call threw, with its Status body parsed. */
async function apiError(p: Promise<unknown>): Promise<{ code: number; status: { reason?: string; code?: number; message?: string } }> {
  try {
    await p;
  } catch (err) {
    if (!(err instanceof ApiException)) throw err;
    const e = err as ApiException<unknown>;
    return { code: e.code, status: JSON.parse(String(e.body)) as { reason?: string; code?: number } };
  }
  throw new Error('expected the call to fail');
}

interface WatchEvent {
  type: string;
  object: { kind?: string; code?: number; reason?: string; metadata?: { name?: string; resourceVersion?: string; annotations?: Record<string, string> } };
}

/** A raw watch over fetch: collects the newline-delimited events until the stream ends. */
function rawWatch(server: FakeApiServer, query: string): { events: WatchEvent[]; ended: Promise<void>; abort: () => void } {
  const events: WatchEvent[] = [];
  const controller = new AbortController();
  const ended = (async () => {
    const res = await fetch(`${server.url}/api/v1/nodes?${query}`, { headers: { Authorization: `Bearer ${server.token}` }, signal: controller.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    let buf = '';
    const decoder = new TextDecoder();
    try {
      for await (const chunk of res.body as ReadableStream<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          events.push(JSON.parse(buf.slice(0, i)) as WatchEvent);
          buf = buf.slice(i + 1);
        }
      }
    } catch (err) {
      if (!controller.signal.aborted) throw err;
    }
  })();
  return { events, ended, abort: () => controller.abort() };
}

describe('patch and selector semantics', () => {
  it('applies RFC 7386 merge patches (examples from its appendix A)', () => {
    expect(applyMergePatch({ a: 'b' }, { a: 'c' })).toEqual({ a: 'c' });
    expect(applyMergePatch({ a: 'b' }, { b: 'c' })).toEqual({ a: 'b', b: 'c' });
    expect(applyMergePatch({ a: 'b', b: 'c' }, { a: null })).toEqual({ b: 'c' });
    expect(applyMergePatch({ a: ['b'] }, { a: 'c' })).toEqual({ a: 'c' });
    expect(applyMergePatch({ a: { b: 'c' } }, { a: { b: 'd', c: null } })).toEqual({ a: { b: 'd' } });
    expect(applyMergePatch({ a: [{ b: 'c' }] }, { a: [1] })).toEqual({ a: [1] });
    expect(applyMergePatch({ e: null }, { a: 1 })).toEqual({ e: null, a: 1 });
    expect(applyMergePatch({}, { a: { bb: { ccc: null } } })).toEqual({ a: { bb: {} } });
  });

  it('applies RFC 6902 JSON patches', () => {
    expect(applyJsonPatch({ foo: ['bar', 'baz'] }, [{ op: 'add', path: '/foo/1', value: 'qux' }])).toEqual({ foo: ['bar', 'qux', 'baz'] });
    expect(applyJsonPatch({ foo: ['bar'] }, [{ op: 'add', path: '/foo/-', value: 'x' }])).toEqual({ foo: ['bar', 'x'] });
    expect(applyJsonPatch({ baz: 'qux', foo: 'bar' }, [{ op: 'remove', path: '/baz' }])).toEqual({ foo: 'bar' });
    expect(applyJsonPatch({ baz: 'qux' }, [{ op: 'replace', path: '/baz', value: 'boo' }])).toEqual({ baz: 'boo' });
    expect(applyJsonPatch({ foo: { bar: 'baz', waldo: 'fred' }, qux: { corge: 'grault' } }, [{ op: 'move', from: '/foo/waldo', path: '/qux/thud' }])).toEqual({
      foo: { bar: 'baz' },
      qux: { corge: 'grault', thud: 'fred' },
    });
    expect(applyJsonPatch({ a: [1] }, [{ op: 'copy', from: '/a', path: '/b' }])).toEqual({ a: [1], b: [1] });
    expect(applyJsonPatch({ 'a/b': 1, 'm~n': 2 }, [{ op: 'test', path: '/a~1b', value: 1 }, { op: 'test', path: '/m~0n', value: 2 }])).toEqual({ 'a/b': 1, 'm~n': 2 });
    expect(() => applyJsonPatch({ a: 1 }, [{ op: 'test', path: '/a', value: 2 }])).toThrow(/failed/);
    expect(() => applyJsonPatch({ a: 1 }, [{ op: 'replace', path: '/b', value: 2 }])).toThrow(/does not exist/);
    expect(() => applyJsonPatch({ a: 1 }, [{ op: 'add', path: '/x/y', value: 2 }])).toThrow(/does not exist/);
    const doc = { a: { b: 1 } };
    applyJsonPatch(doc, [{ op: 'replace', path: '/a/b', value: 2 }]);
    expect(doc).toEqual({ a: { b: 1 } }); // works on a copy
  });

  it('applies the strategic merge patch subset, with the Node list strategies', () => {
    const keys = new Map([
      ['status.conditions', 'type'],
      ['spec.podCIDRs', ''],
    ]);
    const node = {
      metadata: { annotations: { a: '1', b: '2' } },
      spec: { podCIDRs: ['10.0.0.0/24'], taints: [{ key: 'k', effect: 'NoSchedule' }] },
      status: { conditions: [{ type: 'Ready', status: 'True' }, { type: 'NetworkUnavailable', status: 'True' }] },
    };
    expect(
      applyStrategicMergePatch(
        node,
        {
          metadata: { annotations: { a: null, c: '3' } },
          spec: { podCIDRs: ['fd00::/64'], taints: [] },
          status: { conditions: [{ type: 'NetworkUnavailable', status: 'False' }] },
        },
        keys,
      ),
    ).toEqual({
      metadata: { annotations: { b: '2', c: '3' } },
      spec: { podCIDRs: ['10.0.0.0/24', 'fd00::/64'], taints: [] },
      status: { conditions: [{ type: 'Ready', status: 'True' }, { type: 'NetworkUnavailable', status: 'False' }] },
    });
    expect(applyStrategicMergePatch(node, { status: { conditions: [{ type: 'Ready', $patch: 'delete' }] } }, keys)).toMatchObject({
      status: { conditions: [{ type: 'NetworkUnavailable' }] },
    });
    expect(applyStrategicMergePatch(node, { metadata: { annotations: { $patch: 'replace', z: '9' } } }, keys)).toMatchObject({ metadata: { annotations: { z: '9' } } });
    expect(applyStrategicMergePatch(node, { spec: { '$deleteFromPrimitiveList/podCIDRs': ['10.0.0.0/24'] } }, keys)).toMatchObject({ spec: { podCIDRs: [] } });
  });

  it('parses label selectors', () => {
    const obj = (labels: Record<string, string>): KubeObject => ({ metadata: { labels } });
    const sel = parseLabelSelector('env in (prod, staging), tier!=db, wgts.io/enabled, !legacy');
    expect(sel(obj({ env: 'prod', 'wgts.io/enabled': '' }))).toBe(true);
    expect(sel(obj({ env: 'prod', tier: 'db', 'wgts.io/enabled': '' }))).toBe(false);
    expect(sel(obj({ env: 'dev', 'wgts.io/enabled': '' }))).toBe(false);
    expect(sel(obj({ env: 'prod', 'wgts.io/enabled': '', legacy: 'x' }))).toBe(false);
    expect(parseLabelSelector('')(obj({}))).toBe(true);
    expect(parseLabelSelector('a notin (x)')(obj({}))).toBe(true);
    expect(parseLabelSelector('n > 3')(obj({ n: '4' }))).toBe(true);
    expect(() => parseLabelSelector('a = = b')).toThrow(/unable to parse/);
  });
});

describe('FakeApiServer with the real @kubernetes/client-node', () => {
  let server: FakeApiServer;
  let kc: KubeConfig;
  let api: CoreV1Api;
  const cleanups: Array<() => Promise<void> | void> = [];

  beforeEach(async () => {
    server = new FakeApiServer();
    await server.start();
    kc = new KubeConfig();
    kc.loadFromString(server.kubeconfig());
    api = kc.makeApiClient(CoreV1Api);
  });

  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    await server.stop();
  });

  it('writes a kubeconfig that KubeConfig.loadFromFile accepts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wgts-k8s-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = server.writeKubeconfig(dir);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, 'utf8')).toContain(`server: http://127.0.0.1:${server.port}`);
    const fromFile = new KubeConfig();
    fromFile.loadFromFile(file);
    expect(fromFile.getCurrentCluster()?.server).toBe(server.url);
    server.upsertNode(node('a'));
    const list = await fromFile.makeApiClient(CoreV1Api).listNode();
    expect(list.items.map((n) => n.metadata?.name)).toEqual(['a']);
  });

  it('lists, reads and selects Nodes', async () => {
    server.upsertNode(node('a', { labels: { role: 'gw' } }));
    server.upsertNode(node('b', { labels: { role: 'edge' } }));
    server.upsertNode(node('c'));
    const list = await api.listNode();
    expect(list.kind).toBe('NodeList');
    expect(list.metadata?.resourceVersion).toBe(server.resourceVersion);
    expect(list.items.map((n) => n.metadata?.name)).toEqual(['a', 'b', 'c']);
    // As from a real API server, list items carry no kind/apiVersion.
    expect(list.items[0]?.kind).toBeUndefined();
    expect(list.items[0]?.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(list.items[0]?.metadata?.creationTimestamp).toBeInstanceOf(Date);

    expect((await api.listNode({ labelSelector: 'role=gw' })).items.map((n) => n.metadata?.name)).toEqual(['a']);
    expect((await api.listNode({ labelSelector: 'role in (gw,edge)' })).items.map((n) => n.metadata?.name)).toEqual(['a', 'b']);
    expect((await api.listNode({ labelSelector: '!role' })).items.map((n) => n.metadata?.name)).toEqual(['c']);
    expect((await api.listNode({ fieldSelector: 'metadata.name=b' })).items.map((n) => n.metadata?.name)).toEqual(['b']);
    expect((await api.listNode({ fieldSelector: 'metadata.name!=b' })).items.map((n) => n.metadata?.name)).toEqual(['a', 'c']);
    expect((await apiError(api.listNode({ fieldSelector: 'spec.providerID=x' }))).code).toBe(400);

    const page1 = await api.listNode({ limit: 2 });
    expect(page1.items.map((n) => n.metadata?.name)).toEqual(['a', 'b']);
    expect(page1.metadata?.remainingItemCount).toBe(1);
    server.upsertNode(node('0-new')); // not in the snapshot the pages come from
    const page2 = await api.listNode({ limit: 2, _continue: page1.metadata?._continue as string });
    expect(page2.items.map((n) => n.metadata?.name)).toEqual(['c']);
    expect(page2.metadata?._continue).toBeUndefined();
    expect(page2.metadata?.resourceVersion).toBe(page1.metadata?.resourceVersion);

    const b = await api.readNode({ name: 'b' });
    expect(b.kind).toBe('Node');
    expect(b.metadata?.labels).toEqual({ role: 'edge' });
    const missing = await apiError(api.readNode({ name: 'nope' }));
    expect(missing.code).toBe(404);
    expect(missing.status).toMatchObject({ reason: 'NotFound', code: 404, message: 'nodes "nope" not found' });
  });

  it('patches Nodes with each patch type, and answers 409 to a stale resourceVersion', async () => {
    const created = server.upsertNode(node('a', { annotations: { keep: 'me' } }));
    const rv0 = created.metadata?.resourceVersion as string;

    // Merge patch: client-node 2.x picks the Content-Type from a list whose first entry is
    // json-patch+json, so a merge patch needs setHeaderOptions to override it.
    const merged = await api.patchNode(
      { name: 'a', body: { metadata: { annotations: { 'wgts.io/public-key': 'k1', keep: null } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(merged.metadata?.annotations).toEqual({ 'wgts.io/public-key': 'k1' });
    expect(Number(merged.metadata?.resourceVersion)).toBeGreaterThan(Number(rv0));
    expect(server.requests.at(-1)).toMatchObject({ method: 'PATCH', path: '/api/v1/nodes/a', contentType: PatchStrategy.MergePatch });

    // Without the header it is a JSON patch (RFC 6902).
    const jsonPatched = await api.patchNode({
      name: 'a',
      body: [
        { op: 'test', path: '/metadata/annotations/wgts.io~1public-key', value: 'k1' },
        { op: 'add', path: '/metadata/annotations/wgts.io~1endpoint', value: '198.18.0.1:51820' },
        { op: 'add', path: '/metadata/labels/x', value: 'y' },
      ],
    });
    expect(server.requests.at(-1)?.contentType).toBe(PatchStrategy.JsonPatch);
    expect(jsonPatched.metadata?.annotations?.['wgts.io/endpoint']).toBe('198.18.0.1:51820');
    expect(jsonPatched.metadata?.labels).toEqual({ x: 'y' });
    const failedTest = await apiError(api.patchNode({ name: 'a', body: [{ op: 'test', path: '/metadata/labels/x', value: 'z' }] }));
    expect(failedTest.code).toBe(422);

    // A patch that changes nothing keeps the resourceVersion (and sends no watch event).
    const same = await api.patchNode(
      { name: 'a', body: { metadata: { annotations: { 'wgts.io/public-key': 'k1' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(same.metadata?.resourceVersion).toBe(jsonPatched.metadata?.resourceVersion);

    // Strategic merge patch on the status subresource: conditions merge by type.
    const status = await api.patchNodeStatus(
      { name: 'a', body: { status: { conditions: [{ type: 'NetworkUnavailable', status: 'False', reason: 'WgtsUp' }] } } },
      setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
    );
    expect(status.status?.conditions?.map((c) => `${c.type}=${c.status}`)).toEqual(['Ready=True', 'NetworkUnavailable=False']);
    // A write to the main resource does not change .status.
    const ignored = await api.patchNode(
      { name: 'a', body: { status: { conditions: [] } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(ignored.status?.conditions).toHaveLength(2);

    // Optimistic concurrency: a stale metadata.resourceVersion in a patch or a replace is 409 Conflict.
    const stalePatch = await apiError(
      api.patchNode({ name: 'a', body: { metadata: { resourceVersion: rv0, annotations: { x: '1' } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch)),
    );
    expect(stalePatch.code).toBe(409);
    expect(stalePatch.status.reason).toBe('Conflict');
    const current = await api.readNode({ name: 'a' });
    const stale: V1Node = { ...current, metadata: { ...current.metadata, resourceVersion: rv0 } };
    expect((await apiError(api.replaceNode({ name: 'a', body: stale }))).status).toMatchObject({ reason: 'Conflict', code: 409 });
    const replaced = await api.replaceNode({ name: 'a', body: { ...current, metadata: { ...current.metadata, labels: { replaced: 'yes' } } } });
    expect(replaced.metadata?.labels).toEqual({ replaced: 'yes' });
    expect(replaced.metadata?.uid).toBe(created.metadata?.uid);
    expect(server.getNode('a')?.metadata?.labels).toEqual({ replaced: 'yes' });

    // Server-side apply is not implemented: 415, as for any patch type the server does not accept.
    const apply = await apiError(
      api.patchNode({ name: 'a', body: { metadata: { labels: { z: '1' } } }, fieldManager: 't' }, setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply)),
    );
    expect(apply.code).toBe(415);
    expect(apply.status.reason).toBe('UnsupportedMediaType');

    expect((await apiError(api.patchNode({ name: 'gone', body: [] }))).code).toBe(404);
    await api.deleteNode({ name: 'a' });
    expect(server.getNode('a')).toBeUndefined();
  });

  it('serves discovery, so the generic KubernetesObjectApi works too', async () => {
    server.upsertNode(node('a'));
    const objects = KubernetesObjectApi.makeApiClient(kc);
    const a = await objects.read({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'a' } });
    expect(a.metadata?.uid).toBe(server.getNode('a')?.metadata?.uid);
    expect(server.requests.map((r) => r.path)).toEqual(['/api/v1', '/api/v1/nodes/a']);
  });

  it('creates Events through core/v1 and events.k8s.io/v1', async () => {
    const ev = await api.createNamespacedEvent({
      namespace: 'kube-system',
      body: {
        metadata: { generateName: 'wgts-' },
        involvedObject: { kind: 'Node', name: 'a' },
        reason: 'PeerAdded',
        message: 'peer b',
        type: 'Normal',
        source: { component: 'wgts' },
      },
    });
    expect(ev.metadata?.name).toMatch(/^wgts-.{5}$/);
    expect(ev.metadata?.namespace).toBe('kube-system');
    expect(server.requests.at(-1)).toMatchObject({ method: 'POST', path: '/api/v1/namespaces/kube-system/events', status: 201 });

    const events = kc.makeApiClient(EventsV1Api);
    await events.createNamespacedEvent({
      namespace: 'default',
      body: { metadata: { name: 'e2' }, eventTime: new Date(), reason: 'KeyRotated', action: 'Rotate', reportingController: 'wgts.io/agent', reportingInstance: 'a', type: 'Normal' },
    });
    expect(server.events().map((e) => `${e.apiVersion} ${e.metadata?.namespace}/${e.metadata?.name} ${String(e.reason)}`)).toEqual([
      `v1 kube-system/${ev.metadata?.name} PeerAdded`,
      'events.k8s.io/v1 default/e2 KeyRotated',
    ]);
    const dup = await apiError(events.createNamespacedEvent({ namespace: 'default', body: { metadata: { name: 'e2' }, eventTime: new Date() } }));
    expect(dup.status).toMatchObject({ code: 409, reason: 'AlreadyExists' });
    expect((await api.listNamespacedEvent({ namespace: 'kube-system', fieldSelector: 'involvedObject.name=a' })).items).toHaveLength(1);
  });

  it('keeps the history immutable: a replay shows each object as it was', async () => {
    server.upsertNode(node('seed')); // a resourceVersion of "0" would mean "any": the current state, no replay
    const rv0 = server.resourceVersion;
    const a1 = server.upsertNode(node('a'));
    // A patch that does not touch metadata (the merge shares untouched subtrees with the stored object).
    const a2 = await api.patchNode({ name: 'a', body: { spec: { unschedulable: true } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
    const a3 = await api.patchNodeStatus({ name: 'a', body: { status: { conditions: [{ type: 'X', status: 'True' }] } } }, setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch));
    const w = rawWatch(server, `watch=true&resourceVersion=${rv0}`);
    await pollUntil(() => w.events.length === 3, 'replay');
    expect(w.events.map((e) => `${e.type} ${e.object.metadata?.resourceVersion}`)).toEqual([
      `ADDED ${a1.metadata?.resourceVersion}`,
      `MODIFIED ${a2.metadata?.resourceVersion}`,
      `MODIFIED ${a3.metadata?.resourceVersion}`,
    ]);
    expect(new Set([a1, a2, a3].map((n) => n.metadata?.resourceVersion)).size).toBe(3);
    expect((w.events[0]?.object as { spec?: unknown }).spec).toEqual({ podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'] });
    w.abort();

    // A short history: a resourceVersion whose successors were dropped is 410.
    const small = new FakeApiServer({ token: server.token, historySize: 2 });
    await small.start();
    cleanups.push(() => small.stop());
    small.upsertNode(node('o'));
    const start = small.resourceVersion;
    for (const n of ['p', 'q', 'r']) small.upsertNode(node(n));
    const tooOld = rawWatch(small, `watch=true&resourceVersion=${start}`);
    await tooOld.ended;
    expect(tooOld.events.map((e) => `${e.type} ${e.object.code}`)).toEqual(['ERROR 410']);
    const okay = rawWatch(small, `watch=true&resourceVersion=${Number(start) + 1}`);
    await pollUntil(() => okay.events.length === 2, 'the kept history');
    expect(okay.events.map((e) => e.object.metadata?.name)).toEqual(['q', 'r']);
    okay.abort();
  });

  it('answers 401 without the token and 400 for a body that is not JSON', async () => {
    const noToken = await fetch(`${server.url}/api/v1/nodes`);
    expect(noToken.status).toBe(401);
    expect(await noToken.json()).toMatchObject({ kind: 'Status', reason: 'Unauthorized', code: 401 });
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    server.upsertNode(node('a'));
    const bad = await fetch(`${server.url}/api/v1/nodes/a`, {
      method: 'PATCH',
      headers: { Authorization: `Bearer ${server.token}`, 'Content-Type': PatchStrategy.MergePatch },
      body: '{"metadata":',
    });
    expect(bad.status).toBe(400);
    expect(bad.headers.get('content-type')).toBe('application/json');
    expect(await bad.json()).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'BadRequest', code: 400 });
  });

  it('speaks the watch protocol: replay, 410 Expired, bookmarks, timeoutSeconds', async () => {
    server.upsertNode(node('a'));
    const rvAfterA = server.resourceVersion;
    server.upsertNode(node('b'));
    server.upsertNode(node('a', { labels: { changed: 'yes' } }));

    // Replay everything after rvAfterA, then live events.
    const w = rawWatch(server, `watch=true&resourceVersion=${rvAfterA}`);
    await pollUntil(() => w.events.length === 2, 'replayed events');
    expect(w.events.map((e) => `${e.type} ${e.object.metadata?.name}`)).toEqual(['ADDED b', 'MODIFIED a']);
    server.deleteNode('b');
    await pollUntil(() => w.events.length === 3, 'live DELETED');
    expect(w.events[2]).toMatchObject({ type: 'DELETED', object: { kind: 'Node', metadata: { name: 'b', resourceVersion: server.resourceVersion } } });
    expect(await server.dropWatches()).toBe(1);
    await w.ended;

    // No resourceVersion: the current state as ADDED events.
    const fresh = rawWatch(server, 'watch=1&labelSelector=changed%3Dyes');
    await pollUntil(() => fresh.events.length === 1, 'synthetic ADDED');
    expect(fresh.events[0]).toMatchObject({ type: 'ADDED', object: { metadata: { name: 'a' } } });
    // Leaving the selector is DELETED for this watch.
    server.upsertNode(node('a'));
    await pollUntil(() => fresh.events.length === 2, 'selector exit');
    expect(fresh.events[1]?.type).toBe('DELETED');
    fresh.abort();

    // After compact(), resuming from an old resourceVersion is a single 410 ERROR event.
    server.compact();
    const old = rawWatch(server, `watch=true&resourceVersion=${rvAfterA}`);
    await old.ended;
    expect(old.events).toEqual([
      { type: 'ERROR', object: expect.objectContaining({ kind: 'Status', status: 'Failure', code: 410, reason: 'Expired' }) },
    ]);
    // A list after compaction gives a resourceVersion that can be watched from.
    const list = (await (await fetch(`${server.url}/api/v1/nodes`, { headers: { Authorization: `Bearer ${server.token}` } })).json()) as {
      metadata: { resourceVersion: string };
    };
    const resumed = rawWatch(server, `watch=true&resourceVersion=${list.metadata.resourceVersion}&timeoutSeconds=1`);
    await resumed.ended; // the server ends it after timeoutSeconds
    expect(resumed.events).toEqual([]);

    // Bookmarks, with a short interval.
    const quick = new FakeApiServer({ token: server.token, bookmarkIntervalMs: 50 });
    await quick.start();
    cleanups.push(() => quick.stop());
    quick.upsertNode(node('x'));
    const bm = rawWatch(quick, `watch=true&allowWatchBookmarks=true&resourceVersion=${quick.resourceVersion}`);
    await pollUntil(() => bm.events.length >= 2, 'bookmarks');
    expect(bm.events[0]).toEqual({ type: 'BOOKMARK', object: { kind: 'Node', apiVersion: 'v1', metadata: { resourceVersion: quick.resourceVersion } } });
    const noBm = rawWatch(quick, `watch=true&resourceVersion=${quick.resourceVersion}`);
    quick.upsertNode(node('y'));
    await pollUntil(() => noBm.events.length === 1, 'ADDED y');
    expect(noBm.events.map((e) => e.type)).toEqual(['ADDED']);
    bm.abort();
    noBm.abort();
  });

  describe('an informer on Nodes', () => {
    interface Harness {
      informer: Informer<V1Node> & ObjectCache<V1Node>;
      seen: string[];
      errors: unknown[];
    }

    async function startInformer(): Promise<Harness> {
      const informer = makeInformer<V1Node>(kc, '/api/v1/nodes', () => api.listNode());
      const seen: string[] = [];
      const errors: unknown[] = [];
      let stopped = false;
      informer.on('add', (n) => seen.push(`add ${n.metadata?.name}`));
      informer.on('update', (n) => seen.push(`update ${n.metadata?.name}`));
      informer.on('delete', (n) => seen.push(`delete ${n.metadata?.name}`));
      // client-node's ListWatch gives up on any error other than 410 and a client-side timeout
      // (connection refused, reset, 5xx): the owner must start it again, as an agent would.
      informer.on('error', (err) => {
        errors.push(err);
        if (!stopped) setTimeout(() => void informer.start(), 50);
      });
      cleanups.push(async () => {
        stopped = true;
        await informer.stop();
      });
      await informer.start();
      return { informer, seen, errors };
    }

    /** The informer's cache equals the server's Nodes (names and resourceVersions). */
    function inSync(h: Harness): boolean {
      const cache = h.informer
        .list()
        .map((n) => `${n.metadata?.name}@${n.metadata?.resourceVersion}`)
        .sort();
      const truth = server
        .nodes()
        .map((n) => `${n.metadata?.name}@${n.metadata?.resourceVersion}`)
        .sort();
      return JSON.stringify(cache) === JSON.stringify(truth);
    }

    const lists = (): number => server.requests.filter((r) => r.method === 'GET' && r.path === '/api/v1/nodes' && !r.watch).length;
    const watches = (): number => server.requests.filter((r) => r.path === '/api/v1/nodes' && r.watch).length;

    it('sees adds, updates and deletes, and resumes after dropped watches without re-listing', async () => {
      server.upsertNode(node('a'));
      server.upsertNode(node('b'));
      const h = await startInformer();
      await pollUntil(() => server.openWatches('nodes') === 1, 'the watch');
      expect(h.seen.sort()).toEqual(['add a', 'add b']);

      server.upsertNode(node('c'));
      await api.patchNode({ name: 'a', body: { metadata: { annotations: { 'wgts.io/public-key': 'k' } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
      server.deleteNode('b');
      await pollUntil(() => h.seen.length === 5, 'three more events');
      expect(h.seen.slice(2)).toEqual(['add c', 'update a', 'delete b']);
      expect(h.informer.get('a')?.metadata?.annotations).toEqual({ 'wgts.io/public-key': 'k' });
      expect(inSync(h)).toBe(true);

      // A graceful end of the stream: ListWatch re-watches from its last resourceVersion by itself.
      const listsBefore = lists();
      const watchesBefore = watches();
      expect(await server.dropWatches()).toBe(1);
      await pollUntil(() => watches() > watchesBefore && server.openWatches('nodes') === 1, 're-watch after a graceful drop');
      server.upsertNode(node('d'));
      await pollUntil(() => inSync(h), 'cache in sync after the drop');
      expect(lists()).toBe(listsBefore);
      expect(h.errors).toEqual([]);

      // A reset connection: ListWatch reports an error and stops; our handler starts it again.
      await server.dropWatches({ abrupt: true });
      await pollUntil(() => h.errors.length === 1 && server.openWatches('nodes') === 1, 'restart after an abrupt drop');
      server.deleteNode('d');
      await pollUntil(() => inSync(h), 'cache in sync after the reset');
      expect(lists()).toBe(listsBefore); // resumed from its resourceVersion, no re-list
      expect(h.seen.at(-1)).toBe('delete d');

      // A 5xx on the re-watch is an error too (injectFault answers with a Status, as the real server).
      server.injectFault({ watch: true, status: 500, reason: 'InternalError' });
      await server.dropWatches();
      await pollUntil(() => h.errors.length === 2 && server.openWatches('nodes') === 1, 'restart after a 500');
      expect((h.errors[1] as { statusCode?: number }).statusCode).toBe(500);
      expect(server.requests.filter((r) => r.watch && r.status === 500)).toHaveLength(1);
    });

    it('recovers from server restarts, replaying changes made while the server was down', async () => {
      server.upsertNode(node('a'));
      const h = await startInformer();
      await pollUntil(() => server.openWatches('nodes') === 1, 'the watch');
      const listsBefore = lists();

      // Down: the watch ends, the re-watch is refused, ListWatch reports the error.
      const port = server.port;
      await server.stop();
      await pollUntil(() => h.errors.length >= 1, 'an error while the server is down');
      server.upsertNode(node('b'));
      server.upsertNode(node('a', { labels: { v: '2' } }));
      await server.start({ port });
      await pollUntil(() => inSync(h) && server.openWatches('nodes') === 1, 'cache in sync after the restart');
      expect(h.seen).toEqual(['add a', 'add b', 'update a']);
      expect(lists()).toBe(listsBefore); // the history replayed the changes; no re-list

      // restart() keeps state too.
      await server.restart();
      server.upsertNode(node('c'));
      await pollUntil(() => inSync(h) && server.openWatches('nodes') === 1, 'cache in sync after restart()');
      expect(lists()).toBe(listsBefore);
    });

    it('re-lists after 410 Gone, and drops objects a server that lost its state no longer has', async () => {
      server.upsertNode(node('a'));
      server.upsertNode(node('b'));
      const h = await startInformer();
      await pollUntil(() => server.openWatches('nodes') === 1, 'the watch');

      // compact() + drop: the re-watch from the old resourceVersion gets ERROR 410, ListWatch
      // clears its resourceVersion when the stream ends and lists again.
      const listsBefore = lists();
      // ListWatch has latestResourceVersion(); makeInformer's return type does not declare it.
      const oldRv = (h.informer as unknown as { latestResourceVersion(): string }).latestResourceVersion();
      server.compact();
      server.clearRequests();
      await server.dropWatches();
      const seenBefore = h.seen.length;
      await pollUntil(() => lists() === 1 && server.openWatches('nodes') === 1, 're-list after 410');
      expect(h.errors).toEqual([]);
      expect(h.seen.length).toBe(seenBefore); // unchanged objects: no update callbacks from the re-list
      // The sequence on the wire: watch from the old resourceVersion (answered 200 + ERROR 410), list, watch from the list's.
      expect(server.requests.map((r) => `${r.watch ? 'watch' : 'list'} ${new URLSearchParams(r.query).get('resourceVersion') ?? ''}`)).toEqual([
        `watch ${oldRv}`,
        'list ',
        `watch ${server.resourceVersion}`,
      ]);
      // The informer never asks for bookmarks.
      expect(server.requests.filter((r) => r.watch).map((r) => [...new URLSearchParams(r.query).keys()].sort().join(','))).toEqual([
        'resourceVersion,watch',
        'resourceVersion,watch',
      ]);
      server.upsertNode(node('c'));
      await pollUntil(() => inSync(h), 'cache in sync after the re-list');

      // A restart that loses every object (every old resourceVersion expires with it).
      await server.restart({ dropState: true });
      server.upsertNode(node('z'));
      await pollUntil(() => inSync(h) && server.openWatches('nodes') === 1, 'cache in sync after state loss');
      expect(h.informer.list().map((n) => n.metadata?.name)).toEqual(['z']);
      expect(h.seen.filter((s) => s.startsWith('delete')).sort()).toEqual(['delete a', 'delete b', 'delete c']);
      expect(lists()).toBe(2);
      expect(listsBefore).toBe(1);
    });

    it('makes no writes of its own', async () => {
      server.upsertNode(node('a'));
      const h = await startInformer();
      await pollUntil(() => inSync(h) && server.openWatches('nodes') === 1, 'sync');
      expect(server.writes()).toEqual([]);
    });
  });
});
