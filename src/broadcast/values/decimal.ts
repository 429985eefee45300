/**
 * Exact PostgreSQL `numeric` arithmetic on text forms, for merging shards' partial results.
 *
 * Why not a float or a decimal library: the merged answer must be character for character what
 * one server would print, and that depends on PostgreSQL's display-scale (dscale) rules, not only
 * on the value. A finite numeric is kept as an unscaled BigInt plus its dscale, so `1.0` and
 * `1.00` stay distinct when printed but compare equal, exactly as in PostgreSQL.
 */

/** A PostgreSQL `numeric` value (PostgreSQL 14+ also has the two infinities). */
export type Numeric =
  | {
      readonly kind: 'finite';
      /** The value times 10^scale (so `-12.3400` is -123400n with scale 4). */
      readonly digits: bigint;
      /** Display scale (dscale): digits printed after the point. Never negative. */
      readonly scale: number;
    }
  | { readonly kind: 'nan' }
  | { readonly kind: 'infinity' }
  | { readonly kind: '-infinity' };

/** NUMERIC_MIN_SIG_DIGITS in numeric.c: a quotient gets at least this many significant digits. */
const MIN_SIG_DIGITS = 16;
/** NUMERIC_MAX_DISPLAY_SCALE in numeric.c. */
const MAX_DISPLAY_SCALE = 1000;
/** DEC_DIGITS in numeric.c: decimal digits per base-NBASE (10000) digit. */
const DEC_DIGITS = 4;

type FiniteNumeric = Extract<Numeric, { kind: 'finite' }>;

const NAN: Numeric = Object.freeze({ kind: 'nan' });
const INFINITY: Numeric = Object.freeze({ kind: 'infinity' });
const NEG_INFINITY: Numeric = Object.freeze({ kind: '-infinity' });

// numeric_in's syntax (leading/trailing blanks, optional exponent). PostgreSQL only prints the
// plain form, but accepting the rest costs nothing and lets int2/int4/int8 text convert too.
const NUMBER_SYNTAX = /^\s*([+-])?(?:(\d+)(?:\.(\d*))?|\.(\d+))(?:[eE]([+-]?\d+))?\s*$/;
const SPECIAL_SYNTAX = /^\s*([+-])?(nan|inf|infinity)\s*$/i;

/**
 * Parses a numeric (or integer) text form; the scale is the number of digits after the point as
 * written, which is how numeric_in sets dscale (`'1.500'` keeps scale 3).
 *
 * @example parseNumeric('-12.3400') // { kind: 'finite', digits: -123400n, scale: 4 }
 * @throws SyntaxError for text numeric_in would reject.
 */
export function parseNumeric(text: string): Numeric {
  const match = NUMBER_SYNTAX.exec(text);
  if (match === null) {
    const special = SPECIAL_SYNTAX.exec(text);
    if (special === null) throw new SyntaxError(`invalid input syntax for type numeric: "${text}"`);
    if (special[2]!.toLowerCase() === 'nan') {
      // numeric_in takes no sign on NaN.
      if (special[1] !== undefined) throw new SyntaxError(`invalid input syntax for type numeric: "${text}"`);
      return NAN;
    }
    return special[1] === '-' ? NEG_INFINITY : INFINITY;
  }
  const [, sign, whole, fraction, bareFraction, exponentText] = match;
  const integerPart = whole ?? '';
  const fractionPart = fraction ?? bareFraction ?? '';
  const exponent = exponentText === undefined ? 0 : Number(exponentText);
  let digits = BigInt(integerPart + fractionPart === '' ? '0' : integerPart + fractionPart);
  // The written value is digits * 10^(exponent - fractionLength); dscale never goes below 0.
  let scale = fractionPart.length - exponent;
  if (scale < 0) {
    digits *= 10n ** BigInt(-scale);
    scale = 0;
  }
  return { kind: 'finite', digits: sign === '-' ? -digits : digits, scale };
}

/**
 * Prints a numeric exactly as numeric_out does: `scale` digits after the point, no exponent,
 * and no sign on zero (`'0.00'`, never `'-0.00'`).
 *
 * @example formatNumeric({ kind: 'finite', digits: -5n, scale: 3 }) // '-0.005'
 */
export function formatNumeric(value: Numeric): string {
  switch (value.kind) {
    case 'nan':
      return 'NaN';
    case 'infinity':
      return 'Infinity';
    case '-infinity':
      return '-Infinity';
    case 'finite': {
      const negative = value.digits < 0n;
      const text = (negative ? -value.digits : value.digits).toString().padStart(value.scale + 1, '0');
      const point = text.length - value.scale;
      const body = value.scale === 0 ? text : `${text.slice(0, point)}.${text.slice(point)}`;
      return negative ? `-${body}` : body;
    }
    default:
      return assertNever(value);
  }
}

/**
 * `a + b` as numeric_add: the result's dscale is the larger dscale; NaN absorbs everything;
 * Infinity + -Infinity is NaN; an infinity absorbs any finite value.
 *
 * @example formatNumeric(addNumeric(parseNumeric('1.5'), parseNumeric('2.25'))) // '3.75'
 */
export function addNumeric(a: Numeric, b: Numeric): Numeric {
  if (a.kind === 'nan' || b.kind === 'nan') return NAN;
  if (a.kind === 'finite' && b.kind === 'finite') {
    const scale = Math.max(a.scale, b.scale);
    return { kind: 'finite', digits: rescale(a, scale) + rescale(b, scale), scale };
  }
  if (a.kind === 'finite') return b;
  if (b.kind === 'finite') return a;
  return a.kind === b.kind ? a : NAN;
}

