import { addNumeric, compareNumeric, divideNumeric, formatNumeric, parseNumeric } from './decimal.js';
import type { Numeric } from './decimal.js';

/**
 * PostgreSQL's value semantics on text forms, per type OID: the order, equality and partial
 * aggregate combination a broadcast merge needs so that its answer equals one server's.
 *
 * Inputs are the text forms exactly as the shards sent them (NULL as JS null). The date/time
 * parsers need DateStyle ISO (they throw on other styles) and the float formatter reproduces
 * extra_float_digits >= 1 (the default since PostgreSQL 12); the shard sessions must use those,
 * and one TimeZone if timestamptz text is passed through unchanged.
 */

/** The built-in type OIDs (pg_type.oid) that this module models. */
export const OID = {
  bool: 16,
  char: 18,
  name: 19,
  int8: 20,
  int2: 21,
  int4: 23,
  text: 25,
  oid: 26,
  float4: 700,
  float8: 701,
  bpchar: 1042,
  varchar: 1043,
  date: 1082,
  time: 1083,
  timestamp: 1114,
  timestamptz: 1184,
  interval: 1186,
  numeric: 1700,
  uuid: 2950,
} as const;

/**
 * How the collation of the text columns being merged orders strings: `'codepoint'` for C,
 * POSIX, C.UTF-8, ucs_basic and pg_c_utf8 (all order a UTF-8 database's text by Unicode code
 * point), `'server'` for any linguistic collation, which only the server can reproduce.
 */
export type TextOrder = 'codepoint' | 'server';

/** A total order on non-null text forms: negative, zero or positive like Array.prototype.sort wants. */
export type TextComparator = (a: string, b: string) => number;

/** A value with the type OID it must be reported with (an aggregate's final type). */
export interface TypedText {
  readonly oid: number;
  /** Text form, or null for SQL NULL. */
  readonly value: string | null;
}

/**
 * A comparator equal to PostgreSQL's default btree order for the type, or `undefined` when JS
 * cannot reproduce it: text-like types under a `'server'` collation, and every type not modelled
 * here (interval, timetz, jsonb, arrays, bytea, ...), for which the caller must ask the server.
 *
 * @example ['10', '9', '-1'].sort(comparatorFor(OID.int4, 'codepoint')) // ['-1', '9', '10']
 */
export function comparatorFor(oid: number, textOrder: TextOrder): TextComparator | undefined {
  switch (oid) {
    case OID.int2:
    case OID.int4:
    case OID.oid:
      return (a, b) => compareNumbers(parseInteger(a, oid), parseInteger(b, oid));
    case OID.int8:
      // Beyond 2^53 a Number would merge neighbours; BigInt is exact.
      return (a, b) => compareBigInts(parseInt8(a), parseInt8(b));
    case OID.numeric:
      return (a, b) => compareNumeric(parseNumeric(a), parseNumeric(b));
    case OID.float4:
    case OID.float8:
      return (a, b) => compareFloats(parseFloatText(a), parseFloatText(b));
    case OID.bool:
    case OID.uuid:
      // 'f' < 't'; uuid_out prints lower-case hex, whose string order is uuid_cmp's byte order.
      return compareAscii;
    case OID.char:
      // "char" compares unsigned bytes whatever the collation (it is not collatable).
      return (a, b) => compareNumbers(charByte(a), charByte(b));
    case OID.text:
    case OID.varchar:
    case OID.name:
      return textOrder === 'codepoint' ? compareCodePoints : undefined;
    case OID.bpchar:
      // bpcharcmp ignores trailing blanks: 'a ' = 'a' and 'a ' < 'a!'.
      return textOrder === 'codepoint' ? (a, b) => compareCodePoints(stripTrailingBlanks(a), stripTrailingBlanks(b)) : undefined;
    case OID.date:
      return (a, b) => compareNumbers(dateDays(a), dateDays(b));
    case OID.time:
      return (a, b) => compareNumbers(timeMicros(a), timeMicros(b));
    case OID.timestamp:
      return (a, b) => compareBigInts(timestampMicros(a, false), timestampMicros(b, false));
    case OID.timestamptz:
      // Shards may print one instant with different offsets; compare instants, not local times.
      return (a, b) => compareBigInts(timestampMicros(a, true), timestampMicros(b, true));
    default:
      return undefined;
  }
}

/**
 * A key such that two non-null values of the type get the same key iff PostgreSQL's `=` holds,
 * for GROUP BY and DISTINCT across shards: numeric `1.0` and `1.00`, float `-0` and `0`, bpchar
 * `'a '` and `'a'`, timestamptz one instant printed with different offsets. For every other type
 * it is the text itself, which is right only where equal values print equally (see
 * {@link hasEqualityKey}); text types assume a deterministic collation.
 *
 * @example equalityKeyFor(OID.numeric)('1.50') === equalityKeyFor(OID.numeric)('1.5') // true
 */
