// A worker thread of the daemon: runs one tenant at a time on its own event loop and its own
// SQLite connection. Applying a large file is one synchronous transaction; in the daemon's
// main thread it would freeze every other tenant's SFTP traffic until their timeouts fired.
import { parentPort, workerData } from 'node:worker_threads';
import type { Config } from '../config.js';
import { openDatabase } from '../db/database.js';
import { errorMessage } from '../errors.js';
import { KindRegistry } from '../import/kinds.js';
import { createLogger } from '../log.js';
import { reporterFor } from '../worker/reporting.js';
import { runTenant } from '../worker/run-tenant.js';
import type { ThreadRequest, ThreadResponse, ThreadSetup } from './run-thread.js';

const port = parentPort;
if (!port) throw new Error('run-worker.js is started by the daemon as a worker thread');
const { config, logFormat, busyTimeoutMs } = workerData as ThreadSetup;

const db = openDatabase(config.database);
// Another thread's apply holds the write lock for as long as its file takes: wait for it
// rather than fail this tenant's run (only this thread waits).
db.pragma(`busy_timeout = ${busyTimeoutMs}`);
const deps = { config: config as Config, db, kinds: new KindRegistry(), log: createLogger({ ...config.log, format: logFormat }), report: reporterFor(config) };
const stopping = new AbortController();

port.on('message', (msg: ThreadRequest) => {
  if (msg.type === 'abort') stopping.abort();
  if (msg.type === 'close') {
    db.close();
    port.close();
  }
  if (msg.type !== 'run') return;
  const tenant = config.tenants.find((t) => t.id === msg.tenant);
  const reply = (r: ThreadResponse) => port.postMessage(r);
  if (!tenant) {
    reply({ type: 'error', id: msg.id, message: `unknown tenant ${msg.tenant}` });
    return;
  }
  runTenant(deps, tenant, { ...msg.opts, force: false, dryRun: false, signal: stopping.signal }).then(
    (result) => reply({ type: 'result', id: msg.id, result }),
    (err: unknown) => reply({ type: 'error', id: msg.id, message: errorMessage(err) }),
  );
});
