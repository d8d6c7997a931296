/**
 * Cryptokey routing (whitepaper §2): the table from IP prefixes to peers. Outbound, the longest
 * prefix containing a packet's destination picks the peer to encrypt for; inbound, the longest
 * prefix containing a decrypted packet's source must belong to the peer that sent it.
 *
 * One path-compressed binary trie per family, as the kernel's allowedips.c: a node holds a
 * prefix (bits, length) and its children are chosen by the first bit past the prefix; a node
 * without a value (an intermediate) exists only where two subtrees part, so it always has two
 * children. Addresses are big-endian 32-bit words (IPv4: one, IPv6: four) and every node keeps
 * its mask, so a step of a lookup is an xor, an and and a compare.
 *
 * Layout: nodes are fixed-size records in one Int32Array per family (offset 0 is null): 32 bytes
 * for IPv4, 64 for IPv6, so a step reads one cache line. Lookups read the address straight from
 * the packet and allocate nothing.
 *
 * Jump tables: a binary trie of 100,000 prefixes is ~17 nodes deep, a cache miss each. So a
 * node with a large subtree gets a direct-indexed table over the next K bits (K = log2 of the
 * subtree's records, rounded up, at most 17) giving, for each value of those bits, the node
 * where the walk resumes (the first one at least K bits deeper whose prefix agrees, or none)
 * and the best value passed on the way. A lookup in 100,000 random prefixes then reads the
 * root, one table entry and about one more node. Tables hang off whichever nodes are large,
 * not off the root's first bits, so a mesh inside 100.64.0.0/10 is indexed on its bits 10–26.
 * They are planned top-down whenever a trie has doubled or shrunk to a quarter since the last
 * plan, and every insert and remove rewrites the entries it affects, so they are always exact
 * (verify() checks every entry). bench/scale-allowed-ips.ts measures with and without them.
 *
 * Values (peers, compared by identity) get small integer ids; a node stores the id. Each value
 * keeps an intrusive doubly linked list of its nodes across both families, in insertion order
 * (as the kernel's per-peer list, which is the order `wg` shows), so removing a peer costs its
 * own prefixes only, and its id is released when it has none (the table holds no reference to
 * a peer without prefixes).
 */
import type { Cidr } from './config.ts';

// Record layout. IPv4 (stride 8): bits, mask, child0, child1, cidr, value, jump, parent.
// IPv6 (stride 16): bits[4], mask[4], child0, child1, cidr, value, jump, parent, -, -.
// jump: 0, or the node's table as (offset in the pool << 5) | K.
const V4_STRIDE = 8;
const V4_MASK = 1;
const V4_CHILD = 2;
const V4_CIDR = 4;
const V4_VALUE = 5;
const V4_JUMP = 6;
const V6_STRIDE = 16;
const V6_MASK = 4;
const V6_CHILD = 8;
const V6_CIDR = 10;
const V6_VALUE = 11;
const V6_JUMP = 12;

const INITIAL_NODES = 64;
/** A subtree of fewer records than this gets no table (and the trie none below this size). */
const MIN_TABLE_NODES = 8;
/** Widest table: 2^17 entries of 8 bytes (1 MiB). */
const MAX_TABLE_BITS = 17;
const EMPTY_POOL = new Int32Array(0);
/** A node handle in the per-value lists: offset × 2 + (1 for IPv6). */
const NO_HANDLE = -1;

/** Big-endian 32-bit mask of the first `bits` bits (0 to 32) of a word. */
function wordMask(bits: number): number {
  return bits <= 0 ? 0 : bits >= 32 ? -1 : -1 << (32 - bits);
}

/** Bit i (0 = most significant) of a key of words. */
function bitOf(key: Int32Array, i: number): number {
  return (key[i >>> 5]! >>> (31 - (i & 31))) & 1;
}

/** One family's trie. The cold paths (insert, remove, tables) are generic over the word count. */
class Trie {
  readonly words: 1 | 4;
  readonly maxBits: number;
  readonly stride: number;
  private readonly maskAt: number;
  private readonly childAt: number;
  readonly cidrAt: number;
  readonly valueAt: number;
  private readonly jumpAt: number;
  private readonly parentAt: number;
  /** Node records; AllowedIps' lookups read them directly. */
  mem: Int32Array;
  root = 0;
  /** All jump tables, as [resume node, best value] pairs; AllowedIps' lookups read it directly. */
  pool: Int32Array = EMPTY_POOL;
  /** Per-value list links, indexed by node index (offset / stride): handles, NO_HANDLE at the ends. */
  prev: Int32Array;
  next: Int32Array;
  /** Live records (prefixes and intermediates). */
  nodes = 0;
  private readonly tables: boolean;
  /** Nodes given a table by the last plan. */
  private jumped: number[] = [];
  /** Records when the tables were last planned. */
  private plannedAt = 0;
  /** Head of the free-record list (linked through the child0 field); 0 when empty. */
  private free = 0;
  /** First never-used offset. */
  private top: number;
  private readonly probe = new Int32Array(4);

