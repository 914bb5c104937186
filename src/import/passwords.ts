// Passwords are stored only as salted scrypt hashes in PHC string form:
//   $scrypt$ln=<log2 N>,r=<block size>,p=<parallelism>$<salt, base64>$<hash, base64>
// (base64 without padding, as the PHC format specifies). Hashing runs on libuv's thread pool.
import crypto from 'node:crypto';
import { promisify } from 'node:util';

const scrypt = promisify(crypto.scrypt) as (
  password: string,
  salt: Buffer,
  keylen: number,
  options: crypto.ScryptOptions,
) => Promise<Buffer>;

export const SCRYPT_PARAMS = { ln: 14, r: 8, p: 1 } as const;
const KEY_LENGTH = 32;
const b64 = (b: Buffer): string => b.toString('base64').replace(/=+$/, '');

export async function hashPassword(plain: string, params: { ln: number; r: number; p: number } = SCRYPT_PARAMS): Promise<string> {
  const salt = crypto.randomBytes(16);
  const hash = await scrypt(plain, salt, KEY_LENGTH, scryptOptions(params));
  return `$scrypt$ln=${params.ln},r=${params.r},p=${params.p}$${b64(salt)}$${b64(hash)}`;
}

export async function verifyPassword(plain: string, phc: string): Promise<boolean> {
  const m = /^\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/.exec(phc);
  if (!m) return false;
  const params = { ln: +m[1], r: +m[2], p: +m[3] };
  const expected = Buffer.from(m[5], 'base64');
  const actual = await scrypt(plain, Buffer.from(m[4], 'base64'), expected.length, scryptOptions(params));
  return crypto.timingSafeEqual(actual, expected);
}

function scryptOptions(params: { ln: number; r: number; p: number }): crypto.ScryptOptions {
  const N = 2 ** params.ln;
  return { N, r: params.r, p: params.p, maxmem: 256 * N * params.r + 1024 * 1024 };
}
