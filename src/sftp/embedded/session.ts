// One SFTP session of the embedded server: the request handlers, each answered with the status
// OpenSSH's sftp-server would give.
import { type Dir } from 'node:fs';
import fs from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import ssh2 from 'ssh2';
import type { Attributes, InputAttributes, SFTPWrapper } from 'ssh2';
import { Jail, SftpError, errorCode, isSymlink, permissionDenied, statusFor } from './jail.js';
import { applyAttributes, checkThenRename, longname, pathTarget, readSshStrings, renameWithoutReplacing, toAttributes, toOpenFlags } from './files.js';

// ssh2 is CommonJS; under NodeNext ESM only its default export (module.exports) is reliable.
const { STATUS_CODE } = ssh2.utils.sftp;

/**
 * OpenSSH's sftp-server caps a READ reply a little under its 256 KiB packet limit; clients
 * (ssh2's included) refuse larger packets, and a short read is always allowed.
 */
const MAX_READ_LENGTH = 256 * 1024 - 1024;
/** Directory entries per READDIR reply; keeps each NAME packet far below the packet limit. */
const READDIR_BATCH = 128;

type OpenHandle =
  | { kind: 'file'; file: FileHandle; local: string }
  | { kind: 'dir'; dir: Dir; local: string; dotsPending: boolean };

export class SftpSession {
  private readonly handles = new Map<number, OpenHandle>();
  private nextHandle = 0;
  private requestsInFlight = 0;
  private clientSentEof = false;
  private closed = false;

  constructor(
    private readonly sftp: SFTPWrapper,
    private readonly jail: Jail,
  ) {}

  listen(): void {
    const { sftp } = this;
    const serve = (id: number, handler: () => Promise<void>) => this.reply(id, handler);
    sftp.on('OPEN', (id, filename, flags, attrs) => serve(id, () => this.open(id, filename, flags, attrs)));
    sftp.on('READ', (id, handle, offset, length) => serve(id, () => this.read(id, handle, offset, length)));
    sftp.on('WRITE', (id, handle, offset, data) => serve(id, () => this.write(id, handle, offset, data)));
    sftp.on('CLOSE', (id, handle) => serve(id, () => this.close(id, handle)));
    sftp.on('FSTAT', (id, handle) => serve(id, () => this.fstat(id, handle)));
    sftp.on('FSETSTAT', (id, handle, attrs) => serve(id, () => this.fsetstat(id, handle, attrs)));
    sftp.on('STAT', (id, p) => serve(id, () => this.stat(id, p)));
    sftp.on('LSTAT', (id, p) => serve(id, () => this.lstat(id, p)));
    sftp.on('SETSTAT', (id, p, attrs) => serve(id, () => this.setstat(id, p, attrs)));
    sftp.on('OPENDIR', (id, p) => serve(id, () => this.opendir(id, p)));
    sftp.on('READDIR', (id, handle) => serve(id, () => this.readdir(id, handle)));
    sftp.on('MKDIR', (id, p, attrs) => serve(id, () => this.mkdir(id, p, attrs)));
    sftp.on('RMDIR', (id, p) => serve(id, () => this.rmdir(id, p)));
    sftp.on('REMOVE', (id, p) => serve(id, () => this.remove(id, p)));
    sftp.on('RENAME', (id, from, to) => serve(id, () => this.rename(id, from, to)));
    sftp.on('REALPATH', (id, p) => serve(id, () => this.realpath(id, p)));
    sftp.on('EXTENDED', (id, name, data) => serve(id, () => this.extended(id, name, data)));
    // READLINK and SYMLINK stay unhandled: ssh2 answers OP_UNSUPPORTED (see the file comment).

    // ssh2 reports a malformed packet as 'error' and closes the channel itself; without a
    // listener the error would be thrown and take the process down.
    sftp.on('error', () => {});
    // A client that is done sends EOF and waits for the server to close the channel (OpenSSH's
    // sftp does; its sftp-server exits on EOF). ssh2 leaves that to us.
    sftp.on('end', () => {
      this.clientSentEof = true;
      this.closeChannelWhenIdle();
    });
    sftp.once('close', () => {
      this.closed = true;
      void this.closeAllHandles();
    });
  }

