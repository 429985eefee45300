import { describe, expect, it } from 'vitest';
import { addNumeric, compareNumeric, divideNumeric, formatNumeric, parseNumeric } from '../../src/broadcast/values/decimal.js';
import { OID } from '../../src/broadcast/values/oid.js';
import { comparatorFor } from '../../src/broadcast/values/order.js';
import {
  averageFromPartials,
  boolAndPartials,
  boolOrPartials,
  countPartials,
  maxPartials,
  minPartials,
  sumPartials,
} from '../../src/broadcast/values/partials.js';
import { equalityKeyFor, hasEqualityKey } from '../../src/broadcast/values/text-forms.js';

const n = parseNumeric;
const add = (a: string, b: string) => formatNumeric(addNumeric(n(a), n(b)));
const div = (a: string, b: string) => formatNumeric(divideNumeric(n(a), n(b)));

function sorted(oid: number, values: string[]): string[] {
  const compare = comparatorFor(oid, 'codepoint');
  if (compare === undefined) throw new Error(`no comparator for ${oid}`);
  return [...values].sort(compare);
}

describe('numeric text forms', () => {
  it('parses the scale as written, and integer forms', () => {
    expect(n('-12.3400')).toEqual({ kind: 'finite', digits: -123400n, scale: 4 });
    expect(n('0')).toEqual({ kind: 'finite', digits: 0n, scale: 0 });
    expect(n('0.000')).toEqual({ kind: 'finite', digits: 0n, scale: 3 });
    expect(n('-9223372036854775808')).toEqual({ kind: 'finite', digits: -9223372036854775808n, scale: 0 });
    expect(n('NaN')).toEqual({ kind: 'nan' });
    expect(n('Infinity')).toEqual({ kind: 'infinity' });
    expect(n('-Infinity')).toEqual({ kind: '-infinity' });
    // numeric_in's exponent form: dscale = fraction digits - exponent, never below 0.
    expect(formatNumeric(n('1.5e3'))).toBe('1500');
    expect(formatNumeric(n('1.5e-3'))).toBe('0.0015');
  });

  it('rejects what numeric_in rejects', () => {
    for (const bad of ['', 'abc', '1.2.3', '-NaN', '1e', '--1']) expect(() => n(bad), bad).toThrow(SyntaxError);
  });

  it('prints like numeric_out: dscale digits, no sign on zero', () => {
    for (const text of ['-12.3400', '0', '0.00', '-0.005', '123456789012345678901234567890.123', 'NaN', 'Infinity', '-Infinity']) {
      expect(formatNumeric(n(text))).toBe(text);
    }
    expect(formatNumeric(n('-0.00'))).toBe('0.00');
    expect(formatNumeric({ kind: 'finite', digits: -5n, scale: 3 })).toBe('-0.005');
  });

  it('adds with the larger dscale and PostgreSQL special values', () => {
    expect(add('1.5', '2.25')).toBe('3.75');
    expect(add('1.10', '-1.1')).toBe('0.00');
    expect(add('99999999999999999999.99', '0.01')).toBe('100000000000000000000.00');
    expect(add('NaN', '1')).toBe('NaN');
    expect(add('Infinity', 'NaN')).toBe('NaN');
    expect(add('Infinity', '-Infinity')).toBe('NaN');
    expect(add('Infinity', '-5.5')).toBe('Infinity');
    expect(add('-3', '-Infinity')).toBe('-Infinity');
    expect(add('-Infinity', '-Infinity')).toBe('-Infinity');
  });

  it('compares in btree order: -Infinity < finite < Infinity < NaN, scale ignored', () => {
    expect(compareNumeric(n('1.0'), n('1.00'))).toBe(0);
    expect(compareNumeric(n('NaN'), n('NaN'))).toBe(0);
    expect(compareNumeric(n('NaN'), n('Infinity'))).toBe(1);
    expect(compareNumeric(n('-Infinity'), n(`-1${'0'.repeat(500)}`))).toBe(-1);
    expect(compareNumeric(n('-0.5'), n('0'))).toBe(-1);
    expect(compareNumeric(n('0.10'), n('0.09999'))).toBe(1);
  });

  it('divides as numeric_div: select_div_scale, then round half away from zero', () => {
    // Equal-or-smaller first base-10000 digit: qweight = -1, rscale = 16 + 4.
    expect(div('1', '3')).toBe('0.33333333333333333333');
    expect(div('2', '3')).toBe('0.66666666666666666667');
    expect(div('-2', '3')).toBe('-0.66666666666666666667');
    expect(div('9999', '9999')).toBe('1.00000000000000000000');
    // firstdigit 10 > 4: qweight 0, rscale 16.
    expect(div('10', '4')).toBe('2.5000000000000000');
    // A zero dividend has weight 0 and firstdigit 0: 0 / 5 gets qweight -1, rscale 20.
    expect(div('0', '5')).toBe('0.00000000000000000000');
    // 0.001 is base-10000 digit 10 at weight -1: qweight 0 - (-1) - 1 = 0, rscale 16.
    expect(div('0', '0.001')).toBe('0.0000000000000000');
    // Leading group 3 (weight 4) over 2: qweight 4, rscale 0; .5 rounds away from zero.
    expect(div('30000000000000001', '2')).toBe('15000000000000001');
    expect(div('-30000000000000001', '2')).toBe('-15000000000000001');
    // Input dscale wins over the 16 significant digits.
    expect(div('1.0000000000000000000000000', '7')).toBe('0.1428571428571428571428571');
    expect(div('123456789.123', '0.0007')).toBe('176366841604.28571429');
    // The scale is capped at 1000, even below an input's dscale.
    expect(div(`0.${'0'.repeat(1999)}1`, '1')).toBe(`0.${'0'.repeat(1000)}`);
  });

  it('divides special values as numeric_div_opt_error', () => {
    expect(div('NaN', '0')).toBe('NaN');
    expect(div('5', 'NaN')).toBe('NaN');
    expect(div('Infinity', '-2')).toBe('-Infinity');
    expect(div('-Infinity', '-2')).toBe('Infinity');
    expect(div('Infinity', 'Infinity')).toBe('NaN');
    expect(div('-Infinity', 'Infinity')).toBe('NaN');
    expect(div('5.000', 'Infinity')).toBe('0');
    expect(div('-5', '-Infinity')).toBe('0');
    expect(() => div('5', '0')).toThrow(new RangeError('division by zero'));
    expect(() => div('5', '0.00')).toThrow(RangeError);
    expect(() => div('Infinity', '0')).toThrow(new RangeError('division by zero'));
  });
});

