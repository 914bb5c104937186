// A local file that a download is still writing, front to back. Its readers (the parse threads,
// each reading its part) follow it: a read waits until the bytes it needs are there, so a file
// is checked while it arrives instead of after. The download's progress lives in a
// SharedArrayBuffer every thread can see: [bytes written, final size (-1 until known), state]
// as 64-bit cells, then a 32-bit counter that moves (and wakes the readers) at every step.

const WRITTEN = 0;
const SIZE = 1;
const STATE = 2;
const COMPLETE = 1n;
const FAILED = 2n;
/** How long a reader sleeps at most before it looks again (a notify wakes it sooner). */
const WAKE_MS = 50;

export class DownloadFailed extends Error {}

/** The writing side: the download reports each step. */
export class GrowingFile {
  readonly shared = new SharedArrayBuffer(3 * 8 + 4);
  private readonly cells = new BigInt64Array(this.shared, 0, 3);
  private readonly bell = new Int32Array(this.shared, 3 * 8, 1);

  constructor() {
    Atomics.store(this.cells, SIZE, -1n);
  }

  sized(bytes: number): void {
    Atomics.store(this.cells, SIZE, BigInt(bytes));
    this.ring();
  }

  grew(bytes: number): void {
    Atomics.store(this.cells, WRITTEN, BigInt(bytes));
    this.ring();
  }

  complete(): void {
    Atomics.store(this.cells, STATE, COMPLETE);
    this.ring();
  }

  failed(): void {
    Atomics.store(this.cells, STATE, FAILED);
    this.ring();
  }

  private ring(): void {
    Atomics.add(this.bell, 0, 1);
    Atomics.notify(this.bell, 0);
  }
}

/** The reading side, in any thread. Without a shared buffer the file is complete already. */
export class FollowedFile {
  private readonly cells: BigInt64Array | null;
  private readonly bell: Int32Array | null;

  constructor(shared?: SharedArrayBuffer) {
    this.cells = shared ? new BigInt64Array(shared, 0, 3) : null;
    this.bell = shared ? new Int32Array(shared, 3 * 8, 1) : null;
  }

  get following(): boolean {
    return this.cells !== null;
  }

  /** The file's final size (`statSize()` gives it for a file that is complete already). */
  async size(statSize: () => number): Promise<number> {
    if (!this.cells) return statSize();
    for (;;) {
      const seen = Atomics.load(this.bell!, 0);
      const size = Atomics.load(this.cells, SIZE);
      if (size >= 0n) return Number(size);
      if (Atomics.load(this.cells, STATE) === FAILED) throw new DownloadFailed('the download of the file stopped');
      await this.wait(seen);
    }
  }

  /** Waits until bytes [0, end) are written, or the file is complete; returns how many there are (at most `end`). */
  async until(end: number): Promise<number> {
    if (!this.cells) return end;
    for (;;) {
      // The counter is read before the state: a step after this read changes it, and the wait
      // below then returns at once instead of sleeping through the step.
      const seen = Atomics.load(this.bell!, 0);
      const written = Number(Atomics.load(this.cells, WRITTEN));
      const state = Atomics.load(this.cells, STATE);
      if (written >= end) return end;
      if (state === COMPLETE) return written;
      if (state === FAILED) throw new DownloadFailed('the download of the file stopped');
      await this.wait(seen);
    }
  }

  /** Waits until the download is complete. */
  async complete(): Promise<void> {
    await this.until(Number.MAX_SAFE_INTEGER);
  }

  private async wait(seen: number): Promise<void> {
    const r = Atomics.waitAsync(this.bell!, 0, seen, WAKE_MS);
    if (r.async) await r.value;
  }
}