  /** Runs one request; whatever it throws becomes the matching SFTP status reply. */
  private reply(id: number, handler: () => Promise<void>): void {
    this.requestsInFlight++;
    handler()
      .catch((err: unknown) => {
        const { code, message } = statusFor(err);
        this.sftp.status(id, code, message);
      })
      .finally(() => {
        this.requestsInFlight--;
        this.closeChannelWhenIdle();
      });
  }

  /** After the client's EOF, close the channel once every reply has been sent. */
  private closeChannelWhenIdle(): void {
    if (this.clientSentEof && this.requestsInFlight === 0) this.sftp.end();
  }

  private ok(id: number): void {
    this.sftp.status(id, STATUS_CODE.OK);
  }

  // --- files -----------------------------------------------------------------------------------

  private async open(id: number, filename: string, pflags: number, attrs: Partial<InputAttributes>): Promise<void> {
    const local = await this.jail.resolve(filename);
    const mode = typeof attrs.mode === 'number' ? attrs.mode & 0o7777 : 0o666;
    const file = await fs.open(local, toOpenFlags(pflags), mode);
    this.sftp.handle(id, this.addHandle({ kind: 'file', file, local }));
  }

  private async read(id: number, handle: Buffer, offset: number, length: number): Promise<void> {
    const { file } = this.fileHandle(handle);
    const buffer = Buffer.allocUnsafe(Math.min(length, MAX_READ_LENGTH));
    const { bytesRead } = await file.read(buffer, 0, buffer.length, offset);
    if (bytesRead === 0) return this.sftp.status(id, STATUS_CODE.EOF);
    this.sftp.data(id, buffer.subarray(0, bytesRead));
  }

  private async write(id: number, handle: Buffer, offset: number, data: Buffer): Promise<void> {
    const { file } = this.fileHandle(handle);
    // With APPEND the file was opened O_APPEND, so (as in OpenSSH) the offset is ignored.
    for (let written = 0; written < data.length; ) {
      const { bytesWritten } = await file.write(data, written, data.length - written, offset + written);
      written += bytesWritten;
    }
    this.ok(id);
  }

  private async close(id: number, handle: Buffer): Promise<void> {
    const open = this.lookupHandle(handle);
    this.handles.delete(handleNumber(handle));
    await closeHandle(open);
    this.ok(id);
  }

  private async fstat(id: number, handle: Buffer): Promise<void> {
    const open = this.lookupHandle(handle);
    const stats = open.kind === 'file' ? await open.file.stat() : await fs.stat(open.local);
    this.sftp.attrs(id, toAttributes(stats));
  }

  private async fsetstat(id: number, handle: Buffer, attrs: Partial<InputAttributes>): Promise<void> {
    const open = this.lookupHandle(handle);
    await applyAttributes(open.kind === 'file' ? open.file : pathTarget(open.local), attrs);
    this.ok(id);
  }

  // --- paths -----------------------------------------------------------------------------------

  private async stat(id: number, sftpPath: string): Promise<void> {
    this.sftp.attrs(id, toAttributes(await fs.stat(await this.jail.resolve(sftpPath))));
  }

  private async lstat(id: number, sftpPath: string): Promise<void> {
    const local = await this.jail.resolveEntry(sftpPath, { allowRoot: true });
    this.sftp.attrs(id, toAttributes(await fs.lstat(local)));
  }

  private async setstat(id: number, sftpPath: string, attrs: Partial<InputAttributes>): Promise<void> {
    await applyAttributes(pathTarget(await this.jail.resolve(sftpPath)), attrs);
    this.ok(id);
  }

  private async realpath(id: number, sftpPath: string): Promise<void> {
    const resolved = this.jail.toSftpPath(await this.jail.resolve(sftpPath));
    // OpenSSH sends the path as longname too, and empty attributes.
    this.sftp.name(id, [{ filename: resolved, longname: resolved, attrs: {} as Attributes }]);
  }

  private async mkdir(id: number, sftpPath: string, attrs: Partial<InputAttributes>): Promise<void> {
    const mode = typeof attrs.mode === 'number' ? attrs.mode & 0o7777 : 0o777;
    await fs.mkdir(await this.jail.resolveEntry(sftpPath), { mode });
    this.ok(id);
  }

  private async rmdir(id: number, sftpPath: string): Promise<void> {
    await fs.rmdir(await this.jail.resolveEntry(sftpPath));
    this.ok(id);
  }

