// Where the parts of a file begin and end. Part k of n starts just after the first line feed at
// or after size·k/n (a UTF-8 line feed byte is always a whole character) and ends where part
// k+1 starts: every thread finds its own bounds from the bytes, the same way, so no thread waits
// for another to plan. The file may still be arriving (FollowedFile): reads wait for the bytes.
import fs from 'node:fs';
import type { FilePart } from './csv-reader.js';
import { FollowedFile } from './growing-file.js';

const WINDOW = 64 * 1024;

export async function partBounds(file: string, follow: FollowedFile, size: number, index: number, count: number): Promise<FilePart> {
  const nominal = (k: number) => (k >= count ? size : Math.floor((size * k) / count));
  const cut = async (k: number): Promise<number> => {
    if (k === 0 || k >= count) return nominal(k);
    const fh = await fs.promises.open(file, 'r');
    try {
      return await lineFeedAfter(fh, follow, Buffer.allocUnsafe(WINDOW), nominal(k), size);
    } finally {
      await fh.close();
    }
  };
  const start = await cut(index);
  // The end is found when the reader gets there (csv-reader.ts): by then its bytes are in.
  let end: Promise<number> | undefined;
  return {
    start,
    end: () => (end ??= cut(index + 1).then((e) => Math.max(start, e))),
    reaches: Math.max(start, nominal(index + 1)),
    firstLine: start === 0 ? 1 : await linesBefore(file, follow, start),
    last: index === count - 1,
  };
}

/** Just past the first line feed at or after `at` (the size when there is none). */
export async function lineFeedAfter(fh: fs.promises.FileHandle, follow: FollowedFile, window: Buffer, at: number, size: number): Promise<number> {
  for (let from = at; from < size; from += window.length) {
    const have = (await follow.until(Math.min(size, from + window.length))) - from;
    if (have <= 0) break;
    const { bytesRead } = await fh.read(window, 0, have, from);
    const i = window.subarray(0, bytesRead).indexOf(10);
    if (i !== -1) return from + i + 1;
  }
  return size;
}

/** The line that byte `offset` (just after a line feed) starts: one plus the line feeds before it. */
async function linesBefore(file: string, follow: FollowedFile, offset: number): Promise<number> {
  const fh = await fs.promises.open(file, 'r');
  try {
    const buffer = Buffer.allocUnsafe(1 << 20);
    let lines = 1;
    for (let at = 0; at < offset; ) {
      const have = (await follow.until(Math.min(offset, at + buffer.length))) - at;
      if (have <= 0) break;
      const { bytesRead } = await fh.read(buffer, 0, have, at);
      if (bytesRead === 0) break;
      lines += countLineFeeds(buffer.subarray(0, bytesRead));
      at += bytesRead;
    }
    return lines;
  } finally {
    await fh.close();
  }
}

/** What a file's first 64 KiB tell (read once, before its parts are planned). */
export interface FileStart {
  /**
   * Whether its lines end in line feeds (LF or CRLF) near the start, where the reader decides how
   * lines end; a file whose lines end in CR alone is read whole.
   */
  lineFeeds: boolean;
  /**
   * About how many rows it holds: the lines of the first 64 KiB scaled to the file, a quarter over
   * (the rows further on may be shorter), never fewer than one per 200 bytes; one per 40 bytes
   * when no line ends there. What the shared key filter is sized for. (Sized by the bytes alone,
   * at one row per 40 and 16 bits a key, it was 22 MiB for a 5,000,000-row file of 89-byte rows;
   * now 6.)
   */
  rows: number;
}

export async function readFileStart(file: string, follow: FollowedFile, size: number): Promise<FileStart> {
  const fh = await fs.promises.open(file, 'r');
  try {
    const window = Buffer.allocUnsafe(Math.max(1, Math.min(size, WINDOW)));
    const have = await follow.until(window.length);
    const { bytesRead } = await fh.read(window, 0, have, 0);
    const lines = countLineFeeds(window.subarray(0, bytesRead));
    const rows =
      bytesRead >= size ? lines + 1
      : lines === 0 ? Math.ceil(size / 40)
      : Math.max(Math.ceil(size / 200), Math.ceil(((size * lines) / bytesRead) * 1.25));
    return { lineFeeds: lines > 0, rows };
  } finally {
    await fh.close();
  }
}

function countLineFeeds(bytes: Uint8Array): number {
  let n = 0;
  for (let i = bytes.indexOf(10); i !== -1; i = bytes.indexOf(10, i + 1)) n++;
  return n;
}