  constructor(words: 1 | 4, tables: boolean) {
    this.words = words;
    this.maxBits = words * 32;
    this.stride = words === 1 ? V4_STRIDE : V6_STRIDE;
    this.maskAt = words;
    this.childAt = 2 * words;
    this.cidrAt = 2 * words + 2;
    this.valueAt = 2 * words + 3;
    this.jumpAt = 2 * words + 4;
    this.parentAt = 2 * words + 5;
    this.tables = tables;
    this.mem = new Int32Array(INITIAL_NODES * this.stride);
    this.prev = new Int32Array(INITIAL_NODES);
    this.next = new Int32Array(INITIAL_NODES);
    this.top = this.stride; // offset 0 is null
  }

  /** Bytes held by the typed arrays. */
  get bytes(): number {
    return this.mem.byteLength + this.prev.byteLength + this.next.byteLength + this.pool.byteLength;
  }

  /** Bytes of the jump tables. */
  get tableBytes(): number {
    return this.pool.byteLength;
  }

  private alloc(key: Int32Array, cidr: number, value: number): number {
    let n = this.free;
    if (n !== 0) {
      this.free = this.mem[n + this.childAt]!;
    } else {
      if (this.top >= this.mem.length) this.grow();
      n = this.top;
      this.top += this.stride;
    }
    const m = this.mem;
    for (let w = 0; w < this.words; w++) {
      const mask = wordMask(cidr - w * 32);
      m[n + w] = key[w]! & mask;
      m[n + this.maskAt + w] = mask;
    }
    m[n + this.childAt] = 0;
    m[n + this.childAt + 1] = 0;
    m[n + this.cidrAt] = cidr;
    m[n + this.valueAt] = value;
    m[n + this.jumpAt] = 0;
    m[n + this.parentAt] = 0;
    this.nodes++;
    return n;
  }

  private release(n: number): void {
    this.mem.fill(0, n, n + this.stride);
    this.mem[n + this.childAt] = this.free;
    this.free = n;
    this.nodes--;
  }

  private grow(): void {
    const mem = new Int32Array(this.mem.length * 2);
    mem.set(this.mem);
    this.mem = mem;
    const count = mem.length / this.stride;
    const prev = new Int32Array(count);
    prev.set(this.prev);
    this.prev = prev;
    const next = new Int32Array(count);
    next.set(this.next);
    this.next = next;
  }

  /** Node n's bit i. */
  private nodeBit(n: number, i: number): number {
    return (this.mem[n + (i >>> 5)]! >>> (31 - (i & 31))) & 1;
  }

  /** Whether key lies in node n's prefix. */
  private contains(n: number, key: Int32Array): boolean {
    const m = this.mem;
    for (let w = 0; w < this.words; w++) {
      if (((key[w]! ^ m[n + w]!) & m[n + this.maskAt + w]!) !== 0) return false;
    }
    return true;
  }

  /** How many leading bits node n's (masked) bits and key agree on. */
  private commonBits(n: number, key: Int32Array): number {
    const m = this.mem;
    for (let w = 0; w < this.words; w++) {
      const x = key[w]! ^ m[n + w]!;
      if (x !== 0) return w * 32 + Math.clz32(x);
    }
    return this.maxBits;
  }

  /** Which of parent's slots holds child. */
  private sideOf(parent: number, child: number): number {
    return this.mem[parent + this.childAt] === child ? 0 : 1;
  }

  /** Points the slot that held `old` under parent (or the root) at `node`. */
  private replaceChild(parent: number, old: number, node: number): void {
    if (parent === 0) this.root = node;
    else this.mem[parent + this.childAt + this.sideOf(parent, old)] = node;
    if (node !== 0) this.mem[node + this.parentAt] = parent;
  }

  private setChild(parent: number, side: number, node: number): void {
    this.mem[parent + this.childAt + side] = node;
    this.mem[node + this.parentAt] = parent;
  }

  /** The node holding exactly key/cidr (a prefix or an intermediate), or 0. key masked to cidr. */
  find(key: Int32Array, cidr: number): number {
    const m = this.mem;
    let n = this.root;
    while (n !== 0) {
      const c = m[n + this.cidrAt]!;
      if (c > cidr || !this.contains(n, key)) return 0;
      if (c === cidr) return n;
      n = m[n + this.childAt + bitOf(key, c)]!;
    }
    return 0;
  }

