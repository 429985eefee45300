/** Printing floats exactly as PostgreSQL's float8out/float4out do (its Ryu build). */

/**
 * Prints a float as float8out/float4out do with extra_float_digits >= 1: the shortest digits that
 * read back to the same value, in fixed notation when the decimal exponent is in [-4, 15) for
 * float8 or [-4, 6) for float4, otherwise as `d.ddde+XX` (two exponent digits at least), and
 * 'NaN', 'Infinity', '-Infinity', '-0' as PostgreSQL spells them.
 */
export function formatFloat(value: number, single: boolean): string {
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
      if (
        compareExact(candidate, power, interval.low, interval.power2) <= 0 ||
        compareExact(candidate, power, interval.high, interval.power2) >= 0
      )
        continue;
      const distance = distanceExact(candidate, power, interval.value, interval.power2);
      // Ties go to the even candidate, as Ryu rounds an exact ...5 remainder.
      if (best === undefined || distance < best.distance || (distance === best.distance && candidate % 2n === 0n))
        best = { candidate, distance };
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
