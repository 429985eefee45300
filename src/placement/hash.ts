import { ShardRouterError } from '../errors.js';

/** A shard key. 42, 42n and '42' are the same key: all hash the UTF-8 bytes of `String(key)`. */
export type ShardKey = string | number | bigint;

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

/**
 * Scratch space for the UTF-8 bytes of non-ASCII keys, grown on demand and reused, so hashing
 * never allocates per call. Safe because hashing is synchronous.
 */
let utf8Scratch = new Uint8Array(256);
const utf8Encoder = new TextEncoder();

/**
 * Set by murmur3OfAscii: whether the key it just hashed had a code unit above 0x7f (its hash is
 * then not the key's: its UTF-8 bytes differ). A flag rather than an out-of-range return value
 * (2^32 before): a return that may be a heap number made the hot path work in float64 and cost
 * about 5% of the mixed-process rate. Safe because hashing is synchronous.
 */
let lastWasNotAscii = false;

/**
 * MurmurHash3 x86 32-bit, seed 0, of an ASCII `key` (as a signed int32), straight from its
 * UTF-16 code units without encoding. Sets lastWasNotAscii when a code unit is above 0x7f (its
 * UTF-8 bytes differ: signedHashOfOtherKey hashes those). Bit-identical to `murmurhash.v3(key)`;
 * `Math.imul` replaces the 16-bit split multiplications of the reference code.
 *
 * Kept under V8's inlining limit (460 bytes of bytecode; the constants are literals, the tail
 * is a loop) and free of calls but `finalize`, so that in any process, whatever else it hashed,
 * it is inlined into signedHashKey and from there into the router's routing and the caller's
 * loop. A version that called the UTF-8 path from here carried that path in its optimized code
 * once non-ASCII keys had been seen, and V8 then stopped inlining it: ~0.6x of a plain
 * MurmurHash3 after mixed keys.
 */
function murmur3OfAscii(key: string): number {
  const length = key.length;
  const blockEnd = length & ~3;
  let h = 0;
  let i = 0;
  // Every code unit ORed together: one test at the end instead of one branch per block.
  let seen = 0;
  for (; i < blockEnd; i += 4) {
    const c0 = key.charCodeAt(i);
    const c1 = key.charCodeAt(i + 1);
    const c2 = key.charCodeAt(i + 2);
    const c3 = key.charCodeAt(i + 3);
    seen |= c0 | c1 | c2 | c3;
    let k = Math.imul(c0 | (c1 << 8) | (c2 << 16) | (c3 << 24), 0xcc9e2d51);
    k = Math.imul((k << 15) | (k >>> 17), 0x1b873593);
    h ^= k;
    h = (Math.imul((h << 13) | (h >>> 19), 5) + 0xe6546b64) | 0;
  }
  let k = 0;
  for (let shift = 0; i < length; i++, shift += 8) {
    const c = key.charCodeAt(i);
    seen |= c;
    k |= c << shift;
  }
  lastWasNotAscii = seen > 0x7f;
  // A tail of zero mixes to zero: no test for "is there a tail".
  k = Math.imul(k, 0xcc9e2d51);
  h ^= Math.imul((k << 15) | (k >>> 17), 0x1b873593);
  return finalize(h, length);
}

/**
 * Returns the hash as a *signed* int32: V8 keeps those unboxed, while a uint32 above 2^31 is a
 * heap number when returned from a function too large to inline. Callers apply `>>> 0`.
 */