export function equalityKeyFor(oid: number): (text: string) => string {
  switch (oid) {
    case OID.numeric:
      return (text) => formatNumeric(normalizeNumeric(parseNumeric(text)));
    case OID.float8:
      return (text) => floatKey(parseFloatText(text));
    case OID.float4:
      return (text) => floatKey(Math.fround(parseFloatText(text)));
    case OID.bpchar:
      return stripTrailingBlanks;
    case OID.timestamptz:
      return (text) => timestampMicros(text, true).toString();
    default:
      return identity;
  }
}

/**
 * Whether {@link equalityKeyFor} models the type's `=`. False for types where equal values can
 * print differently and the identity key would split a group PostgreSQL keeps whole (interval
 * `'1 day'` = `'24:00:00'`, jsonb `{"a": 1.0}` = `{"a": 1.00}`, arrays of numeric, ...).
 *
 * @example hasEqualityKey(OID.interval) // false
 */
export function hasEqualityKey(oid: number): boolean {
  return !PRINTS_EQUAL_VALUES_DIFFERENTLY.has(oid);
}

/** interval, numeric[], jsonb, json: types whose `=` the identity key would get wrong. */
const PRINTS_EQUAL_VALUES_DIFFERENTLY = new Set<number>([OID.interval, 1231, 3802, 114]);

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
/** Beyond every real timestamp (PostgreSQL keeps them within about ±2^62 microseconds). */
const TIMESTAMP_INFINITY = 2n ** 80n;
const MICROS_PER_SECOND = 1_000_000;
const MICROS_PER_DAY = 86_400_000_000n;

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

function identity(text: string): string {
  return text;
}

function compareNumbers(a: number, b: number): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareBigInts(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareAscii(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Unicode code point order, which is the byte order of UTF-8 (what C collations compare). JS's
 * `<` compares UTF-16 code units, which puts U+E000..U+FFFF after the surrogates of U+10000 and
 * up ('\uFFFF' > '😀'); moving the surrogates above the rest of the BMP fixes exactly that. The
 * first differing unit decides: a common high surrogate leaves two low surrogates, still in order.
 */
function compareCodePoints(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) < codePointRank(y) ? -1 : 1;
  }
  return compareNumbers(a.length, b.length);
}

function codePointRank(unit: number): number {
  if (unit >= 0xe000) return unit - 0x800;
  if (unit >= 0xd800) return unit + 0x2000;
  return unit;
}

function stripTrailingBlanks(text: string): string {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === 0x20) end--;
  return text.slice(0, end);
}

/** The byte of a "char" text form: charout prints bytes >= 128 as a backslash and 3 octal digits, 0 as ''. */
function charByte(text: string): number {
  if (text === '') return 0;
  if (text.length === 1) return text.charCodeAt(0);
  if (/^\\[0-3][0-7]{2}$/.test(text)) return Number.parseInt(text.slice(1), 8);
  throw new SyntaxError(`unexpected "char" text form: "${text}"`);
}

function parseInteger(text: string, oid: number): number {
  if (!/^-?\d+$/.test(text)) throw new SyntaxError(`invalid input syntax for type ${oid === OID.oid ? 'oid' : 'integer'}: "${text}"`);
  return Number(text);
}

function parseInt8(text: string): bigint {
  if (!/^-?\d+$/.test(text)) throw new SyntaxError(`invalid input syntax for type bigint: "${text}"`);
  return BigInt(text);
}

/** float8out/float4out spell the specials 'NaN', 'Infinity', '-Infinity'; Number() reads all of them. */
function parseFloatText(text: string): number {
  const value = text.trim() === '' ? Number.NaN : Number(text);
  if (Number.isNaN(value) && text !== 'NaN') throw new SyntaxError(`invalid input syntax for type double precision: "${text}"`);
  return value;
}

/** float8_cmp_internal: NaN equals NaN and is above everything, including Infinity; -0 = 0. */
function compareFloats(a: number, b: number): number {
  const aNaN = Number.isNaN(a);
  const bNaN = Number.isNaN(b);
  if (aNaN || bNaN) return aNaN === bNaN ? 0 : aNaN ? 1 : -1;
  return compareNumbers(a, b);
}

function floatKey(value: number): string {
  // String(-0) is already '0'; NaN's key is 'NaN', so all NaNs group together as in PostgreSQL.
  return String(value);
}

function normalizeNumeric(value: Numeric): Numeric {
  if (value.kind !== 'finite') return value;
  let { digits, scale } = value;
  while (scale > 0 && digits % 10n === 0n) {
    digits /= 10n;
    scale--;
  }
  return { kind: 'finite', digits, scale };
}

