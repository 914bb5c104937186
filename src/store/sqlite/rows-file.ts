// A SQLite database file holding one rowid table, written in rowid order by this code alone.
//
// The parse threads stage a file's checked rows in part files that the main connection attaches
// and reads with SQL (stage-part.ts, stage.ts). Written through better-sqlite3, a row cost 1.25 µs
// on its parse thread, two thirds of it in passing each value across the engine's API one call
// at a time; the rows themselves never need SQLite on that thread: they arrive in rowid order,
// once, and are never read back there. So this writer lays out the table's B-tree itself, as the
// file format (https://www.sqlite.org/fileformat2.html) defines it, one page at a time, bottom up:
// 0.5 µs a row. The file it leaves is an ordinary database: SQLite opens it, checks it
// (`PRAGMA integrity_check`, in the tests), adds tables and indexes to it and changes its rows.
//
// What it writes: page 1, the 100-byte header and the schema table with one entry; table leaf
// pages (0x0D) filled front to back with records; overflow pages for a record too large for a
// page; interior pages (0x05) level by level on top, the last one the table's root. No freelist,
// no pointer map (no auto-vacuum), UTF-8 text, rollback-journal file format.
import fs from 'node:fs';

/** The largest page SQLite supports: fewest pages, cells and interior entries. */
const ROWS_FILE_PAGE_SIZE = 65536;
/** The header's "SQLite version that last wrote the file" (informational: SQLite reads any). */
const WRITER_VERSION = 3_045_000;

export type RowsFileValue = string | number | null;

/** Body bytes of the integer serial types 1-6. */
const INTEGER_BYTES = [0, 1, 2, 3, 4, 6, 8];

/** Bytes of a varint (SQLite's big-endian base-128, at most 9 bytes) for v ≥ 0. */
function varintLength(v: number): number {
  let n = 1;
  while (v >= 0x80 && n < 9) {
    v = Math.floor(v / 0x80);
    n++;
  }
  return n;
}

/** Writes v ≥ 0 (below 2^56) as a varint at `at`; returns its length. */
function putVarint(b: Uint8Array, at: number, v: number): number {
  if (v < 0x80) {
    b[at] = v;
    return 1;
  }
  const n = varintLength(v);
  for (let i = n - 1; i >= 0; i--) {
    b[at + i] = (v % 0x80) | (i === n - 1 ? 0 : 0x80);
    v = Math.floor(v / 0x80);
  }
  return n;
}

/** A child page of an interior level and the largest rowid under it. */
interface Child {
  page: number;
  maxRowid: number;
}

export class RowsFileWriter {
  private readonly fd: number;
  private readonly pageSize = ROWS_FILE_PAGE_SIZE;
  /** The leaf being filled. */
  private readonly page = Buffer.alloc(ROWS_FILE_PAGE_SIZE);
  private cells = 0;
  /** Offset of the lowest cell written into `page` (cells grow down from its end). */
  private contentStart = ROWS_FILE_PAGE_SIZE;
  private lastRowid = -Infinity;
  private nextPage = 2; // page 1 (header and schema) is written last
  private readonly leaves: Child[] = [];
  /** The record being encoded: its body, and its serial types (one per value). */
  private body = new Uint8Array(1 << 16);
  private bodyBytes = Buffer.from(this.body.buffer);
  private header = new Uint8Array(1024);
  private headerBytes = Buffer.from(this.header.buffer);
  private readonly types: number[] = [];
  /** Payload that fits on a leaf page (X), and the least kept there when it does not (M). */
  private readonly maxLocal = ROWS_FILE_PAGE_SIZE - 35;
  private readonly minLocal = Math.floor(((ROWS_FILE_PAGE_SIZE - 12) * 32) / 255) - 23;
  private closed = false;

  /**
   * @param createSql the table's CREATE TABLE statement, as the schema table keeps it; its
   *   first column must be `INTEGER PRIMARY KEY` (the rowid), every row gives every column
   */
  constructor(
    file: string,
    private readonly table: string,
    private readonly createSql: string,
  ) {
    this.fd = fs.openSync(file, 'w');
  }

