// Reads a local CSV file as batches of records, each with the line it starts on in the original
// file. Memory is bounded and time is linear whatever the file holds.
//
// The file is read once: each raw chunk goes to SHA-1 and to our own streaming TextDecoder
// (papaparse would split a multi-byte character that straddles two chunks, and we want bytes that
// are not valid in the declared encoding rejected, not replaced). A small scanner of our own then
// follows the quoting across chunks, exactly as papaparse reads it, and cuts the text at record
// boundaries, so papaparse only ever sees complete records. This is what keeps a hostile file
// harmless: papaparse, given an unclosed quote, would buffer the rest of the file and rescan it on
// every chunk (quadratic time, memory growing with the file). Here a record that grows past
// `maxRecordBytes` rejects the file at once.
import crypto from 'node:crypto';
import fs from 'node:fs';
import Papa from 'papaparse';
import { FollowedFile } from './growing-file.js';

export interface CsvRecord {
  /** 1-based line of the original file on which this record starts. */
  line: number;
  values: string[];
}

/** A problem that makes the whole file unreadable. The message names the line and says how to fix it. */
export class CsvUnreadable extends Error {}

export interface CsvReadOptions {
  /** A WHATWG encoding label; default utf-8. */
  encoding?: string;
  /**
   * The longest record accepted, counted in characters of decoded text (never more than the
   * record's UTF-8 bytes). Default 1 MiB. A longer record (usually a quote that is never closed)
   * rejects the file as soon as it is seen.
   */
  maxRecordBytes?: number;
  /**
   * Read only this part of the file: bytes [start, end), cut just after a line feed, whose first
   * byte starts line `firstLine`. Several parts of one file are read at once (parse threads);
   * a part that is not the file's last must end between records, or readCsv rejects with
   * PartMisaligned (its last line feed was inside a quoted value: read the file whole instead).
   */
  part?: FilePart;
  /** Compute the SHA-1 of the whole file (default true; a part reads on past its end to do it). */
  sha1?: boolean;
  /** The file is still being downloaded (GrowingFile.shared): reads wait for their bytes. */
  follow?: SharedArrayBuffer;
}

export interface FilePart {
  start: number;
  end: number;
  firstLine: number;
  last: boolean;
}

/** A part of a file did not end between records: the file must be read as one part. */
export class PartMisaligned extends Error {}

export interface CsvReadSummary {
  /** Records handed to `onBatch` (the header row included, blank rows not). */
  records: number;
  /** Lines in the file, blank ones and the lines inside quoted values included. */
  lines: number;
  /** Bytes read: the file's size. */
  bytes: number;
  /** Hex SHA-1 of the file's raw bytes. */
  sha1: string;
}

export const DEFAULT_MAX_RECORD_BYTES = 1 << 20;

/** Bytes read (and hashed, and decoded) at a time. */
const READ_CHUNK = 1 << 20;
/**
 * Bytes decoded, and characters scanned and handed to papaparse, at a time: a batch is the
 * records of one piece. Small pieces keep every string and batch young for the garbage collector
 * (measured: 16 KiB pieces are both faster and lower in peak RSS than 256 KiB or 1 MiB ones).
 */
const PIECE = 1 << 14;
/** How much text without any LF, but with CRs, makes a file one whose lines end in CR alone. */
const DETECT_WINDOW = 1 << 16;

const LF = 10;
const CR = 13;
const COMMA = 44;
const QUOTE = 34;

// Scanner states, mirroring papaparse's reading of quotes.
/** At the start of a field (start of a record, or just after a delimiter). */
const START = 0;
/** Inside an unquoted field: a quote here is an ordinary character. */
const UNQUOTED = 1;
/** Inside a quoted field. */
const QUOTED = 2;
/** Just after a quote inside a quoted field: the next character decides what it was. */
const QUOTE_SEEN = 3;
/** After that quote and some whitespace: a delimiter or line break next closes the field. */
const QUOTE_SPACES = 4;

/**
 * Calls onBatch with records in file order, a batch at a time (the records of about 16 KiB of
 * text: a few hundred typical rows), and the text they were read from (so that a caller can
 * look for a character in the whole batch with one native search rather than in every value). If onBatch returns a promise, reading waits for it
 * (back-pressure); if it throws or rejects, reading stops and readCsv rejects with that error.
 * Rows whose cells are all empty or whitespace are skipped, but their lines are counted.
 */
