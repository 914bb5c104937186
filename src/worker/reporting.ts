// The bridge between a run and the mail queue: turns an epoch's outcome into the tenant's
// report (queued inside the import's transaction) and sends what is queued after a run.
import fs from 'node:fs';
import posix from 'node:path/posix';
import type { Config } from '../config.js';
import type { Db } from '../db/database.js';
import type { Logger } from '../log.js';
import { deliverQueuedMail } from '../mail/outbox.js';
import { queueReport, type EpochReport } from '../mail/report.js';
import type { EpochReporter } from './run-tenant.js';
import { epochIsHeld, errorsCsvName } from './run-tenant.js';
import { HELD_DIR } from './uploads.js';

export function reporterFor(config: Config): EpochReporter {
  return (db, tenant, outcome, newlyStale, dryRun) => {
    const n = outcome.files.length;
    const isKeep = tenant.loose === 'keep' && outcome.remotePath !== null && !outcome.remotePath.includes(outcome.epoch);
    const where =
      outcome.files.length === 0
        ? null
        : isKeep
          ? outcome.remotePath
          : epochIsHeld(outcome)
            ? posix.join(tenant.paths.upload, HELD_DIR, outcome.epoch)
            : posix.join(tenant.paths.bak, outcome.epoch);
    const report: EpochReport = {
      tenantId: tenant.id,
      tenantName: tenant.name,
      epoch: outcome.epoch,
      status: outcome.status,
      files: outcome.files.map((f) => ({
        file: f.file,
        kind: f.kind || null,
        status: f.status,
        message: f.message,
        counts: f.counts,
        sampleErrors: f.sampleErrors,
        errorsCsvName: f.errorsCsv ? errorsCsvName(f.file, n) : null,
      })),
      staleUploads: newlyStale,
      dryRun,
      finishedAt: new Date().toISOString(),
      bakPath: where,
    };
    const attachments = outcome.files
      .filter((f) => f.errorsCsv && fs.existsSync(f.errorsCsv))
      .map((f) => ({ filename: errorsCsvName(f.file, n), content: fs.readFileSync(f.errorsCsv!), contentType: 'text/csv' }));
    queueReport(db, config, tenant, report, attachments);
  };
}

export async function deliverMail(app: { db: Db; config: Config; log: Logger }, tenant?: string): Promise<void> {
  try {
    const r = await deliverQueuedMail(app.db, app.config, { tenant, log: app.log });
    if (r.sent || r.failed) app.log.info(r, `mail: ${r.sent} sent, ${r.failed} failed, ${r.pending} still queued`);
  } catch (err) {
    app.log.warn({ err: (err as Error).message }, 'mail delivery failed; the reports stay queued and are retried on the next run');
  }
}
