// Streams a local CSV file as records, one at a time, with the line number each starts on in
// the original file. Memory is bounded by one read chunk: nothing holds the whole file.
//
// We decode bytes ourselves (papaparse would split a multi-byte character that straddles two
// chunks), reject bytes that are not valid in the declared encoding, strip a UTF-8 BOM, and
// count lines ourselves because quoted fields may hold newlines.
import fs from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';
import Papa from 'papaparse';

export interface CsvRecord {
  /** 1-based line of the original file on which this record starts. */
  line: number;
  values: string[];
}

/** A problem that makes the whole file unreadable. */
export class CsvUnreadable extends Error {}

const READ_CHUNK = 1 << 20;

class Decoder extends Transform {
  private readonly decoder: TextDecoder;
  private offset = 0;
  private first = true;

  constructor(private readonly encoding: string) {
    super({ readableObjectMode: true });
    this.decoder = new TextDecoder(encoding, { fatal: true, ignoreBOM: false });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      let text = this.decoder.decode(chunk, { stream: true });
      if (this.first && text.length > 0) {
        this.first = false;
        if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      }
      this.offset += chunk.length;
      if (text) this.push(text);
      done();
    } catch {
      done(this.notDecodable());
    }
  }

  override _flush(done: TransformCallback): void {
    try {
      const rest = this.decoder.decode();
      if (rest) this.push(rest);
      done();
    } catch {
      done(this.notDecodable());
    }
  }

  private notDecodable(): CsvUnreadable {
    return new CsvUnreadable(
      `the file is not valid ${this.encoding.toUpperCase()} text (bad bytes near byte ${this.offset}). ` +
        `Save or export it as "CSV UTF-8" and upload it again.`,
    );
  }
}

/**
 * Calls `onRecord` for every record, in order, synchronously inside the parser's callback: a
 * caller that does synchronous work (validation, SQLite inserts) gets back-pressure for free.
 * Blank lines are skipped but still counted.
 */
export function readCsv(
  file: string,
  onRecord: (record: CsvRecord) => void,
  options: { encoding?: string } = {},
): Promise<{ records: number; lines: number }> {
  const encoding = options.encoding ?? 'utf-8';
  return new Promise((resolve, reject) => {
    let line = 1;
    let records = 0;
    let failed = false;
    const fail = (err: unknown, parser?: Papa.Parser): void => {
      if (failed) return;
      failed = true;
      parser?.abort();
      input.destroy();
      reject(err);
    };
    let input: fs.ReadStream;
    try {
      input = fs.createReadStream(file, { highWaterMark: READ_CHUNK });
    } catch (err) {
      reject(err);
      return;
    }
    const text = input.pipe(new Decoder(encoding));
    input.on('error', (err) => fail(err));
    text.on('error', (err) => fail(err));

    Papa.parse<string[]>(text as unknown as File, {
      delimiter: ',',
      header: false,
      dynamicTyping: false,
      skipEmptyLines: false,
      step: (results, parser) => {
        if (failed) return;
        const values = results.data;
        const startLine = line;
        line += 1 + countNewlines(values);
        const unclosed = results.errors.find((e) => e.code === 'MissingQuotes');
        if (unclosed) {
          fail(
            new CsvUnreadable(
              `a quoted value that starts on line ${startLine} is never closed (missing closing quote "). ` +
                `Check that line for a stray quote character.`,
            ),
            parser,
          );
          return;
        }
        if (values.every((v) => v.trim() === '')) return;
        records++;
        try {
          onRecord({ line: startLine, values });
        } catch (err) {
          fail(err, parser);
        }
      },
      complete: () => {
        if (!failed) resolve({ records, lines: line - 1 });
      },
      error: (err: Error) => fail(err),
    });
  });
}

function countNewlines(values: string[]): number {
  let n = 0;
  for (const v of values) {
    if (v.length < 1) continue;
    for (let i = v.indexOf('\n'); i !== -1; i = v.indexOf('\n', i + 1)) n++;
  }
  return n;
}
