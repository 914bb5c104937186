// Running parseFile on a thread of its own, so that several parts of a file are read and checked
// on several cores at once (parse-parts.ts), or inline where a thread would cost more than it
// saves. Events flow with back-pressure: at most IN_FLIGHT unacknowledged, so memory stays bounded.
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { stopPretenuring } from '../memory.js';
import { threadScript } from '../paths.js';
import { KindRegistry } from './kinds.js';
import { parseFile, type ParseEvent, type ParseRequest, type ParseSummary } from './parse-file.js';

const IN_FLIGHT = 3;
/**
 * The thread's heap is capped: parsing makes garbage fast, and V8 would otherwise let it grow to
 * a couple of hundred MB before collecting. A row lives only from its record to its part file
 * (stage-part.ts binds rows a hundred at a time), so almost nothing survives a scavenge and a
 * 4 MiB young generation costs no more time than 16 (it did when a batch of 5,000 rows waited for
 * its write: 1.1 s more CPU per 1,000,000 rows) and saves some 12 MiB a thread.
 */
const HEAP_LIMITS = { maxOldGenerationSizeMb: 32, maxYoungGenerationSizeMb: 4 };

type FromThread = { type: 'event'; event: ParseEvent } | { type: 'done'; summary: ParseSummary } | { type: 'error'; message: string; stack?: string };

let sharedKinds: KindRegistry | undefined;

/** The parse was stopped from outside (another part of the file failed first). */
export class ParseAborted extends Error {}

export interface ParseRun {
  /** On a thread of its own (default), or inline on this one. */
  thread: boolean;
  signal?: AbortSignal;
  kinds?: KindRegistry;
}

/** Parses as `req` says, calling `onEvent` for each event in order (awaited: back-pressure). */
export async function parse(req: ParseRequest, onEvent: (e: ParseEvent) => void | Promise<void>, run: ParseRun): Promise<ParseSummary> {
  run.signal?.throwIfAborted();
  if (!run.thread) {
    return parseFile(req, run.kinds ?? (sharedKinds ??= new KindRegistry()), async (e) => {
      if (run.signal?.aborted) throw new ParseAborted('stopped');
      await onEvent(e);
    });
  }
  stopPretenuring();
  const worker = new Worker(threadScript(import.meta.url, 'parse-thread.js'), { workerData: req, resourceLimits: HEAP_LIMITS });
  const stop = () => void worker.terminate();
  run.signal?.addEventListener('abort', stop, { once: true });
  try {
    return await new Promise<ParseSummary>((resolve, reject) => {
      let chain = Promise.resolve();
      worker.on('message', (m: FromThread) => {
        if (m.type === 'event') {
          chain = chain.then(async () => {
            await onEvent(m.event);
            worker.postMessage('ack');
          });
          chain.catch(reject);
        } else if (m.type === 'done') chain.then(() => resolve(m.summary), reject);
        else reject(Object.assign(new Error(m.message), { stack: m.stack }));
      });
      worker.on('error', reject);
      worker.on('exit', (code) => reject(run.signal?.aborted ? new ParseAborted('stopped') : new Error(`the parse thread stopped (exit code ${code})`)));
    });
  } finally {
    run.signal?.removeEventListener('abort', stop);
    await worker.terminate();
  }
}

if (!isMainThread && parentPort && (workerData as ParseRequest | undefined)?.file) {
  const port = parentPort;
  let inFlight = 0;
  let waiting: (() => void) | null = null;
  port.on('message', () => {
    inFlight--;
    waiting?.();
    waiting = null;
  });
  const emit = async (event: ParseEvent) => {
    inFlight++;
    port.postMessage({ type: 'event', event } satisfies FromThread);
    if (inFlight >= IN_FLIGHT) await new Promise<void>((r) => (waiting = r));
  };
  parseFile(workerData as ParseRequest, new KindRegistry(), emit).then(
    (summary) => port.postMessage({ type: 'done', summary } satisfies FromThread),
    (err: Error) => port.postMessage({ type: 'error', message: err.message, stack: err.stack } satisfies FromThread),
  );
}
