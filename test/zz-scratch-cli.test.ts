import fs from 'node:fs/promises'; import { execFileSync } from 'node:child_process'; import { randomBytes } from 'node:crypto'; import { startTestSftpServer } from './harness/sftp-server.js';
import { it } from 'vitest';
it('cli', async () => {

const server = await startTestSftpServer('embedded');
const big = randomBytes(5 * 1024 * 1024 + 3);
await fs.writeFile(`${server.root}/big.bin`, big);
await fs.writeFile(`${server.root}/a.txt`, 'a');
await fs.writeFile(`${server.root}/b.txt`, 'b');
const batch = `ls -l\nget big.bin /tmp/scratch/big.out\nput /tmp/scratch/big.out up.bin\nrename a.txt b.txt\nmkdir dd\nls -la\n`;
await fs.writeFile('/tmp/scratch/batch', batch);
try {
  const out = execFileSync('sftp', ['-B', '262144', '-R', '16', '-b', '/tmp/scratch/batch', '-P', String(server.port), '-i', server.privateKeyPath!,
    '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', `${server.username}@127.0.0.1`], { encoding: 'utf8' });
  console.log(out);
} catch (e: any) { console.log('ERR', e.stdout, e.stderr); }
console.log('get ok:', (await fs.readFile('/tmp/scratch/big.out')).equals(big));
console.log('put ok:', (await fs.readFile(`${server.root}/up.bin`)).equals(big));
console.log('b.txt:', await fs.readFile(`${server.root}/b.txt`, 'utf8'));
await server.stop();
}, 60000);