function finalize(h: number, length: number): number {
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/**
 * The canonical text of a shard key, or an INVALID_KEY error. Runs before any I/O.
 * Accepted: non-empty strings, safe integers (so -0 is "0"), bigints.
 */
export function keyText(key: unknown): string {
  switch (typeof key) {
    case 'string':
      if (key.length > 0) return key;
      break;
    case 'number':
      if (Number.isSafeInteger(key)) return String(key);
      break;
    case 'bigint':
      return key.toString();
  }
  throw new ShardRouterError(
    'INVALID_KEY',
    `invalid shard key (${describeInvalidKey(key)}): expected a non-empty string, a safe integer or a bigint`,
  );
}

function describeInvalidKey(key: unknown): string {
  if (key === null) return 'null';
  if (Array.isArray(key)) return 'an array';
  switch (typeof key) {
    case 'string':
      return 'the empty string';
    case 'number':
      return Number.isInteger(key) ? `unsafe integer ${key}` : `number ${key}`;
    case 'object':
      return 'an object';
    default:
      return typeof key;
  }
}

/**
 * MurmurHash3 x86 32-bit (seed 0) of the UTF-8 bytes of `String(key)`, as an unsigned 32-bit
 * integer. Equal to `murmurhash.v3(String(key))` for every valid key.
 *
 * @example
 * hashKey('user-42') === hashKey('user-42'); // stable across processes and machines
 * hashKey(42) === hashKey(42n) && hashKey(42n) === hashKey('42'); // true
 */
export function hashKey(key: ShardKey): number {
  return signedHashKey(key) >>> 0;
}

/**
 * hashKey as a signed int32 (same bits), for the routing hot path: `(signedHashKey(k) >>> 0) % n`
 * inlines into the caller without boxing.
 * @internal
 */
export function signedHashKey(key: ShardKey): number {
  // Strings skip keyText's switch: this is the hot path.
  if (typeof key === 'string' && key.length > 0) {
    const hash = murmur3OfAscii(key);
    if (!lastWasNotAscii) return hash;
  }
  return signedHashOfOtherKey(key);
}

/**
 * Every other key: numbers and bigints (their text is ASCII), non-ASCII strings (their UTF-8
 * bytes) and invalid keys (INVALID_KEY). One function, written out, on purpose: its bytecode is
 * larger than V8 inlines (460 bytes), so however often it runs, it never becomes part of the
 * optimized code of signedHashKey, which then stays small enough to be inlined into the
 * router's routing and the caller's loop (a function whose optimized code carries a large
 * inlined cold path is not inlined any more: routing fell to ~0.6x of a plain MurmurHash3).
 */
function signedHashOfOtherKey(key: ShardKey): number {
  const text = keyText(key);
  const ascii = murmur3OfAscii(text);
  if (!lastWasNotAscii) return ascii;
  // A UTF-16 code unit never becomes more than 3 UTF-8 bytes.
  if (utf8Scratch.length < text.length * 3) utf8Scratch = new Uint8Array(text.length * 3);
  const bytes = utf8Scratch;
  const length = utf8Encoder.encodeInto(text, bytes).written;
  const blockEnd = length & ~3;
  let h = 0;
  let i = 0;
  for (; i < blockEnd; i += 4) {
    let k = Math.imul(bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24), C1);
    k = Math.imul((k << 15) | (k >>> 17), C2);
    h ^= k;
    h = (Math.imul((h << 13) | (h >>> 19), 5) + 0xe6546b64) | 0;
  }
  const rest = length & 3;
  if (rest !== 0) {
    const b1 = rest > 1 ? bytes[i + 1]! : 0;
    const b2 = rest > 2 ? bytes[i + 2]! : 0;
    let k = Math.imul(bytes[i]! | (b1 << 8) | (b2 << 16), C1);
    k = Math.imul((k << 15) | (k >>> 17), C2);
    h ^= k;
  }
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/**
 * The virtual bucket of a key: `hashKey(key) % bucketCount`.
 *
 * @example
 * bucketOf('user-42', 1024); // an integer in [0, 1024)
 */
export function bucketOf(key: ShardKey, bucketCount: number): number {
  if (!Number.isSafeInteger(bucketCount) || bucketCount < 1) {
    throw new ShardRouterError('INVALID_ARGUMENT', `bucketCount must be a positive integer, got ${String(bucketCount)}`);
  }
  return hashKey(key) % bucketCount;
}
