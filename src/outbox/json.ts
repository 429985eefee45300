import { ShardRouterError } from '../errors.js';

/**
 * Checks that a value is JSON that PostgreSQL's jsonb stores exactly: null, booleans, finite
 * numbers, strings without NUL, arrays and plain objects, no cycles. Anything that JSON.stringify
 * would silently change (undefined, functions, NaN, Dates, class instances, Maps) is refused, so
 * what a consumer receives is what the publisher passed.
 */
export function checkJson(value: unknown, what: string): void {
  const problem = jsonProblem(value, []);
  if (problem) throw new ShardRouterError('INVALID_ARGUMENT', `${what} must be JSON: ${problem}`);
}

const MAX_DEPTH = 100;

/**
 * The first reason `value` is not JSON, or undefined. `ancestors` holds the containers above
 * it (a cycle is one that contains itself; at most MAX_DEPTH deep, so the search is short).
 * Walks by index and key without copying: it runs on every publish.
 */
function jsonProblem(value: unknown, ancestors: object[]): string | undefined {
  if (value === null || typeof value === 'boolean') return undefined;
  if (typeof value === 'number') return Number.isFinite(value) ? undefined : `${value} is not a JSON number`;
  if (typeof value === 'string') return value.includes('\u0000') ? 'strings cannot contain \\u0000 (jsonb refuses it)' : undefined;
  if (typeof value !== 'object') return `a ${typeof value} is not JSON`;
  if (ancestors.length > MAX_DEPTH) return `nested deeper than ${MAX_DEPTH} levels`;
  if (ancestors.includes(value)) return 'it contains a cycle';
  const isArray = Array.isArray(value);
  const proto = Object.getPrototypeOf(value);
  if (!isArray && proto !== Object.prototype && proto !== null)
    return `a ${proto?.constructor?.name ?? 'non-plain'} object is not JSON (pass plain objects and arrays)`;
  ancestors.push(value);
  try {
    if (isArray) {
      // A hole reads as undefined and is refused: JSON.stringify would turn it into null.
      for (let index = 0; index < value.length; index++) {
        const inner = jsonProblem(value[index], ancestors);
        if (inner) return inner;
      }
      return undefined;
    }
    const object = value as Record<string, unknown>;
    for (const name of Object.keys(object)) {
      if (name.includes('\u0000')) return 'keys cannot contain \\u0000';
      const inner = jsonProblem(object[name], ancestors);
      if (inner) return inner;
    }
    return undefined;
  } finally {
    ancestors.pop();
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