export async function readCsv(
  file: string,
  onBatch: (records: CsvRecord[], text: string) => void | Promise<void>,
  options: CsvReadOptions = {},
): Promise<CsvReadSummary> {
  const decoder = new TextDecoder(options.encoding ?? 'utf-8', { fatal: true, ignoreBOM: true });
  const maxRecord = Math.max(1, Math.floor(options.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES));
  const part = options.part;
  const records = new RecordStream(onBatch, maxRecord, part?.firstLine ?? 1, (part?.start ?? 0) === 0);
  const hash = options.sha1 === false ? null : crypto.createHash('sha1');
  const follow = new FollowedFile(options.follow);
  const fh = await fs.promises.open(file, 'r');
  let pendingRead: Promise<{ bytesRead: number }> | undefined;
  try {
    const buffers = [Buffer.allocUnsafe(READ_CHUNK), Buffer.allocUnsafe(READ_CHUNK)];
    let which = 0;
    const first = part?.start ?? 0;
    const stop = part && !part.last ? part.end : Infinity;
    /** Reads up to `want` bytes at `at`, once they are there (a file still arriving). */
    const readAt = async (buffer: Buffer, at: number, want: number): Promise<{ bytesRead: number }> => {
      const have = Math.min(want, (await follow.until(at + want)) - at);
      return have > 0 ? fh.read(buffer, 0, have, at) : { bytesRead: 0 };
    };
    let offset = first;
    // A part's bytes before its start are hashed first (only part 0 hashes, so there are none).
    if (hash && first > 0) await hashRange(readAt, hash, buffers[0], 0, first);
    pendingRead = readAt(buffers[which], offset, Math.min(READ_CHUNK, stop - offset));
    for (;;) {
      const { bytesRead }: { bytesRead: number } = await pendingRead;
      pendingRead = undefined;
      if (bytesRead === 0) break;
      const chunk = buffers[which].subarray(0, bytesRead);
      // Read the next chunk into the other buffer while this one is processed.
      which ^= 1;
      const next = Math.min(READ_CHUNK, stop - (offset + bytesRead));
      pendingRead = next > 0 ? readAt(buffers[which], offset + bytesRead, next) : Promise.resolve({ bytesRead: 0 });
      pendingRead.catch(() => undefined); // awaited on the next turn, or dropped if we stop
      hash?.update(chunk);
      // Decoded a piece at a time: small strings die young, where a 1 MiB one would go to the
      // large-object space and stay there until a full collection (peak RSS then grows with the file).
      for (let at = 0; at < bytesRead; at += PIECE) {
        const bytes = chunk.subarray(at, at + PIECE);
        let text: string;
        try {
          text = decoder.decode(bytes, { stream: true });
        } catch {
          throw notDecodable(decoder.encoding, bytes, offset + at, records);
        }
        await records.push(text);
      }
      offset += bytesRead;
    }
    let rest: string;
    try {
      rest = decoder.decode();
    } catch {
      throw notDecodable(decoder.encoding, new Uint8Array(0), offset, records);
    }
    await records.push(rest);
    if (part && !part.last) records.endPart();
    else await records.end();
    // A part that is not the last hashes on to the end of the file (only part 0 is asked to).
    const size = hash && stop !== Infinity ? await hashRange(readAt, hash, buffers[0], offset, Infinity) : offset;
    return { records: records.records, lines: records.line - (part?.firstLine ?? 1), bytes: size - first, sha1: hash ? hash.digest('hex') : '' };
  } finally {
    if (pendingRead) await pendingRead.catch(() => undefined);
    await fh.close();
  }
}

/** Hashes bytes [from, to) of the file; returns where it stopped (to, or the end of the file). */
async function hashRange(
  readAt: (buffer: Buffer, at: number, want: number) => Promise<{ bytesRead: number }>,
  hash: crypto.Hash,
  buffer: Buffer,
  from: number,
  to: number,
): Promise<number> {
  let at = from;
  while (at < to) {
    const { bytesRead } = await readAt(buffer, at, Math.min(buffer.length, to - at));
    if (bytesRead === 0) break;
    hash.update(buffer.subarray(0, bytesRead));
    at += bytesRead;
  }
  return at;
}

/**
 * Decoded text in, batches of records out. Holds at most one piece of text plus the record being
 * read (which may not grow past `maxRecord`).
 */
