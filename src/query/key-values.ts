import { ShardRouterError } from '../errors.js';
import { asKind, nodeKind, nodeList } from '../broadcast/plan/ast.js';

/**
 * Where a shard-key value comes from in a statement, and how a value becomes the key the router
 * hashes. The router hashes `String(key)` and the shards hash the column's text form
 * (`bucket_of(col::text)`), so a value must be turned into the text PostgreSQL would store for
 * the column's type: `'042'` into a bigint column is `42`, a UUID is lower-case with hyphens.
 * Only key columns of the types below are routed; any other type is never pinned (the
 * statement runs where an unpinned one would), so no value can be hashed differently from
 * the row it matches.
 */

/** A value in the statement: `$n`, a constant, or a list or array of them. */
export type KeySource =
  | { readonly kind: 'param'; readonly index: number }
  | { readonly kind: 'param-array'; readonly index: number }
  | { readonly kind: 'constant'; readonly value: string | null };

/** How a key column's values are turned into keys. */
export type KeyType = 'text' | 'integer' | 'uuid';

/** The key type of a column from its format_type, or undefined when the router cannot route by it. */
export function keyTypeOf(formatType: string): KeyType | undefined {
  if (formatType === 'text' || formatType === 'character varying' || formatType.startsWith('character varying(')) return 'text';
  if (formatType === 'bigint' || formatType === 'integer' || formatType === 'smallint') return 'integer';
  if (formatType === 'uuid') return 'uuid';
  return undefined;
}

/** The sources of one expression, if it is a value the router can read ($n, a constant, casts of them). */
export function valueSource(node: unknown): KeySource | undefined {
  const cast = asKind(node, 'TypeCast');
  if (cast) return valueSource(cast.arg);
  const param = asKind(node, 'ParamRef');
  if (param) return { kind: 'param', index: (param.number as number) - 1 };
  const constant = asKind(node, 'A_Const');
  if (!constant) return undefined;
  if (constant.isnull === true) return { kind: 'constant', value: null };
  if ('sval' in constant) return { kind: 'constant', value: ((constant.sval as { sval?: string }).sval ?? '') as string };
  if ('ival' in constant) return { kind: 'constant', value: String((constant.ival as { ival?: number }).ival ?? 0) };
  if ('fval' in constant) return { kind: 'constant', value: (constant.fval as { fval: string }).fval };
  return undefined;
}

/** `= ANY(...)`'s right side: an array parameter, or ARRAY[...] of readable values. */
export function arraySources(node: unknown): KeySource[] | undefined {
  const cast = asKind(node, 'TypeCast');
  if (cast) return arraySources(cast.arg);
  const param = asKind(node, 'ParamRef');
  if (param) return [{ kind: 'param-array', index: (param.number as number) - 1 }];
  const array = asKind(node, 'A_ArrayExpr');
  if (!array) return undefined;
  const sources = nodeList(array.elements).map(valueSource);
  return sources.every((source) => source !== undefined) ? (sources as KeySource[]) : undefined;
}

/** `IN (...)`'s list, when every item is readable. */
export function listSources(node: unknown): KeySource[] | undefined {
  if (nodeKind(node) !== 'List') return undefined;
  const sources = nodeList(asKind(node, 'List')!.items).map(valueSource);
  return sources.every((source) => source !== undefined) ? (sources as KeySource[]) : undefined;
}

const INTEGER = /^\s*([+-]?)0*(\d+)\s*$/;
const UUID = /^\{?([0-9a-f]{8})-?([0-9a-f]{4})-?([0-9a-f]{4})-?([0-9a-f]{4})-?([0-9a-f]{12})\}?$/i;

function invalid(value: unknown, type: KeyType): ShardRouterError {
  return new ShardRouterError('INVALID_ARGUMENT', `the shard-key value ${JSON.stringify(String(value))} is not a valid ${type} key`);
}

/** The key of one value for a column of `type`; null for SQL NULL (matches no row). */
export function canonicalKey(value: unknown, type: KeyType): string | null {
  if (value === null || value === undefined) return null;
  switch (type) {
    case 'text':
      if (typeof value === 'string') return value;
      if (typeof value === 'number' || typeof value === 'bigint') return String(value);
      throw invalid(value, type);
    case 'integer': {
      if (typeof value === 'bigint') return String(value);
      if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
      const match = typeof value === 'string' ? INTEGER.exec(value) : null;
      if (!match) throw invalid(value, type);
      return match[2] === '0' || match[2] === '' ? '0' : `${match[1] === '-' ? '-' : ''}${match[2]}`;
    }
    case 'uuid': {
      const match = typeof value === 'string' ? UUID.exec(value) : null;
      if (!match) throw invalid(value, type);
      return match.slice(1).join('-').toLowerCase();
    }
    default: {
      const never: never = type;
      throw new Error(`unknown key type ${String(never)}`);
    }
  }
}

/** Every key the sources name under `params` (NULLs dropped: they match no row). */
export function keysOf(sources: readonly KeySource[], params: readonly unknown[], type: KeyType): string[] {
  const keys: string[] = [];
  for (const source of sources) {
    if (source.kind === 'constant') {
      const key = canonicalKey(source.value, type);
      if (key !== null) keys.push(key);
      continue;
    }
    if (source.index >= params.length) {
      throw new ShardRouterError(
        'INVALID_ARGUMENT',
        `the statement uses $${source.index + 1}, but ${params.length} parameter(s) were given`,
      );
    }
    const value = params[source.index];
    if (source.kind === 'param') {
      const key = canonicalKey(value, type);
      if (key !== null) keys.push(key);
    } else if (value !== null && value !== undefined) {
      if (!Array.isArray(value)) throw new ShardRouterError('INVALID_ARGUMENT', `$${source.index + 1} of = ANY($n) must be an array`);
      for (const item of value) {
        const key = canonicalKey(item, type);
        if (key !== null) keys.push(key);
      }
    }
  }
  return keys;
}