  /**
   * Finds or creates the node for key/cidr (key masked to cidr). Returns a new node's offset
   * (holding value), or the negated offset of an existing one (a prefix or an intermediate,
   * untouched: the caller sets its value with setValue).
   */
  insert(key: Int32Array, cidr: number, value: number): number {
    const m = this.mem;
    let parent = 0;
    let n = this.root;
    // Walk down while the node is a prefix of (or equal to) the new one.
    while (n !== 0) {
      const c = m[n + this.cidrAt]!;
      if (c > cidr || !this.contains(n, key)) break;
      if (c === cidr) return -n;
      parent = n;
      n = m[n + this.childAt + bitOf(key, c)]!;
    }
    const added = this.alloc(key, cidr, value);
    const side = parent === 0 ? 0 : bitOf(key, this.mem[parent + this.cidrAt]!);
    if (n === 0) {
      if (parent === 0) this.root = added;
      else this.setChild(parent, side, added);
    } else {
      // n sits where the new node belongs but does not contain it: either the new prefix
      // contains n, or they part at some bit before both ends.
      const split = Math.min(cidr, this.mem[n + this.cidrAt]!, this.commonBits(n, key));
      if (split === cidr) {
        this.replaceChild(parent, n, added);
        this.setChild(added, this.nodeBit(n, cidr), n);
      } else {
        const fork = this.alloc(key, split, 0);
        this.replaceChild(parent, n, fork);
        this.setChild(fork, this.nodeBit(n, split), n);
        this.setChild(fork, bitOf(key, split), added);
      }
    }
    this.touch(parent, side);
    this.maybeReplan();
    return added;
  }

  /** Sets an existing node's value (0: none; the node must then have two children). */
  setValue(n: number, value: number): void {
    this.mem[n + this.valueAt] = value;
    const parent = this.mem[n + this.parentAt]!;
    if (parent !== 0) this.touch(parent, this.sideOf(parent, n));
  }

  /** Clears node n's value and drops it (and an intermediate parent left with one child). */
  remove(n: number): void {
    const m = this.mem;
    const c0 = m[n + this.childAt]!;
    const c1 = m[n + this.childAt + 1]!;
    if (c0 !== 0 && c1 !== 0) {
      this.setValue(n, 0); // stays, as an intermediate
      return;
    }
    const child = c0 !== 0 ? c0 : c1;
    const parent = m[n + this.parentAt]!;
    const side = parent === 0 ? 0 : this.sideOf(parent, n);
    this.replaceChild(parent, n, child);
    this.release(n);
    if (child !== 0 || parent === 0 || m[parent + this.valueAt] !== 0) {
      this.touch(parent, side);
    } else {
      // parent was an intermediate with two children and now has one: splice it out.
      const p0 = m[parent + this.childAt]!;
      const only = p0 !== 0 ? p0 : m[parent + this.childAt + 1]!;
      const grandparent = m[parent + this.parentAt]!;
      const parentSide = grandparent === 0 ? 0 : this.sideOf(grandparent, parent);
      this.replaceChild(grandparent, parent, only);
      this.release(parent);
      this.touch(grandparent, parentSide);
    }
    this.maybeReplan();
  }

  /**
   * After a change at parent's child slot `side` (the node there, or a value at or below it),
   * rewrites the table entries whose walk passes through that slot: they are in the nearest
   * table above, if its window reaches the slot. A change at the root slot touches no table.
   */
  private touch(parent: number, side: number): void {
    if (parent === 0 || this.jumped.length === 0) return;
    const m = this.mem;
    // The nearest table above, and the best value between it and the slot.
    let best = 0;
    let owner = parent;
    while (owner !== 0 && m[owner + this.jumpAt] === 0) {
      if (best === 0) best = m[owner + this.valueAt]!;
      owner = m[owner + this.parentAt]!;
    }
    if (owner === 0) return;
    const jump = m[owner + this.jumpAt]!;
    const k = jump & 31;
    const start = m[owner + this.cidrAt]!;
    const at = m[parent + this.cidrAt]!;
    if (at >= start + k) return; // the slot is below where the owner's entries resume
    // The slot's prefix (parent's bits, then `side`) fixes the window's first at + 1 - start bits.
    let first = this.windowOf(parent, start, k);
    const count = 1 << (k - (at + 1 - start));
    if (side === 1) first += count;
    this.fill(jump >>> 5, start, k, m[parent + this.childAt + side]!, first, count, best);
  }

  /** The k bits of node n's prefix from bit `start`, as an integer. */
  private windowOf(n: number, start: number, k: number): number {
    const m = this.mem;
    const w = start >>> 5;
    const s = start & 31;
    let x = m[n + w]! << s;
    if (s !== 0 && w + 1 < this.words) x |= m[n + w + 1]! >>> (32 - s);
    return x >>> (32 - k);
  }

