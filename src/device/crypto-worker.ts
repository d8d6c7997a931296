/**
 * A crypto worker: waits on its control word, runs its share of a batch with its own backend
 * instance, reports done. Batches and slabs are registered by message and live in shared memory;
 * nothing per packet crosses threads except the Atomics handshake per batch.
 */
import { receiveMessageOnPort, workerData } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { CryptoBatch, runEntries } from './crypto-batch.ts';
import { createBackend } from '../noise/crypto/index.ts';
import type { BackendName } from '../noise/crypto/index.ts';
import { Control, type Registration } from './worker-pool.ts';

const { control: controlBuffer, index, port, backend: backendName } = workerData as {
  control: SharedArrayBuffer;
  index: number;
  port: MessagePort;
  backend: BackendName;
};
const control = new Int32Array(controlBuffer);
const backend = createBackend(backendName);
const jobs = new Map<number, { batch: CryptoBatch; slab: Uint8Array }>();
const nonce = new Uint8Array(12);
const base = Control.perWorker(index);
let seen = 0;

for (;;) {
  Atomics.wait(control, base + Control.GENERATION, seen);
  seen = Atomics.load(control, base + Control.GENERATION);
  if (seen < 0) break;
  for (let message = receiveMessageOnPort(port); message; message = receiveMessageOnPort(port)) {
    const r = message.message as Registration;
    jobs.set(r.id, { batch: CryptoBatch.attach(r.batch, r.capacity), slab: new Uint8Array(r.slab, r.slabOffset, r.slabLength) });
  }
  const job = jobs.get(Atomics.load(control, base + Control.JOB));
  if (job) {
    runEntries(backend, job.batch, job.slab, Atomics.load(control, base + Control.START), Atomics.load(control, base + Control.END), nonce);
  }
  Atomics.add(control, Control.DONE, 1);
  Atomics.notify(control, Control.DONE);
}
