// A realistic samegoal-users roster of any size, streamed to disk: rows are built a few
// thousand at a time and written with back-pressure, so generating 5,000,000 rows holds no more
// than one chunk in memory. Seeded, so the same N gives the same file on every machine.
import fs from 'node:fs';
import { once } from 'node:events';

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

/** mulberry32: small, fast, seeded. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const emailPart = (s: string): string =>
  s
    .normalize('NFD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z]/g, '');

const csvCell = (s: string): string => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);

/** Row `i` (0-based) of the roster: valid for the samegoal-users kind, with a unique user_id. */
function row(i: number, rand: () => number): string {
  const first = FIRST[Math.floor(rand() * FIRST.length)];
  const last = rand() < 0.005 ? SUFFIXED[Math.floor(rand() * SUFFIXED.length)] : LAST[Math.floor(rand() * LAST.length)];
  const r = Math.floor(rand() * 1000);
  const role = ROLES.find(([limit]) => r < limit)![1];
  const student = role === 'student';
  const id = `${student ? 'S' : 'E'}${String(i + 1).padStart(8, '0')}`;
  const domain = student ? DOMAINS[1 + Math.floor(rand() * 2)] : DOMAINS[0];
  const email = `${emailPart(first)}.${emailPart(last)}${i + 1}@${domain}`;
  const school = `SCH${String(100 + Math.floor(rand() * SCHOOLS)).padStart(4, '0')}`;
  const active = rand() < 0.97 ? '1' : '0';
  return `${id},${csvCell(first)},${csvCell(last)},${email},${role},${school},${active}\n`;
}

/** Writes the header and `rows` data rows to `file`; resolves with the file's size in bytes. */
export async function writeUsersCsv(file: string, rows: number, seed = 20240901): Promise<number> {
  const rand = prng(seed);
  const out = fs.createWriteStream(file, { highWaterMark: 1 << 20 });
  const failed = new Promise<never>((_, reject) => out.once('error', reject));
  failed.catch(() => undefined); // observed below via Promise.race
  let bytes = 0;
  const write = async (chunk: string): Promise<void> => {
    bytes += Buffer.byteLength(chunk);
    if (!out.write(chunk)) await Promise.race([once(out, 'drain'), failed]);
  };
  try {
    await write(USERS_HEADER + '\n');
    for (let i = 0; i < rows; ) {
      const end = Math.min(rows, i + ROWS_PER_WRITE);
      let chunk = '';
      for (; i < end; i++) chunk += row(i, rand);
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