  /**
   * Writes entries [first, first + count) of the table at pool offset `base` (window of k bits
   * from `start`), for the subtree n whose prefix covers exactly those entries' fixed bits and
   * below which the walk has seen `best`: O(count + nodes of the subtree inside the window).
   */
  private fill(base: number, start: number, k: number, n: number, first: number, count: number, best: number): void {
    const m = this.mem;
    const pool = this.pool;
    const end = start + k;
    const c = n === 0 ? end : m[n + this.cidrAt]!;
    // The entries that agree with n's prefix (all fixed bits of a node resumed at: one entry).
    const own = n === 0 ? first : this.windowOf(n, start, k);
    const size = n === 0 ? 0 : 1 << (end - Math.min(c, end));
    for (let e = first; e < first + count; e++) {
      if (e === own && size > 0) {
        e += size - 1;
        continue;
      }
      pool[base + 2 * e] = 0; // the walk misses n: it ends here
      pool[base + 2 * e + 1] = best;
    }
    if (size === 0) return;
    if (c >= end) {
      pool[base + 2 * own] = n;
      pool[base + 2 * own + 1] = best;
      return;
    }
    const value = m[n + this.valueAt]!;
    const below = value !== 0 ? value : best;
    const half = size >>> 1;
    this.fill(base, start, k, m[n + this.childAt]!, own, half, below);
    this.fill(base, start, k, m[n + this.childAt + 1]!, own + half, half, below);
  }

  /** The walk below node j for window bits [start, start + k) = i, step by step: [resume node, best value] (for verify). */
  private walkWindow(j: number, start: number, k: number, i: number): [number, number] {
    const m = this.mem;
    const probe = this.probe;
    for (let w = 0; w < this.words; w++) probe[w] = m[j + w]!;
    const x = i << (32 - k);
    const s = start & 31;
    probe[start >>> 5]! |= x >>> s;
    if (s !== 0 && s + k > 32) probe[(start >>> 5) + 1]! |= x << (32 - s);
    const end = start + k;
    let best = 0;
    let n = m[j + this.childAt + bitOf(probe, start)]!;
    while (n !== 0) {
      const c = m[n + this.cidrAt]!;
      if (c >= end) {
        // Resume at n only if the window agrees with n's prefix (so each node is resumed at
        // from one entry at most, and a miss ends at the table).
        for (let w = 0; w < this.words; w++) {
          if (((probe[w]! ^ m[n + w]!) & wordMask(end - w * 32)) !== 0) return [0, best];
        }
        break;
      }
      if (!this.contains(n, probe)) return [0, best];
      const v = m[n + this.valueAt]!;
      if (v !== 0) best = v;
      n = m[n + this.childAt + bitOf(probe, c)]!;
    }
    return [n, best];
  }

  private maybeReplan(): void {
    if (!this.tables) return;
    const grown = this.nodes >= 2 * this.plannedAt && this.nodes >= 2 * MIN_TABLE_NODES;
    const shrunk = this.nodes < this.plannedAt / 4;
    if (grown || shrunk) this.plan();
  }

  /**
   * Replaces all tables: top-down from the root, a node whose subtree has at least
   * MIN_TABLE_NODES records gets a table of K = ⌈log2(records)⌉ bits (at most MAX_TABLE_BITS),
   * and planning continues at the nodes its entries resume at.
   */
  plan(): void {
    const m = this.mem;
    for (const j of this.jumped) m[j + this.jumpAt] = 0; // freed records are zero already
    this.jumped = [];
    this.pool = EMPTY_POOL;
    this.plannedAt = this.nodes;
    if (this.nodes < MIN_TABLE_NODES || this.root === 0) return;
    const sizes = this.subtreeSizes();
    const planned: { node: number; k: number; offset: number }[] = [];
    let total = 0;
    const stack = [this.root];
    while (stack.length > 0) {
      const j = stack.pop()!;
      const size = sizes[j / this.stride]!;
      const start = m[j + this.cidrAt]!;
      if (size < MIN_TABLE_NODES || start >= this.maxBits) continue;
      const k = Math.min(MAX_TABLE_BITS, 32 - Math.clz32(size - 1), this.maxBits - start);
      planned.push({ node: j, k, offset: total });
      total += 2 << k;
      if (total >= 1 << 26) throw new Error('allowed IPs: jump tables too large'); // offsets have 26 bits
      // Plan below the nodes this table resumes at: those at least k bits deeper.
      const pending = [m[j + this.childAt]!, m[j + this.childAt + 1]!];
      while (pending.length > 0) {
        const n = pending.pop()!;
        if (n === 0) continue;
        if (m[n + this.cidrAt]! >= start + k) stack.push(n);
        else pending.push(m[n + this.childAt]!, m[n + this.childAt + 1]!);
      }
    }
    this.pool = new Int32Array(total);
    for (const { node, k, offset } of planned) {
      m[node + this.jumpAt] = (offset << 5) | k;
      this.jumped.push(node);
      const start = m[node + this.cidrAt]!;
      const half = 1 << (k - 1);
      this.fill(offset, start, k, m[node + this.childAt]!, 0, half, 0);
      this.fill(offset, start, k, m[node + this.childAt + 1]!, half, half, 0);
    }
  }