/**
 * PostgreSQL's btree order for numeric (cmp_numerics): -Infinity < finite values < Infinity < NaN,
 * NaN equals NaN, and scale does not matter (`1.0` equals `1.00`). Returns -1, 0 or 1.
 *
 * @example compareNumeric(parseNumeric('NaN'), parseNumeric('Infinity')) // 1
 */
export function compareNumeric(a: Numeric, b: Numeric): -1 | 0 | 1 {
  const rankA = rank(a);
  const rankB = rank(b);
  if (rankA !== rankB) return rankA < rankB ? -1 : 1;
  if (a.kind !== 'finite' || b.kind !== 'finite') return 0;
  const scale = Math.max(a.scale, b.scale);
  const left = rescale(a, scale);
  const right = rescale(b, scale);
  return left === right ? 0 : left < right ? -1 : 1;
}

/**
 * `a / b` exactly as numeric_div: the result scale comes from select_div_scale (at least 16
 * significant digits, never fewer than either input's dscale, at most 1000), and the exact
 * quotient is rounded half away from zero to that scale (div_var with round = true).
 *
 * Special values follow numeric_div_opt_error: NaN if either side is NaN; ±Infinity divided by
 * ±Infinity is NaN; ±Infinity divided by a finite value is an infinity with the combined sign;
 * a finite value divided by ±Infinity is plain `0` (dscale 0, not the computed scale).
 *
 * @example formatNumeric(divideNumeric(parseNumeric('1'), parseNumeric('3'))) // '0.33333333333333333333'
 * @throws RangeError('division by zero') for a finite or infinite value divided by zero (NaN / 0 is NaN).
 */
export function divideNumeric(a: Numeric, b: Numeric): Numeric {
  if (a.kind === 'nan' || b.kind === 'nan') return NAN;
  if (a.kind === 'infinity' || a.kind === '-infinity') {
    if (b.kind !== 'finite') return NAN;
    if (b.digits === 0n) throw new RangeError('division by zero');
    return (a.kind === 'infinity') === b.digits > 0n ? INFINITY : NEG_INFINITY;
  }
  // By here a is finite, so b is finite or infinite: "the numeric type doesn't really do
  // underflow, so let's just return zero" (numeric.c), with dscale 0.
  if (b.kind !== 'finite') return { kind: 'finite', digits: 0n, scale: 0 };
  if (b.digits === 0n) throw new RangeError('division by zero');

  const rscale = selectDivScale(a, b);
  // a / b = (a.digits / 10^a.scale) / (b.digits / 10^b.scale); scaled by 10^rscale that is
  // a.digits * 10^(b.scale + rscale) / (b.digits * 10^a.scale), all exponents >= 0.
  const numerator = a.digits * 10n ** BigInt(b.scale + rscale);
  const denominator = b.digits * 10n ** BigInt(a.scale);
  let quotient = numerator / denominator; // BigInt division truncates toward zero
  const remainder = numerator % denominator;
  if (2n * abs(remainder) >= abs(denominator)) quotient += numerator < 0n === denominator < 0n ? 1n : -1n;
  return { kind: 'finite', digits: quotient, scale: rscale };
}

/**
 * Port of select_div_scale (numeric.c). It reasons in base-10000 digits aligned on the decimal
 * point: `weight` is the index of the first non-zero base-10000 digit (0 for 1..9999, -1 for
 * 0.0001..0.9999) and `firstdigit` is that digit's value; a zero operand has weight 0 and
 * firstdigit 0, exactly as in the C code.
 */
function selectDivScale(a: FiniteNumeric, b: FiniteNumeric): number {
  const [weight1, firstDigit1] = weightAndFirstDigit(a);
  const [weight2, firstDigit2] = weightAndFirstDigit(b);
  // If the first digits are equal the C code cannot tell, and assumes var1 < var2.
  let qweight = weight1 - weight2;
  if (firstDigit1 <= firstDigit2) qweight--;
  let rscale = MIN_SIG_DIGITS - qweight * DEC_DIGITS;
  rscale = Math.max(rscale, a.scale, b.scale, 0);
  return Math.min(rscale, MAX_DISPLAY_SCALE);
}

function weightAndFirstDigit(value: FiniteNumeric): [weight: number, firstDigit: bigint] {
  const magnitude = abs(value.digits);
  if (magnitude === 0n) return [0, 0n];
  // Decimal exponent of the leading digit; its base-10000 group is floor(exponent / 4).
  const leadingExponent = magnitude.toString().length - 1 - value.scale;
  const weight = Math.floor(leadingExponent / DEC_DIGITS);
  // The leading group is the value divided by 10000^weight, truncated (always 1..9999).
  const shift = value.scale + weight * DEC_DIGITS;
  const firstDigit = shift >= 0 ? magnitude / 10n ** BigInt(shift) : magnitude * 10n ** BigInt(-shift);
  return [weight, firstDigit];
}

function rescale(value: FiniteNumeric, scale: number): bigint {
  return value.digits * 10n ** BigInt(scale - value.scale);
}

function rank(value: Numeric): number {
  switch (value.kind) {
    case '-infinity':
      return 0;
    case 'finite':
      return 1;
    case 'infinity':
      return 2;
    case 'nan':
      return 3;
    default:
      return assertNever(value);
  }
}

function abs(value: bigint): bigint {
  return value < 0n ? -value : value;
}

function assertNever(value: never): never {
  throw new Error(`unexpected numeric kind ${String((value as { kind?: unknown }).kind)}`);
}
