import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CsvUnreadable, readCsv, type CsvReadOptions, type CsvReadSummary, type CsvRecord } from '../src/import/csv-reader.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-csv-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const MiB = 1 << 20;

function write(content: string | Buffer): string {
  const file = path.join(dir, `f${Math.random().toString(36).slice(2)}.csv`);
  fs.writeFileSync(file, content);
  return file;
}

async function readAll(content: string | Buffer, options: CsvReadOptions = {}): Promise<{ records: CsvRecord[]; summary: CsvReadSummary }> {
  const records: CsvRecord[] = [];
  const summary = await readCsv(write(content), (batch) => void records.push(...batch), options);
  return { records, summary };
}

async function read(content: string | Buffer, encoding?: string): Promise<CsvRecord[]> {
  return (await readAll(content, { encoding })).records;
}

async function failure(content: string | Buffer, options: CsvReadOptions = {}): Promise<CsvUnreadable> {
  const err = await readAll(content, options).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(CsvUnreadable);
  return err as CsvUnreadable;
}

describe('readCsv', () => {
  it('gives each record the line it starts on, across quoted newlines and blank lines', async () => {
    const records = await read('a,b\r\n1,"x\r\ny"\r\n\r\n2,"q""uote, comma"\r\n');
    expect(records).toEqual([
      { line: 1, values: ['a', 'b'] },
      { line: 2, values: ['1', 'x\r\ny'] },
      { line: 5, values: ['2', 'q"uote, comma'] },
    ]);
  });

  it('skips rows whose cells are all empty or whitespace but counts their lines', async () => {
    const { records, summary } = await readAll('a,b\n\n , \n,\n\t\n1,2\n\n3,"multi\nline"\n\n \n4,5');
    expect(records).toEqual([
      { line: 1, values: ['a', 'b'] },
      { line: 6, values: ['1', '2'] },
      { line: 8, values: ['3', 'multi\nline'] },
      { line: 12, values: ['4', '5'] },
    ]);
    expect(summary.records).toBe(4);
    expect(summary.lines).toBe(12);
  });

  it('removes a BOM and keeps a character split across read chunks intact', async () => {
    const filler = 'x'.repeat(MiB - 9); // puts the 2-byte "é" across the 1 MiB chunk boundary
    const records = await read(Buffer.from(`\uFEFFname\n${filler},é\n`, 'utf8'));
    expect(records[0].values).toEqual(['name']);
    expect(records[1].values[1]).toBe('é');
  });

  it('keeps 2-, 3- and 4-byte characters intact wherever the file is cut into pieces', async () => {
    // Rows of varying byte lengths put every kind of character across every kind of boundary.
    const rows: string[] = ['name,city'];
    for (let i = 0; i < 40_000; i++) rows.push(`${'n'.repeat(i % 7)}é€😀${i},"Zoë, ${i % 3 ? 'Köln' : 'Zürich\nnord'}"`);
    const text = rows.join('\n') + '\n';
    const records = await read(Buffer.from(text, 'utf8'));
    expect(records).toHaveLength(rows.length);
    const expected: number[] = [];
    for (let i = 0, line = 1; i < records.length; i++) {
      expected.push(line);
      line += i > 0 && (i - 1) % 3 === 0 ? 2 : 1;
    }
    expect(records.map((r) => r.line)).toEqual(expected);
    expect(records[40_000].values).toEqual([`${'n'.repeat(39_999 % 7)}é€😀39999`, 'Zoë, Zürich\nnord']);
    expect(records.every((r) => r.values.length === 2 && !r.values[0].includes('\uFFFD'))).toBe(true);
  });

  it('rejects bytes that are not UTF-8 and says where and how to fix it', async () => {
    const err = await failure(Buffer.from([0x61, 0x2c, 0x62, 0x0a, 0x63, 0xe9, 0x2c, 0x64, 0x0a]));
    expect(err.message).toMatch(/not valid UTF-8 text .*Save or export it as "CSV UTF-8"/);
    expect(err.message).toContain('bad bytes near byte 5, on line 2');
  });

  it('names the line of bad bytes far into the file', async () => {
    const good = 'id,name\n' + 'x,y\n'.repeat(300_000); // 1.2 MB: past the first read chunk
    const err = await failure(Buffer.concat([Buffer.from(good), Buffer.from([0x7a, 0xff, 0x0a])]));
    expect(err.message).toContain(`bad bytes near byte ${good.length + 1}, on line 300002`);
  });

  it('rejects a file that ends in the middle of a character', async () => {
    const err = await failure(Buffer.from([0x61, 0x0a, 0x62, 0xe2, 0x82]));
    expect(err.message).toMatch(/not valid UTF-8 text \(bad bytes near byte 4, on line 2\)/);
  });

  it('reads a declared legacy encoding', async () => {
    const records = await read(Buffer.from([0x63, 0xe9, 0x0a]), 'windows-1252');
    expect(records[0].values).toEqual(['cé']);
  });

  it('reads UTF-16 with its BOM when declared', async () => {
    const bytes = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('id,name\r\n1,Zoë\r\n', 'utf16le')]);
    expect(await read(bytes, 'utf-16le')).toEqual([
      { line: 1, values: ['id', 'name'] },
      { line: 2, values: ['1', 'Zoë'] },
    ]);
  });

  it('never leaves a CR at the end of the last value, whatever the line endings', async () => {
    expect(await read('a,b\r\n1,\r\n2,"q"\r\n3,x\r\n')).toEqual([
      { line: 1, values: ['a', 'b'] },
      { line: 2, values: ['1', ''] },
      { line: 3, values: ['2', 'q'] },
      { line: 4, values: ['3', 'x'] },
    ]);
    // LF and CRLF mixed (a line appended by hand), and no line break at the end.
    expect(await read('a,b\r\n1,2\n3,4\r\n\r\n5,6\r')).toEqual([
      { line: 1, values: ['a', 'b'] },
      { line: 2, values: ['1', '2'] },
      { line: 3, values: ['3', '4'] },
      { line: 5, values: ['5', '6'] },
    ]);
  });

  it('reads files whose lines end in CR alone (old Mac exports)', async () => {
    expect(await read('a,b\r1,"x\ry"\r\r2,3\r')).toEqual([
      { line: 1, values: ['a', 'b'] },
      { line: 2, values: ['1', 'x\ry'] },
      { line: 5, values: ['2', '3'] },
    ]);
  });

  it('reads stray quotes as papaparse does: data unless they open a field', async () => {
    expect(await read('h,w\n5\'10",x\n"a"b",c\n"q" ,"r"  \nend,"x"\n')).toEqual([
      { line: 1, values: ['h', 'w'] },
      { line: 2, values: ['5\'10"', 'x'] },
      { line: 3, values: ['a"b', 'c'] },
      { line: 4, values: ['q', 'r'] },
      { line: 5, values: ['end', 'x'] },
    ]);
  });

  it('reads a file with only a header, or nothing', async () => {
    expect((await readAll('id,name')).records).toEqual([{ line: 1, values: ['id', 'name'] }]);
    expect(await readAll('')).toMatchObject({ records: [], summary: { records: 0, lines: 0, bytes: 0 } });
    expect((await readAll('\uFEFF\r\n\r\n')).summary).toMatchObject({ records: 0, lines: 2 });
  });

  it('rejects a quote that is never closed, naming the line', async () => {
    const err = await failure('a,b\n1,2\n3,"open\n4,5\n');
    expect(err.message).toContain('starts on line 3 is never closed');
    // In a record that spans lines, the line of the quote itself.
    const later = await failure('a,b\n1,"two\nlines",x,"open\n4,5\n');
    expect(later.message).toContain('starts on line 3 is never closed');
  });

  it('rejects a record that grows past the limit at once, naming the line it starts on', async () => {
    // An unclosed quote on line 3, then 8 MiB of rows, then bytes that are not UTF-8: if the
    // reader went on past the first few MiB, it would fail on those bytes instead.
    const rows = 'id,name\n1,a\n2,"open\n' + 'S0001,Camila,Patel,camila@example.org\n'.repeat((8 * MiB) / 38);
    const file = Buffer.concat([Buffer.from(rows), Buffer.from([0xff, 0x0a])]);
    const seen: CsvRecord[] = [];
    const err = await readCsv(write(file), (batch) => void seen.push(...batch)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CsvUnreadable);
    const message = (err as Error).message;
    expect(message).toContain('the record that starts on line 3 is longer than 1 MiB');
    expect(message).toContain('a quote (") on that line that is never closed');
    expect(message).toContain('Check line 3');
    expect(seen.map((r) => r.line)).toEqual([1, 2]);
  });

  it('applies maxRecordBytes to any record, quoted or not, and accepts one exactly at the limit', async () => {
    const at = `id,v\n1,${'x'.repeat(98)}\n`; // the record "1,xxx…" is 100 characters
    expect((await readAll(at, { maxRecordBytes: 100 })).records[1].values[1]).toHaveLength(98);
    const over = await failure(`id,v\n1,${'x'.repeat(99)}\n2,y\n`, { maxRecordBytes: 100 });
    expect(over.message).toContain('the record that starts on line 2 is longer than 100 bytes');
    const quoted = await failure(`id,v\n1,y\n2,"${'a\n'.repeat(60)}"\n`, { maxRecordBytes: 100 });
    expect(quoted.message).toContain('starts on line 3 is longer than 100 bytes');
    // Many short records with a small limit read as usual.
    const many = 'id,v\n' + Array.from({ length: 500 }, (_, i) => `${i},"v\n${i}"`).join('\n');
    const { records } = await readAll(many, { maxRecordBytes: 16 });
    expect(records).toHaveLength(501);
    expect(records[500]).toEqual({ line: 1000, values: ['499', 'v\n499'] });
  });

  it('keeps a quoted newline that straddles a read chunk, and the lines after it', async () => {
    for (const shift of [-3, -2, -1, 0, 1, 2]) {
      const head = 'id,note\n';
      const filler = 'f,' + 'x'.repeat(MiB - head.length - 4 - 3 + shift) + '\n'; // ends 3 (+shift) bytes before 1 MiB
      const text = `${head}${filler}1,"a\r\nb, ""c""\r\nd"\r\n2,e\r\n`;
      const records = await read(text);
      expect(records.slice(2)).toEqual([
        { line: 3, values: ['1', 'a\r\nb, "c"\r\nd'] },
        { line: 6, values: ['2', 'e'] },
      ]);
    }
  });

  it('returns the size and the SHA-1 of the raw bytes', async () => {
    const content = Buffer.from('\uFEFFid,name\r\n1,Zoë\r\n' + '2,x\r\n'.repeat(500_000), 'utf8');
    const { summary } = await readAll(content);
    expect(summary.bytes).toBe(content.length);
    expect(summary.sha1).toBe(crypto.createHash('sha1').update(content).digest('hex'));
    expect(summary.records).toBe(500_002);
    expect(summary.lines).toBe(500_002);
  });

  it('hands records over in bounded batches and waits for a batch that returns a promise', async () => {
    const file = write('id\n' + Array.from({ length: 200_000 }, (_, i) => `${i}`).join('\n') + '\n');
    let busy = false;
    let largest = 0;
    let next = 0;
    let overlapped = false;
    let outOfOrder = 0;
    await readCsv(file, async (batch) => {
      if (busy) overlapped = true;
      busy = true;
      largest = Math.max(largest, batch.length);
      for (const r of batch) if (r.line !== ++next) outOfOrder++;
      await new Promise((resolve) => setImmediate(resolve));
      busy = false;
    });
    expect(overlapped).toBe(false);
    expect(outOfOrder).toBe(0);
    expect(next).toBe(200_001);
    expect(largest).toBeLessThanOrEqual(16_384);
  });

  it('stops reading when onBatch throws, and rejects with its error', async () => {
    const file = write('id\n' + '1\n'.repeat(100_000));
    let calls = 0;
    const err = await readCsv(file, () => {
      calls++;
      throw new Error('stop here');
    }).catch((e: unknown) => e);
    expect((err as Error).message).toBe('stop here');
    expect(calls).toBe(1);
  });
});