  /** Records in each node's subtree, by node index (iterative post-order). */
  private subtreeSizes(): Int32Array {
    const m = this.mem;
    const sizes = new Int32Array(m.length / this.stride);
    const order: number[] = [];
    const stack = [this.root];
    while (stack.length > 0) {
      const n = stack.pop()!;
      order.push(n);
      const c0 = m[n + this.childAt]!;
      const c1 = m[n + this.childAt + 1]!;
      if (c0 !== 0) stack.push(c0);
      if (c1 !== 0) stack.push(c1);
    }
    for (let i = order.length - 1; i >= 0; i--) {
      const n = order[i]!;
      const c0 = m[n + this.childAt]!;
      const c1 = m[n + this.childAt + 1]!;
      sizes[n / this.stride] = 1 + (c0 === 0 ? 0 : sizes[c0 / this.stride]!) + (c1 === 0 ? 0 : sizes[c1 / this.stride]!);
    }
    return sizes;
  }

  /** Writes node n's prefix address into out (4 or 16 bytes). */
  readAddress(n: number, out: Uint8Array): void {
    for (let w = 0; w < this.words; w++) {
      const word = this.mem[n + w]!;
      out[w * 4] = word >>> 24;
      out[w * 4 + 1] = (word >>> 16) & 0xff;
      out[w * 4 + 2] = (word >>> 8) & 0xff;
      out[w * 4 + 3] = word & 0xff;
    }
  }

  clear(): void {
    this.mem = new Int32Array(INITIAL_NODES * this.stride);
    this.prev = new Int32Array(INITIAL_NODES);
    this.next = new Int32Array(INITIAL_NODES);
    this.pool = EMPTY_POOL;
    this.jumped = [];
    this.plannedAt = 0;
    this.root = 0;
    this.free = 0;
    this.top = this.stride;
    this.nodes = 0;
  }

  /** Checks the structure and every table entry; throws on the first violation. Returns the valued nodes. */
  verify(): number {
    const m = this.mem;
    let values = 0;
    let tables = 0;
    const walk = (n: number, parent: number, minCidr: number): number => {
      if (m[n + this.parentAt] !== parent) throw new Error(`node ${n}: parent ${m[n + this.parentAt]}, expected ${parent}`);
      const c = m[n + this.cidrAt]!;
      if (c < minCidr || c > this.maxBits) throw new Error(`node ${n}: cidr ${c} below ${minCidr}`);
      for (let w = 0; w < this.words; w++) {
        const mask = wordMask(c - w * 32);
        if (m[n + this.maskAt + w] !== mask || (m[n + w]! & ~mask) !== 0) throw new Error(`node ${n}: mask`);
      }
      const c0 = m[n + this.childAt]!;
      const c1 = m[n + this.childAt + 1]!;
      if (m[n + this.valueAt] !== 0) values++;
      else if (c0 === 0 || c1 === 0) throw new Error(`node ${n}: intermediate without two children`);
      const jump = m[n + this.jumpAt]!;
      if (jump !== 0) {
        tables++;
        const k = jump & 31;
        for (let i = 0; i < 1 << k; i++) {
          const [next, best] = this.walkWindow(n, c, k, i);
          const at = (jump >>> 5) + 2 * i;
          if (this.pool[at] !== next || this.pool[at + 1] !== best) {
            throw new Error(`node ${n} (/${c}): table entry ${i} is [${this.pool[at]}, ${this.pool[at + 1]}], expected [${next}, ${best}]`);
          }
        }
      }
      let count = 1;
      for (const [side, child] of [[0, c0], [1, c1]] as const) {
        if (child === 0) continue;
        if (c >= this.maxBits) throw new Error(`node ${n}: full-length node with children`);
        if (this.nodeBit(child, c) !== side) throw new Error(`node ${child}: on the wrong side`);
        for (let w = 0; w < this.words; w++) {
          if (((m[child + w]! ^ m[n + w]!) & m[n + this.maskAt + w]!) !== 0) throw new Error(`node ${child}: outside its parent`);
        }
        count += walk(child, n, c + 1);
      }
      return count;
    };
    const total = this.root === 0 ? 0 : walk(this.root, 0, 0);
    if (total !== this.nodes) throw new Error(`reachable nodes ${total}, counted ${this.nodes}`);
    const live = this.jumped.filter((j) => m[j + this.jumpAt] !== 0).length;
    if (live !== tables) throw new Error(`${tables} tables reachable, ${live} planned and live`);
    return values;
  }
}

export interface AllowedIpsOptions {
  /** Jump tables over the dense parts of the tries (default true; false only to measure without). */
  readonly jumpTables?: boolean;
}

