// A thread of the password hashing pool (hash-pool.ts): hashes, or checks then hashes, a few
// passwords per message, synchronously (this thread has nothing else to do).
import { parentPort } from 'node:worker_threads';
import type { HashItem } from './hash-pool.js';
import { hashPasswordSync, verifyPasswordSync } from './passwords.js';

parentPort!.on('message', (items: HashItem[]) => {
  parentPort!.postMessage(items.map((i) => (i.stored !== null && verifyPasswordSync(i.password, i.stored) ? null : hashPasswordSync(i.password))));
});
