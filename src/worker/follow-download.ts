// A download the import follows: the local file is written front to back while the parse
// threads read it (import/growing-file.ts), and its SHA-1 is taken on the way, so a file is
// checked while it arrives instead of after.
import crypto from 'node:crypto';
import { GrowingFile } from '../import/growing-file.js';
import type { SftpSession } from '../sftp/client.js';

export interface FollowedDownload {
  /** What the import follows: the download's progress, and the file's SHA-1 once complete. */
  follow: { shared: SharedArrayBuffer; sha1: Promise<string> };
  /** Settles when the download does (never rejects): the file is no longer being written. */
  settled: Promise<void>;
  /** The download's own error when it failed (the root cause of any parse failure), or null. */
  failure(): Promise<unknown>;
  /** Milliseconds the download took, once complete. */
  ms(): number;
}

export function followDownload(session: SftpSession, remote: string, local: string): FollowedDownload {
  const started = performance.now();
  let ms = 0;
  const growing = new GrowingFile();
  const hash = crypto.createHash('sha1');
  const sha1 = session
    .download(remote, local, {
      sized: (bytes) => growing.sized(bytes),
      wrote: (total, chunk) => {
        hash.update(chunk);
        growing.grew(total);
      },
    })
    .then(
      () => {
        ms = Math.round(performance.now() - started);
        growing.complete();
        return hash.digest('hex');
      },
      (err: unknown) => {
        growing.failed();
        throw err;
      },
    );
  const settled = sha1.then(
    () => undefined,
    () => undefined,
  );
  return {
    follow: { shared: growing.shared, sha1 },
    settled,
    failure: () => sha1.then(() => null, (err: unknown) => err),
    ms: () => ms,
  };
}