  /**
   * Appends a row: `values` in column order, the first (the rowid) a positive safe integer
   * larger than the last row's. Text is stored as UTF-8 (an unpaired surrogate as U+FFFD, as
   * SQLite's API would), integers in the fewest bytes.
   */
  add(values: readonly RowsFileValue[]): void {
    const rowid = values[0];
    if (typeof rowid !== 'number' || !Number.isSafeInteger(rowid) || rowid < 1 || rowid <= this.lastRowid) {
      throw new Error(`rows must come in ascending order of positive rowids: ${String(rowid)} after ${this.lastRowid}`);
    }
    const width = values.length;
    const bodyLength = this.encodeBody(values);
    // The record: its header's size, one serial type per column, then the body.
    this.types[0] = 0; // the rowid column is stored as NULL: the cell's key holds it
    const h = this.putRecordHeader(0, width);
    this.placeCell(rowid, h, bodyLength);
    this.lastRowid = rowid;
  }

  /** The record header of columns `from`…`to - 1` (their serial types in `types`) into `header`; its length. */
  private putRecordHeader(from: number, to: number): number {
    let typesLength = 0;
    for (let i = from; i < to; i++) typesLength += varintLength(this.types[i]);
    let sizeLength = 1; // the header's size counts its own varint
    while (varintLength(typesLength + sizeLength) > sizeLength) sizeLength++;
    if (typesLength + sizeLength > this.header.length) {
      this.header = new Uint8Array(typesLength + sizeLength);
      this.headerBytes = Buffer.from(this.header.buffer);
    }
    let h = putVarint(this.header, 0, typesLength + sizeLength);
    for (let i = from; i < to; i++) h += putVarint(this.header, h, this.types[i]);
    return h;
  }

  /** Encodes values 1… into `body`, their serial types into `types`; returns the body's length. */
  private encodeBody(values: readonly RowsFileValue[]): number {
    let pos = 0;
    for (let i = 1; i < values.length; i++) {
      const v = values[i];
      if (v === null) {
        this.types[i] = 0;
      } else if (typeof v === 'number') {
        this.types[i] = this.integerType(v);
        pos = this.putInteger(v, this.types[i], pos);
      } else {
        if (pos + v.length * 3 > this.body.length) this.grow(pos + v.length * 3);
        const start = pos;
        pos = this.putText(v, pos);
        this.types[i] = (pos - start) * 2 + 13;
      }
    }
    return pos;
  }

  /** UTF-8, by hand: a call into the engine per value costs more than this loop for short text. */
  private putText(v: string, pos: number): number {
    const b = this.body;
    for (let k = 0; k < v.length; k++) {
      let c = v.charCodeAt(k);
      if (c < 0x80) {
        b[pos++] = c;
      } else if (c < 0x800) {
        b[pos++] = 0xc0 | (c >> 6);
        b[pos++] = 0x80 | (c & 0x3f);
      } else if (c >= 0xd800 && c < 0xdc00 && k + 1 < v.length && (v.charCodeAt(k + 1) & 0xfc00) === 0xdc00) {
        c = 0x10000 + ((c - 0xd800) << 10) + (v.charCodeAt(++k) - 0xdc00);
        b[pos++] = 0xf0 | (c >> 18);
        b[pos++] = 0x80 | ((c >> 12) & 0x3f);
        b[pos++] = 0x80 | ((c >> 6) & 0x3f);
        b[pos++] = 0x80 | (c & 0x3f);
      } else {
        if (c >= 0xd800 && c < 0xe000) c = 0xfffd; // an unpaired surrogate
        b[pos++] = 0xe0 | (c >> 12);
        b[pos++] = 0x80 | ((c >> 6) & 0x3f);
        b[pos++] = 0x80 | (c & 0x3f);
      }
    }
    return pos;
  }

