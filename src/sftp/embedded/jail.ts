// Paths in the embedded SFTP server: every request confined to the root, and file-system
// errors mapped to SFTP statuses the way OpenSSH's sftp-server maps errno.
import fs from 'node:fs/promises';
import path from 'node:path';
import { getSystemErrorMap } from 'node:util';
import ssh2 from 'ssh2';

// ssh2 is CommonJS; under NodeNext ESM only its default export (module.exports) is reliable.
const { STATUS_CODE } = ssh2.utils.sftp;

/** An error that already knows which SFTP status it becomes. */
export class SftpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function permissionDenied(): SftpError {
  return new SftpError(STATUS_CODE.PERMISSION_DENIED, 'Permission denied');
}

/** Maps SFTP paths onto local paths inside one directory and refuses any that lead outside it. */
export class Jail {
  private constructor(readonly root: string) {}

  static async open(root: string): Promise<Jail> {
    // Compare against the real path: the root itself may sit behind a symlink (e.g. /tmp on macOS).
    const real = await fs.realpath(root);
    if (!(await fs.stat(real)).isDirectory()) throw new Error(`embedded SFTP server: root ${root} is not a directory`);
    return new Jail(real);
  }

  /** Absolute, normalised SFTP path: relative paths start at `/`, and `..` stops at `/`. */
  static normalize(sftpPath: string): string {
    if (sftpPath.includes('\0')) throw new SftpError(STATUS_CODE.BAD_MESSAGE, 'Invalid path');
    return path.posix.resolve('/', sftpPath);
  }

  /**
   * The local path that `sftpPath` leads to, following symlinks (for open, stat, opendir,
   * setstat, realpath). The target need not exist yet (a file about to be created), but its
   * parent directory must.
   */
  async resolve(sftpPath: string): Promise<string> {
    const local = path.join(this.root, Jail.normalize(sftpPath));
    try {
      return this.inside(await fs.realpath(local));
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err;
    }
    // A dangling symlink would make a create land wherever it points: refuse it.
    if (await isSymlink(local)) throw permissionDenied();
    return this.resolveEntry(sftpPath, { allowRoot: true });
  }

  /**
   * The local path of the directory entry `sftpPath` itself, not following a final symlink (for
   * lstat, remove, mkdir, rmdir, rename). Only lstat may name `/`: nobody removes or renames it.
   */
  async resolveEntry(sftpPath: string, { allowRoot = false } = {}): Promise<string> {
    const virtual = Jail.normalize(sftpPath);
    if (virtual === '/') {
      if (allowRoot) return this.root;
      throw permissionDenied();
    }
    const parent = this.inside(await fs.realpath(path.join(this.root, path.posix.dirname(virtual))));
    return path.join(parent, path.posix.basename(virtual));
  }

  /** The SFTP path of a local path inside the root. */
  toSftpPath(local: string): string {
    return '/' + path.relative(this.root, local).split(path.sep).join('/');
  }

  private inside(realPath: string): string {
    const relative = path.relative(this.root, realPath);
    if (relative === '..' || relative.startsWith('..' + path.sep) || path.isAbsolute(relative)) {
      throw permissionDenied();
    }
    return realPath;
  }
}

export async function isSymlink(local: string): Promise<boolean> {
  try {
    return (await fs.lstat(local)).isSymbolicLink();
  } catch {
    return false;
  }
}

export function errorCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** Status and message for a failed request, mapped the way OpenSSH's sftp-server maps errno. */
export function statusFor(err: unknown): { code: number; message: string } {
  if (err instanceof SftpError) return { code: err.status, message: err.message };
  switch (errorCode(err)) {
    case 'ENOENT':
    case 'ENOTDIR':
    case 'ELOOP':
      return { code: STATUS_CODE.NO_SUCH_FILE, message: 'No such file' };
    case 'EACCES':
    case 'EPERM':
      return { code: STATUS_CODE.PERMISSION_DENIED, message: 'Permission denied' };
    default: {
      // Say what went wrong (e.g. "directory not empty") without the local path in err.message.
      const errno = (err as NodeJS.ErrnoException | undefined)?.errno;
      const description = errno === undefined ? undefined : getSystemErrorMap().get(errno)?.[1];
      return { code: STATUS_CODE.FAILURE, message: description ?? 'Failure' };
    }
  }
}
