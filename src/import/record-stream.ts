// The text of a CSV file in, complete records out. Our own small scanner follows the quoting
// across pieces of text, exactly as papaparse reads it, and cuts the text at record boundaries,
// so papaparse only ever sees complete records: given an unclosed quote it would buffer the rest
// of the file and rescan it on every piece (quadratic time, memory growing with the file). Here a
// record that grows past its limit rejects the file at once. Used by csv-reader.ts.
import Papa from 'papaparse';

export interface CsvRecord {
  /** 1-based line of the original file on which this record starts. */
  line: number;
  values: string[];
}

/** A problem that makes the whole file unreadable. The message names the line and says how to fix it. */
export class CsvUnreadable extends Error {}

/** A part of a file did not end between records: the file must be read as one part. */
export class PartMisaligned extends Error {}

/**
 * Bytes decoded, and characters scanned and handed to papaparse, at a time: a batch is the
 * records of one piece. Small pieces keep every string and batch young for the garbage collector
 * (measured: 16 KiB pieces are both faster and lower in peak RSS than 256 KiB or 1 MiB ones).
 */
export const PIECE = 1 << 14;
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
 * Decoded text in, batches of records out. Holds at most one piece of text plus the record being
 * read (which may not grow past `maxRecord`).
 */
export class RecordStream {
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

export function countChar(text: string, ch: string, from: number, to: number): number {
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