/** Longest-prefix match from IPv4 and IPv6 prefixes to values (peers), compared by identity. */
export class AllowedIps<T> {
  private readonly v4: Trie;
  private readonly v6: Trie;
  /** Value by id; id 0 (and released ids) hold undefined, so a miss needs no branch. */
  private readonly byId: (T | undefined)[] = [undefined];
  private readonly ids = new Map<T, number>();
  private readonly freeIds: number[] = [];
  /** Per value id: first and last node handle of its list, and its prefix count. */
  private head: number[] = [NO_HANDLE];
  private tail: number[] = [NO_HANDLE];
  private counts: number[] = [0];
  private prefixes = 0;
  /** Scratch key for the cold paths. */
  private readonly key = new Int32Array(4);

  constructor(options: AllowedIpsOptions = {}) {
    const tables = options.jumpTables ?? true;
    this.v4 = new Trie(1, tables);
    this.v6 = new Trie(4, tables);
  }

  /** Number of prefixes. */
  get size(): number {
    return this.prefixes;
  }

  /** Trie records in use: one per prefix plus the intermediates where prefixes part. */
  get nodeCount(): number {
    return this.v4.nodes + this.v6.nodes;
  }

  /** Bytes held by the tries' typed arrays, jump tables included (not the id bookkeeping). */
  get byteLength(): number {
    return this.v4.bytes + this.v6.bytes;
  }

  /** Bytes of the jump tables alone. */
  get tableByteLength(): number {
    return this.v4.tableBytes + this.v6.tableBytes;
  }

  /**
   * Routes cidr to value. Host bits are ignored (masked off). A prefix belongs to one value:
   * inserting an existing prefix moves it (to the end of the new value's list, like the kernel).
   */
  insert(cidr: Cidr, value: T): void {
    const trie = this.trieFor(cidr);
    const key = this.loadKey(cidr);
    const id = this.idFor(value);
    const found = trie.insert(key, cidr.prefix, id);
    const n = Math.abs(found);
    const handle = trie === this.v6 ? n * 2 + 1 : n * 2;
    const old = found < 0 ? trie.mem[n + trie.valueAt]! : 0;
    if (old !== 0) {
      // The prefix existed: move it to the end of its (new) value's list.
      this.unlink(handle, old);
      if (old !== id) trie.setValue(n, id);
      this.link(handle, id);
      if (this.counts[old] === 0) this.releaseId(old);
    } else {
      // A new node (holding id already), or an intermediate that now holds a prefix.
      if (found < 0) trie.setValue(n, id);
      this.prefixes++;
      this.link(handle, id);
    }
  }

  /** Removes cidr if it routes to value; returns whether it did. */
  remove(cidr: Cidr, value: T): boolean {
    const id = this.ids.get(value);
    if (id === undefined) return false;
    const trie = this.trieFor(cidr);
    const n = trie.find(this.loadKey(cidr), cidr.prefix);
    if (n === 0 || trie.mem[n + trie.valueAt] !== id) return false;
    this.unlink(trie === this.v6 ? n * 2 + 1 : n * 2, id);
    if (this.counts[id] === 0) this.releaseId(id);
    trie.remove(n);
    this.prefixes--;
    return true;
  }

  /** Removes every prefix of value; returns how many. */
  removeValue(value: T): number {
    const id = this.ids.get(value);
    if (id === undefined) return 0;
    const removed = this.counts[id]!;
    let h = this.head[id]!;
    while (h !== NO_HANDLE) {
      const trie = (h & 1) === 1 ? this.v6 : this.v4;
      const n = h >>> 1;
      const next = trie.next[n / trie.stride]!;
      trie.remove(n);
      h = next;
    }
    this.prefixes -= removed;
    this.releaseId(id);
    return removed;
  }

  /** value's prefixes, in insertion order (as `wg show` lists them), masked. */
  entriesOf(value: T): Cidr[] {
    const id = this.ids.get(value);
    const out: Cidr[] = [];
    if (id === undefined) return out;
    for (let h = this.head[id]!; h !== NO_HANDLE; ) {
      const v6 = (h & 1) === 1;
      const trie = v6 ? this.v6 : this.v4;
      const n = h >>> 1;
      const address = new Uint8Array(v6 ? 16 : 4);
      trie.readAddress(n, address);
      out.push({ family: v6 ? 6 : 4, address, prefix: trie.mem[n + trie.cidrAt]! });
      h = trie.next[n / trie.stride]!;
    }
    return out;
  }

  /** The values that hold at least one prefix, in no particular order. */
  values(): IterableIterator<T> {
    return this.ids.keys();
  }

  clear(): void {
    this.v4.clear();
    this.v6.clear();
    this.byId.length = 1;
    this.ids.clear();
    this.freeIds.length = 0;
    this.head = [NO_HANDLE];
    this.tail = [NO_HANDLE];
    this.counts = [0];
    this.prefixes = 0;
  }

