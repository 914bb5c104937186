// Each valid row's line and a 32-bit hash of its key, written beside a part file as the parse
// thread writes the rows (8 bytes a row). A row the key filter flags may repeat an earlier key,
// but about one in a hundred is a false alarm; to tell which, the stage once had SQLite read every
// staged row's key (0.13-0.16 s for 1,000,000 rows, on the main thread, after the parse). Now it
// reads these pairs instead and looks at the rows whose hash is a flagged key's hash: equal keys
// have equal hashes, so no repeat is missed, and the few rows that only share a hash are
// told apart by their keys in SQL.
import fs from 'node:fs';

/** The file of a part's key hashes. */
export const keyHashesFile = (partFile: string): string => `${partFile}-keys`;

/** FNV-1a, 32 bits, of the key's UTF-16 units (the key filter picks its word by it too). */
export function keyHash(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h | 0;
}

/** Rows buffered between writes (64 KiB). */
const PAIRS_PER_WRITE = 8192;

export class KeyHashWriter {
  private readonly fd: number;
  private readonly pairs = new Int32Array(PAIRS_PER_WRITE * 2);
  private used = 0;
  private open = true;

  constructor(readonly file: string) {
    this.fd = fs.openSync(file, 'w');
  }

  /** A row's line and its key's keyHash(). */
  add(line: number, hash: number): void {
    this.pairs[this.used * 2] = line;
    this.pairs[this.used * 2 + 1] = hash;
    if (++this.used === PAIRS_PER_WRITE) this.flush();
  }

  /** Everything written, and the file closed. */
  finish(): void {
    this.flush();
    this.close();
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    fs.closeSync(this.fd);
  }

  private flush(): void {
    if (this.used === 0) return;
    fs.writeSync(this.fd, this.pairs, 0, this.used * 8);
    this.used = 0;
  }
}

/** The lines, in file order, of the rows whose key hash is one of `hashes`. */
export function linesWithHashes(file: string, hashes: ReadonlySet<number>): number[] {
  const lines: number[] = [];
  if (hashes.size === 0) return lines;
  const fd = fs.openSync(file, 'r');
  try {
    const pairs = new Int32Array(PAIRS_PER_WRITE * 2);
    const bytes = new Uint8Array(pairs.buffer);
    for (;;) {
      let got = 0;
      for (let n = -1; n !== 0 && got < bytes.length; got += n) n = fs.readSync(fd, bytes, got, bytes.length - got, null);
      for (let i = 0; i + 1 < got / 4; i += 2) if (hashes.has(pairs[i + 1])) lines.push(pairs[i]);
      if (got < bytes.length) break;
    }
  } finally {
    fs.closeSync(fd);
  }
  return lines;
}
