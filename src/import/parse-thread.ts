// Parsing a file on a thread of its own, so that reading and checking one file's rows runs on
// one core while the rows already checked are written to staging on the other. Batches flow
// with back-pressure: at most IN_FLIGHT unacknowledged, so memory stays bounded.
import fs from 'node:fs';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { threadScript } from '../paths.js';
import { KindRegistry } from './kinds.js';
import { parseFile, type ParseEvent, type ParseRequest, type ParseSummary } from './parse-file.js';

const IN_FLIGHT = 3;
/** Smaller files are parsed inline: a thread costs more to start than they take to read. */
const INLINE_BELOW_BYTES = 4 * 1024 * 1024;
/**
 * The thread's heap is capped: parsing makes garbage fast, and V8 would otherwise let it grow to
 * a couple of hundred MB before collecting. What it holds at once is a few batches. A young
 * generation of 8 MB had the thread collecting garbage 30% of the time (1M rows: 2.2 s against
 * 1.7 s with 16 MB); 32 MB was no faster.
 */
const HEAP_LIMITS = { maxOldGenerationSizeMb: 48, maxYoungGenerationSizeMb: 16 };

type FromThread = { type: 'event'; event: ParseEvent } | { type: 'done'; summary: ParseSummary } | { type: 'error'; message: string; stack?: string };

let sharedKinds: KindRegistry | undefined;

/** Parses `req.file`, calling `onEvent` for each event in order (awaited: back-pressure). */
export async function parse(req: ParseRequest, onEvent: (e: ParseEvent) => void | Promise<void>, kinds?: KindRegistry): Promise<ParseSummary> {
  const size = fs.statSync(req.file).size;
  if (size < INLINE_BELOW_BYTES) return parseFile(req, kinds ?? (sharedKinds ??= new KindRegistry()), onEvent);
  const worker = new Worker(threadScript(import.meta.url, 'parse-thread.js'), { workerData: req, resourceLimits: HEAP_LIMITS });
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
      worker.on('exit', (code) => reject(new Error(`the parse thread stopped (exit code ${code})`)));
    });
  } finally {
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