class RecordStream {
  records = 0;
  private readonly pieceSize: number;
  /** Text of the incomplete record at the end of what has been scanned. */
  private carry: string[] = [];
  private carryLength = 0;
  /** A quoted value in `carry` holds a line break. */
  private carryMultiline = false;
  /** Text seen before the line-break style is known (the first line, at most maxRecord long). */
  private head: string | null = '';
  /** A BOM may open the text (it is the start of the file). */
  private first: boolean;
  /** The line-break character records end with: LF (which also covers CRLF) or CR alone. */
  private nl = LF;
  private nlStr = '\n';
  private parser!: Papa.Parser;
  private state = START;
  /** Offset, in the decoded text of the whole file, of the first character of `carry`. */
  private carryStart = 0;
  /** Offset of the first character of the piece being scanned. */
  private pieceStart = 0;
  /** Offset of the quote that opened the quoted value being read. */
  private openQuoteAt = 0;

  constructor(
    private readonly onBatch: (records: CsvRecord[], text: string) => void | Promise<void>,
    private readonly maxRecord: number,
    /** The line the next record starts on (the line of the first character of `carry`). */
    public line: number,
    atFileStart: boolean,
  ) {
    this.pieceSize = Math.min(PIECE, maxRecord);
    this.first = atFileStart;
  }

  async push(text: string): Promise<void> {
    if (text.length === 0) return;
    if (this.first) {
      this.first = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.head !== null) {
      // Until we know whether records end in LF (or CRLF) or in CR alone, collect the start.
      this.head += text;
      const style = lineBreakStyle(this.head, Math.min(DETECT_WINDOW, this.maxRecord));
      if (style === undefined) return;
      this.setLineBreak(style);
      text = this.head;
      this.head = null;
    }
    const size = this.pieceSize;
    for (let i = 0; i < text.length; i += size) {
      const batch = this.piece(i === 0 && text.length <= size ? text : text.slice(i, i + size));
      if (batch && batch.records.length > 0) {
        this.records += batch.records.length;
        const waiting = this.onBatch(batch.records, batch.text);
        if (waiting) await waiting;
      }
    }
  }

  /** End of file: the last record may lack its line break; a quote may still be open. */
  async end(): Promise<void> {
    if (this.head !== null) {
      const head = this.head;
      this.head = null;
      this.setLineBreak(lineBreakStyle(head, 0) ?? LF);
      await this.push(head);
    }
    if (this.carryLength > 0) await this.push(this.nlStr);
    if (this.state === QUOTED) {
      const text = this.carry.join('');
      const line = this.line + countChar(text, this.nlStr, 0, this.openQuoteAt - this.carryStart);
      throw new CsvUnreadable(
        `a quoted value that starts on line ${line} is never closed (missing closing quote "). ` +
          `Check that line for a stray quote character.`,
      );
    }
  }

  /** End of a part that is not the file's last: it must end just after a record. */
  endPart(): void {
    const pending = (this.head ?? '') + this.carry.join('');
    if (this.state !== START || pending.length > 0) {
      throw new PartMisaligned(`the part ending on line ${this.line} ends inside a record (a quoted value holds the line break)`);
    }
  }

  /** The line of the next character not yet given to push(): where a decoding error is. */
  lineOfNextText(): number {
    const pending = this.head ?? this.carry.join('');
    return this.line + countChar(pending, this.head !== null ? '\n' : this.nlStr, 0, pending.length);
  }

  private setLineBreak(nl: number): void {
    this.nl = nl;
    this.nlStr = String.fromCharCode(nl);
    // One parser for the whole file; papaparse picks its fast split path itself for text
    // without quotes. CRLF is read as LF and the CR dropped from the last value (below), so a
    // file that mixes the two still reads right.
    this.parser = new Papa.Parser({ delimiter: ',', newline: nl === CR ? '\r' : '\n', quoteChar: '"', dynamicTyping: false, header: false });
  }

  /** Scans one piece; returns the records it completes and their text. */
  private piece(piece: string): { records: CsvRecord[]; text: string } | null {
    const scan = this.scan(piece);
    this.pieceStart += piece.length;
    if (scan.end === -1) {
      this.carry.push(piece);
      this.carryLength += piece.length;
      this.carryMultiline ||= scan.firstQuotedBreak !== -1;
      if (this.carryLength > this.maxRecord) throw this.tooLong();
      return null;
    }
    if (this.carryLength + scan.firstEnd - 1 > this.maxRecord) throw this.tooLong(); // its line break not counted
    const multiline = this.carryMultiline || (scan.firstQuotedBreak !== -1 && scan.firstQuotedBreak < scan.end);
    const complete = this.carryLength === 0 ? piece.slice(0, scan.end) : this.carry.join('') + piece.slice(0, scan.end);
    const rest = piece.length - scan.end;
    this.carryStart += complete.length;
    this.carry = rest > 0 ? [piece.slice(scan.end)] : [];
    this.carryLength = rest;
    this.carryMultiline = scan.lastQuotedBreak >= scan.end;
    return { records: this.parse(complete, multiline), text: complete };
  }