describe('comparatorFor', () => {
  it('orders integers numerically, int8 beyond 2^53 exactly', () => {
    expect(sorted(OID.int4, ['10', '9', '-1', '-2147483648'])).toEqual(['-2147483648', '-1', '9', '10']);
    expect(sorted(OID.oid, ['4294967295', '26'])).toEqual(['26', '4294967295']);
    const int8 = comparatorFor(OID.int8, 'codepoint')!;
    expect(int8('9007199254740993', '9007199254740992')).toBeGreaterThan(0);
    expect(int8('-9223372036854775808', '9223372036854775807')).toBeLessThan(0);
  });

  it('orders integer text like the numbers it spells, signs and lengths mixed, and rejects what is no integer', () => {
    const values = [
      '0',
      '-0',
      '007',
      '-9223372036854775808',
      '9223372036854775807',
      '-1',
      '1',
      '-10',
      '10',
      '99',
      '-99',
      '100',
      '123456789012',
    ];
    for (const oid of [OID.int2, OID.int4, OID.int8, OID.oid]) {
      const compare = comparatorFor(oid, 'codepoint')!;
      for (const a of values) {
        for (const b of values) {
          const expected = BigInt(a) < BigInt(b) ? -1 : BigInt(a) > BigInt(b) ? 1 : 0;
          expect(Math.sign(compare(a, b)), `${a} vs ${b}`).toBe(expected);
        }
      }
      for (const bad of ['', '-', '1.5', ' 1', '1e3', '+1', 'x']) expect(() => compare(bad, '1'), bad).toThrow(SyntaxError);
    }
  });

  it('orders numeric with NaN greatest and 1.0 = 1.00', () => {
    expect(sorted(OID.numeric, ['NaN', 'Infinity', '1.00', '-Infinity', '-5', '0'])).toEqual([
      '-Infinity',
      '-5',
      '0',
      '1.00',
      'Infinity',
      'NaN',
    ]);
    expect(comparatorFor(OID.numeric, 'codepoint')!('1.0', '1.00')).toBe(0);
  });

  it('orders floats like float8_cmp_internal', () => {
    for (const oid of [OID.float4, OID.float8]) {
      expect(sorted(oid, ['NaN', 'Infinity', '-Infinity', '1e+100', '0', '-1e-05', '2.5'])).toEqual([
        '-Infinity',
        '-1e-05',
        '0',
        '2.5',
        '1e+100',
        'Infinity',
        'NaN',
      ]);
      const compare = comparatorFor(oid, 'codepoint')!;
      expect(compare('-0', '0')).toBe(0);
      expect(compare('NaN', 'NaN')).toBe(0);
      expect(compare('NaN', 'Infinity')).toBeGreaterThan(0);
    }
  });

  it("orders bool 'f' < 't', uuid as lower-case hex, \"char\" by unsigned byte", () => {
    expect(sorted(OID.bool, ['t', 'f'])).toEqual(['f', 't']);
    expect(sorted(OID.uuid, ['ffffffff-0000-0000-0000-000000000000', '0a000000-0000-0000-0000-000000000000'])).toEqual([
      '0a000000-0000-0000-0000-000000000000',
      'ffffffff-0000-0000-0000-000000000000',
    ]);
    // charout prints bytes >= 128 as octal escapes and byte 0 as ''.
    expect(sorted(OID.char, ['\\303', 'z', '', '\\', 'A'])).toEqual(['', 'A', '\\', 'z', '\\303']);
    // Not collatable: the same order under any collation.
    expect(comparatorFor(OID.char, 'server')).toBeDefined();
  });

  it('orders text by code point under a C collation, not by UTF-16 unit', () => {
    // Plain JS gets this one wrong: '\uFFFF' is one unit 0xFFFF, '😀' starts with 0xD83D.
    expect('\uFFFF' < '😀').toBe(false);
    for (const oid of [OID.text, OID.varchar, OID.name]) {
      const compare = comparatorFor(oid, 'codepoint')!;
      expect(compare('\uFFFF', '😀')).toBeLessThan(0);
      expect(compare('😀', '😁')).toBeLessThan(0);
      expect(compare('\uE000', '\uD7FF')).toBeGreaterThan(0);
      expect(sorted(oid, ['b', 'ab', 'a', '', 'Z', 'é'])).toEqual(['', 'Z', 'a', 'ab', 'b', 'é']);
      expect(comparatorFor(oid, 'server')).toBeUndefined();
    }
  });

  it('ignores trailing blanks for bpchar (only blanks)', () => {
    const compare = comparatorFor(OID.bpchar, 'codepoint')!;
    expect(compare('a  ', 'a')).toBe(0);
    // 'a   ' is 'a', which precedes 'a\t'; comparing the padded text would say ' ' > '\t'.
    expect(compare('a   ', 'a\t')).toBeLessThan(0);
    expect(comparatorFor(OID.bpchar, 'server')).toBeUndefined();
  });

  it('orders dates across BC, AD and beyond 9999, with infinities at the ends', () => {
    expect(
      sorted(OID.date, [
        '2024-01-31',
        'infinity',
        '0044-03-15 BC',
        '10000-01-01',
        '0001-01-01',
        '-infinity',
        '0001-12-31 BC',
        '2024-02-29',
      ]),
    ).toEqual(['-infinity', '0044-03-15 BC', '0001-12-31 BC', '0001-01-01', '2024-01-31', '2024-02-29', '10000-01-01', 'infinity']);
  });

  it('orders timestamps with fractions and BC', () => {
    expect(
      sorted(OID.timestamp, [
        '2024-01-31 13:45:01',
        '2024-01-31 13:45:00.123456',
        '2024-01-31 13:45:00',
        '0001-01-01 00:00:00 BC',
        '0002-12-31 23:59:59.5 BC',
        'infinity',
        '-infinity',
      ]),
    ).toEqual([
      '-infinity',
      '0002-12-31 23:59:59.5 BC',
      '0001-01-01 00:00:00 BC',
      '2024-01-31 13:45:00',
      '2024-01-31 13:45:00.123456',
      '2024-01-31 13:45:01',
      'infinity',
    ]);
    expect(() => comparatorFor(OID.timestamp, 'codepoint')!('2024-01-31 13:45:00+00', '2024-01-31 13:45:00')).toThrow(SyntaxError);
  });

  it('compares timestamptz instants, whatever offset each shard printed', () => {
    const compare = comparatorFor(OID.timestamptz, 'codepoint')!;
    expect(compare('2024-01-31 13:45:00+00', '2024-01-31 19:15:00+05:30')).toBe(0);
    expect(compare('2024-01-31 13:45:00+00', '2024-01-31 10:45:00-03')).toBe(0);
    expect(compare('1900-01-01 00:00:00-03:00:45', '1900-01-01 03:00:45+00')).toBe(0);
    expect(compare('2024-01-31 14:00:00+01', '2024-01-31 13:30:00+00')).toBeLessThan(0);
    expect(compare('0001-01-01 00:00:00+00 BC', '0001-01-01 00:00:00+00')).toBeLessThan(0);
    expect(compare('infinity', '294276-12-31 23:59:59.999999+00')).toBeGreaterThan(0);
  });

  it('orders time up to 24:00:00', () => {
    expect(sorted(OID.time, ['24:00:00', '00:00:00', '23:59:59.999999', '12:00:00.5'])).toEqual([
      '00:00:00',
      '12:00:00.5',
      '23:59:59.999999',
      '24:00:00',
    ]);
  });

  it('has no comparator for types it does not model', () => {
    for (const oid of [OID.interval, 1266 /* timetz */, 3802 /* jsonb */, 17 /* bytea */, 1007 /* int4[] */]) {
      expect(comparatorFor(oid, 'codepoint')).toBeUndefined();
    }
  });
});

