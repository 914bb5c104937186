// Passwords are stored only as salted scrypt hashes in PHC string form:
//   $scrypt$ln=<log2 N>,r=<block size>,p=<parallelism>$<salt, base64>$<hash, base64>
// (base64 without padding, as the PHC format specifies). The synchronous forms run on the
// hashing pool's threads (hash-pool.ts); the asynchronous ones are for one-off use.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

const scrypt = promisify(crypto.scrypt) as (password: string, salt: Buffer, keylen: number, options: crypto.ScryptOptions) => Promise<Buffer>;

export const SCRYPT_PARAMS = { ln: 14, r: 8, p: 1 } as const;
const KEY_LENGTH = 32;
const b64 = (b: Buffer): string => b.toString('base64').replace(/=+$/, '');
const PHC = /^\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/;

type Params = { ln: number; r: number; p: number };

const format = (params: Params, salt: Buffer, hash: Buffer) => `$scrypt$ln=${params.ln},r=${params.r},p=${params.p}$${b64(salt)}$${b64(hash)}`;

export async function hashPassword(plain: string, params: Params = SCRYPT_PARAMS): Promise<string> {
  const salt = crypto.randomBytes(16);
  return format(params, salt, await scrypt(plain, salt, KEY_LENGTH, scryptOptions(params)));
}

export function hashPasswordSync(plain: string, params: Params = SCRYPT_PARAMS): string {
  const salt = crypto.randomBytes(16);
  return format(params, salt, crypto.scryptSync(plain, salt, KEY_LENGTH, scryptOptions(params)));
}

export async function verifyPassword(plain: string, phc: string): Promise<boolean> {
  const m = PHC.exec(phc);
  if (!m) return false;
  const expected = Buffer.from(m[5], 'base64');
  const actual = await scrypt(plain, Buffer.from(m[4], 'base64'), expected.length, scryptOptions({ ln: +m[1], r: +m[2], p: +m[3] }));
  return crypto.timingSafeEqual(actual, expected);
}

export function verifyPasswordSync(plain: string, phc: string): boolean {
  const m = PHC.exec(phc);
  if (!m) return false;
  const expected = Buffer.from(m[5], 'base64');
  const actual = crypto.scryptSync(plain, Buffer.from(m[4], 'base64'), expected.length, scryptOptions({ ln: +m[1], r: +m[2], p: +m[3] }));
  return crypto.timingSafeEqual(actual, expected);
}

function scryptOptions(params: Params): crypto.ScryptOptions {
  const N = 2 ** params.ln;
  return { N, r: params.r, p: params.p, maxmem: 256 * N * params.r + 1024 * 1024 };
}

/**
 * The key of the password digests (see rows.ts): from the configuration, else a key file beside
 * a SQLite database, made on first use (0600). Kept outside the database on purpose: the digest
 * is a fast hash, so whoever holds both the database and the key can test guesses quickly; the
 * database alone gives them nothing but scrypt hashes.
 */
export function loadDigestKey(opts: { key?: string; keyFile?: string; defaultFile?: string }): Buffer | null {
  if (opts.key) return Buffer.from(opts.key, 'utf8');
  const file = opts.keyFile ?? opts.defaultFile;
  if (!file) return null;
  try {
    return Buffer.from(fs.readFileSync(file, 'utf8').trim(), 'base64');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || opts.keyFile) throw err;
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const key = crypto.randomBytes(32);
  try {
    fs.writeFileSync(file, key.toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
    return key;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return Buffer.from(fs.readFileSync(file, 'utf8').trim(), 'base64'); // another process made it first
  }
}
