// Keeping the main thread's heap small while runs work.
//
// V8 sizes the young generation by how much survives its collections (Node 24 lets the main
// thread's grow to 64 MiB a semi-space, and the pages it touched stay resident), and lets memory
// held by buffers outside the heap (ssh2's packet buffers: every byte of a download passes
// through one) reach about 64 MiB before it collects. A run of 1,000 tenants with nothing to do
// peaked at 137 MiB with some 20 MiB of live objects, 3,000 tenants at 166 MiB. The heap flags
// that would bound this (--max-semi-space-size) are read when the heap is made, so a process
// cannot set them for itself, and they would bind the parse threads too, which need their young
// generation.
//
// So while a run works, this paces the collector itself: the young generation every 100 ms (a
// scavenge of a mostly dead young generation costs well under a millisecond) and a full
// collection every 2 s (about 10 ms for this heap). Measured on 2 cores: 1,000 tenants with
// nothing to do peak at 96 MiB instead of 137, 3,000 at 104 instead of 166, in the same time.
// Nothing runs while the process is idle.
import v8 from 'node:v8';
import vm from 'node:vm';

type Collect = (options?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async'; flavor?: 'regular' | 'last-resort' }) => void;

const YOUNG_EVERY_MS = 100;
const FULL_EVERY_MS = 2000;

let collect: Collect | null | undefined;
let holders = 0;
let timers: NodeJS.Timeout[] = [];

/**
 * The collector, exposed once. `--expose-gc` set at run time gives new contexts a `gc`
 * function (the heap itself is unchanged); null where the runtime refuses.
 */
function collector(): Collect | null {
  if (collect === undefined) {
    try {
      v8.setFlagsFromString('--expose-gc');
      collect = vm.runInNewContext('gc') as Collect;
    } catch {
      collect = null;
    }
  }
  return collect;
}

/**
 * Paces the collector until the returned function is called (idempotent). Runs overlap: the
 * pacing lasts while any of them holds it.
 */
export function keepHeapSmall(): () => void {
  const gc = collector();
  if (!gc) return () => {};
  if (holders++ === 0) {
    timers = [setInterval(() => gc({ type: 'minor' }), YOUNG_EVERY_MS), setInterval(() => gc({ type: 'major' }), FULL_EVERY_MS)];
    for (const t of timers) t.unref();
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    if (--holders === 0) {
      for (const t of timers) clearInterval(t);
      timers = [];
    }
  };
}

/**
 * A young collection now. For code that knows it just made a lot of short-lived garbage outside
 * the heap (a download's packet buffers), which V8 would let pile up to about 64 MiB first.
 */
export function collectYoung(): void {
  collector()?.({ type: 'minor' });
}

/** Whether the collector is being paced now (for tests). */
export const heapPacing = (): boolean => holders > 0;

/**
 * A collection that also gives back the memory the heap grew into, once: after reading a large
 * configuration (the JSON of 10,000 tenants from the loading child grows the young generation to
 * 16 MiB on its way in, and V8 keeps it; a last-resort collection shrinks it to nothing), and
 * before a large download (follow-download.ts).
 */
export function compactHeap(): void {
  collector()?.({ type: 'major', flavor: 'last-resort' });
}

let pretenuringOff = false;

/**
 * Turns off V8's allocation-site pretenuring, once, for the process (V8's flags are
 * process-wide). A parse thread allocates a row's objects at a few sites; when a site's objects
 * once survive (while the thread waits for the download, say), V8 starts allocating them straight
 * into the old generation, where they pile up as garbage until a full collection. In about one
 * 1,000,000-row import in three, one thread's heap grew from 16 to 26-28 MiB that way; with
 * pretenuring off, none did in twenty, in the same time.
 */
export function stopPretenuring(): void {
  if (pretenuringOff) return;
  pretenuringOff = true;
  try {
    v8.setFlagsFromString('--no-allocation-site-pretenuring');
  } catch {
    // a runtime that refuses the flag only keeps the larger heap
  }
}
