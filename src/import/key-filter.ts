// Finding repeated keys while a file streams, in bounded memory: a Bloom filter of the keys seen
// so far. A key it has seen before is certainly flagged; one it has not may sometimes be flagged
// too (about one in 100 at the planned size), so a flagged row is only a candidate: the store
// confirms candidates against the staged rows once the whole file is in (one pass, no index).
//
// Several parse threads read parts of one file at once and share one filter (a
// SharedArrayBuffer). It is a *blocked* filter: all of a key's bits lie in one 32-bit word, set
// with one atomic OR, so when two threads add the same key at the same moment one of them
// always sees the other's bits. (With bits spread over several words both could see one bit
// still clear and the duplicate would go unflagged.)
import { keyHash } from '../store/sqlite/key-hashes.js';

export class KeyFilter {
  private readonly words: Int32Array;
  private readonly count: number;
  private readonly shared: boolean;
  /** Bits per key, all in one word. */
  private static readonly BITS = 4;
  /**
   * Filter bits per planned key. 8 flags about 1 in 100 new keys (1,000,000 keys: 0.8 % when
   * planned a quarter over, 1.2 % when planned exactly; 16 bits flagged 0.2 %), and every flagged
   * key is confirmed against the staged rows anyway; the filter of a 5,000,000-row file is 6 MiB
   * instead of 12.5, all of it resident.
   */
  private static readonly BITS_PER_KEY = 8;

  /**
   * @param expected how many keys to plan for
   * @param buffer a buffer from KeyFilter.buffer(), shared by every thread reading the same file
   */
  constructor(expected: number, buffer?: SharedArrayBuffer) {
    this.shared = buffer !== undefined;
    this.words = new Int32Array(buffer ?? KeyFilter.buffer(expected, false));
    this.count = this.words.length;
  }

  /** Memory for a filter of `expected` keys (shared between threads unless `shared` is false). */
  static buffer(expected: number, shared = true): SharedArrayBuffer | ArrayBuffer {
    const words = Math.max(256, Math.ceil((expected * KeyFilter.BITS_PER_KEY) / 32));
    return shared ? new SharedArrayBuffer(words * 4) : new ArrayBuffer(words * 4);
  }

  /**
   * Adds `key`; true when it may have been added before (by this thread or another). `hash` is
   * its keyHash(), when the caller has it already (a part file keeps it too).
   */
  add(key: string, hash = keyHash(key)): boolean {
    // Two independent 32-bit hashes (keyHash, FNV-1a, and a multiplicative one): one picks the
    // word, the other the bits within it.
    let h2 = 0x9e3779b9;
    for (let i = 0; i < key.length; i++) h2 = Math.imul(h2 + key.charCodeAt(i), 0x85ebca6b) ^ (h2 >>> 13);
    const word = (hash >>> 0) % this.count;
    let mask = 0;
    for (let k = 0; k < KeyFilter.BITS; k++) mask |= 1 << ((h2 >>> (k * 5)) & 31);
    if (!this.shared) {
      const old = this.words[word];
      this.words[word] = old | mask;
      return (old & mask) === mask;
    }
    // A plain read first (most keys are new, but a repeated key need not write); then one atomic
    // OR, whose old value says whether another thread had set the bits.
    if ((this.words[word] & mask) === mask) return true;
    return (Atomics.or(this.words, word, mask) & mask) === mask;
  }
}
