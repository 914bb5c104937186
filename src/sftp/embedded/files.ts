// File-system helpers of the embedded SFTP server: open flags, renames with OpenSSH's semantics,
// attributes, and the `ls -l` line of a directory entry.
import { constants as fsConstants, type Stats } from 'node:fs';
import fs from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import ssh2 from 'ssh2';
import type { Attributes, InputAttributes } from 'ssh2';
import { SftpError, errorCode } from './jail.js';

// ssh2 is CommonJS; under NodeNext ESM only its default export (module.exports) is reliable.
const { OPEN_MODE, STATUS_CODE } = ssh2.utils.sftp;

/** SFTP open flags → open(2) flags, as OpenSSH's sftp-server maps them. */
export function toOpenFlags(pflags: number): number {
  const { O_RDONLY, O_WRONLY, O_RDWR, O_APPEND, O_CREAT, O_TRUNC, O_EXCL } = fsConstants;
  const read = (pflags & OPEN_MODE.READ) !== 0;
  const write = (pflags & OPEN_MODE.WRITE) !== 0;
  let flags = read && write ? O_RDWR : write ? O_WRONLY : O_RDONLY;
  if (pflags & OPEN_MODE.APPEND) flags |= O_APPEND;
  if (pflags & OPEN_MODE.CREAT) flags |= O_CREAT;
  if (pflags & OPEN_MODE.TRUNC) flags |= O_TRUNC;
  if (pflags & OPEN_MODE.EXCL) flags |= O_EXCL;
  return flags;
}

/** Link errors that mean "this file system cannot hard-link here", not "the target exists". */
const LINK_UNSUPPORTED = new Set(['EPERM', 'EOPNOTSUPP', 'ENOTSUP', 'ENOSYS', 'EXDEV', 'EMLINK']);

/**
 * Plain SFTP RENAME must fail when the target exists (the worker relies on it to claim uploads).
 * Like OpenSSH: a regular file is hard-linked to its new name and then unlinked, which fails
 * atomically on an existing target; anything else is checked first and then renamed.
 */
export async function renameWithoutReplacing(from: string, to: string): Promise<void> {
  if ((await fs.lstat(from)).isFile()) {
    try {
      await fs.link(from, to);
    } catch (err) {
      if (!LINK_UNSUPPORTED.has(errorCode(err) ?? '')) throw err;
      return checkThenRename(from, to);
    }
    try {
      await fs.unlink(from);
    } catch (err) {
      await fs.unlink(to).catch(() => {}); // leave things as they were
      throw err;
    }
    return;
  }
  await checkThenRename(from, to);
}

export async function checkThenRename(from: string, to: string): Promise<void> {
  const targetExists = await fs.lstat(to).then(
    () => true,
    () => false,
  );
  if (targetExists) throw new SftpError(STATUS_CODE.FAILURE, 'File exists');
  await fs.rename(from, to);
}

/** What SETSTAT/FSETSTAT change; a FileHandle already has exactly these methods. */
export interface AttributeTarget {
  truncate(size: number): Promise<void>;
  chmod(mode: number): Promise<void>;
  utimes(atime: number, mtime: number): Promise<void>;
}

export function pathTarget(local: string): AttributeTarget {
  return {
    truncate: (size) => fs.truncate(local, size),
    chmod: (mode) => fs.chmod(local, mode),
    utimes: (atime, mtime) => fs.utimes(local, atime, mtime),
  };
}

/**
 * Applies size, permissions and times, in OpenSSH's order. Ownership changes are accepted and
 * ignored: the embedded server has a single virtual user.
 */
export async function applyAttributes(target: AttributeTarget, attrs: Partial<InputAttributes>): Promise<void> {
  if (typeof attrs.size === 'number') await target.truncate(attrs.size);
  if (typeof attrs.mode === 'number') await target.chmod(attrs.mode & 0o7777);
  if (typeof attrs.atime === 'number' && typeof attrs.mtime === 'number') await target.utimes(attrs.atime, attrs.mtime);
}

export function toAttributes(stats: Stats): Attributes {
  return {
    mode: stats.mode,
    uid: stats.uid,
    gid: stats.gid,
    size: stats.size,
    atime: Math.floor(stats.atimeMs / 1000),
    mtime: Math.floor(stats.mtimeMs / 1000),
  };
}

/** Reads `count` SSH strings (uint32 length + UTF-8 bytes) from an extended request's data. */
export function readSshStrings(data: Buffer | undefined, count: number): string[] {
  const strings: string[] = [];
  let offset = 0;
  for (let i = 0; i < count; i++) {
    if (!data || offset + 4 > data.length) throw new SftpError(STATUS_CODE.BAD_MESSAGE, 'Malformed request');
    const length = data.readUInt32BE(offset);
    offset += 4;
    if (offset + length > data.length) throw new SftpError(STATUS_CODE.BAD_MESSAGE, 'Malformed request');
    strings.push(data.toString('utf8', offset, offset + length));
    offset += length;
  }
  return strings;
}

// ---------------------------------------------------------------------------------------------
// `ls -l` style long names (clients such as ssh2-sftp-client read the type and rights from them)
// ---------------------------------------------------------------------------------------------

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const SIX_MONTHS_MS = 182 * 24 * 60 * 60 * 1000;

/** Like OpenSSH (with numeric owners): `-rw-r--r--    1 0        0            1234 Jan  5 12:34 name`. */
export function longname(name: string, stats: Stats): string {
  return [
    // OpenSSH's strmode() ends with a space (where ls marks ACLs), hence two spaces after the mode.
    modeString(stats.mode) + ' ',
    String(stats.nlink).padStart(3),
    String(stats.uid).padEnd(8),
    String(stats.gid).padEnd(8),
    String(stats.size).padStart(8),
    lsDate(stats.mtime),
    name,
  ].join(' ');
}

function modeString(mode: number): string {
  const { S_IFMT, S_IFDIR, S_IFLNK, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK } = fsConstants;
  const types: Record<number, string> = { [S_IFDIR]: 'd', [S_IFLNK]: 'l', [S_IFIFO]: 'p', [S_IFSOCK]: 's', [S_IFCHR]: 'c', [S_IFBLK]: 'b' };
  const type = types[mode & S_IFMT] ?? '-';
  const bits = [...'rwxrwxrwx'].map((letter, i) => (mode & (0o400 >> i) ? letter : '-'));
  if (mode & 0o4000) bits[2] = bits[2] === 'x' ? 's' : 'S';
  if (mode & 0o2000) bits[5] = bits[5] === 'x' ? 's' : 'S';
  if (mode & 0o1000) bits[8] = bits[8] === 'x' ? 't' : 'T';
  return type + bits.join('');
}

/** `%b %e %H:%M` for the last six months, else `%b %e  %Y`, as ls and OpenSSH print. */
function lsDate(date: Date): string {
  const age = Date.now() - date.getTime();
  const day = `${MONTHS[date.getMonth()]} ${String(date.getDate()).padStart(2)}`;
  if (age >= 0 && age < SIX_MONTHS_MS) {
    return `${day} ${String(date.getHours()).padStart(2, '0')}:${String(date.getMinutes()).padStart(2, '0')}`;
  }
  return `${day}  ${date.getFullYear()}`;
}
