// Row-level checking: one record in, either a normalized user or a list of problems out.
// Problems are data (line, column, value, reason), never exceptions: a bad row only
// rejects itself.
import type { ImportOptions } from '../config.js';
import type { HeaderMap } from './headers.js';
import { describeError, type CompiledKind } from './kinds.js';

export interface RowProblem {
  column: string;
  value: string;
  reason: string;
}

/** A row as it will be applied. `undefined` means the file has no such column: leave as is. */
export interface StagedUser {
  externalId: string;
  email?: string | null;
  username?: string | null;
  firstName?: string | null;
  lastName?: string | null;
  role?: string | null;
  siteId?: string | null;
  siteLabel?: string | null;
  /** Plain text, only until it is hashed during staging. */
  password?: string | null;
  active: boolean;
  attributes: Record<string, string | null>;
}

export type RowResult = { ok: true; user: StagedUser } | { ok: false; key: string | undefined; problems: RowProblem[] };

const TRUE_FLAGS = new Set(['1', 'true', 'yes', 'y']);

export class RowChecker {
  private readonly keyIndex: number;
  private readonly hasSiteMap: boolean;
  private readonly secretColumns: Set<string>;

  constructor(
    private readonly kind: CompiledKind,
    private readonly headers: HeaderMap,
    private readonly options: ImportOptions,
  ) {
    this.keyIndex = headers.columns.findIndex((c) => c.name === kind.key);
    this.hasSiteMap = Object.keys(options.siteMap).length > 0;
    this.secretColumns = new Set(kind.columns.filter((c) => c.field === 'password').map((c) => c.name));
  }

  check(values: string[]): RowResult {
    const { columns } = this.headers;
    const raw = this.keyIndex >= 0 ? values[this.keyIndex]?.trim() || undefined : undefined;
    const key = raw !== undefined && this.kind.keyCase === 'lower' ? raw.toLowerCase() : raw;
    if (values.length !== this.headers.width) {
      return {
        ok: false,
        key,
        problems: [
          {
            column: '',
            value: '',
            reason:
              `this row has ${values.length} value${values.length === 1 ? '' : 's'} but the header has ${this.headers.width} columns; ` +
              `a value containing a comma must be in double quotes`,
          },
        ],
      };
    }
    // Empty cells become undefined so that `required` fires for them.
    const record: Record<string, string> = {};
    for (let i = 0; i < columns.length; i++) {
      const v = values[i].trim();
      if (v !== '') record[columns[i].name] = v;
    }
    const problems: RowProblem[] = [];
    if (!this.kind.validate(record)) {
      for (const err of this.kind.validate.errors ?? []) {
        const { column, reason } = describeError(err, this.kind);
        if (problems.some((p) => p.column === column)) continue; // one reason per cell is enough
        // A password never leaves in a report, not even a wrong one.
        const value = this.secretColumns.has(column) && record[column] ? '(hidden)' : (record[column] ?? '');
        problems.push({ column, value, reason });
      }
    }
    const user: StagedUser = { externalId: key ?? '', active: true, attributes: {} };
    for (const col of columns) {
      const v = record[col.name] ?? null;
      switch (col.field) {
        case undefined:
          user.attributes[col.name] = v;
          break;
        case 'externalId':
          break;
        case 'active':
          user.active = v === null || TRUE_FLAGS.has(v.toLowerCase());
          break;
        case 'password':
          user.password = v === null ? null : this.password(col.name, v, problems);
          break;
        case 'siteId':
          user.siteId = v;
          if (v !== null && this.hasSiteMap) {
            const label = this.options.siteMap[v];
            if (label === undefined) {
              problems.push({
                column: col.name,
                value: v,
                reason: `site id ${v} is not in this district's site map; use one of ${Object.keys(this.options.siteMap).join(', ')} or ask us to add it`,
              });
            }
            user.siteLabel = label ?? null;
          }
          break;
        default:
          user[col.field] = v;
      }
    }
    if (problems.length) return { ok: false, key, problems };
    return { ok: true, user };
  }

  private password(column: string, value: string, problems: RowProblem[]): string | null {
    if (this.options.passwordFormat !== 'date') return value;
    const formatted = formatDatePassword(value);
    if (formatted === undefined) {
      problems.push({
        column,
        value: '(hidden)',
        reason: 'is not a date; passwords for this district are dates such as 2010-03-05, 3/5/2010 or 20100305',
      });
      return null;
    }
    return formatted;
  }
}

/** `2010-03-05`, `3/5/2010`, `03/05/2010`, `20100305` (and `.`/`-` separated m/d/yyyy) -> `3/5/2010`. */
export function formatDatePassword(value: string): string | undefined {
  const v = value.trim();
  let y: number, m: number, d: number;
  let match: RegExpExecArray | null;
  if ((match = /^(\d{4})-(\d{1,2})-(\d{1,2})$/.exec(v))) [y, m, d] = [+match[1], +match[2], +match[3]];
  else if ((match = /^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})$/.exec(v))) [m, d, y] = [+match[1], +match[2], +match[3]];
  else if ((match = /^(\d{4})(\d{2})(\d{2})$/.exec(v))) [y, m, d] = [+match[1], +match[2], +match[3]];
  else return undefined;
  const date = new Date(Date.UTC(y, m - 1, d));
  if (date.getUTCFullYear() !== y || date.getUTCMonth() !== m - 1 || date.getUTCDate() !== d) return undefined;
  return `${m}/${d}/${y}`;
}