  /** Serial types 8 and 9 are the integers 0 and 1 (schema format 4); 1-6: 1, 2, 3, 4, 6, 8 bytes. */
  private integerType(v: number): number {
    if (!Number.isSafeInteger(v)) throw new Error(`only integers can be stored, not ${v}`);
    if (v === 0) return 8;
    if (v === 1) return 9;
    const a = v < 0 ? -v - 1 : v;
    return a < 0x80 ? 1 : a < 0x8000 ? 2 : a < 0x800000 ? 3 : a < 0x80000000 ? 4 : a < 0x800000000000 ? 5 : 6;
  }

  /** The body bytes of integer `v` as serial type `type` (none for 8 and 9): big-endian two's complement. */
  private putInteger(v: number, type: number, pos: number): number {
    if (type >= 8) return pos;
    const bytes = INTEGER_BYTES[type];
    if (pos + bytes > this.body.length) this.grow(pos + bytes);
    if (bytes <= 4) {
      for (let i = bytes - 1; i >= 0; i--, v >>= 8) this.body[pos + i] = v & 0xff;
    } else {
      let x = BigInt.asUintN(64, BigInt(v));
      for (let i = bytes - 1; i >= 0; i--, x >>= 8n) this.body[pos + i] = Number(x & 0xffn);
    }
    return pos + bytes;
  }

  private grow(needed: number): void {
    const bigger = new Uint8Array(Math.max(needed, this.body.length * 2));
    bigger.set(this.body);
    this.body = bigger;
    this.bodyBytes = Buffer.from(bigger.buffer);
  }

  /** Puts the cell (payload size, rowid, record) on the leaf, its tail on overflow pages if too large. */
  private placeCell(rowid: number, headerLength: number, bodyLength: number): void {
    const payload = headerLength + bodyLength;
    let local = payload;
    if (payload > this.maxLocal) {
      const k = this.minLocal + ((payload - this.minLocal) % (this.pageSize - 4));
      local = k <= this.maxLocal ? k : this.minLocal;
    }
    const overflow = local < payload;
    const cellSize = varintLength(payload) + varintLength(rowid) + local + (overflow ? 4 : 0);
    if (this.cells > 0 && 8 + 2 * (this.cells + 1) > this.contentStart - cellSize) this.writeLeaf();
    const p = this.page;
    const start = this.contentStart - cellSize;
    let at = start + putVarint(p, start, payload);
    at += putVarint(p, at, rowid);
    if (!overflow) {
      // Buffer.copy: no view object per row, as set(subarray()) would make.
      this.headerBytes.copy(p, at, 0, headerLength);
      this.bodyBytes.copy(p, at + headerLength, 0, bodyLength);
    } else {
      const record = new Uint8Array(payload);
      record.set(this.header.subarray(0, headerLength));
      record.set(this.body.subarray(0, bodyLength), headerLength);
      p.set(record.subarray(0, local), at);
      p.writeUInt32BE(this.writeOverflow(record.subarray(local)), at + local);
    }
    this.contentStart = start;
    p.writeUInt16BE(start, 8 + 2 * this.cells);
    this.cells++;
  }

  /** The tail of a record on a chain of overflow pages (each: next page or 0, then content); the first page. */
  private writeOverflow(rest: Uint8Array): number {
    const room = this.pageSize - 4;
    const count = Math.ceil(rest.length / room);
    const first = this.nextPage;
    this.nextPage += count;
    const page = Buffer.alloc(this.pageSize);
    for (let i = 0; i < count; i++) {
      page.fill(0);
      page.writeUInt32BE(i + 1 < count ? first + i + 1 : 0, 0);
      page.set(rest.subarray(i * room, (i + 1) * room), 4);
      this.writePage(first + i, page);
    }
    return first;
  }

  private writeLeaf(): void {
    const p = this.page;
    p[0] = 0x0d;
    p.writeUInt16BE(this.cells, 3);
    p.writeUInt16BE(this.contentStart % 65536, 5); // 0 stands for 65536
    const page = this.nextPage++;
    this.writePage(page, p);
    this.leaves.push({ page, maxRowid: this.lastRowid });
    p.fill(0);
    this.cells = 0;
    this.contentStart = this.pageSize;
  }

