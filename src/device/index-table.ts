/**
 * Receiver indices: random 32-bit numbers we hand out in handshake messages, mapping back to the
 * peer and (once the handshake completes) the keypair. Random rather than sequential so an
 * observer learns nothing from them.
 *
 * Indices are uint32 on the wire; the map is keyed by their int32 bit pattern (index | 0), which
 * is always a small integer to V8, so a lookup per received packet allocates nothing (half of
 * all uint32 values would otherwise be boxed heap numbers). Pass either form.
 */
import { randomFillSync } from 'node:crypto';

export class IndexTable<E> {
  private readonly entries = new Map<number, E>();
  private readonly scratch = new Uint32Array(1);

  /** Registers entry under a fresh random index and returns it. */
  allocate(entry: E): number {
    for (;;) {
      randomFillSync(this.scratch);
      const index = this.scratch[0]!;
      if (!this.entries.has(index | 0)) {
        this.entries.set(index | 0, entry);
        return index;
      }
    }
  }

  /** Points an existing index at a new entry (handshake → keypair). */
  replace(index: number, entry: E): void {
    this.entries.set(index | 0, entry);
  }

  get(index: number): E | undefined {
    return this.entries.get(index | 0);
  }

  release(index: number): void {
    this.entries.delete(index | 0);
  }

  get size(): number {
    return this.entries.size;
  }
}
