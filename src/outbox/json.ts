import { ShardRouterError } from '../errors.js';

/**
 * Checks that a value is JSON that PostgreSQL's jsonb stores exactly: null, booleans, finite
 * numbers, strings without NUL, arrays and plain objects, no cycles. Anything that JSON.stringify
 * would silently change (undefined, functions, NaN, Dates, class instances, Maps) is refused, so
 * what a consumer receives is what the publisher passed.
 */
export function checkJson(value: unknown, what: string): void {
  const problem = jsonProblem(value, new Set(), 0);
  if (problem) throw new ShardRouterError('INVALID_ARGUMENT', `${what} must be JSON: ${problem}`);
}

const MAX_DEPTH = 100;

function jsonProblem(value: unknown, seen: Set<object>, depth: number): string | undefined {
  if (value === null || typeof value === 'boolean') return undefined;
  if (typeof value === 'number') return Number.isFinite(value) ? undefined : `${value} is not a JSON number`;
  if (typeof value === 'string') return value.includes('\u0000') ? 'strings cannot contain \\u0000 (jsonb refuses it)' : undefined;
  if (typeof value !== 'object') return `a ${typeof value} is not JSON`;
  if (depth > MAX_DEPTH) return `nested deeper than ${MAX_DEPTH} levels`;
  if (seen.has(value)) return 'it contains a cycle';
  const proto = Object.getPrototypeOf(value);
  if (!Array.isArray(value) && proto !== Object.prototype && proto !== null)
    return `a ${proto?.constructor?.name ?? 'non-plain'} object is not JSON (pass plain objects and arrays)`;
  seen.add(value);
  try {
    const entries = Array.isArray(value) ? value.map((item, index) => [String(index), item] as const) : Object.entries(value);
    for (const [name, item] of entries) {
      if (name.includes('\u0000')) return 'keys cannot contain \\u0000';
      const inner = jsonProblem(item, seen, depth + 1);
      if (inner) return inner;
    }
    return undefined;
  } finally {
    seen.delete(value);
  }
}

/** True for a non-null, non-array object. */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Throws INVALID_ARGUMENT for an options object with keys outside `allowed`. */
export function checkOptionKeys(options: unknown, allowed: readonly string[], what: string): Record<string, unknown> {
  if (options === undefined) return {};
  if (!isPlainObject(options)) throw new ShardRouterError('INVALID_ARGUMENT', `${what} must be an object`);
  const unknown = Object.keys(options).filter((name) => !allowed.includes(name));
  if (unknown.length > 0) throw new ShardRouterError('INVALID_ARGUMENT', `${what}: unknown option(s) ${unknown.join(', ')}`);
  return options;
}