/**
 * Prints a float as float8out/float4out do with extra_float_digits >= 1: the shortest digits that
 * read back to the same value, in fixed notation when the decimal exponent is in [-4, 15) for
 * float8 or [-4, 6) for float4, otherwise as `d.ddde+XX` (two exponent digits at least), and
 * 'NaN', 'Infinity', '-Infinity', '-0' as PostgreSQL spells them.
 */
function formatFloat(value: number, single: boolean): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return 'Infinity';
  if (value === -Infinity) return '-Infinity';
  if (value === 0) return Object.is(value, -0) ? '-0' : '0';
  const sign = value < 0 ? '-' : '';
  const { digits, exponent } = shortestDigits(Math.abs(value), single);
  if (exponent >= -4 && exponent < (single ? 6 : 15)) {
    if (exponent < 0) return `${sign}0.${'0'.repeat(-exponent - 1)}${digits}`;
    if (digits.length <= exponent + 1) return `${sign}${digits}${'0'.repeat(exponent + 1 - digits.length)}`;
    return `${sign}${digits.slice(0, exponent + 1)}.${digits.slice(exponent + 1)}`;
  }
  const mantissa = digits.length === 1 ? digits : `${digits[0]}.${digits.slice(1)}`;
  return `${sign}${mantissa}e${exponent < 0 ? '-' : '+'}${String(Math.abs(exponent)).padStart(2, '0')}`;
}

/**
 * The digits PostgreSQL's Ryu (src/common/d2s.c, f2s.c) prints for a positive finite float: the
 * fewest digits strictly inside the value's rounding interval, and among those the closest.
 * Strictly: PostgreSQL builds Ryu without STRICTLY_SHORTEST, so a decimal exactly halfway to a
 * neighbour is refused even where round-half-even would read it back (JS's String accepts it):
 * the double nearest 5e22 prints as '4.9999999999999996e+22', not '5e+22'.
 */
function shortestDigits(value: number, single: boolean): { digits: string; exponent: number } {
  const interval = roundingInterval(value, single);
  // JS's shortest (bounds accepted) is never longer than PostgreSQL's, so start there.
  const start = single ? 1 : splitExponential(value.toExponential()).digits.length;
  for (let precision = start; precision <= 17; precision++) {
    const nearest = splitExponential(value.toExponential(precision - 1));
    const unscaled = BigInt(nearest.digits.padEnd(precision, '0'));
    const power = nearest.exponent - (precision - 1);
    // Only the decimals next to the value can be the closest one inside the interval.
    let best: { candidate: bigint; distance: bigint } | undefined;
    for (const candidate of [unscaled - 1n, unscaled, unscaled + 1n]) {
      if (candidate <= 0n) continue;
      if (compareExact(candidate, power, interval.low, interval.power2) <= 0 || compareExact(candidate, power, interval.high, interval.power2) >= 0) continue;
      const distance = distanceExact(candidate, power, interval.value, interval.power2);
      // Ties go to the even candidate, as Ryu rounds an exact ...5 remainder.
      if (best === undefined || distance < best.distance || (distance === best.distance && candidate % 2n === 0n)) best = { candidate, distance };
    }
    if (best !== undefined) {
      const text = best.candidate.toString();
      return { digits: text.replace(/0+$/, ''), exponent: power + text.length - 1 };
    }
  }
  throw new Error(`no shortest decimal for ${value}`);
}

/** The value and the bounds halfway to the neighbouring floats, as value|low|high * 2^power2. */
function roundingInterval(value: number, single: boolean): { value: bigint; low: bigint; high: bigint; power2: number } {
  const view = new DataView(new ArrayBuffer(8));
  let mantissa: bigint;
  let exponent: number;
  let fraction: bigint;
  let biased: number;
  if (single) {
    view.setFloat32(0, value);
    const bits = view.getUint32(0);
    biased = (bits >>> 23) & 0xff;
    fraction = BigInt(bits & 0x7fffff);
    mantissa = biased === 0 ? fraction : fraction | (1n << 23n);
    exponent = (biased === 0 ? 1 : biased) - 127 - 23;
  } else {
    view.setFloat64(0, value);
    const bits = view.getBigUint64(0);
    biased = Number((bits >> 52n) & 0x7ffn);
    fraction = bits & ((1n << 52n) - 1n);
    mantissa = biased === 0 ? fraction : fraction | (1n << 52n);
    exponent = (biased === 0 ? 1 : biased) - 1023 - 52;
  }
  // At a power of two the float below is half as far away (Ryu's mmShift).
  const lowerGap = fraction === 0n && biased > 1 ? 1n : 2n;
  return { value: 4n * mantissa, low: 4n * mantissa - lowerGap, high: 4n * mantissa + 2n, power2: exponent - 2 };
}