describe('equalityKeyFor', () => {
  const same = (oid: number, a: string, b: string) => equalityKeyFor(oid)(a) === equalityKeyFor(oid)(b);

  it("matches PostgreSQL's = where equal values print differently", () => {
    expect(same(OID.numeric, '1.0', '1.00')).toBe(true);
    expect(same(OID.numeric, '1', '1.000')).toBe(true);
    expect(same(OID.numeric, '0.00', '0')).toBe(true);
    expect(same(OID.numeric, '10', '1')).toBe(false);
    expect(same(OID.numeric, 'NaN', 'NaN')).toBe(true);
    expect(same(OID.numeric, 'Infinity', '-Infinity')).toBe(false);
    expect(same(OID.float8, '-0', '0')).toBe(true);
    expect(same(OID.float4, '-0', '0')).toBe(true);
    expect(same(OID.float8, 'NaN', 'NaN')).toBe(true);
    expect(same(OID.bpchar, 'a  ', 'a')).toBe(true);
    expect(same(OID.bpchar, 'a\t', 'a')).toBe(false);
    expect(same(OID.timestamptz, '2024-01-31 13:45:00+00', '2024-01-31 19:15:00+05:30')).toBe(true);
    expect(same(OID.timestamptz, '2024-01-31 13:45:00+00', '2024-01-31 13:45:00+01')).toBe(false);
  });

  it('is the text itself where text equality is exact', () => {
    expect(equalityKeyFor(OID.text)('a ')).toBe('a ');
    expect(same(OID.text, 'a ', 'a')).toBe(false);
    expect(same(OID.int8, '9007199254740993', '9007199254740992')).toBe(false);
    expect(hasEqualityKey(OID.timestamptz)).toBe(true);
    expect(hasEqualityKey(OID.interval)).toBe(false);
    expect(hasEqualityKey(3802)).toBe(false);
  });
});

