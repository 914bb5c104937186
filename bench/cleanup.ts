// Everything the benchmark creates (servers, folders, children) is removed on every path:
// normal end, an error, Ctrl-C and SIGTERM. Each step registers how to undo itself here.
import { killAllChildren } from './measure.js';

const cleanups: Array<() => Promise<void> | void> = [];

/** Registers `fn` to run on exit or Ctrl-C; call the result to run it now (once) instead. */
export function withCleanup(fn: () => Promise<void> | void): () => Promise<void> {
  let done: Promise<void> | undefined;
  const run = (): Promise<void> => {
    if (!done) {
      const at = cleanups.indexOf(run);
      if (at >= 0) cleanups.splice(at, 1);
      done = Promise.resolve().then(fn);
    }
    return done;
  };
  cleanups.push(run);
  return run;
}

let cleaning: Promise<void> | undefined;

/** Runs every registered cleanup, newest first; every caller awaits the same single pass. */
export function cleanupAll(): Promise<void> {
  cleaning ??= (async () => {
    while (cleanups.length) {
      try {
        await cleanups.pop()!();
      } catch (err) {
        process.stderr.write(`bench: cleanup failed: ${(err as Error).message}\n`);
      }
    }
  })();
  return cleaning;
}

/** Set by Ctrl-C or SIGTERM: no further step starts and no results are written. */
let interrupted = false;

export class Interrupted extends Error {}

export function checkInterrupted(): void {
  if (interrupted) throw new Interrupted('interrupted');
}

/** Ctrl-C / SIGTERM: stop the running children, undo everything, exit 130. */
export function installSignalHandlers(): void {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      if (interrupted) return; // a second Ctrl-C must not cut the cleanup short
      interrupted = true;
      process.stderr.write(`\nbench: ${sig}; stopping and cleaning up\n`);
      void killAllChildren()
        .then(cleanupAll)
        .finally(() => process.exit(130));
    });
  }
}
