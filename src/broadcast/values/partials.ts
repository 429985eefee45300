import { addNumeric, divideNumeric, formatNumeric, parseNumeric } from './decimal.js';
import { formatFloat } from './float-text.js';
import { OID } from './oid.js';
import { comparatorFor } from './order.js';
import type { TextOrder } from './order.js';
import { parseFloatText, parseInt8 } from './text-forms.js';

/**
 * Combining the shards' partial aggregates (count, sum, min, max, avg, bool_and, bool_or) into
 * what one server's aggregate would have returned.
 */

/** A value with the type OID it must be reported with (an aggregate's final type). */
export interface TypedText {
  readonly oid: number;
  /** Text form, or null for SQL NULL. */
  readonly value: string | null;
}

/**
 * Combines the shards' `sum(x)` partials. A sum's partial has its final type: int8 (sum of
 * int2/int4, and every count) combined with BigInt, numeric (sum of int8/numeric) with exact
 * decimal addition, float4/float8 in binary floating point like float4pl/float8pl. Nulls (shards
 * without rows) are skipped; all null or none gives null. `undefined` for other types (money,
 * interval, ...), which the caller reports as UNSUPPORTED.
 *
 * @example sumPartials(OID.numeric, ['1.5', null, '2.25']) // '3.75'
 * @throws RangeError('bigint out of range') when an int8 sum leaves int64, like int8pl;
 *   RangeError('value out of range: overflow') when finite floats add up to an infinity, like float8pl.
 */
export function sumPartials(oid: number, values: readonly (string | null)[]): string | null | undefined {
  const present = values.filter((value): value is string => value !== null);
  switch (oid) {
    case OID.int8: {
      if (present.length === 0) return null;
      const total = present.reduce((sum, value) => sum + parseInt8(value), 0n);
      if (total < INT64_MIN || total > INT64_MAX) throw new RangeError('bigint out of range');
      return total.toString();
    }
    case OID.numeric: {
      if (present.length === 0) return null;
      return formatNumeric(present.map(parseNumeric).reduce((sum, value) => addNumeric(sum, value)));
    }
    case OID.float4:
    case OID.float8: {
      if (present.length === 0) return null;
      const single = oid === OID.float4;
      const round = single ? Math.fround : (value: number) => value;
      // Start from the first value, not 0: a sum of one -0 is -0 (sum has no initial value).
      const total = present
        .map((value) => round(parseFloatText(value)))
        .reduce((sum, value) => {
          // Double then fround equals one float4 rounding here (53 >= 2 * 24 + 2 bits).
          const next = round(sum + value);
          if (!Number.isFinite(next) && !Number.isNaN(next) && Number.isFinite(sum) && Number.isFinite(value)) {
            throw new RangeError('value out of range: overflow');
          }
          return next;
        });
      return formatFloat(total, single);
    }
    default:
      return undefined;
  }
}

/**
 * Combines the shards' `count(...)` partials (int8 text) exactly; never null.
 *
 * @example countPartials(['2', '9007199254740993']) // '9007199254740995'
 */
export function countPartials(values: readonly (string | null)[]): string {
  return values.reduce((sum, value) => (value === null ? sum : sum + parseInt8(value)), 0n).toString();
}

/**
 * The least of the shards' `min(x)` partials in the type's btree order; nulls skipped, all null
 * gives null; `undefined` when the type has no JS comparator (the caller then asks the server).
 *
 * @example minPartials(OID.numeric, ['10', '9.5', null], 'codepoint') // '9.5'
 */
export function minPartials(oid: number, values: readonly (string | null)[], textOrder: TextOrder): string | null | undefined {
  return pick(oid, values, textOrder, -1);
}

/**
 * The greatest of the shards' `max(x)` partials; like {@link minPartials}. NaN is the greatest
 * float and numeric, as in PostgreSQL.
 *
 * @example maxPartials(OID.float8, ['1e+100', 'NaN'], 'codepoint') // 'NaN'
 */
export function maxPartials(oid: number, values: readonly (string | null)[], textOrder: TextOrder): string | null | undefined {
  return pick(oid, values, textOrder, 1);
}

/**
 * The final `avg(x)` from the combined shard-side `sum(x)` and `count(x)`, typed and valued as
 * one server's avg. For an int8 or numeric sum (avg of int2/int4/int8/numeric) the result is
 * numeric, `sum / count` by numeric_div, which is what int8_avg, numeric_poly_avg and
 * numeric_avg compute. For a float sum it is float8 `sum / count`; note that avg(float4)
 * accumulates in float8 on a server while sum(float4) is float4, so the shard-side sum should be
 * `sum(x::float8)` for a float4 column. Count 0 gives value null; other sum types `undefined`.
 *
 * @example averageFromPartials(OID.int8, '10', '4') // { oid: 1700, value: '2.5000000000000000' }
 */
export function averageFromPartials(sumOid: number, sum: string | null, count: string | null): TypedText | undefined {
  const rows = count === null ? 0n : parseInt8(count);
  switch (sumOid) {
    case OID.int8:
    case OID.numeric:
      if (rows === 0n || sum === null) return { oid: OID.numeric, value: null };
      return { oid: OID.numeric, value: formatNumeric(divideNumeric(parseNumeric(sum), parseNumeric(rows.toString()))) };
    case OID.float4:
    case OID.float8: {
      if (rows === 0n || sum === null) return { oid: OID.float8, value: null };
      const total = sumOid === OID.float4 ? Math.fround(parseFloatText(sum)) : parseFloatText(sum);
      return { oid: OID.float8, value: formatFloat(total / Number(rows), false) };
    }
    default:
      return undefined;
  }
}

/**
 * Combines `bool_and` partials: 'f' if any shard says 'f', else 't'; nulls skipped, all null gives null.
 *
 * @example boolAndPartials(['t', null, 'f']) // 'f'
 */
export function boolAndPartials(values: readonly (string | null)[]): string | null {
  return combineBooleans(values, 'f');
}

/**
 * Combines `bool_or` partials: 't' if any shard says 't', else 'f'; nulls skipped, all null gives null.
 *
 * @example boolOrPartials(['f', null, 't']) // 't'
 */
export function boolOrPartials(values: readonly (string | null)[]): string | null {
  return combineBooleans(values, 't');
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

function pick(oid: number, values: readonly (string | null)[], textOrder: TextOrder, direction: 1 | -1): string | null | undefined {
  const compare = comparatorFor(oid, textOrder);
  if (compare === undefined) return undefined;
  let best: string | null = null;
  for (const value of values) {
    if (value !== null && (best === null || compare(value, best) * direction > 0)) best = value;
  }
  return best;
}

function combineBooleans(values: readonly (string | null)[], decisive: 't' | 'f'): string | null {
  let result: string | null = null;
  for (const value of values) {
    if (value === null) continue;
    if (value !== 't' && value !== 'f') throw new SyntaxError(`invalid input syntax for type boolean: "${value}"`);
    if (value === decisive) return decisive;
    result = value;
  }
  return result;
}
