// What releasing a held upload would deactivate now, for the console's confirmation. The count
// stored when it was held is an estimate of that moment: users may have been created, deactivated
// or undone since. So the held file is read again from where it waits on the SFTP host, its keys
// taken as an import takes them (the same header mapping and row check: trimmed, the kind's key
// case), and compared with the directory as it is now: how many active users of its kind it lacks,
// and the first of them by id. A file too large to read for a page, or one that cannot be read
// now, leaves the count from when it was held, saying why.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import posix from 'node:path/posix';
import { resolveSftp, type TenantConfig } from '../config.js';
import { errorMessage } from '../errors.js';
import { readCsv } from '../import/csv-reader.js';
import { mapHeaders } from '../import/headers.js';
import { RowChecker } from '../import/rows.js';
import { SftpSession } from '../sftp/client.js';
import type { DirectoryUser, HeldUpload } from '../store/types.js';
import type { RunDeps } from '../worker/context.js';
import { HELD_DIR } from '../worker/uploads.js';

export interface ReleasePreview {
  /** true: worked out now from the file; false: the count from when it was held (see `note`). */
  now: boolean;
  /** Users that releasing deactivates because the file lacks them. */
  total: number;
  /** Active users of the file's kind now (null when not worked out now). */
  active: number | null;
  /** The first of them by external id. */
  sample: DirectoryUser[];
  note: string | null;
}

/** Larger files (some 600,000 rows) are not downloaded for a confirmation page. */
export const PREVIEW_MAX_BYTES = 64 << 20;
export const PREVIEW_SAMPLE = 20;

class Unusable extends Error {}

export async function previewRelease(deps: RunDeps, tenant: TenantConfig, held: HeldUpload): Promise<ReleasePreview> {
  const asHeld = (note: string): ReleasePreview => ({ now: false, total: held.counts.deactivated, active: null, sample: [], note });
  if (!tenant.options.fullSync) return { now: true, total: 0, active: null, sample: [], note: 'fullSync is off for this tenant now: releasing deactivates no user missing from the file.' };
  const remote = posix.join(tenant.paths.upload, HELD_DIR, held.epoch, held.file);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-preview-'));
  try {
    const local = path.join(tmp, 'held.csv');
    const session = await SftpSession.connect(resolveSftp(tenant), tenant.id);
    try {
      const { size } = await session.stat(remote);
      if (size > PREVIEW_MAX_BYTES) {
        return asHeld(`The file is ${Math.round(size / 2 ** 20)} MiB, too large to read again for this page: the number is from when it was held.`);
      }
      await session.download(remote, local);
    } finally {
      await session.close().catch(() => {});
    }
    const keys = await keysOf(deps, tenant, held.kind ?? '', local);
    const missing = await deps.store.directory.missingFrom(tenant.id, held.kind ?? '', keys, PREVIEW_SAMPLE);
    return { now: true, total: missing.total, active: missing.active, sample: missing.sample, note: null };
  } catch (err) {
    return asHeld(`${remote} could not be read again now (${errorMessage(err)}): the number is from when it was held.`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** Every key the file carries, failing rows' too: a full sync keeps a user whose row failed. */
async function keysOf(deps: RunDeps, tenant: TenantConfig, kindName: string, file: string): Promise<string[]> {
  const kind = deps.kinds.get(kindName, { sso: tenant.options.sso });
  const keys = new Set<string>();
  let checker: RowChecker | undefined;
  await readCsv(
    file,
    (records) => {
      for (const r of records) {
        if (!checker) {
          const mapped = mapHeaders(r.values, kind, tenant.options.strictHeaders);
          if (!mapped.ok) throw new Unusable(`its header cannot be read: ${mapped.problem}`);
          checker = new RowChecker(kind, mapped.map, tenant.options, tenant.id, null);
          continue;
        }
        const key = checker.check(r.line, r.values).key;
        if (key !== null) keys.add(key);
      }
    },
    { encoding: tenant.encoding, maxRecordBytes: deps.config.limits.maxRecordBytes },
  );
  return [...keys];
}
