import { formatNumeric, parseNumeric } from './decimal.js';
import type { Numeric } from './decimal.js';
import { OID } from './oid.js';

/**
 * Reading the text forms the shards print (integers, floats, "char", dates, times, timestamps)
 * and the equality keys GROUP BY and DISTINCT merge on.
 */

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

/** Beyond every real timestamp (PostgreSQL keeps them within about ±2^62 microseconds). */
const TIMESTAMP_INFINITY = 2n ** 80n;
const MICROS_PER_SECOND = 1_000_000;
const MICROS_PER_DAY = 86_400_000_000n;

function identity(text: string): string {
  return text;
}

export function stripTrailingBlanks(text: string): string {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === 0x20) end--;
  return text.slice(0, end);
}

/** The byte of a "char" text form: charout prints bytes >= 128 as a backslash and 3 octal digits, 0 as ''. */
export function charByte(text: string): number {
  if (text === '') return 0;
  if (text.length === 1) return text.charCodeAt(0);
  if (/^\\[0-3][0-7]{2}$/.test(text)) return Number.parseInt(text.slice(1), 8);
  throw new SyntaxError(`unexpected "char" text form: "${text}"`);
}

export function parseInteger(text: string, oid: number): number {
  if (!/^-?\d+$/.test(text)) throw new SyntaxError(`invalid input syntax for type ${oid === OID.oid ? 'oid' : 'integer'}: "${text}"`);
  return Number(text);
}

export function parseInt8(text: string): bigint {
  if (!/^-?\d+$/.test(text)) throw new SyntaxError(`invalid input syntax for type bigint: "${text}"`);
  return BigInt(text);
}

/** float8out/float4out spell the specials 'NaN', 'Infinity', '-Infinity'; Number() reads all of them. */
export function parseFloatText(text: string): number {
  const value = text.trim() === '' ? Number.NaN : Number(text);
  if (Number.isNaN(value) && text !== 'NaN') throw new SyntaxError(`invalid input syntax for type double precision: "${text}"`);
  return value;
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

const DATE_SYNTAX = /^(\d{4,})-(\d{2})-(\d{2})( BC)?$/;
const TIME_SYNTAX = /^(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$/;
const TIMESTAMP_SYNTAX = /^(\d{4,})-(\d{2})-(\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?)(?:([+-])(\d{2})(?::(\d{2}))?(?::(\d{2}))?)?( BC)?$/;

/** Days since 1970-01-01 (proleptic Gregorian), ±Infinity for 'infinity' / '-infinity'. */
export function dateDays(text: string): number {
  if (text === 'infinity') return Infinity;
  if (text === '-infinity') return -Infinity;
  const match = DATE_SYNTAX.exec(text);
  if (match === null) throw new SyntaxError(`unexpected date text form (DateStyle must be ISO): "${text}"`);
  return daysFromCivil(astronomicalYear(match[1]!, match[4]), Number(match[2]), Number(match[3]));
}

export function timeMicros(text: string): number {
  const match = TIME_SYNTAX.exec(text);
  if (match === null) throw new SyntaxError(`unexpected time text form: "${text}"`);
  const [, hours, minutes, seconds, fraction = ''] = match;
  return ((Number(hours) * 60 + Number(minutes)) * 60 + Number(seconds)) * MICROS_PER_SECOND + Number(fraction.padEnd(6, '0'));
}

/**
 * Microseconds since 1970-01-01 00:00 (UTC for timestamptz, whose ISO form carries the offset
 * the shard's TimeZone gave it, down to seconds for historical local mean time).
 */
export function timestampMicros(text: string, withZone: boolean): bigint {
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
