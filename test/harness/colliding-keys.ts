// Keys whose 32-bit key hashes collide, for tests of what is found by hash (src/store/sqlite/key-hashes.ts).
import { keyHash } from '../../src/store/sqlite/key-hashes.js';

/** Two different keys with the same hash, found by trying. */
export function collidingKeys(): [string, string] {
  const seen = new Map<number, string>();
  for (let i = 0; ; i++) {
    const key = `c${i}`;
    const other = seen.get(keyHash(key));
    if (other !== undefined) return [other, key];
    seen.set(keyHash(key), key);
  }
}