  private async remove(id: number, sftpPath: string): Promise<void> {
    await fs.unlink(await this.jail.resolveEntry(sftpPath));
    this.ok(id);
  }

  private async rename(id: number, from: string, to: string): Promise<void> {
    await renameWithoutReplacing(await this.jail.resolveEntry(from), await this.jail.resolveEntry(to));
    this.ok(id);
  }

  private async extended(id: number, name: string, data: Buffer | undefined): Promise<void> {
    if (name !== 'posix-rename@openssh.com') return this.sftp.status(id, STATUS_CODE.OP_UNSUPPORTED);
    const [from, to] = readSshStrings(data, 2);
    // Unlike RENAME this replaces an existing target, atomically (rename(2)).
    await fs.rename(await this.jail.resolveEntry(from), await this.jail.resolveEntry(to));
    this.ok(id);
  }

  // --- directories -----------------------------------------------------------------------------

  private async opendir(id: number, sftpPath: string): Promise<void> {
    const local = await this.jail.resolve(sftpPath);
    const dir = await fs.opendir(local, { bufferSize: READDIR_BATCH });
    this.sftp.handle(id, this.addHandle({ kind: 'dir', dir, local, dotsPending: true }));
  }

  private async readdir(id: number, handle: Buffer): Promise<void> {
    const open = this.lookupHandle(handle);
    if (open.kind !== 'dir') throw new SftpError(STATUS_CODE.FAILURE, 'Not a directory handle');
    // Entries can vanish between listing and lstat; keep reading until one survives or the end.
    for (;;) {
      const names = await nextDirectoryNames(open);
      if (names.length === 0) return this.sftp.status(id, STATUS_CODE.EOF);
      const entries = await Promise.all(names.map((name) => this.describeEntry(open.local, name)));
      const present = entries.filter((entry) => entry !== undefined);
      if (present.length > 0) return this.sftp.name(id, present);
    }
  }

  private async describeEntry(dirLocal: string, name: string) {
    // `..` of the root is the root itself, as in a chroot: never describe what lies outside.
    const local = name === '..' && dirLocal === this.jail.root ? dirLocal : path.join(dirLocal, name);
    try {
      const stats = await fs.lstat(local);
      return { filename: name, longname: longname(name, stats), attrs: toAttributes(stats) };
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return undefined;
      throw err;
    }
  }

  // --- handles ---------------------------------------------------------------------------------

  private addHandle(open: OpenHandle): Buffer {
    if (this.closed) {
      // The client left while this file was being opened: nobody will ever CLOSE it.
      void closeHandle(open).catch(() => {});
      throw new SftpError(STATUS_CODE.CONNECTION_LOST, 'Session closed');
    }
    const number = this.nextHandle++ >>> 0;
    this.handles.set(number, open);
    const handle = Buffer.alloc(4);
    handle.writeUInt32BE(number);
    return handle;
  }

  private lookupHandle(handle: Buffer): OpenHandle {
    const open = this.handles.get(handleNumber(handle));
    if (!open) throw new SftpError(STATUS_CODE.FAILURE, 'Invalid handle');
    return open;
  }

  private fileHandle(handle: Buffer): Extract<OpenHandle, { kind: 'file' }> {
    const open = this.lookupHandle(handle);
    if (open.kind !== 'file') throw new SftpError(STATUS_CODE.FAILURE, 'Not a file handle');
    return open;
  }

  /** A client that disconnects without CLOSE must not leak file descriptors. */
  private async closeAllHandles(): Promise<void> {
    const open = [...this.handles.values()];
    this.handles.clear();
    await Promise.allSettled(open.map(closeHandle));
  }
}

function handleNumber(handle: Buffer): number {
  return handle.length === 4 ? handle.readUInt32BE(0) : -1;
}

async function closeHandle(open: OpenHandle): Promise<void> {
  if (open.kind === 'file') await open.file.close();
  else await open.dir.close();
}

async function nextDirectoryNames(open: Extract<OpenHandle, { kind: 'dir' }>): Promise<string[]> {
  // OpenSSH lists `.` and `..` too; ssh2's client filters them out.
  const names: string[] = [];
  if (open.dotsPending) {
    names.push('.', '..');
    open.dotsPending = false;
  }
  while (names.length < READDIR_BATCH) {
    const entry = await open.dir.read();
    if (!entry) break;
    names.push(entry.name);
  }
  return names;
}