  /**
   * Follows the quoting through `piece` from the current state, the way papaparse reads it: a
   * quote opens a quoted value only at the start of a field; inside one, `""` is a quote, and a
   * quote followed by optional whitespace and then a delimiter or line break closes it (any other
   * quote is kept as data). Jumps from quote to quote with indexOf, so a piece costs a few
   * native searches, not a loop over its characters.
   */
  private scan(piece: string): { end: number; firstEnd: number; firstQuotedBreak: number; lastQuotedBreak: number } {
    const nl = this.nl;
    const nlStr = this.nlStr;
    const n = piece.length;
    let state = this.state;
    let p = 0;
    /** Just past the last line break that ends a record, or -1. */
    let end = -1;
    let firstEnd = -1;
    let firstQuotedBreak = -1;
    let lastQuotedBreak = -1;
    /** The first line break at or after some position already scanned (n: none). */
    let nextBreak = -1;
    const recordEnd = (at: number): void => {
      end = at;
      if (firstEnd === -1) firstEnd = at;
    };
    while (p < n) {
      switch (state) {
        case START:
        case UNQUOTED: {
          const q = piece.indexOf('"', p);
          const stop = q === -1 ? n : q;
          if (stop > p) {
            const last = piece.lastIndexOf(nlStr, stop - 1);
            if (last >= p) {
              if (firstEnd === -1) firstEnd = piece.indexOf(nlStr, p) + 1;
              end = last + 1;
            }
          }
          if (q === -1) {
            const c = piece.charCodeAt(n - 1);
            state = c === COMMA || c === nl ? START : UNQUOTED;
            p = n;
            break;
          }
          const before = piece.charCodeAt(q - 1);
          const opens = q === p ? state === START : before === COMMA || before === nl;
          if (opens) {
            state = QUOTED;
            this.openQuoteAt = this.pieceStart + q;
          } else {
            state = UNQUOTED;
          }
          p = q + 1;
          break;
        }
        case QUOTED: {
          const q = piece.indexOf('"', p);
          const stop = q === -1 ? n : q;
          if (nextBreak < p) {
            nextBreak = piece.indexOf(nlStr, p);
            if (nextBreak === -1) nextBreak = n;
          }
          if (nextBreak < stop) {
            if (firstQuotedBreak === -1) firstQuotedBreak = nextBreak;
            lastQuotedBreak = piece.lastIndexOf(nlStr, stop - 1);
          }
          if (q === -1) {
            p = n;
            break;
          }
          state = QUOTE_SEEN;
          p = q + 1;
          break;
        }
        case QUOTE_SEEN: {
          const c = piece.charCodeAt(p);
          if (c === QUOTE) {
            state = QUOTED; // "" inside quotes
            p++;
          } else if (c === COMMA) {
            state = START;
            p++;
          } else if (c === nl) {
            state = START;
            recordEnd(++p);
          } else if (isTrimSpace(c)) {
            state = QUOTE_SPACES;
            p++;
          } else {
            state = QUOTED; // a stray quote inside a quoted value: papaparse keeps it as data
          }
          break;
        }
        case QUOTE_SPACES: {
          const c = piece.charCodeAt(p);
          if (c === COMMA) {
            state = START;
            p++;
          } else if (c === nl) {
            state = START;
            recordEnd(++p);
          } else if (isTrimSpace(c)) {
            p++;
          } else if (c === QUOTE) {
            state = QUOTE_SEEN;
            p++;
          } else {
            state = QUOTED;
          }
          break;
        }
      }
    }
    this.state = state;
    return { end, firstEnd, firstQuotedBreak, lastQuotedBreak };
  }

  /** Parses complete records (`text` ends with a line break) into a batch. */
  private parse(text: string, multiline: boolean): CsvRecord[] {
    const result = this.parser.parse(text, 0, false) as Papa.ParseResult<string[]>;
    const rows = result.data;
    const nlStr = this.nlStr;
    const stripCr = this.nl === LF;
    const batch: CsvRecord[] = [];
    let line = this.line;
    // The text ends with a line break, so papaparse's last row is the empty one after it.
    const count = rows.length - 1;
    const lines: number[] | null = result.errors.length > 0 ? [] : null;
    for (let i = 0; i < count; i++) {
      const values = rows[i];
      if (stripCr) {
        const last = values[values.length - 1];
        if (last.charCodeAt(last.length - 1) === CR) values[values.length - 1] = last.slice(0, -1);
      }
      lines?.push(line);
      const start = line;
      line += multiline ? 1 + countBreaks(values, nlStr) : 1;
      if (!isBlank(values)) batch.push({ line: start, values });
    }
    if (lines) {
      // The scanner closes every quote before it cuts, so papaparse never reaches the end of a
      // piece inside one; if it ever did, fail on that record rather than misread the file.
      const open = result.errors.find((e) => e.code === 'MissingQuotes');
      if (open) {
        throw new CsvUnreadable(
          `a quoted value on line ${lines[open.row ?? 0] ?? this.line} is never closed (missing closing quote "). ` +
            `Check that line for a stray quote character.`,
        );
      }
    }
    this.line = line;
    return batch;
  }

