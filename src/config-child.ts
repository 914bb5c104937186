// Loading a large configuration in a child process (config-process.ts), so that the garbage
// of loading it goes away with the child (see CHILD_LOAD_BYTES in config.ts).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from './config-types.js';
import { threadScript } from './paths.js';

/**
 * The child is short-lived and holds the whole file's garbage at once: V8 told to favour memory
 * over speed loads 10,000 tenants in less memory (145 MiB instead of 217 MiB), in 0.1 s more.
 */
const CHILD_FLAGS = ['--optimize-for-size'];

/** What the child writes: the configuration, its problems, or why it failed. */
export type ChildAnswer = { config: Config } | { summary: string; problems: string[] } | { failed: string };

/**
 * Loads the YAML of `file` in a child process with `env` as its environment: `source` is its
 * text, or a descriptor open on the file (the child reads it; this process never holds the text
 * nor a copy for the pipe, 4.5 MB each for 10,000 tenants). Throws when no child could run.
 */
export function parseConfigInChild(source: string | { fd: number; bytes: number }, file: string, env: NodeJS.ProcessEnv): ChildAnswer {
  const answer = scratchFile();
  const bytes = typeof source === 'string' ? source.length : source.bytes;
  try {
    const out = execFileSync(process.execPath, [...CHILD_FLAGS, fileURLToPath(threadScript(import.meta.url, 'config-process.js')), file], {
      ...(typeof source === 'string' ? { input: source } : {}),
      encoding: 'utf8',
      env,
      maxBuffer: 8 * bytes + 1024 * 1024,
      stdio: [typeof source === 'string' ? 'pipe' : source.fd, answer?.fd ?? 'pipe', 'ignore'],
    });
    return readAnswer(answer ? answer.read() : out);
  } finally {
    answer?.close();
  }
}

/**
 * Where the child writes its answer: a file nobody else can open (made private, then unlinked
 * before the child starts), read back in one piece. Collected from a pipe, the answer (some
 * 10 MB for 10,000 tenants) arrived in 64 KiB buffers of the C library's heap, which kept the
 * 12 MiB for the rest of the process: a run of 10,000 tenants carried them to its end. Null
 * where no such file can be made: the pipe, then. (The answer holds no secret the YAML did not:
 * `${VAR}` references are filled in only when used.)
 */
function scratchFile(): { fd: number; read(): string; close(): void } | null {
  let fd: number;
  try {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-config-'));
    try {
      fd = fs.openSync(path.join(dir, 'answer.json'), 'w+', 0o600);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  } catch {
    return null;
  }
  return {
    fd,
    read() {
      // One buffer of the file's size: the allocator maps it on its own and gives it back. Read
      // at explicit offsets: the child's writes left the shared file position at the end, where
      // readFileSync(fd) would start and find nothing.
      const size = fs.fstatSync(fd).size;
      const buf = Buffer.allocUnsafeSlow(size);
      let at = 0;
      while (at < size) {
        const n = fs.readSync(fd, buf, at, size - at, at);
        if (n === 0) break;
        at += n;
      }
      return buf.toString('utf8', 0, at);
    },
    close: () => fs.closeSync(fd),
  };
}

/**
 * The answer as the child writes it: a settings block of a tenant (options, files, notify, sftp,
 * paths) that is the same as an earlier tenant's is written once, and null where it repeats:
 * `same[key][k]` names the tenant whose block tenant k has.
 */
type WrittenAnswer = ChildAnswer & { same?: Record<string, number[]> };

/**
 * The child's side: the JSON of `answer` (the configuration's keys in their order, a block that
 * repeats written once), a tenant at a time in chunks of some 64 KiB. As one string, the 10 MB
 * of 10,000 tenants cost the child 23 MiB more at its peak. Most districts of a fleet have the
 * same options, file names and notify settings, often the same SFTP host and folders: written
 * once, the parent reads less and holds one object for them (readAnswer).
 */
export function writeAnswer(write: (chunk: string) => void, answer: ChildAnswer): void {
  if (!('config' in answer)) {
    write(JSON.stringify(answer));
    return;
  }
  const { tenants, ...rest } = answer.config;
  const firstWith = new Map<string, number>();
  const same: Record<string, number[]> = {};
  // `{"config":{…,"tenants":[]}}` without its last three characters: the tenants follow.
  let chunk = JSON.stringify({ config: { ...rest, tenants: [] } }).slice(0, -3);
  tenants.forEach((tenant, k) => {
    // The tenant's JSON built from each value's, so that a block is stringified once: for the
    // comparison and, the first time, for the answer.
    const members: string[] = [];
    for (const [key, value] of Object.entries(tenant)) {
      let json: string | undefined = JSON.stringify(value);
      if (json === undefined) continue; // as JSON.stringify leaves out an undefined member
      if (value !== null && typeof value === 'object') {
        const id = `${key}\0${json}`;
        const first = firstWith.get(id) ?? k;
        if (first === k) firstWith.set(id, k);
        else json = 'null';
        (same[key] ??= new Array<number>(tenants.length).fill(-1))[k] = first;
      }
      members.push(`${JSON.stringify(key)}:${json}`);
    }
    chunk += `${k === 0 ? '' : ','}{${members.join(',')}}`;
    if (chunk.length >= 64 * 1024) {
      write(chunk);
      chunk = '';
    }
  });
  write(`${chunk}]},"same":${JSON.stringify(same)}}`);
}

/**
 * The parent's side: the answer with each repeated block back in place, as one object for the
 * tenants that have it (frozen, since it is shared).
 */
export function readAnswer(text: string): ChildAnswer {
  const { same, ...answer } = JSON.parse(text) as WrittenAnswer;
  if (!same || !('config' in answer)) return answer;
  const blocks = answer.config.tenants as unknown as Record<string, unknown>[];
  for (const [key, firsts] of Object.entries(same)) {
    firsts.forEach((first, k) => {
      if (first < 0) return;
      if (first === k) deepFreeze(blocks[k][key] as object);
      else blocks[k][key] = blocks[first][key];
    });
  }
  return answer;
}

function deepFreeze(value: object): void {
  for (const inner of Object.values(value)) if (inner !== null && typeof inner === 'object') deepFreeze(inner as object);
  Object.freeze(value);
}
