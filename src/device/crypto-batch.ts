/**
 * One batch of AEAD work over a packet slab: what to seal or open, where, with which key and
 * counter, and the results. The main thread fills it in packet order (counters assigned,
 * headers written), the crypto runs inline or on worker threads, and the main thread finishes
 * in the same order — so each peer's packets keep their order, as wireguard-go's queues do.
 *
 * All arrays live in one buffer (a SharedArrayBuffer when workers use it), at fixed offsets
 * that crypto-worker.ts mirrors.
 */
import type { CryptoBackend } from '../noise/crypto/backend.ts';

export const OP_SEAL = 1;
export const OP_OPEN = 2;

export class CryptoBatch {
  readonly capacity: number;
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  /** OP_SEAL or OP_OPEN per entry. */
  readonly ops: Int32Array;
  /** Where the data starts: plaintext (seal) or ciphertext with tag (open); output is in place. */
  readonly offsets: Int32Array;
  /** Plaintext length (seal) or ciphertext-with-tag length (open). */
  readonly lengths: Int32Array;
  /** Results: sealed length, or plaintext length / -1 when authentication failed. */
  readonly results: Int32Array;
  /** 64-bit nonce counters, as low/high 32-bit words. */
  readonly counters: Uint32Array;
  /** 32 bytes of key per entry. */
  readonly keys: Uint8Array;
  /** keys as one 32-byte view per entry, made once. */
  readonly keyViews: readonly Uint8Array[];
  count = 0;

  constructor(capacity: number, shared: boolean | SharedArrayBuffer) {
    this.capacity = capacity;
    const bytes = CryptoBatch.byteLength(capacity);
    this.buffer = shared instanceof SharedArrayBuffer ? shared : shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes);
    let at = 0;
    const ints = (): Int32Array => {
      const a = new Int32Array(this.buffer, at, capacity);
      at += capacity * 4;
      return a;
    };
    this.ops = ints();
    this.offsets = ints();
    this.lengths = ints();
    this.results = ints();
    this.counters = new Uint32Array(this.buffer, at, capacity * 2);
    at += capacity * 8;
    this.keys = new Uint8Array(this.buffer, at, capacity * 32);
    this.keyViews = Array.from({ length: capacity }, (_, i) => this.keys.subarray(i * 32, i * 32 + 32));
  }

  static byteLength(capacity: number): number {
    return capacity * (4 * 4 + 8 + 32);
  }

  /** The same batch seen from another thread. */
  static attach(buffer: SharedArrayBuffer, capacity: number): CryptoBatch {
    return new CryptoBatch(capacity, buffer);
  }

  /** Adds an entry; returns its index. */
  add(op: number, offset: number, length: number, key: Uint8Array, counter: number): number {
    const i = this.count++;
    this.ops[i] = op;
    this.offsets[i] = offset;
    this.lengths[i] = length;
    this.results[i] = 0;
    this.counters[2 * i] = counter >>> 0;
    this.counters[2 * i + 1] = Math.floor(counter / 0x1_0000_0000);
    this.keys.set(key, i * 32);
    return i;
  }

  reset(): void {
    this.count = 0;
  }
}

/**
 * Runs entries [start, end) of a batch over slab with one backend. Shared by the inline path
 * and the workers, so both compute exactly the same thing.
 */
export function runEntries(backend: CryptoBackend, batch: CryptoBatch, slab: Uint8Array, start: number, end: number, nonce: Uint8Array): void {
  for (let i = start; i < end; i++) {
    nonce[4] = batch.counters[2 * i]! & 0xff;
    nonce[5] = (batch.counters[2 * i]! >>> 8) & 0xff;
    nonce[6] = (batch.counters[2 * i]! >>> 16) & 0xff;
    nonce[7] = batch.counters[2 * i]! >>> 24;
    const high = batch.counters[2 * i + 1]!;
    nonce[8] = high & 0xff;
    nonce[9] = (high >>> 8) & 0xff;
    nonce[10] = (high >>> 16) & 0xff;
    nonce[11] = high >>> 24;
    const key = batch.keyViews[i]!;
    const offset = batch.offsets[i]!;
    const length = batch.lengths[i]!;
    batch.results[i] = batch.ops[i] === OP_SEAL ? backend.aeadSealAt(slab, offset, length, key, nonce) : backend.aeadOpenAt(slab, offset, length, key, nonce);
  }
  // The batch's copies of the session keys go too: a keypair zeroed later must not live on
  // here (entries [start, end) are this caller's alone; results stay for the finisher).
  batch.keys.fill(0, start * 32, end * 32);
}

/** Where a device's AEAD batches run. */
export interface CryptoExecutor {
  /** A batch for this slab (shared memory when the executor uses workers and the slab is shared). */
  batchFor(slab: Uint8Array): CryptoBatch;
  /** Runs the batch; a Promise when the work went to other threads. */
  run(batch: CryptoBatch, slab: Uint8Array): void | Promise<void>;
  close(): void;
}

/** Everything on the calling thread. */
export class InlineExecutor implements CryptoExecutor {
  private readonly backend: CryptoBackend;
  private readonly capacity: number;
  private readonly batches = new WeakMap<ArrayBufferLike, CryptoBatch>();
  private readonly nonce = new Uint8Array(12);

  constructor(backend: CryptoBackend, capacity: number) {
    this.backend = backend;
    this.capacity = capacity;
  }

  batchFor(slab: Uint8Array): CryptoBatch {
    let batch = this.batches.get(slab.buffer);
    if (!batch) {
      batch = new CryptoBatch(this.capacity, false);
      this.batches.set(slab.buffer, batch);
    }
    return batch;
  }

  run(batch: CryptoBatch, slab: Uint8Array): void {
    runEntries(this.backend, batch, slab, 0, batch.count, this.nonce);
  }

  close(): void {}
}