  private writePage(page: number, data: Uint8Array): void {
    fs.writeSync(this.fd, data, 0, this.pageSize, (page - 1) * this.pageSize);
  }

  /** Writes the last leaf, the interior levels and page 1, and closes the file. */
  finish(): void {
    if (this.cells > 0 || this.leaves.length === 0) this.writeLeaf(); // an empty table is one empty leaf
    let level = this.leaves;
    while (level.length > 1) level = this.writeInteriorLevel(level);
    this.writeFirstPage(level[0].page);
    this.close();
  }

  /** Interior pages over `children`, each as full as it goes and holding at least two children. */
  private writeInteriorLevel(children: Child[]): Child[] {
    const groups: Child[][] = [[]];
    let used = 12;
    for (const child of children) {
      const size = 2 + 4 + varintLength(child.maxRowid);
      if (used + size > this.pageSize) {
        groups.push([]);
        used = 12;
      }
      groups[groups.length - 1].push(child);
      used += size;
    }
    const last = groups[groups.length - 1];
    if (last.length === 1 && groups.length > 1) last.unshift(groups[groups.length - 2].pop()!);
    return groups.map((group) => {
      const p = Buffer.alloc(this.pageSize);
      let content = this.pageSize;
      // Every child but the last gets a cell (its page, its largest rowid); the last is the right-most pointer.
      for (let i = 0; i < group.length - 1; i++) {
        content -= 4 + varintLength(group[i].maxRowid);
        p.writeUInt32BE(group[i].page, content);
        putVarint(p, content + 4, group[i].maxRowid);
        p.writeUInt16BE(content, 12 + 2 * i);
      }
      p[0] = 0x05;
      p.writeUInt16BE(group.length - 1, 3);
      p.writeUInt16BE(content % 65536, 5);
      p.writeUInt32BE(group[group.length - 1].page, 8);
      const page = this.nextPage++;
      this.writePage(page, p);
      return { page, maxRowid: group[group.length - 1].maxRowid };
    });
  }

  /** Page 1: the database header, then the schema table (a leaf) naming the table and its root. */
  private writeFirstPage(root: number): void {
    const p = Buffer.alloc(this.pageSize);
    p.write('SQLite format 3\0', 0, 'latin1');
    p.writeUInt16BE(this.pageSize === 65536 ? 1 : this.pageSize, 16);
    p[18] = 1; // file format write version: legacy (rollback journal)
    p[19] = 1; // read version
    p[21] = 64; // payload fractions, fixed by the format
    p[22] = 32;
    p[23] = 32;
    p.writeUInt32BE(1, 24); // change counter
    p.writeUInt32BE(this.nextPage - 1, 28); // pages in the file (valid: the counter equals offset 92)
    p.writeUInt32BE(1, 40); // schema cookie
    p.writeUInt32BE(4, 44); // schema format
    p.writeUInt32BE(1, 56); // text encoding: UTF-8
    p.writeUInt32BE(1, 92); // version-valid-for
    p.writeUInt32BE(WRITER_VERSION, 96);
    // The schema table's row: type, name, tbl_name, rootpage, sql (values[0], its rowid, is 1).
    const values: RowsFileValue[] = [1, 'table', this.table, this.table, root, this.createSql];
    const bodyLength = this.encodeBody(values);
    const h = this.putRecordHeader(1, values.length);
    const payload = h + bodyLength;
    if (payload + 3 > this.pageSize - 100 - 8 - 2) throw new Error('the CREATE TABLE statement is too long for page 1');
    const cell = new Uint8Array(varintLength(payload) + 1 + payload);
    let at = putVarint(cell, 0, payload);
    cell[at++] = 1; // rowid in the schema table
    cell.set(this.header.subarray(0, h), at);
    cell.set(this.body.subarray(0, bodyLength), at + h);
    const content = this.pageSize - cell.length;
    p.set(cell, content);
    p[100] = 0x0d;
    p.writeUInt16BE(1, 103);
    p.writeUInt16BE(content, 105);
    p.writeUInt16BE(content, 108);
    this.writePage(1, p);
  }

  /** Closes the file (also after a failure: the caller removes it). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }
}
