// Finding repeated keys while a file streams, in bounded memory: a Bloom filter of the keys seen
// so far. A key it has seen before is certainly flagged; one it has not may rarely be flagged
// too (about 1 in 100 at the planned size), so a flagged row is only a candidate: the store
// confirms candidates against the staged rows once the whole file is in (one pass, no index).
export class KeyFilter {
  private readonly bits: Uint32Array;
  private readonly size: number;
  private static readonly HASHES = 7;

  /** @param expected how many keys to plan for (10 bits each) */
  constructor(expected: number) {
    this.size = Math.max(1 << 13, Math.ceil(expected * 10));
    this.bits = new Uint32Array(Math.ceil(this.size / 32));
  }

  /** Adds `key`; true when it may have been added before. */
  add(key: string): boolean {
    // Two independent 32-bit hashes (FNV-1a and a multiplicative one), combined (Kirsch–Mitzenmacher).
    let h1 = 0x811c9dc5;
    let h2 = 0x9e3779b9;
    for (let i = 0; i < key.length; i++) {
      const c = key.charCodeAt(i);
      h1 = Math.imul(h1 ^ c, 0x01000193);
      h2 = Math.imul(h2 + c, 0x85ebca6b) ^ (h2 >>> 13);
    }
    h2 |= 1;
    let seen = true;
    for (let k = 0; k < KeyFilter.HASHES; k++) {
      const bit = ((h1 + Math.imul(k, h2)) >>> 0) % this.size;
      const word = bit >>> 5;
      const mask = 1 << (bit & 31);
      if ((this.bits[word] & mask) === 0) {
        seen = false;
        this.bits[word] |= mask;
      }
    }
    return seen;
  }
}