describe('combining partial aggregates', () => {
  it('sums int8 exactly and fails like int8pl outside int64', () => {
    expect(sumPartials(OID.int8, ['1', null, '9223372036854775806'])).toBe('9223372036854775807');
    expect(sumPartials(OID.int8, ['9007199254740993', '1'])).toBe('9007199254740994');
    expect(() => sumPartials(OID.int8, ['9223372036854775807', '1'])).toThrow(new RangeError('bigint out of range'));
    expect(() => sumPartials(OID.int8, ['-9223372036854775808', '-1'])).toThrow(RangeError);
    expect(sumPartials(OID.int8, [null, null])).toBeNull();
    expect(sumPartials(OID.int8, [])).toBeNull();
  });

  it('sums numeric exactly with the largest dscale', () => {
    expect(sumPartials(OID.numeric, ['1.5', '2.25', null])).toBe('3.75');
    expect(sumPartials(OID.numeric, ['1.10', '-1.1'])).toBe('0.00');
    expect(sumPartials(OID.numeric, ['1', 'Infinity'])).toBe('Infinity');
    expect(sumPartials(OID.numeric, ['Infinity', '-Infinity'])).toBe('NaN');
    expect(sumPartials(OID.numeric, [null])).toBeNull();
  });

  it('sums floats in their own precision, spelled as PostgreSQL prints them', () => {
    expect(sumPartials(OID.float8, ['0.1', '0.2'])).toBe('0.30000000000000004');
    // In float4, 0.1 + 0.2 rounds to the float nearest 0.3.
    expect(sumPartials(OID.float4, ['0.1', '0.2'])).toBe('0.3');
    // Fixed notation only for decimal exponents -4..14 (float8) and -4..5 (float4).
    expect(sumPartials(OID.float8, ['1e+14', '1'])).toBe('100000000000001');
    expect(sumPartials(OID.float8, ['1e+15', '1'])).toBe('1.000000000000001e+15');
    expect(sumPartials(OID.float8, ['5e+14', '5e+14'])).toBe('1e+15');
    expect(sumPartials(OID.float8, ['0.00001'])).toBe('1e-05');
    expect(sumPartials(OID.float4, ['1000000'])).toBe('1e+06');
    expect(sumPartials(OID.float4, ['16777216', '1'])).toBe('1.6777216e+07');
    // PostgreSQL's Ryu refuses a decimal exactly halfway to the next float (JS's String takes it).
    expect(String(5e22)).toBe('5e+22');
    expect(sumPartials(OID.float8, ['5e+22'])).toBe('4.9999999999999996e+22');
    // An exact tie between two 17-digit decimals goes to the even one.
    expect(sumPartials(OID.float8, ['-1275625311142261.25'])).toBe('-1.2756253111422612e+15');
    // Below a power of two the neighbouring float is twice as close: 2^90 as float4.
    expect(sumPartials(OID.float4, [String(2 ** 90)])).toBe('1.2379401e+27');
    expect(sumPartials(OID.float8, ['-0'])).toBe('-0');
    expect(sumPartials(OID.float8, ['-0', '0'])).toBe('0');
    expect(sumPartials(OID.float8, ['Infinity', '1'])).toBe('Infinity');
    expect(sumPartials(OID.float8, ['Infinity', '-Infinity'])).toBe('NaN');
    expect(sumPartials(OID.float8, ['-Infinity', null])).toBe('-Infinity');
    expect(() => sumPartials(OID.float8, ['1.7976931348623157e+308', '1.7976931348623157e+308'])).toThrow(
      new RangeError('value out of range: overflow'),
    );
    expect(() => sumPartials(OID.float4, ['3e+38', '3e+38'])).toThrow(RangeError);
    expect(sumPartials(OID.float4, [null])).toBeNull();
  });

  it('leaves other sum types to the caller', () => {
    expect(sumPartials(OID.interval, ['1 day'])).toBeUndefined();
    expect(sumPartials(790 /* money */, ['$1.00'])).toBeUndefined();
    expect(sumPartials(OID.int4, ['1'])).toBeUndefined();
  });

  it('counts exactly, never null', () => {
    expect(countPartials([])).toBe('0');
    expect(countPartials(['2', null, '9007199254740993'])).toBe('9007199254740995');
  });

  it('takes min and max in btree order, or defers to the server', () => {
    expect(minPartials(OID.numeric, ['10', '9.5', null], 'codepoint')).toBe('9.5');
    expect(maxPartials(OID.numeric, ['10', 'NaN', 'Infinity'], 'codepoint')).toBe('NaN');
    expect(maxPartials(OID.float8, ['1e+100', 'NaN'], 'codepoint')).toBe('NaN');
    expect(minPartials(OID.float8, ['1e+100', 'NaN', '-Infinity'], 'codepoint')).toBe('-Infinity');
    expect(maxPartials(OID.text, ['\uFFFF', '😀'], 'codepoint')).toBe('😀');
    expect(minPartials(OID.int8, ['9007199254740993', '9007199254740992'], 'codepoint')).toBe('9007199254740992');
    expect(maxPartials(OID.timestamptz, ['2024-01-31 14:00:00+01', '2024-01-31 13:30:00+00'], 'codepoint')).toBe('2024-01-31 13:30:00+00');
    expect(minPartials(OID.date, [null, null], 'codepoint')).toBeNull();
    expect(minPartials(OID.text, ['a'], 'server')).toBeUndefined();
    expect(maxPartials(OID.interval, ['1 day'], 'codepoint')).toBeUndefined();
  });

  it('finishes avg like one server: numeric sum / count, or float8', () => {
    expect(averageFromPartials(OID.int8, '10', '4')).toEqual({ oid: OID.numeric, value: '2.5000000000000000' });
    expect(averageFromPartials(OID.int8, '1', '3')).toEqual({ oid: OID.numeric, value: '0.33333333333333333333' });
    expect(averageFromPartials(OID.int8, '-2', '3')).toEqual({ oid: OID.numeric, value: '-0.66666666666666666667' });
    expect(averageFromPartials(OID.numeric, '1.00', '3')).toEqual({ oid: OID.numeric, value: '0.33333333333333333333' });
    expect(averageFromPartials(OID.numeric, '12.345678901234567890123', '2')).toEqual({
      oid: OID.numeric,
      value: '6.172839450617283945062',
    });
    expect(averageFromPartials(OID.numeric, 'Infinity', '2')).toEqual({ oid: OID.numeric, value: 'Infinity' });
    expect(averageFromPartials(OID.int8, null, '0')).toEqual({ oid: OID.numeric, value: null });
    expect(averageFromPartials(OID.float8, '1', '4')).toEqual({ oid: OID.float8, value: '0.25' });
    // The float4 0.1 read as float8.
    expect(averageFromPartials(OID.float4, '0.1', '1')).toEqual({ oid: OID.float8, value: '0.10000000149011612' });
    expect(averageFromPartials(OID.float8, null, '0')).toEqual({ oid: OID.float8, value: null });
    expect(averageFromPartials(OID.interval, '1 day', '1')).toBeUndefined();
  });

  it('combines bool_and and bool_or with null skipping', () => {
    expect(boolAndPartials(['t', null, 'f'])).toBe('f');
    expect(boolAndPartials(['t', null, 't'])).toBe('t');
    expect(boolAndPartials([null, null])).toBeNull();
    expect(boolOrPartials(['f', null, 't'])).toBe('t');
    expect(boolOrPartials(['f', 'f'])).toBe('f');
    expect(boolOrPartials([])).toBeNull();
  });
});
