/**
 * How much the daemon allocates on the JS heap, and what its garbage collection costs — the
 * figures that show whether the data path allocates per packet (it should not). V8 reports
 * no running total of allocated bytes, so this derives one from a GC profiler: between two
 * collections the heap only grows by what was allocated, so the total is the sum of
 * (used before a GC − used after the previous one), plus the growth since the last one.
 *
 * The profiler buffers one record per GC; it is drained whenever the figures are read and on
 * a slow timer, so a daemon nobody asks keeps a bounded buffer.
 */
import { GCProfiler, getHeapStatistics } from 'node:v8';

const DRAIN_INTERVAL_MS = 60_000;

interface GcRecord {
  readonly gcType: string;
  readonly cost: number;
  readonly beforeGC: { readonly heapStatistics: { readonly usedHeapSize: number } };
  readonly afterGC: { readonly heapStatistics: { readonly usedHeapSize: number } };
}

export interface HeapFigures {
  /** Bytes allocated on the JS heap since the meter started. */
  heap_allocated_bytes: number;
  heap_used_bytes: number;
  /** Young-generation collections (scavenges). */
  gc_minor: number;
  /** Everything else: mark-compacts, incremental marking steps, weak-callback processing. */
  gc_major: number;
  /** Time spent in collections, in microseconds. */
  gc_pause_us: number;
}

export class HeapMeter {
  private profiler: GCProfiler | undefined = new GCProfiler();
  private readonly timer: NodeJS.Timeout;
  private allocated = 0;
  private lastUsed: number;
  private minor = 0;
  private major = 0;
  private pauseUs = 0;

  constructor() {
    this.lastUsed = getHeapStatistics().used_heap_size;
    this.profiler!.start();
    this.timer = setInterval(() => this.drain(), DRAIN_INTERVAL_MS);
    this.timer.unref();
  }

  /** The figures as of now (drains the profiler). */
  read(): HeapFigures {
    this.drain();
    return {
      heap_allocated_bytes: this.allocated,
      heap_used_bytes: this.lastUsed,
      gc_minor: this.minor,
      gc_major: this.major,
      gc_pause_us: Math.round(this.pauseUs),
    };
  }

  stop(): void {
    clearInterval(this.timer);
    this.profiler?.stop();
    this.profiler = undefined;
  }

  private drain(): void {
    const profiler = this.profiler;
    if (!profiler) return;
    const result = profiler.stop() as unknown as { statistics: readonly GcRecord[] } | undefined;
    profiler.start();
    for (const gc of result?.statistics ?? []) {
      this.allocated += Math.max(0, gc.beforeGC.heapStatistics.usedHeapSize - this.lastUsed);
      this.lastUsed = gc.afterGC.heapStatistics.usedHeapSize;
      if (gc.gcType === 'Scavenge' || gc.gcType === 'MinorMarkSweep') this.minor++;
      else this.major++;
      this.pauseUs += gc.cost;
    }
    const used = getHeapStatistics().used_heap_size;
    this.allocated += Math.max(0, used - this.lastUsed);
    this.lastUsed = used;
  }
}
