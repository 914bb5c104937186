// The baseline of row 5, run as its own process: a bare ssh2 loop that, for every tenant,
// connects (key auth, host key pinned), opens sftp, reads the upload folder and ends, at most
// CONCURRENCY connections at a time. Prints one JSON line: how many folders were read, failures.
//
//   node dist/bench/poll-baseline.js PARAMS.json
import crypto from 'node:crypto';
import fs from 'node:fs';
import { Client } from 'ssh2';

export interface PollBaselineParams {
  host: string;
  port: number;
  username: string;
  privateKeyPath: string;
  hostKey: string;
  folders: string[];
  concurrency: number;
  timeoutSeconds: number;
}

export interface PollBaselineResult {
  read: number;
  entries: number;
  failures: string[];
}

function readFolder(p: PollBaselineParams, key: Buffer, folder: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    let settled = false;
    const finish = (err: Error | null, n = 0) => {
      if (settled) return;
      settled = true;
      client.end();
      if (err) reject(err);
      else resolve(n);
    };
    client.on('error', (err) => finish(err));
    client.on('ready', () => {
      client.sftp((err, sftp) => {
        if (err) return finish(err);
        sftp.readdir(folder, (e, list) => finish(e ?? null, list?.length ?? 0));
      });
    });
    client.connect({
      host: p.host,
      port: p.port,
      username: p.username,
      privateKey: key,
      readyTimeout: p.timeoutSeconds * 1000,
      hostVerifier: (blob: Buffer) => 'SHA256:' + crypto.createHash('sha256').update(blob).digest('base64').replace(/=+$/, '') === p.hostKey,
    });
  });
}

async function main(): Promise<void> {
  const p = JSON.parse(fs.readFileSync(process.argv[2], 'utf8')) as PollBaselineParams;
  const key = fs.readFileSync(p.privateKeyPath);
  const result: PollBaselineResult = { read: 0, entries: 0, failures: [] };
  let next = 0;
  const lane = async () => {
    while (next < p.folders.length) {
      const folder = p.folders[next++];
      try {
        result.entries += await readFolder(p, key, folder);
        result.read++;
      } catch (err) {
        result.failures.push(`${folder}: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(p.concurrency, p.folders.length) }, lane));
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exitCode = result.failures.length ? 1 : 0;
}

void main();
