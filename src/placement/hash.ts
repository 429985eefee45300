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
 * MurmurHash3 x86 32-bit, seed 0, of the UTF-8 bytes of `key`: bit-identical to
 * `murmurhash.v3(key)` (which encodes with TextEncoder, so lone surrogates hash as U+FFFD).
 * ASCII keys, the common case, are hashed straight from their UTF-16 code units without
 * encoding; `Math.imul` replaces the 16-bit split multiplications of the reference code.
 *
 * The mixing steps are written out here rather than called: in a process that has also hashed
 * non-ASCII, numeric or invalid keys, V8 spends its inlining budget on those (now warm) cold
 * paths, and the hot loop's helpers were left as real calls (0.3-0.5x of a plain MurmurHash3).
 * With nothing to inline on the ASCII path, its speed no longer depends on what else was hashed.
 */
function murmur3OfString(key: string): number {
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
    let k = Math.imul(c0 | (c1 << 8) | (c2 << 16) | (c3 << 24), C1);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, C2);
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const rest = length & 3;
  if (rest !== 0) {
    const c0 = key.charCodeAt(i);
    const c1 = rest > 1 ? key.charCodeAt(i + 1) : 0;
    const c2 = rest > 2 ? key.charCodeAt(i + 2) : 0;
    seen |= c0 | c1 | c2;
    let k = Math.imul(c0 | (c1 << 8) | (c2 << 16), C1);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, C2);
  }
  if (seen > 0x7f) return murmur3OfNonAscii(key);
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** The cold path, kept out of murmur3OfString's body. */
function murmur3OfNonAscii(key: string): number {
  return murmur3OfBytes(utf8BytesOf(key));
}

function mixBlock(h: number, k: number): number {
  h ^= mixTail(k);
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function mixTail(k: number): number {
  k = Math.imul(k, C1);
  k = (k << 15) | (k >>> 17);
  return Math.imul(k, C2);
}

/** Encodes into the shared scratch buffer; the returned view is valid until the next call. */
function utf8BytesOf(key: string): Uint8Array {
  // A UTF-16 code unit never becomes more than 3 UTF-8 bytes.
  if (utf8Scratch.length < key.length * 3) utf8Scratch = new Uint8Array(key.length * 3);
  const { written } = utf8Encoder.encodeInto(key, utf8Scratch);
  return utf8Scratch.subarray(0, written);
}

function murmur3OfBytes(bytes: Uint8Array): number {
  const length = bytes.length;
  const blockEnd = length & ~3;
  let h = 0;
  let i = 0;
  for (; i < blockEnd; i += 4) {
    h = mixBlock(h, bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24));
  }
  const rest = length & 3;
  if (rest !== 0) {
    const b1 = rest > 1 ? bytes[i + 1]! : 0;
    const b2 = rest > 2 ? bytes[i + 2]! : 0;
    h ^= mixTail(bytes[i]! | (b1 << 8) | (b2 << 16));
  }
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
  if (typeof key === 'string' && key.length > 0) return murmur3OfString(key);
  return signedHashOfOtherKey(key);
}

/** Numbers, bigints and invalid keys: out of signedHashKey's body, like murmur3OfNonAscii. */
function signedHashOfOtherKey(key: ShardKey): number {
  return murmur3OfString(keyText(key));
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
