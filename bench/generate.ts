// Realistic rosters of any size, streamed to disk: rows are built a few thousand at a time and
// written with back-pressure, so generating 5,000,000 rows holds no more than one chunk in
// memory. Seeded, so the same N gives the same file on every machine.
//  - samegoal-users (rows 1, 2): optionally with every 100th row's e-mail changed (a re-sync);
//  - roster-students (row 4): with or without the PASSWORD column.
import fs from 'node:fs';
import { once } from 'node:events';
import { prng } from '../test/harness/prng.js';

export const USERS_HEADER = 'user_id,first_name,last_name,email,role,school_id,active';

const FIRST = [
  'James', 'Mary', 'Robert', 'Patricia', 'John', 'Jennifer', 'Michael', 'Linda', 'David', 'Elizabeth',
  'William', 'Barbara', 'Richard', 'Susan', 'Joseph', 'Jessica', 'Thomas', 'Sarah', 'Christopher', 'Karen',
  'Daniel', 'Lisa', 'Matthew', 'Nancy', 'Anthony', 'Betty', 'Mark', 'Sandra', 'Jose', 'Ashley',
  'Luis', 'Sofía', 'Mateo', 'Camila', 'Aiden', 'Olivia', 'Liam', 'Emma', 'Noah', 'Ava',
  'Mia', 'Ethan', 'Zoë', 'Jamal', 'Aaliyah', 'Wei', 'Mei', 'Hiroshi', 'Priya', 'Arjun',
  'Anne-Marie', 'Jean Luc', 'Mary Kate', 'Chloé', 'René', 'Dmitri', 'Fatima', 'Omar', 'Kwame', 'Ngozi',
];
const LAST = [
  'Smith', 'Johnson', 'Williams', 'Brown', 'Jones', 'Garcia', 'Miller', 'Davis', 'Rodriguez', 'Martinez',
  'Hernandez', 'Lopez', 'Gonzalez', 'Wilson', 'Anderson', 'Thomas', 'Taylor', 'Moore', 'Jackson', 'Martin',
  'Lee', 'Perez', 'Thompson', 'White', 'Harris', 'Sanchez', 'Clark', 'Ramirez', 'Lewis', 'Robinson',
  "O'Brien", "O'Connor", 'McDonald', 'Van der Berg', 'De la Cruz', 'Smith-Jones', 'Nguyen', 'Kim', 'Patel', 'Chen',
  'Müller', 'Núñez', 'Søren', 'Kowalski', 'Okafor', 'Haddad', 'Ivanova', 'Yamamoto', 'St. James', 'MacLeod',
];
/** Written quoted, as spreadsheet exports do when a value holds a comma. */
const SUFFIXED = ['Smith, Jr.', 'Brown, III', 'Garcia, Sr.', 'Lee, II'];
const DOMAINS = ['springfield-isd.example.org', 'students.springfield-isd.example.org', 'shelbyville.k12.example.us'];
/** Cumulative weights (per 1000) of the roles a district roster holds. */
const ROLES: Array<[number, string]> = [
  [700, 'student'],
  [880, 'teacher'],
  [940, 'staff'],
  [970, 'case_manager'],
  [990, 'related_service_provider'],
  [1000, 'admin'],
];
const SCHOOLS = 120;
const ROWS_PER_WRITE = 4000;


const emailPart = (s: string): string =>
  s
    .normalize('NFD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z]/g, '');

const csvCell = (s: string): string => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);

/** Row `i` (0-based) of the roster: valid for the samegoal-users kind, with a unique user_id. */
function row(i: number, rand: () => number, changed: boolean): string {
  const first = FIRST[Math.floor(rand() * FIRST.length)];
  const last = rand() < 0.005 ? SUFFIXED[Math.floor(rand() * SUFFIXED.length)] : LAST[Math.floor(rand() * LAST.length)];
  const r = Math.floor(rand() * 1000);
  const role = ROLES.find(([limit]) => r < limit)![1];
  const student = role === 'student';
  const id = `${student ? 'S' : 'E'}${String(i + 1).padStart(8, '0')}`;
  const domain = student ? DOMAINS[1 + Math.floor(rand() * 2)] : DOMAINS[0];
  // A changed row: the district gave the user a new e-mail address.
  const email = `${emailPart(first)}.${emailPart(last)}${i + 1}${changed ? '.new' : ''}@${domain}`;
  const school = `SCH${String(100 + Math.floor(rand() * SCHOOLS)).padStart(4, '0')}`;
  const active = rand() < 0.97 ? '1' : '0';
  return `${id},${csvCell(first)},${csvCell(last)},${email},${role},${school},${active}\n`;
}

