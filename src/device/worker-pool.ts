/**
 * Runs AEAD batches on worker threads over shared memory (issue: the per-core cipher rate, not
 * the protocol, bounds a userspace WireGuard). A batch is split into contiguous ranges, one per
 * worker plus one for the calling thread; completion is counted with Atomics and awaited with
 * Atomics.waitAsync, so the event loop is never blocked waiting. One batch runs at a time; the
 * callers (TUN and UDP readers) stop reading while theirs is in flight, which bounds memory.
 * Small batches run inline: a handoff costs ~20 µs here, more than sealing a few packets.
 */
import { Worker, MessageChannel } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import type { CryptoBackend } from '../noise/crypto/backend.ts';
import { CryptoBatch, runEntries } from './crypto-batch.ts';
import type { CryptoExecutor } from './crypto-batch.ts';

/** Layout of the shared control words. */
export const Control = {
  DONE: 0,
  GENERATION: 0,
  JOB: 1,
  START: 2,
  END: 3,
  perWorker: (index: number): number => 4 + index * 4,
} as const;

export interface Registration {
  readonly id: number;
  readonly batch: SharedArrayBuffer;
  readonly capacity: number;
  readonly slab: SharedArrayBuffer;
  readonly slabOffset: number;
  readonly slabLength: number;
}

/** Below this many entries a batch runs inline. */
export const DEFAULT_POOL_MIN_BATCH = 16;

export class WorkerPool implements CryptoExecutor {
  private readonly backend: CryptoBackend;
  private readonly capacity: number;
  private readonly minBatch: number;
  private readonly control: Int32Array;
  private readonly workers: Worker[] = [];
  private readonly ports: MessagePort[] = [];
  private readonly ids = new WeakMap<CryptoBatch, number>();
  private readonly batches = new WeakMap<ArrayBufferLike, CryptoBatch>();
  private nextId = 1;
  private queue: Promise<void> = Promise.resolve();
  private readonly nonce = new Uint8Array(12);
  private closed = false;

  constructor(backend: CryptoBackend, workers: number, capacity: number, minBatch = DEFAULT_POOL_MIN_BATCH) {
    if (workers < 1) throw new RangeError('a worker pool needs at least one worker');
    this.backend = backend;
    this.capacity = capacity;
    this.minBatch = minBatch;
    this.control = new Int32Array(new SharedArrayBuffer(4 * Control.perWorker(workers)));
    const script = new URL(import.meta.url.endsWith('.ts') ? './crypto-worker.ts' : './crypto-worker.js', import.meta.url);
    for (let index = 0; index < workers; index++) {
      const { port1, port2 } = new MessageChannel();
      const worker = new Worker(script, {
        workerData: { control: this.control.buffer, index, port: port2, backend: backend.name },
        transferList: [port2],
      });
      worker.unref();
      this.workers.push(worker);
      this.ports.push(port1);
    }
  }

  get size(): number {
    return this.workers.length;
  }

  batchFor(slab: Uint8Array): CryptoBatch {
    let batch = this.batches.get(slab.buffer);
    if (batch) return batch;
    const shared = slab.buffer instanceof SharedArrayBuffer;
    batch = new CryptoBatch(this.capacity, shared);
    this.batches.set(slab.buffer, batch);
    if (shared) {
      const id = this.nextId++;
      this.ids.set(batch, id);
      const registration: Registration = {
        id,
        batch: batch.buffer as SharedArrayBuffer,
        capacity: this.capacity,
        slab: slab.buffer as SharedArrayBuffer,
        slabOffset: slab.byteOffset,
        slabLength: slab.byteLength,
      };
      for (const port of this.ports) port.postMessage(registration);
    }
    return batch;
  }

  run(batch: CryptoBatch, slab: Uint8Array): void | Promise<void> {
    const id = this.ids.get(batch);
    if (id === undefined || batch.count < this.minBatch || this.closed) {
      runEntries(this.backend, batch, slab, 0, batch.count, this.nonce);
      return;
    }
    const run = this.queue.then(() => this.dispatch(id, batch, slab));
    this.queue = run;
    return run;
  }

  private async dispatch(id: number, batch: CryptoBatch, slab: Uint8Array): Promise<void> {
    const shares = this.workers.length + 1;
    const per = Math.ceil(batch.count / shares);
    Atomics.store(this.control, Control.DONE, 0);
    for (let w = 0; w < this.workers.length; w++) {
      const base = Control.perWorker(w);
      Atomics.store(this.control, base + Control.JOB, id);
      Atomics.store(this.control, base + Control.START, Math.min(batch.count, (w + 1) * per));
      Atomics.store(this.control, base + Control.END, Math.min(batch.count, (w + 2) * per));
      Atomics.add(this.control, base + Control.GENERATION, 1);
      Atomics.notify(this.control, base + Control.GENERATION);
    }
    // The calling thread takes the first share itself.
    runEntries(this.backend, batch, slab, 0, Math.min(batch.count, per), this.nonce);
    for (;;) {
      const done = Atomics.load(this.control, Control.DONE);
      if (done >= this.workers.length) return;
      const wait = Atomics.waitAsync(this.control, Control.DONE, done);
      if (wait.async) await wait.value;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (let w = 0; w < this.workers.length; w++) {
      const base = Control.perWorker(w);
      Atomics.store(this.control, base + Control.GENERATION, -1);
      Atomics.notify(this.control, base + Control.GENERATION);
    }
    for (const port of this.ports) port.close();
  }
}
