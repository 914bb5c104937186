// The checkpoint thread (checkpointer.ts): one connection to the database file, opened on the
// first request, and one pragma per request.
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

if (parentPort && (workerData as { file?: string } | undefined)?.file) {
  const port = parentPort;
  const file = (workerData as { file: string }).file;
  let db: Database.Database | null = null;
  port.on('message', (m: 'checkpoint' | 'close') => {
    if (m === 'close') {
      db?.close();
      db = null;
      port.close(); // nothing else keeps the thread alive: it ends
      return;
    }
    try {
      if (!db) {
        db = new Database(file, { fileMustExist: true });
        // This connection writes nothing, so its own commits never checkpoint; PASSIVE copies
        // what it can without waiting for any lock, so no busy handler is needed either.
        db.pragma('busy_timeout = 0');
      }
      const started = performance.now();
      const [row] = db.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[];
      port.postMessage({ type: 'done', log: row.log, checkpointed: row.checkpointed, ms: Math.round(performance.now() - started) });
    } catch (err) {
      port.postMessage({ type: 'failed', message: (err as Error).message });
    }
  });
}
