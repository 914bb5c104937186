// A download the import follows: the local file is written front to back while the parse
// threads read it (import/growing-file.ts), and its SHA-1 is taken on the way, so a file is
// checked while it arrives instead of after.
import crypto from 'node:crypto';
import { GrowingFile } from '../import/growing-file.js';
import { collectYoung, compactHeap } from '../memory.js';
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

/**
 * Memory while a large file arrives. Every byte passes through two or three of ssh2's buffers
 * (the decrypted packets, the SFTP reply they are joined into), dead as soon as the bytes are
 * written: at 100 MB/s, some 250 MB of garbage a second outside the heap, which V8 lets reach
 * about 64 MiB before it collects; and the young generation the run grew before the download
 * stays resident. So a large download first gives that young generation back (a last-resort
 * collection, 10-20 ms) and then collects the young generation every MiB (well under a
 * millisecond each, some 70 for 71 MB). Every 8 MiB was not enough on a fast link: the buffers
 * are freed after the collection, off the main thread, and the main thread's malloc heap still
 * grew to 36-42 MiB; every MiB keeps it at 12-16 MiB (a 1,000,000-row import: 150-153 MiB
 * instead of 160-178), in the same time. (A full collection every 8 MiB stalled the download,
 * which the parse threads wait for: 0.5-1 s slower.)
 */
const COLLECT_EVERY_BYTES = 1024 * 1024;
/** A download this large first gives back the young generation (smaller ones are not worth the 10-20 ms). */
const COMPACT_FROM_BYTES = 8 * 1024 * 1024;

export function followDownload(session: SftpSession, remote: string, local: string): FollowedDownload {
  const started = performance.now();
  let ms = 0;
  const growing = new GrowingFile();
  const hash = crypto.createHash('sha1');
  const sha1 = session
    .download(remote, local, {
      sized: (bytes) => {
        growing.sized(bytes);
        if (bytes >= COMPACT_FROM_BYTES) compactHeap();
      },
      wrote: (total, chunk) => {
        hash.update(chunk);
        growing.grew(total);
        if (Math.floor(total / COLLECT_EVERY_BYTES) !== Math.floor((total - chunk.length) / COLLECT_EVERY_BYTES)) collectYoung();
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