  private tooLong(): CsvUnreadable {
    const limit = formatSize(this.maxRecord);
    return new CsvUnreadable(
      `the record that starts on line ${this.line} is longer than ${limit}, the limit for one record: ` +
        `most likely a quote (") on that line that is never closed, or a record that really is longer than ${limit}. ` +
        `Check line ${this.line} for a stray quote character.`,
    );
  }
}

/**
 * LF (LF and CRLF files) as soon as the text has an LF; CR (old Mac files) when the first
 * `window` characters have CRs and no LF; undefined: not enough text yet to tell.
 */
function lineBreakStyle(text: string, window: number): number | undefined {
  if (text.includes('\n')) return LF;
  if (text.length < window) return undefined;
  return text.includes('\r') ? CR : LF;
}

function countChar(text: string, ch: string, from: number, to: number): number {
  let n = 0;
  for (let i = text.indexOf(ch, from); i !== -1 && i < to; i = text.indexOf(ch, i + 1)) n++;
  return n;
}

function countBreaks(values: string[], nl: string): number {
  let n = 0;
  for (const v of values) if (v.length > 0) n += countChar(v, nl, 0, v.length);
  return n;
}

function isBlank(values: string[]): boolean {
  for (const v of values) {
    if (v.length === 0) continue;
    const c = v.charCodeAt(0);
    if (c > 32 && c < 127) return false;
    if (v.trim() !== '') return false;
  }
  return true;
}

/** The characters String.prototype.trim() removes: papaparse skips these after a closing quote. */
function isTrimSpace(c: number): boolean {
  if (c <= 32) return c === 32 || (c >= 9 && c <= 13);
  if (c < 0xa0) return false;
  return (
    c === 0xa0 ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000 ||
    c === 0xfeff
  );
}

function formatSize(n: number): string {
  if (n % (1 << 20) === 0) return `${n / (1 << 20)} MiB`;
  if (n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} bytes`;
}

/**
 * The decoder failed somewhere in `chunk` (or, with an empty chunk, at the end of the file).
 * Finds the first bad byte by decoding prefixes of the chunk afresh, and the line it is on.
 */
function notDecodable(encoding: string, chunk: Uint8Array, offset: number, records: RecordStream): CsvUnreadable {
  // At the end of the file (empty chunk) the last bytes begin a character that never ends.
  let at = chunk.length === 0 ? -1 : 0;
  let goodText = '';
  if (chunk.length > 0) {
    // A character begun in the previous chunk ends with continuation bytes at the start of this one.
    let start = 0;
    if (encoding === 'utf-8') while (start < 3 && start < chunk.length && (chunk[start] & 0xc0) === 0x80) start++;
    const fails = (end: number): boolean => {
      try {
        new TextDecoder(encoding, { fatal: true, ignoreBOM: true }).decode(chunk.subarray(start, end), { stream: true });
        return false;
      } catch {
        return true;
      }
    };
    if (fails(chunk.length)) {
      let lo = start;
      let hi = chunk.length;
      while (hi - lo > 1) {
        const mid = (lo + hi) >>> 1;
        if (fails(mid)) hi = mid;
        else lo = mid;
      }
      at = hi - 1;
      // The byte that made decoding fail can be the one after a bad lead byte: name the lead byte.
      if (encoding === 'utf-8' && chunk[at] < 0x80 && at > start && chunk[at - 1] >= 0x80) at--;
      goodText = new TextDecoder(encoding, { ignoreBOM: true }).decode(chunk.subarray(start, at), { stream: true });
    }
  }
  const line = records.lineOfNextText() + countChar(goodText, '\n', 0, goodText.length);
  return new CsvUnreadable(
    `the file is not valid ${encoding.toUpperCase()} text (bad bytes near byte ${Math.max(0, offset + at)}, on line ${line}). ` +
      `Save or export it as "CSV UTF-8" and upload it again.`,
  );
}
