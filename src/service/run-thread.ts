// The daemon's worker threads (run-worker.ts), one per concurrent run, kept for the next run
// (starting a thread loads every module again). The run queue decides what runs; this only
// carries a run to a free thread and its result back. A thread that dies fails that run only.
import { Worker } from 'node:worker_threads';
import type { Config } from '../config.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { RunOptions, TenantRunResult } from '../worker/run-tenant.js';

export interface ThreadSetup {
  config: Config;
  logFormat: 'pretty' | 'json';
  busyTimeoutMs: number;
}

export type ThreadRequest =
  | { type: 'run'; id: number; tenant: string; opts: Pick<RunOptions, 'reason' | 'waitForLockSeconds'> }
  | { type: 'abort' }
  | { type: 'close' };

export type ThreadResponse = { type: 'result'; id: number; result: TenantRunResult } | { type: 'error'; id: number; message: string };

export class RunThreads {
  private readonly idle: Worker[] = [];
  private readonly all = new Set<Worker>();
  private nextId = 1;
  private aborted = false;

  constructor(
    private readonly setup: ThreadSetup,
    private readonly log: Logger,
  ) {}

  run(tenant: string, opts: Pick<RunOptions, 'reason' | 'waitForLockSeconds'>): Promise<TenantRunResult> {
    const worker = this.idle.pop() ?? this.spawn();
    const id = this.nextId++;
    const failed = (message: string): TenantRunResult => ({ tenant, runId: null, status: 'failed', message, epochs: [], settling: [], newlyStale: [] });
    return new Promise((resolve) => {
      const done = (result: TenantRunResult, keep: boolean) => {
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
        if (keep) this.idle.push(worker);
        resolve(result);
      };
      const onMessage = (m: ThreadResponse) => {
        if (m.id !== id) return;
        done(m.type === 'result' ? m.result : failed(`run failed: ${m.message}`), true);
      };
      const onError = (err: unknown) => {
        this.log.error({ tenant, err: errorMessage(err) }, `the worker thread running ${tenant} failed: ${errorMessage(err)}`);
        this.all.delete(worker);
        done(failed(`the worker thread failed: ${errorMessage(err)}`), false);
      };
      const onExit = (code: number) => {
        this.all.delete(worker);
        done(failed(`the worker thread stopped unexpectedly (exit code ${code})`), false);
      };
      worker.on('message', onMessage);
      worker.once('error', onError);
      worker.once('exit', onExit);
      worker.postMessage({ type: 'run', id, tenant, opts } satisfies ThreadRequest);
    });
  }

  /** Runs in hand stop between epochs. */
  abort(): void {
    this.aborted = true;
    for (const w of this.all) w.postMessage({ type: 'abort' } satisfies ThreadRequest);
  }

  /** Closes idle threads (call once no run is in hand). */
  async close(): Promise<void> {
    const closing = [...this.all].map(
      (w) =>
        new Promise<void>((resolve) => {
          const timer = setTimeout(() => void w.terminate(), 5000);
          w.once('exit', () => {
            clearTimeout(timer);
            resolve();
          });
          w.postMessage({ type: 'close' } satisfies ThreadRequest);
        }),
    );
    this.all.clear();
    this.idle.length = 0;
    await Promise.all(closing);
  }

  private spawn(): Worker {
    const worker = new Worker(new URL('./run-worker.js', import.meta.url), { workerData: this.setup });
    this.all.add(worker);
    if (this.aborted) worker.postMessage({ type: 'abort' } satisfies ThreadRequest);
    return worker;
  }
}
