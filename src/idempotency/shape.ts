import { createHash } from 'node:crypto';
import { ShardRouterError } from '../errors.js';

/**
 * What an idempotent call is checked against: its idempotency key, the fingerprint of its shape
 * (which calls count as "the same call"), and whether its result can be stored and replayed.
 */

export const MAX_IDEMPOTENCY_KEY_CHARS = 200;

/** The key is 1-200 characters (code points), well-formed UTF-16, without NUL (PostgreSQL text cannot hold it). */
export function checkIdempotencyKey(key: unknown): string {
  const bad = (why: string) => new ShardRouterError('INVALID_ARGUMENT', `idempotencyKey ${why}`);
  if (typeof key !== 'string') throw bad('must be a string');
  // Cheap bound first: 200 code points are at most 400 UTF-16 units.
  const chars = key.length > 2 * MAX_IDEMPOTENCY_KEY_CHARS ? Number.POSITIVE_INFINITY : [...key].length;
  if (chars < 1 || chars > MAX_IDEMPOTENCY_KEY_CHARS) throw bad(`must be 1 to ${MAX_IDEMPOTENCY_KEY_CHARS} characters`);
  if (key.includes('\u0000')) throw bad('must not contain NUL characters');
  if (!isWellFormed(key)) throw bad('must be well-formed Unicode (no lone surrogates)');
  return key;
}

function isWellFormed(text: string): boolean {
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text);
}

/**
 * The fingerprint of a call's shape: SHA-256 over a canonical form of what identifies it (the
 * kind of call, its keys as the router hashes them, the SQL text and the parameters as they go
 * on the wire). The record keeps only the hash, so SQL and parameter values are not copied
 * into the records table.
 */
export function fingerprintOf(shape: readonly unknown[]): string {
  let canonical: string;
  try {
    canonical = JSON.stringify(shape.map(canonicalValue));
  } catch (error) {
    throw new ShardRouterError('INVALID_ARGUMENT', 'the call cannot be fingerprinted (params with a cycle?)', { cause: error });
  }
  return createHash('sha256').update(canonical).digest('hex');
}

/** A JSON form that tells apart values pg would send differently (a Date and its ISO string, a bigint and a number). */
function canonicalValue(value: unknown): unknown {
  if (value === null || value === undefined) return null;
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      return Number.isFinite(value) ? value : { n: String(value) };
    case 'bigint':
      return { i: value.toString() };
    case 'object':
      if (value instanceof Date) return { d: value.getTime() };
      if (value instanceof Uint8Array) return { b: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') };
      if (Array.isArray(value)) return { a: value.map(canonicalValue) };
      return { o: JSON.stringify(value) };
    default:
      return { s: String(value) };
  }
}

/**
 * The stored form of what a transaction's `work` returned: `{"value": ...}` (`{}` for
 * undefined). Refused, before anything commits, unless the value survives a JSON round trip
 * unchanged: a replay must resolve to what the first call resolved to.
 */
export function transactionResultText(value: unknown): string {
  let problem: string | undefined;
  try {
    problem = jsonProblem(value, '$', new Set());
  } catch (error) {
    problem = error instanceof RangeError ? 'it is nested too deeply' : String(error);
  }
  if (problem) {
    throw new ShardRouterError(
      'INVALID_ARGUMENT',
      `an idempotent transaction's result must survive a JSON round trip (it is stored and replayed): ${problem}; nothing was committed`,
    );
  }
  return JSON.stringify({ value });
}

export function parseTransactionResult(text: string): unknown {
  return (JSON.parse(text) as { value?: unknown }).value;
}

/** Why `value` would not come back unchanged from JSON.stringify + JSON.parse, or undefined. */
function jsonProblem(value: unknown, path: string, open: Set<object>): string | undefined {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return undefined;
  if (typeof value === 'number') return Number.isFinite(value) ? undefined : `${path} is ${value}`;
  if (value === undefined) return path === '$' ? undefined : `${path} is undefined`;
  if (typeof value !== 'object') return `${path} is a ${typeof value}`;
  if (open.has(value)) return `${path} is a cycle`;
  const proto = Object.getPrototypeOf(value);
  const isArray = Array.isArray(value);
  if (!isArray && proto !== Object.prototype && proto !== null) return `${path} is a ${proto?.constructor?.name ?? 'non-plain object'}`;
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return `${path} has a toJSON method`;
  if (Object.getOwnPropertySymbols(value).length > 0) return `${path} has symbol keys`;
  open.add(value);
  try {
    if (isArray) {
      for (let i = 0; i < value.length; i++) {
        if (!(i in value)) return `${path}[${i}] is a hole`;
        const inner = jsonProblem(value[i], `${path}[${i}]`, open);
        if (inner) return inner;
      }
      return undefined;
    }
    for (const [name, inner] of Object.entries(value)) {
      const problem = jsonProblem(inner, `${path}.${name}`, open);
      if (problem) return problem;
    }
    return undefined;
  } finally {
    open.delete(value);
  }
}