export interface UsersCsvOptions {
  seed?: number;
  /** Every `changeEvery`-th row (i % changeEvery === changeEvery - 1) gets a new e-mail; the rest are the same as without. */
  changeEvery?: number;
}

/** Writes the header and `rows` data rows to `file`; resolves with its size and how many rows were changed. */
export async function writeUsersCsv(file: string, rows: number, o: UsersCsvOptions = {}): Promise<{ bytes: number; changed: number }> {
  const rand = prng(o.seed ?? 20240901);
  let changed = 0;
  const bytes = await writeLines(file, USERS_HEADER, rows, (i) => {
    const change = o.changeEvery !== undefined && i % o.changeEvery === o.changeEvery - 1;
    if (change) changed++;
    return row(i, rand, change);
  });
  return { bytes, changed };
}

export const ROSTER_HEADER = 'STUDENT_ID,FIRST_NAME,LAST_NAME,GRADE,SITE_ID,EMAIL,PASSWORD';
const GRADES = ['K', '1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12'];
const SITES = ['101', '102', '201', '202', '301'];

/**
 * A roster-students roster: strict CAPS headers in the schema's order, date passwords (a birth
 * date, 2010-03-05) unless `withPassword` is false (then the PASSWORD column is left out).
 */
export async function writeRosterCsv(file: string, students: number, withPassword: boolean, seed = 20240902): Promise<number> {
  const rand = prng(seed);
  const header = withPassword ? ROSTER_HEADER : ROSTER_HEADER.replace(/,PASSWORD$/, '');
  return writeLines(file, header, students, (i) => {
    const first = FIRST[Math.floor(rand() * FIRST.length)];
    const last = LAST[Math.floor(rand() * LAST.length)];
    const grade = GRADES[Math.floor(rand() * GRADES.length)];
    const site = SITES[Math.floor(rand() * SITES.length)];
    const born = new Date(Date.UTC(2007 + (12 - Math.min(12, GRADES.indexOf(grade))), Math.floor(rand() * 12), 1 + Math.floor(rand() * 28)));
    const email = `${emailPart(first)}.${emailPart(last)}.${i + 1}@students.springfield-isd.example.org`;
    const cells = [`ST${String(i + 1).padStart(6, '0')}`, csvCell(first), csvCell(last), grade, site, email];
    if (withPassword) cells.push(born.toISOString().slice(0, 10));
    return cells.join(',') + '\n';
  });
}

/**
 * `source`'s data lines in a fixed shuffled order (the same every run), written to `target`: the
 * same users, their ids in no order, as in a district's export sorted by name.
 */
export async function writeShuffledCopy(source: string, target: string, seed = 20240903): Promise<number> {
  const lines = fs.readFileSync(source, 'utf8').split('\n');
  const header = lines[0];
  const rows = lines.slice(1, lines[lines.length - 1] === '' ? -1 : undefined);
  const rand = prng(seed);
  for (let i = rows.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [rows[i], rows[j]] = [rows[j], rows[i]];
  }
  return writeLines(target, header, rows.length, (i) => rows[i] + '\n');
}

/** Streams `header` and `count` lines made by `line(i)` to `file`; resolves with the bytes written. */
async function writeLines(file: string, header: string, count: number, line: (i: number) => string): Promise<number> {
  const out = fs.createWriteStream(file, { highWaterMark: 1 << 20 });
  const failed = new Promise<never>((_, reject) => out.once('error', reject));
  failed.catch(() => undefined); // observed below via Promise.race
  let bytes = 0;
  const write = async (chunk: string): Promise<void> => {
    bytes += Buffer.byteLength(chunk);
    if (!out.write(chunk)) await Promise.race([once(out, 'drain'), failed]);
  };
  try {
    await write(header + '\n');
    for (let i = 0; i < count; ) {
      const end = Math.min(count, i + ROWS_PER_WRITE);
      let chunk = '';
      for (; i < end; i++) chunk += line(i);
      await write(chunk);
    }
    out.end();
    await Promise.race([once(out, 'finish'), failed]);
  } catch (err) {
    out.destroy();
    throw err;
  }
  return bytes;
}