  /** The value of the longest prefix containing the IPv4 address at packet[offset..offset+4]. */
  lookupV4(packet: Uint8Array, offset: number): T | undefined {
    const key = (packet[offset]! << 24) | (packet[offset + 1]! << 16) | (packet[offset + 2]! << 8) | packet[offset + 3]!;
    const m = this.v4.mem;
    const pool = this.v4.pool;
    let n = this.v4.root;
    let best = 0;
    while (n !== 0) {
      if (((key ^ m[n]!) & m[n + V4_MASK]!) !== 0) break;
      const value = m[n + V4_VALUE]!;
      if (value !== 0) best = value;
      const cidr = m[n + V4_CIDR]!;
      if (cidr === 32) break;
      const jump = m[n + V4_JUMP]!;
      if (jump !== 0) {
        // The next K bits index the node's table: where to resume, and the best value between.
        const at = (jump >>> 5) + (((key << cidr) >>> (32 - (jump & 31))) << 1);
        const passed = pool[at + 1]!;
        if (passed !== 0) best = passed;
        n = pool[at]!;
      } else n = m[n + V4_CHILD + ((key >>> (31 - cidr)) & 1)]!;
    }
    return this.byId[best];
  }

  /** The value of the longest prefix containing the IPv6 address at packet[offset..offset+16]. */
  lookupV6(packet: Uint8Array, offset: number): T | undefined {
    const k0 = (packet[offset]! << 24) | (packet[offset + 1]! << 16) | (packet[offset + 2]! << 8) | packet[offset + 3]!;
    const k1 = (packet[offset + 4]! << 24) | (packet[offset + 5]! << 16) | (packet[offset + 6]! << 8) | packet[offset + 7]!;
    const k2 = (packet[offset + 8]! << 24) | (packet[offset + 9]! << 16) | (packet[offset + 10]! << 8) | packet[offset + 11]!;
    const k3 = (packet[offset + 12]! << 24) | (packet[offset + 13]! << 16) | (packet[offset + 14]! << 8) | packet[offset + 15]!;
    const m = this.v6.mem;
    const pool = this.v6.pool;
    let n = this.v6.root;
    let best = 0;
    while (n !== 0) {
      if (
        (((k0 ^ m[n]!) & m[n + V6_MASK]!) |
          ((k1 ^ m[n + 1]!) & m[n + V6_MASK + 1]!) |
          ((k2 ^ m[n + 2]!) & m[n + V6_MASK + 2]!) |
          ((k3 ^ m[n + 3]!) & m[n + V6_MASK + 3]!)) !==
        0
      ) {
        break;
      }
      const value = m[n + V6_VALUE]!;
      if (value !== 0) best = value;
      const cidr = m[n + V6_CIDR]!;
      if (cidr === 128) break;
      const w = cidr >>> 5;
      const s = cidr & 31;
      const word = w === 0 ? k0 : w === 1 ? k1 : w === 2 ? k2 : k3;
      const jump = m[n + V6_JUMP]!;
      if (jump !== 0) {
        // The window may run into the next word.
        let bits = word << s;
        if (s !== 0) bits |= (w === 0 ? k1 : w === 1 ? k2 : k3) >>> (32 - s);
        const at = (jump >>> 5) + ((bits >>> (32 - (jump & 31))) << 1);
        const passed = pool[at + 1]!;
        if (passed !== 0) best = passed;
        n = pool[at]!;
      } else n = m[n + V6_CHILD + ((word >>> (31 - s)) & 1)]!;
    }
    return this.byId[best];
  }

  /**
   * The value routing an IP packet's destination (outbound: which peer to encrypt for).
   * undefined for a packet too short for its header or of another IP version.
   * offset/length select the packet within a larger buffer.
   */
  lookupDestination(packet: Uint8Array, offset = 0, length = packet.length - offset): T | undefined {
    if (length < 1) return undefined;
    const version = packet[offset]! >>> 4;
    if (version === 4) return length >= 20 ? this.lookupV4(packet, offset + 16) : undefined;
    if (version === 6) return length >= 40 ? this.lookupV6(packet, offset + 24) : undefined;
    return undefined;
  }

  /** The value routing an IP packet's source (inbound: the peer allowed to have sent it). */
  lookupSource(packet: Uint8Array, offset = 0, length = packet.length - offset): T | undefined {
    if (length < 1) return undefined;
    const version = packet[offset]! >>> 4;
    if (version === 4) return length >= 20 ? this.lookupV4(packet, offset + 12) : undefined;
    if (version === 6) return length >= 40 ? this.lookupV6(packet, offset + 8) : undefined;
    return undefined;
  }

  /** The value of the longest prefix containing an address (4 or 16 bytes). */
  lookup(address: Uint8Array): T | undefined {
    if (address.length === 4) return this.lookupV4(address, 0);
    if (address.length === 16) return this.lookupV6(address, 0);
    throw new RangeError(`an IP address is 4 or 16 bytes, not ${address.length}`);
  }

