// Downloading a remote file front to back with many reads in flight. Chunks are requested ahead
// (SFTP answers them in any order) and written to the local file strictly in order, so that
// whoever follows the local file (the parse threads, see import/growing-file.ts) can read it
// while it arrives, and a hash of the bytes can be taken on the way. Memory is the chunks in
// flight, nothing more.
import fs from 'node:fs';
import type { SFTPWrapper } from 'ssh2';

/** 128 KiB a read: OpenSSH answers at most about 255 KiB, so a request is answered whole. */
const CHUNK = 128 * 1024;
/** 16 reads in flight (2 MiB): a fast link stays busy (93 MB on loopback in 0.4-0.6 s); more only piles up ssh2's packet buffers. */
const IN_FLIGHT = 16;

export interface ReadProgress {
  /** The remote file's size, once known (before the first byte). */
  sized?(bytes: number): void;
  /** `chunk` was written at the end of the local file, which now holds `total` bytes. */
  wrote?(total: number, chunk: Buffer): void;
}

export function readInOrder(sftp: SFTPWrapper, remote: string, fd: number, alive: () => void, progress: ReadProgress = {}): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let failed = false;
    const fail = (err: Error, handle?: Buffer) => {
      if (failed) return;
      failed = true;
      if (handle) sftp.close(handle, () => reject(err));
      else reject(err);
    };
    sftp.open(remote, 'r', (err, handle) => {
      if (err) return fail(err);
      sftp.fstat(handle, (err2, stats) => {
        if (err2) return fail(err2, handle);
        let size = stats.size;
        progress.sized?.(size);
        const free: Buffer[] = Array.from({ length: Math.min(IN_FLIGHT, Math.max(1, Math.ceil(size / CHUNK))) }, () => Buffer.allocUnsafe(CHUNK));
        /** Chunks read, waiting for their turn to be written, by position. */
        const done = new Map<number, { buffer: Buffer; length: number }>();
        let requested = 0; // the next position to ask for
        let written = 0; // bytes written, in order
        let pending = 0;
        let closing = false;
        const ask = (buffer: Buffer, position: number, offset: number, length: number): void => {
          pending++;
          sftp.read(handle, buffer, offset, length - offset, position + offset, (e, bytesRead) => {
            pending--;
            if (failed) return;
            if (e) return fail(e, handle);
            alive();
            const got = offset + bytesRead;
            if (bytesRead > 0 && got < length) return ask(buffer, position, got, length); // answered short: ask for the rest
            // Nothing more (the file shrank after fstat): it ends here.
            if (got < length) size = Math.min(size, position + got);
            done.set(position, { buffer, length: got });
            drain();
          });
        };
        const drain = (): void => {
          try {
            for (let chunk = done.get(written); chunk && written < size; chunk = done.get(written)) {
              done.delete(written);
              const bytes = chunk.buffer.subarray(0, Math.min(chunk.length, size - written));
              fs.writeSync(fd, bytes, 0, bytes.length, written);
              written += bytes.length;
              progress.wrote?.(written, bytes);
              free.push(chunk.buffer);
            }
          } catch (e) {
            return fail(e as Error, handle);
          }
          while (free.length && requested < size) {
            const length = Math.min(CHUNK, size - requested);
            ask(free.pop()!, requested, 0, length);
            requested += length;
          }
          if (written >= size && pending === 0 && !closing) {
            closing = true;
            sftp.close(handle, (e) => (e ? fail(e) : resolve()));
          }
        };
        drain();
      });
    });
  });
}
