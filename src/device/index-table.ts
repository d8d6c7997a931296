/**
 * Receiver indices: random 32-bit numbers we hand out in handshake messages, mapping back to the
 * peer and (once the handshake completes) the keypair. Random rather than sequential so an
 * observer learns nothing from them.
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
      if (!this.entries.has(index)) {
        this.entries.set(index, entry);
        return index;
      }
    }
  }

  /** Points an existing index at a new entry (handshake → keypair). */
  replace(index: number, entry: E): void {
    this.entries.set(index, entry);
  }

  get(index: number): E | undefined {
    return this.entries.get(index);
  }

  release(index: number): void {
    this.entries.delete(index);
  }

  get size(): number {
    return this.entries.size;
  }
}