  /** Checks the tries' and lists' invariants; throws on the first violation (for tests). */
  verify(): void {
    const valued = this.v4.verify() + this.v6.verify();
    if (valued !== this.prefixes) throw new Error(`${valued} valued nodes, size ${this.prefixes}`);
    let total = 0;
    for (const [value, id] of this.ids) {
      if (this.byId[id] !== value) throw new Error(`id ${id}: wrong value`);
      let count = 0;
      let prev = NO_HANDLE;
      for (let h = this.head[id]!; h !== NO_HANDLE; ) {
        const trie = (h & 1) === 1 ? this.v6 : this.v4;
        const n = h >>> 1;
        if (trie.mem[n + trie.valueAt] !== id) throw new Error(`id ${id}: listed node ${h} has value ${trie.mem[n + trie.valueAt]}`);
        if (trie.prev[n / trie.stride] !== prev) throw new Error(`id ${id}: broken back link at ${h}`);
        prev = h;
        count++;
        h = trie.next[n / trie.stride]!;
      }
      if (prev !== this.tail[id]) throw new Error(`id ${id}: wrong tail`);
      if (count !== this.counts[id] || count === 0) throw new Error(`id ${id}: ${count} listed, ${this.counts[id]} counted`);
      total += count;
    }
    if (total !== this.prefixes) throw new Error(`${total} listed prefixes, size ${this.prefixes}`);
  }

  private trieFor(cidr: Cidr): Trie {
    const bits = cidr.family === 4 ? 32 : cidr.family === 6 ? 128 : -1;
    if (bits < 0) throw new RangeError(`unknown address family ${String(cidr.family)}`);
    if (cidr.address.length !== bits / 8) throw new RangeError(`an IPv${cidr.family} address is ${bits / 8} bytes, not ${cidr.address.length}`);
    if (!Number.isInteger(cidr.prefix) || cidr.prefix < 0 || cidr.prefix > bits) {
      throw new RangeError(`IPv${cidr.family} prefix length must be 0 to ${bits}, not ${cidr.prefix}`);
    }
    return bits === 32 ? this.v4 : this.v6;
  }

  /** The prefix's address as words in the scratch key, host bits cleared. */
  private loadKey(cidr: Cidr): Int32Array {
    const a = cidr.address;
    const key = this.key;
    for (let w = 0; w < a.length / 4; w++) {
      const word = (a[w * 4]! << 24) | (a[w * 4 + 1]! << 16) | (a[w * 4 + 2]! << 8) | a[w * 4 + 3]!;
      key[w] = word & wordMask(cidr.prefix - w * 32);
    }
    return key;
  }

  private idFor(value: T): number {
    let id = this.ids.get(value);
    if (id !== undefined) return id;
    id = this.freeIds.pop() ?? this.byId.length;
    this.ids.set(value, id);
    this.byId[id] = value;
    this.head[id] = NO_HANDLE;
    this.tail[id] = NO_HANDLE;
    this.counts[id] = 0;
    return id;
  }

  private releaseId(id: number): void {
    const value = this.byId[id] as T;
    this.ids.delete(value);
    this.byId[id] = undefined;
    this.head[id] = NO_HANDLE;
    this.tail[id] = NO_HANDLE;
    this.counts[id] = 0;
    this.freeIds.push(id);
  }

  /** Appends node handle h to value id's list. */
  private link(h: number, id: number): void {
    const trie = (h & 1) === 1 ? this.v6 : this.v4;
    const index = (h >>> 1) / trie.stride;
    const last = this.tail[id]!;
    trie.prev[index] = last;
    trie.next[index] = NO_HANDLE;
    if (last === NO_HANDLE) this.head[id] = h;
    else {
      const lastTrie = (last & 1) === 1 ? this.v6 : this.v4;
      lastTrie.next[(last >>> 1) / lastTrie.stride] = h;
    }
    this.tail[id] = h;
    this.counts[id]!++;
  }

  /** Takes node handle h out of value id's list (the caller releases an id left with none). */
  private unlink(h: number, id: number): void {
    const trie = (h & 1) === 1 ? this.v6 : this.v4;
    const index = (h >>> 1) / trie.stride;
    const before = trie.prev[index]!;
    const after = trie.next[index]!;
    if (before === NO_HANDLE) this.head[id] = after;
    else {
      const t = (before & 1) === 1 ? this.v6 : this.v4;
      t.next[(before >>> 1) / t.stride] = after;
    }
    if (after === NO_HANDLE) this.tail[id] = before;
    else {
      const t = (after & 1) === 1 ? this.v6 : this.v4;
      t.prev[(after >>> 1) / t.stride] = before;
    }
    this.counts[id]!--;
  }
}
