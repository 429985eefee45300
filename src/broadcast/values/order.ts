import { compareNumeric, parseNumeric } from './decimal.js';
import { OID } from './oid.js';
import {
  charByte,
  dateDays,
  parseFloatText,
  parseInt8,
  parseInteger,
  stripTrailingBlanks,
  timeMicros,
  timestampMicros,
} from './text-forms.js';

/** PostgreSQL's default btree order on the text forms of the types in oid.ts. */

/**
 * How the collation of the text columns being merged orders strings: `'codepoint'` for C,
 * POSIX, C.UTF-8, ucs_basic and pg_c_utf8 (all order a UTF-8 database's text by Unicode code
 * point), `'server'` for any linguistic collation, which only the server can reproduce.
 */
export type TextOrder = 'codepoint' | 'server';

/** A total order on non-null text forms: negative, zero or positive like Array.prototype.sort wants. */
export type TextComparator = (a: string, b: string) => number;

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
    case OID.int8:
      // On the text itself: no Number or BigInt per comparison (the hot path of an ordered merge).
      return (a, b) => compareIntegerText(a, b, oid);
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
 * Orders two integers in int2/int4/int8/oid output form (`-?[0-9]+`, no leading zeros, no '-0')
 * by their text: the sign, then the number of digits, then the digits. No Number or BigInt per
 * comparison (the hot path of an ordered merge), exact at any size. Any other text takes the
 * parsing path, which orders what it accepts numerically and throws on the rest.
 */
export function compareIntegerText(a: string, b: string, oid: number): number {
  const negativeA = a.charCodeAt(0) === 45;
  const negativeB = b.charCodeAt(0) === 45;
  const startA = negativeA ? 1 : 0;
  const startB = negativeB ? 1 : 0;
  if (!isCanonicalDigits(a, startA) || !isCanonicalDigits(b, startB))
    return compareBigInts(parseWholeNumber(a, oid), parseWholeNumber(b, oid));
  if (negativeA !== negativeB) return negativeA ? -1 : 1;
  const sign = negativeA ? -1 : 1;
  const lengthA = a.length - startA;
  const lengthB = b.length - startB;
  if (lengthA !== lengthB) return lengthA < lengthB ? -sign : sign;
  for (let i = 0; i < lengthA; i++) {
    const x = a.charCodeAt(startA + i);
    const y = b.charCodeAt(startB + i);
    if (x !== y) return x < y ? -sign : sign;
  }
  return 0;
}

/** Whether `text` from `start` on is ASCII digits without a leading zero ('0' alone, unsigned, is fine). */
function isCanonicalDigits(text: string, start: number): boolean {
  const length = text.length;
  if (length <= start) return false;
  if (text.charCodeAt(start) === 48) return length === 1;
  for (let i = start; i < length; i++) {
    const code = text.charCodeAt(i);
    if (code < 48 || code > 57) return false;
  }
  return true;
}

function parseWholeNumber(text: string, oid: number): bigint {
  return oid === OID.int8 ? parseInt8(text) : BigInt(parseInteger(text, oid));
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

/** float8_cmp_internal: NaN equals NaN and is above everything, including Infinity; -0 = 0. */
function compareFloats(a: number, b: number): number {
  const aNaN = Number.isNaN(a);
  const bNaN = Number.isNaN(b);
  if (aNaN || bNaN) return aNaN === bNaN ? 0 : aNaN ? 1 : -1;
  return compareNumbers(a, b);
}
