// Checkpoints after a large import, on a thread of their own.
//
// In WAL mode a write transaction appends every page it changes to the WAL; a checkpoint later
// copies them into the database file and syncs it. SQLite runs one by itself on the commit that
// leaves the WAL over 1,000 pages, on whatever thread commits: after an import of 1,000,000 new
// users that is 190 MB copied and synced inside the apply's COMMIT (0.4-1 s here, seconds for
// 5,000,000 rows), with the event loop stopped, so the daemon's other tenants' SFTP sessions and
// the console waited for it. The connection that applies a file therefore commits without
// checkpointing (connection.ts, `autoCheckpoint: false`), and a large apply asks this class for
// a checkpoint instead: a worker thread with a connection of its own copies the pages
// (`wal_checkpoint(PASSIVE)`: it never waits for, nor blocks, a reader or a writer) while the
// run goes on.
//
// Meanwhile the store's own connection must not start the same copy on its next small commit:
// its automatic checkpoint is off while one runs here and back on afterwards. Should the thread
// fail, its automatic checkpoint is back on too, and SQLite checkpoints as it always did.
import { Worker } from 'node:worker_threads';
import { threadScript } from '../../paths.js';
import type { SqliteConnection, WaitLog } from './connection.js';

/** An apply that wrote at least this many rows is checkpointed here (about 1,000 pages of WAL). */
const CHECKPOINT_AFTER_ROWS = 40_000;

/** What the thread says after a checkpoint. */
export interface CheckpointDone {
  type: 'done';
  /** Frames in the WAL, and how many of them are now in the database file. */
  log: number;
  checkpointed: number;
  ms: number;
}

type FromThread = CheckpointDone | { type: 'failed'; message: string };

/** The thread is small: it holds a connection and runs one pragma. */
const HEAP_LIMITS = { maxOldGenerationSizeMb: 8, maxYoungGenerationSizeMb: 1 };

export class Checkpointer {
  private worker: { thread: Worker; exited: Promise<void> } | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private closed = false;
  /** Checkpoints the thread completed, and what the last one said (a count, not a list: a daemon runs for months). */
  completed = 0;
  last: CheckpointDone | null = null;

  constructor(
    private readonly file: string,
    /** The store's own connection: its automatic checkpoint pauses while the thread runs one. */
    private readonly main: SqliteConnection,
    private readonly log?: WaitLog,
    /** An apply that wrote this many users or more is large (`afterApply`). */
    private readonly afterRows = CHECKPOINT_AFTER_ROWS,
  ) {}

  /** Told how many users an apply wrote, once it has committed: a large one is checkpointed here. */
  afterApply(written: number): void {
    if (written >= this.afterRows) this.request();
  }

  /** Checkpoints soon, on the thread; a request while one runs makes one more run after it. */
  request(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.main.setAutoCheckpoint(false);
    this.running = this.loop().finally(() => {
      this.running = null;
      if (!this.main.isClosed) this.main.setAutoCheckpoint(true);
    });
  }

  /** Resolves once no checkpoint runs or waits (never rejects). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** Waits for a running checkpoint, then stops the thread. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    await this.idle();
    const worker = this.worker;
    this.worker = null;
    if (!worker) return;
    // Its connection closed by the thread itself, so that the store's own is the last one and
    // SQLite's final checkpoint and WAL removal happen there, as without this thread.
    worker.thread.postMessage('close');
    const timer = setTimeout(() => void worker.thread.terminate(), 5000);
    await worker.exited;
    clearTimeout(timer);
  }

  private async loop(): Promise<void> {
    do {
      this.again = false;
      try {
        this.last = await this.checkpointOnThread();
        this.completed++;
      } catch (err) {
        this.log?.warn({ err }, `the database checkpoint thread failed (${(err as Error).message}); SQLite checkpoints on commit again, as it does by default`);
        const worker = this.worker;
        this.worker = null;
        await worker?.thread.terminate();
        return;
      }
    } while (this.again && !this.closed);
  }

  private checkpointOnThread(): Promise<CheckpointDone> {
    const worker = (this.worker ??= this.start()).thread;
    return new Promise<CheckpointDone>((resolve, reject) => {
      const onMessage = (m: FromThread) => {
        off();
        if (m.type === 'done') resolve(m);
        else reject(new Error(m.message));
      };
      const onError = (err: Error) => {
        off();
        reject(err);
      };
      const onExit = (code: number) => {
        off();
        reject(new Error(`the thread stopped (exit code ${code})`));
      };
      const off = () => {
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
      worker.postMessage('checkpoint');
    });
  }

  private start(): { thread: Worker; exited: Promise<void> } {
    const thread = new Worker(threadScript(import.meta.url, 'checkpoint-thread.js'), { workerData: { file: this.file }, resourceLimits: HEAP_LIMITS });
    thread.unref(); // an idle thread never keeps the process alive; close() ends it
    // Listened to for the thread's whole life: an error while no checkpoint waits for it must
    // not become an unhandled 'error' event (the next request starts a new thread).
    thread.on('error', (err) => {
      if (!this.running) this.log?.warn({ err }, `the database checkpoint thread failed while idle: ${err.message}`); // else loop() says so
    });
    const exited = new Promise<void>((resolve) => thread.once('exit', () => resolve()));
    void exited.then(() => {
      if (this.worker?.thread === thread) this.worker = null;
    });
    return { thread, exited };
  }
}
