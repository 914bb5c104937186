// Running parseFile on a thread of its own, so that several parts of a file are read and checked
// on several cores at once (parse-parts.ts), or inline where a thread would cost more than it
// saves. Events flow with back-pressure: at most IN_FLIGHT unacknowledged, so memory stays bounded.
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { stopPretenuring } from '../memory.js';
import { threadScript } from '../paths.js';
import { KindRegistry, type KindVariant } from './kinds.js';
import { parseFile, type ParseEvent, type ParseRequest, type ParseSummary } from './parse-file.js';

const IN_FLIGHT = 3;
/**
 * The thread's heap is capped: parsing makes garbage fast, and V8 would otherwise let it grow to
 * a couple of hundred MB before collecting. A row lives only from its record to its part file
 * (stage-part.ts writes each row as it comes), so almost nothing survives a scavenge and a
 * 4 MiB young generation costs no more time than 16 (it did when a batch of 5,000 rows waited for
 * its write: 1.1 s more CPU per 1,000,000 rows) and saves some 12 MiB a thread.
 */
const HEAP_LIMITS = { maxOldGenerationSizeMb: 32, maxYoungGenerationSizeMb: 4 };

type FromThread = { type: 'event'; event: ParseEvent } | { type: 'done'; summary: ParseSummary } | { type: 'error'; message: string; stack?: string };
/** To a thread: its request (a thread started ahead of it), or an acknowledged event. */
type ToThread = { type: 'start'; req: ParseRequest } | 'ack';

let sharedKinds: KindRegistry | undefined;

/** The parse was stopped from outside (another part of the file failed first). */
export class ParseAborted extends Error {}

export interface ParseRun {
  /** On a thread of its own (default), or inline on this one. */
  thread: boolean;
  signal?: AbortSignal;
  kinds?: KindRegistry;
}

/** What a thread started ahead of its file waits with: the kind to compile. */
interface WarmStart {
  warm: { kind: string; sso: KindVariant['sso'] };
}

/** A thread started ahead of its file, not yet taken by parse(). */
interface WarmThread {
  key: string;
  worker: Worker;
  /** The listeners it has while it waits (removed when parse() takes it). */
  off: () => void;
}

const waiting: WarmThread[] = [];
const warmKey = (kind: string, sso: string) => `${kind}|${sso}`;

function startThread(data: ParseRequest | WarmStart): Worker {
  stopPretenuring();
  return new Worker(threadScript(import.meta.url, 'parse-thread.js'), { workerData: data, resourceLimits: HEAP_LIMITS });
}

/**
 * Starts `count` parse threads for a file of this kind now, before the file's first bytes are
 * in. A thread spends about 0.13 s of CPU loading its code and compiling the kind's schema;
 * started when the file's header has arrived, beside the download then running at full speed,
 * that took it 0.3-0.45 s (1,000,000 rows, 2 cores), time the parse waited for. Started when the
 * download opens, it is ready by the time the header is read. parse() takes them for files of the
 * same kind; `end()` stops those it did not take (the file was rejected, or read in fewer parts)
 * and says how many.
 */
export function warmParseThreads(kind: string, sso: KindVariant['sso'], count: number): { end: () => Promise<number> } {
  const mine: WarmThread[] = [];
  for (let i = 0; i < count; i++) {
    const worker = startThread({ warm: { kind, sso } });
    worker.unref(); // a waiting thread never keeps the process alive
    const thread: WarmThread = {
      key: warmKey(kind, sso),
      worker,
      off: () => {
        worker.off('error', drop);
        worker.off('exit', drop);
      },
    };
    // One that fails while it waits is dropped: parse() then starts a thread of its own.
    function drop() {
      const at = waiting.indexOf(thread);
      if (at >= 0) waiting.splice(at, 1);
    }
    worker.on('error', drop);
    worker.on('exit', drop);
    mine.push(thread);
    waiting.push(thread);
  }
  return {
    end: async () => {
      const untaken = mine.filter((t) => waiting.includes(t));
      for (const t of untaken) waiting.splice(waiting.indexOf(t), 1);
      await Promise.all(untaken.map((t) => t.worker.terminate()));
      return untaken.length; // how many were never used
    },
  };
}

/** A waiting thread for this kind, now the caller's, or null. */
function takeWarm(kind: string, sso: string): Worker | null {
  const at = waiting.findIndex((t) => t.key === warmKey(kind, sso));
  if (at < 0) return null;
  const [thread] = waiting.splice(at, 1);
  thread.off();
  thread.worker.ref();
  return thread.worker;
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
  const warm = takeWarm(req.kind, req.options.sso);
  const worker = warm ?? startThread(req);
  if (warm) warm.postMessage({ type: 'start', req } satisfies ToThread);
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

const data = workerData as ParseRequest | WarmStart | undefined;
if (!isMainThread && parentPort && data && ('file' in data || 'warm' in data)) {
  const port = parentPort;
  const kinds = new KindRegistry();
  let inFlight = 0;
  let acked: (() => void) | null = null;
  const emit = async (event: ParseEvent) => {
    inFlight++;
    port.postMessage({ type: 'event', event } satisfies FromThread);
    if (inFlight >= IN_FLIGHT) await new Promise<void>((r) => (acked = r));
  };
  const start = (req: ParseRequest) =>
    parseFile(req, kinds, emit).then(
      (summary) => port.postMessage({ type: 'done', summary } satisfies FromThread),
      (err: Error) => port.postMessage({ type: 'error', message: err.message, stack: err.stack } satisfies FromThread),
    );
  port.on('message', (m: ToThread) => {
    if (m !== 'ack') return void start(m.req);
    inFlight--;
    acked?.();
    acked = null;
  });
  if ('warm' in data) void kinds.get(data.warm.kind, { sso: data.warm.sso }).fast; // compiled while the file opens
  else void start(data);
}