/** Compares digits * 10^power10 with binary * 2^power2 exactly. */
function compareExact(digits: bigint, power10: number, binary: bigint, power2: number): number {
  const [left, right] = commonScale(digits, power10, binary, power2);
  return left < right ? -1 : left > right ? 1 : 0;
}

/** |digits * 10^power10 - binary * 2^power2|, scaled by a factor that depends only on the powers. */
function distanceExact(digits: bigint, power10: number, binary: bigint, power2: number): bigint {
  const [left, right] = commonScale(digits, power10, binary, power2);
  return left > right ? left - right : right - left;
}

function commonScale(digits: bigint, power10: number, binary: bigint, power2: number): [bigint, bigint] {
  let left = digits;
  let right = binary;
  if (power10 >= 0) left *= 10n ** BigInt(power10);
  else right *= 10n ** BigInt(-power10);
  if (power2 >= 0) right *= 2n ** BigInt(power2);
  else left *= 2n ** BigInt(-power2);
  return [left, right];
}

/** Significant digits (no trailing zeros) and the decimal exponent of the first, from `d.ddde±x`. */
function splitExponential(text: string): { digits: string; exponent: number } {
  const [mantissa = '', exponent = '0'] = text.split('e');
  return { digits: mantissa.replace('.', '').replace(/0+$/, '') || '0', exponent: Number(exponent) };
}

const DATE_SYNTAX = /^(\d{4,})-(\d{2})-(\d{2})( BC)?$/;
const TIME_SYNTAX = /^(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$/;
const TIMESTAMP_SYNTAX = /^(\d{4,})-(\d{2})-(\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?)(?:([+-])(\d{2})(?::(\d{2}))?(?::(\d{2}))?)?( BC)?$/;

/** Days since 1970-01-01 (proleptic Gregorian), ±Infinity for 'infinity' / '-infinity'. */
function dateDays(text: string): number {
  if (text === 'infinity') return Infinity;
  if (text === '-infinity') return -Infinity;
  const match = DATE_SYNTAX.exec(text);
  if (match === null) throw new SyntaxError(`unexpected date text form (DateStyle must be ISO): "${text}"`);
  return daysFromCivil(astronomicalYear(match[1]!, match[4]), Number(match[2]), Number(match[3]));
}

function timeMicros(text: string): number {
  const match = TIME_SYNTAX.exec(text);
  if (match === null) throw new SyntaxError(`unexpected time text form: "${text}"`);
  const [, hours, minutes, seconds, fraction = ''] = match;
  return ((Number(hours) * 60 + Number(minutes)) * 60 + Number(seconds)) * MICROS_PER_SECOND + Number(fraction.padEnd(6, '0'));
}

/**
 * Microseconds since 1970-01-01 00:00 (UTC for timestamptz, whose ISO form carries the offset
 * the shard's TimeZone gave it, down to seconds for historical local mean time).
 */
function timestampMicros(text: string, withZone: boolean): bigint {
  if (text === 'infinity') return TIMESTAMP_INFINITY;
  if (text === '-infinity') return -TIMESTAMP_INFINITY;
  const match = TIMESTAMP_SYNTAX.exec(text);
  if (match === null || (match[5] !== undefined) !== withZone) {
    throw new SyntaxError(`unexpected ${withZone ? 'timestamptz' : 'timestamp'} text form (DateStyle must be ISO): "${text}"`);
  }
  const [, year, month, day, time, offsetSign, offsetHours, offsetMinutes = '0', offsetSeconds = '0', bc] = match;
  const days = daysFromCivil(astronomicalYear(year!, bc), Number(month), Number(day));
  let micros = BigInt(days) * MICROS_PER_DAY + BigInt(timeMicros(time!));
  if (offsetSign !== undefined) {
    // '+05:30' means local time is UTC + 5:30, so the instant is local time - 5:30.
    const offset = (Number(offsetHours) * 60 + Number(offsetMinutes)) * 60 + Number(offsetSeconds);
    micros -= BigInt((offsetSign === '-' ? -offset : offset) * MICROS_PER_SECOND);
  }
  return micros;
}

/** There is no year 0: 1 BC is astronomical year 0, 44 BC is -43. */
function astronomicalYear(year: string, bc: string | undefined): number {
  return bc === undefined ? Number(year) : 1 - Number(year);
}

/** Howard Hinnant's days_from_civil: days since 1970-01-01 in the proleptic Gregorian calendar. */
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const dayOfYear = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const dayOfEra = yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear;
  return era * 146097 + dayOfEra - 719468;
}
