/**
 * Typed-array views of packet ranges in long-lived slabs, made once and reused. Native AEAD
 * calls take a view per buffer argument, and a `subarray` per call is ~100 bytes of garbage —
 * several per packet on the data path. Packets sit at a few fixed offsets of a few slabs with
 * a few distinct lengths (full-size segments, ACKs), so a small cache keyed by
 * (buffer, offset, length) turns those into lookups. Bounded: an offset that sees more than
 * MAX_LENGTHS lengths, or a buffer with more than MAX_OFFSETS offsets, starts over.
 */
const MAX_LENGTHS = 32;
const MAX_OFFSETS = 4096;

export class SlabViews {
  private readonly byBuffer = new WeakMap<ArrayBufferLike, Map<number, Map<number, Uint8Array>>>();

  /** The bytes slab[offset, offset + length) as a view that stays valid as long as slab's buffer. */
  view(slab: Uint8Array, offset: number, length: number): Uint8Array {
    const buffer = slab.buffer;
    let offsets = this.byBuffer.get(buffer);
    if (offsets === undefined) {
      offsets = new Map();
      this.byBuffer.set(buffer, offsets);
    }
    const start = slab.byteOffset + offset;
    let lengths = offsets.get(start);
    if (lengths === undefined) {
      if (offsets.size >= MAX_OFFSETS) offsets.clear();
      lengths = new Map();
      offsets.set(start, lengths);
    }
    let view = lengths.get(length);
    if (view === undefined) {
      if (offset < 0 || length < 0 || offset + length > slab.length) throw new RangeError(`range [${offset}, ${offset + length}) is outside a ${slab.length}-byte slab`);
      if (lengths.size >= MAX_LENGTHS) lengths.clear();
      view = new Uint8Array(buffer, start, length);
      lengths.set(length, view);
    }
    return view;
  }
}
