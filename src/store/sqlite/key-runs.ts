// Whether a part's keys came in an order the apply can follow as it is. The apply looks each
// staged key up in the directory's B-tree (a re-sync) or inserts it there (new users), in the
// order it reads the part. Keys in one ascending run (a file sorted by its key), or in a few runs
// that each keep to a range of their own (employees' E… ids and students' S… ids, each in
// order), keep a few pages busy at a time and fill each page once. Keys in no order (a file
// sorted by name) want a page anywhere in the tree for each row, far more pages than the 4 MiB
// cache holds, and keys in many interleaved runs (a file sorted by school, each school's ids in
// order) pass over the whole tree once a run, splitting the pages the run before filled. On
// 1,000,000 users in random order the apply took 15.9 s instead of 1.6 s (a first import) and
// 7.5 s instead of 0.7 s (the same file again); sorted by school, 8.6 s and 4.2 s. Such a part is
// read sorted by key instead (sorted-copy.ts), which costs about a second per 1,000,000 rows: worth it
// for a scattered part, not for one in order, hence this check.

/**
 * More runs than this and the part counts as scattered. A run costs about one pass over the
 * part of the tree it interleaves with; past a few, the sort is cheaper.
 */
export const MAX_KEY_RUNS = 4;

/**
 * The fewest ascending runs the keys so far split into, counted up to MAX_KEY_RUNS (patience
 * sorting's greedy piles: a key goes onto the run whose last key is the largest one below it, or
 * starts a run). About two comparisons a key while there are few runs; nothing once scattered.
 * JavaScript compares UTF-16 code units where SQLite compares UTF-8 bytes; they differ only
 * between characters beyond U+FFFF and U+E000-U+FFFF, which can only make this estimate a
 * little off, never the result of an apply.
 */
export class KeyRuns {
  /** The last key of each run, ascending. */
  private readonly lasts: string[] = [];
  scattered = false;

  add(key: string): void {
    if (this.scattered) return;
    const lasts = this.lasts;
    // The last run whose last key is below `key` (-1: none is).
    let lo = 0;
    let hi = lasts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (lasts[mid] < key) lo = mid + 1;
      else hi = mid;
    }
    if (lo > 0) lasts[lo - 1] = key; // still ascending: lasts[lo] >= key
    else if (lasts.length < MAX_KEY_RUNS) lasts.unshift(key);
    else this.scattered = true;
  }

  /** How many runs so far (MAX_KEY_RUNS once scattered). */
  get runs(): number {
    return this.scattered ? MAX_KEY_RUNS : this.lasts.length;
  }
}
