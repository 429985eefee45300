import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { addNumeric, compareNumeric, divideNumeric, formatNumeric, parseNumeric } from '../../src/broadcast/values/decimal.js';
import { OID } from '../../src/broadcast/values/oid.js';
import { comparatorFor } from '../../src/broadcast/values/order.js';
import { averageFromPartials, countPartials, sumPartials } from '../../src/broadcast/values/partials.js';
import { equalityKeyFor } from '../../src/broadcast/values/text-forms.js';
import { shardUrls, withServer } from '../support/cluster.js';
import { seededRandom } from '../support/random.js';

// Checks the pure value semantics against a real server on generated data. The generator is
// seeded; a failure message names the seed, and PG_VALUES_SEED=<seed> replays it.
const SEED = Number(process.env.PG_VALUES_SEED ?? Math.floor(Math.random() * 2 ** 32));

const rand = seededRandom(SEED);
const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
const pick = <T>(items: readonly T[]): T => items[int(0, items.length - 1)]!;
const digits = (count: number) => Array.from({ length: count }, () => String(int(0, 9))).join('');
const pad = (value: number, width: number) => String(value).padStart(width, '0');
const label = `seed ${SEED}`;
const randomInt8 = () => BigInt.asIntN(64, (BigInt(int(0, 2 ** 32 - 1)) << 32n) | BigInt(int(0, 2 ** 32 - 1))).toString();

/** One session with the output settings the module assumes. */
function session<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  return withServer(shardUrls()[0]!, async (client) => {
    await client.query("SET DateStyle = 'ISO, MDY'; SET TimeZone = 'UTC'; SET extra_float_digits = 1; SET IntervalStyle = 'postgres'");
    return work(client);
  });
}

// Every column exactly as the server sent it (the type's output function), like the shards'
// results the merge sees; `::text` casts would not do (bool::text is 'true', bpchar::text trims).
const RAW_TEXT = { getTypeParser: () => (text: string) => text } as unknown as pg.CustomTypesConfig;
type RawRow = Record<string, string | null>;

async function rows(client: pg.Client, sql: string, params: unknown[]): Promise<RawRow[]> {
  return (await client.query<RawRow>({ text: sql, values: params, types: RAW_TEXT })).rows;
}

async function column(client: pg.Client, sql: string, params: unknown[]): Promise<string[]> {
  return (await rows(client, sql, params)).map((row) => row.v!);
}

function randomNumeric(): string {
  const roll = rand();
  if (roll < 0.03) return pick(['NaN', 'Infinity', '-Infinity']);
  if (roll < 0.07) return pick(['0', '0.000', '0.0', '1', '-1', '9999', '10000', '0.0001', '0.9999']);
  const sign = rand() < 0.4 ? '-' : '';
  if (rand() < 0.15) return `${sign}0.${'0'.repeat(int(0, 40))}${int(1, 9)}${digits(int(0, 12))}`; // tiny
  const whole =
    (digits(pick([0, 1, 1, 2, 3, 4, 5, 8, 12, 17, 20, 30, 45])).replace(/^0+/, '') || '0') + (rand() < 0.1 ? '0'.repeat(int(1, 30)) : '');
  const fractionLength = pick([0, 0, 1, 2, 3, 4, 5, 8, 16, 20, 30]);
  return `${sign}${whole}${fractionLength > 0 ? `.${digits(fractionLength)}` : ''}`;
}

/** The same leading base-10000 digit at another weight (moves the point by 4k), tail changed: hits select_div_scale's tie branch. */
function sibling(text: string): string {
  const value = parseNumeric(text);
  if (value.kind !== 'finite' || value.digits === 0n) return text;
  const shifted = value.digits * 10n ** BigInt(int(0, 3) * 4) + BigInt(int(0, 3));
  return formatNumeric({ kind: 'finite', digits: value.digits < 0n ? -shifted : shifted, scale: value.scale + int(0, 8) });
}

describe('numeric against the server', () => {
  it('formats, adds, compares and divides ~2000 generated pairs exactly like PostgreSQL', async () => {
    const left: string[] = [];
    const right: string[] = [];
    for (let i = 0; i < 2000; i++) {
      const a = randomNumeric();
      let b = rand() < 0.25 ? sibling(a) : randomNumeric();
      const parsed = parseNumeric(b);
      if (parsed.kind === 'finite' && parsed.digits === 0n) b = pick(['1', '-0.5', '3']);
      // Non-canonical spellings the server accepts, to check numeric_out's canonical form.
      left.push(rand() < 0.05 && /^\d/.test(a) ? ` 00${a} ` : a);
      right.push(b);
    }
    await session(async (client) => {
      const server = await rows(
        client,
        `SELECT a, b, a / b AS quotient, a + b AS total, CASE WHEN a < b THEN -1 WHEN a = b THEN 0 ELSE 1 END AS "order"
           FROM unnest($1::numeric[], $2::numeric[]) WITH ORDINALITY AS t(a, b, i) ORDER BY i`,
        [left, right],
      );
      expect(server).toHaveLength(2000);
      server.forEach((row, i) => {
        const a = parseNumeric(left[i]!);
        const b = parseNumeric(right[i]!);
        const context = `${label}: ${left[i]} and ${right[i]}`;
        expect(formatNumeric(a), context).toBe(row.a);
        expect(formatNumeric(b), context).toBe(row.b);
        expect(formatNumeric(divideNumeric(a, b)), context).toBe(row.quotient);
        expect(formatNumeric(addNumeric(a, b)), context).toBe(row.total);
        expect(compareNumeric(a, b), context).toBe(Number(row.order));
      });
    });
  });

  it('divides by zero, zero dividends and huge scales like the server', async () => {
    await session(async (client) => {
      for (const [a, b] of [
        ['5', '0.00'],
        ['Infinity', '0'],
        ['-0.5', '0'],
      ] as const) {
        await expect(client.query('SELECT $1::numeric / $2::numeric', [a, b])).rejects.toMatchObject({
          code: '22012',
          message: 'division by zero',
        });
        expect(() => divideNumeric(parseNumeric(a), parseNumeric(b))).toThrow(new RangeError('division by zero'));
      }
      const cases = [
        ['NaN', '0'],
        ['0', '5'],
        ['0.00', '0.001'],
        ['0', '12345678.9'],
        ['5', 'Infinity'],
        [`0.${'0'.repeat(1999)}1`, '1'],
        ['1', `0.${'0'.repeat(990)}3`],
        ['1', `3${'0'.repeat(900)}`],
      ];
      const server = await column(
        client,
        'SELECT a / b AS v FROM unnest($1::numeric[], $2::numeric[]) WITH ORDINALITY t(a, b, i) ORDER BY i',
        [cases.map((c) => c[0]), cases.map((c) => c[1])],
      );
      expect(cases.map(([a, b]) => formatNumeric(divideNumeric(parseNumeric(a!), parseNumeric(b!))))).toEqual(server);
    });
  });
});

describe('aggregates split over 4 partitions against the server', () => {
  interface DataSet {
    readonly values: (string | null)[];
    readonly partitions: number[];
  }

  function dataSets(count: number, value: () => string): DataSet[] {
    return Array.from({ length: count }, () => {
      const size = pick([1, 2, 3, 5, 10, 50, 200]);
      const values = Array.from({ length: size }, () => (rand() < 0.1 ? null : value()));
      // Some partitions get only nulls or nothing: sum null, count 0.
      return { values, partitions: values.map(() => int(0, 3)) };
    });
  }

  async function check(sqlType: string, sets: DataSet[]): Promise<number> {
    const values = sets.flatMap((set) => set.values);
    const setIds = sets.flatMap((set, s) => set.values.map(() => s));
    const partitions = sets.flatMap((set) => set.partitions);
    return session(async (client) => {
      const partials = await rows(
        client,
        `SELECT s, sum(x) AS sum, count(x) AS count, pg_typeof(sum(x))::oid AS sum_oid
           FROM unnest($1::${sqlType}[], $2::int[], $3::int[]) AS t(x, s, p) GROUP BY s, p`,
        [values, setIds, partitions],
      );
      const whole = await rows(
        client,
        `SELECT s, avg(x) AS avg, sum(x) AS sum, count(x) AS count, pg_typeof(avg(x))::oid AS avg_oid
           FROM unnest($1::${sqlType}[], $2::int[]) AS t(x, s) GROUP BY s ORDER BY s`,
        [values, setIds],
      );
      expect(whole).toHaveLength(sets.length);
      for (const expected of whole) {
        const mine = partials.filter((row) => row.s === expected.s);
        const sumOid = Number(mine[0]!.sum_oid);
        const context = `${label}: ${sqlType} set ${expected.s} ${JSON.stringify(sets[Number(expected.s)]!.values.slice(0, 20))}`;
        const sum = sumPartials(
          sumOid,
          mine.map((row) => row.sum ?? null),
        );
        const count = countPartials(mine.map((row) => row.count!));
        expect(sum, context).toBe(expected.sum);
        expect(count, context).toBe(expected.count);
        expect(averageFromPartials(sumOid, sum ?? null, count), context).toEqual({ oid: Number(expected.avg_oid), value: expected.avg });
      }
      return sets.length;
    });
  }

  it('avg, sum and count of int4, int8 and numeric equal one server', async () => {
    const int4 = await check(
      'int4',
      dataSets(40, () => String(pick([int(-10, 10), int(-2147483648, 2147483647), 2147483647, -2147483648]))),
    );
    const int8 = await check(
      'int8',
      dataSets(40, () => pick([String(int(-1000, 1000)), randomInt8(), '9223372036854775807', '-9223372036854775808'])),
    );
    const numeric = await check(
      'numeric',
      dataSets(60, () => (rand() < 0.02 ? pick(['NaN', 'Infinity', '-Infinity']) : randomNumeric().replace(/^(-?)(NaN|Infinity)$/, '1'))),
    );
    expect(int4 + int8 + numeric).toBe(140);
  });

  it('sum and avg of float4/float8 equal one server when the sums are exact', async () => {
    // Dyadic values add exactly, so the partition order cannot change the sums.
    await check(
      'float8',
      dataSets(30, () => String(int(-1_000_000, 1_000_000) / 1024)),
    );
    await check(
      'float4',
      dataSets(30, () => String(int(-1000, 1000) / 16)),
    );
  });
});

describe('float text forms against the server', () => {
  it('prints ~3000 random float8 and float4 values and all powers of two exactly as float8out/float4out', async () => {
    const view = new DataView(new ArrayBuffer(8));
    const doubles: string[] = [
      '0',
      '-0',
      'NaN',
      'Infinity',
      '-Infinity',
      '5e-324',
      '1e+15',
      '1e+14',
      '0.0001',
      '1e-05',
      '123456789012345.6',
    ];
    const singles: string[] = ['0', '-0', 'NaN', 'Infinity', '1e-45', '3.4028235e+38', '100000', '1000000', '0.0001', '1e-05', '16777217'];
    // Powers of two: the rounding interval is lopsided there.
    for (let k = -1074; k <= 1023; k++) doubles.push(String(2 ** k));
    for (let k = -149; k <= 127; k++) singles.push(String(2 ** k));
    for (let i = 0; i < 1500; i++) {
      const nice = Number(`${digits(int(1, 17))}e${int(-25, 25)}`) * (rand() < 0.5 ? -1 : 1);
      view.setUint32(0, int(0, 2 ** 32 - 1));
      view.setUint32(4, int(0, 2 ** 32 - 1));
      const bits = view.getFloat64(0);
      doubles.push(String(rand() < 0.5 || !Number.isFinite(bits) ? nice : bits));
      view.setUint32(0, int(0, 2 ** 32 - 1));
      const single = view.getFloat32(0);
      singles.push(String(Math.fround(rand() < 0.5 || !Number.isFinite(single) ? nice : single)));
    }
    await session(async (client) => {
      const sql = (type: string) => `SELECT x AS v FROM unnest($1::${type}[]) WITH ORDINALITY t(x, i) ORDER BY i`;
      const float8 = await column(client, sql('float8'), [doubles]);
      const float4 = await column(client, sql('float4'), [singles]);
      // A one-value sum is the value itself, printed by the module's float formatter.
      expect(
        doubles.map((text) => sumPartials(OID.float8, [text])),
        label,
      ).toEqual(float8);
      expect(
        singles.map((text) => sumPartials(OID.float4, [text])),
        label,
      ).toEqual(float4);
    });
  });
});

interface OrderedType {
  readonly sqlType: string;
  readonly oid: number;
  readonly collate?: string;
  /** Output TimeZones mixed per value (timestamptz): shards may print one instant differently. */
  readonly zones?: readonly string[];
  generate(): string[];
}

function many(count: number, make: () => string, edges: readonly string[] = []): string[] {
  const values = [...edges, ...Array.from({ length: count }, make)];
  // Duplicates make ties, which the order and the keys must treat as equal.
  for (let i = 0; i < 30; i++) values.push(pick(values));
  return values;
}

const TEXT_CHARS = [
  'a',
  'b',
  'A',
  'Z',
  ' ',
  '\t',
  '!',
  '~',
  'é',
  'ß',
  '\u00ff',
  '\u0100',
  '中',
  '\uD7FF',
  '\uE000',
  '\uFFFD',
  '\uFFFF',
  '😀',
  '😁',
  '𝄞',
  '\u{10FFFF}',
];
const randomText = (max: number) => Array.from({ length: int(0, max) }, () => pick(TEXT_CHARS)).join('');

function randomDate(): { year: number; month: number; day: number; bc: boolean } {
  const bc = rand() < 0.15;
  const year = bc ? int(1, 4712) : pick([int(1, 9999), int(1900, 2100), int(10000, 294275)]);
  const month = int(1, 12);
  const leap = (y: number) => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
  // BC year Y is astronomical year 1 - Y: 1 BC, 5 BC, ... are leap years.
  const monthDays = [31, leap(bc ? 1 - year : year) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]!;
  return { year, month, day: int(1, monthDays), bc };
}

const dateText = ({ year, month, day, bc }: ReturnType<typeof randomDate>) =>
  `${pad(year, 4)}-${pad(month, 2)}-${pad(day, 2)}${bc ? ' BC' : ''}`;
const timeText = () => `${pad(int(0, 23), 2)}:${pad(int(0, 59), 2)}:${pad(int(0, 59), 2)}${rand() < 0.6 ? `.${digits(int(1, 6))}` : ''}`;
function timestampText(withZone: boolean): string {
  const date = randomDate();
  const zone = withZone ? pick(['+00', '+05:30', '-03', '-03:00:45', '+14', '-12:15']) : '';
  return `${pad(date.year, 4)}-${pad(date.month, 2)}-${pad(date.day, 2)} ${timeText()}${zone}${date.bc ? ' BC' : ''}`;
}

function randomFloatText(single: boolean): string {
  const roll = rand();
  if (roll < 0.05) return pick(['NaN', 'Infinity', '-Infinity', '-0', '0']);
  const value = Number(`${rand() < 0.5 ? '-' : ''}${digits(int(1, 17))}e${int(-40, 40) * (single ? 1 : int(1, 7))}`);
  return String(single ? Math.fround(value) : value);
}

const ORDERED_TYPES: OrderedType[] = [
  { sqlType: 'int2', oid: OID.int2, generate: () => many(250, () => String(int(-32768, 32767)), ['-32768', '32767', '0']) },
  {
    sqlType: 'int4',
    oid: OID.int4,
    generate: () => many(250, () => String(pick([int(-100, 100), int(-2147483648, 2147483647)])), ['-2147483648', '2147483647']),
  },
  {
    sqlType: 'int8',
    oid: OID.int8,
    generate: () =>
      many(
        250,
        () =>
          pick([String(int(-100, 100)), randomInt8(), randomInt8().slice(0, int(2, 12)), String(9007199254740990n + BigInt(int(0, 6)))]),
        ['-9223372036854775808', '9223372036854775807'],
      ),
  },
  { sqlType: 'oid', oid: OID.oid, generate: () => many(250, () => String(pick([int(0, 100), int(0, 4294967295)])), ['0', '4294967295']) },
  {
    sqlType: 'numeric',
    oid: OID.numeric,
    generate: () =>
      many(250, () => (rand() < 0.2 ? sibling(randomNumeric()) : randomNumeric()), ['1', '1.0', '1.00', '-0.000', 'NaN', 'NaN']),
  },
  {
    sqlType: 'float8',
    oid: OID.float8,
    generate: () => many(250, () => randomFloatText(false), ['5e-324', '-5e-324', '1.7976931348623157e+308']),
  },
  { sqlType: 'float4', oid: OID.float4, generate: () => many(250, () => randomFloatText(true), ['1e-45', '3.4028235e+38']) },
  { sqlType: 'bool', oid: OID.bool, generate: () => many(20, () => pick(['t', 'f'])) },
  // charin: '' is byte 0, and a backslash with 3 octal digits is that byte (how charout prints bytes >= 128).
  {
    sqlType: '"char"',
    oid: OID.char,
    generate: () => many(200, () => (rand() < 0.5 ? `\\${int(0o200, 0o377).toString(8)}` : String.fromCharCode(int(1, 127))), ['', '\\']),
  },
  { sqlType: 'text', oid: OID.text, collate: 'C', generate: () => many(270, () => randomText(6), ['']) },
  { sqlType: 'varchar', oid: OID.varchar, collate: 'C', generate: () => many(270, () => randomText(6)) },
  { sqlType: 'name', oid: OID.name, collate: 'C', generate: () => many(270, () => randomText(6)) },
  {
    sqlType: 'bpchar',
    oid: OID.bpchar,
    collate: 'C',
    generate: () => many(270, () => randomText(4) + ' '.repeat(int(0, 3)), ['a', 'a ', 'a\t', 'a!', '']),
  },
  {
    sqlType: 'uuid',
    oid: OID.uuid,
    generate: () =>
      many(250, () =>
        Array.from({ length: 32 }, () => pick([...'0123456789abcdefABCDEF']))
          .join('')
          .replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-'),
      ),
  },
  {
    sqlType: 'date',
    oid: OID.date,
    generate: () =>
      many(270, () => dateText(randomDate()), [
        'infinity',
        '-infinity',
        '4713-11-24 BC',
        '5874897-12-31',
        '0001-01-01',
        '0001-12-31 BC',
        '2000-02-29',
        '0005-02-29 BC',
        '0001-02-29 BC',
      ]),
  },
  { sqlType: 'time', oid: OID.time, generate: () => many(270, timeText, ['00:00:00', '24:00:00', '23:59:59.999999']) },
  {
    sqlType: 'timestamp',
    oid: OID.timestamp,
    generate: () =>
      many(270, () => timestampText(false), ['infinity', '-infinity', '4713-11-24 00:00:00 BC', '294276-12-31 23:59:59.999999']),
  },
  {
    sqlType: 'timestamptz',
    oid: OID.timestamptz,
    zones: ['UTC', 'Asia/Kolkata', 'America/St_Johns', 'Europe/Amsterdam', 'America/New_York', 'Pacific/Kiritimati'],
    generate: () =>
      many(270, () => timestampText(true), [
        'infinity',
        '-infinity',
        '2024-01-31 13:45:00+00',
        '2024-01-31 19:15:00+05:30',
        '1850-06-01 12:00:00+00',
        '0044-03-15 12:00:00+00 BC',
      ]),
  },
];

describe('order and equality against the server', () => {
  it.each(ORDERED_TYPES)('$sqlType: comparatorFor sorts like ORDER BY, and keys and signs match = and <', async (type) => {
    const inputs = type.generate();
    const compare = comparatorFor(type.oid, 'codepoint')!;
    const keyOf = equalityKeyFor(type.oid);
    const collate = type.collate === undefined ? '' : ` COLLATE "${type.collate}"`;
    await session(async (client) => {
      // The text each value prints as, in each zone; each value then takes one zone's form at random.
      const byZone: string[][] = [];
      for (const zone of type.zones ?? ['UTC']) {
        await client.query(`SET TimeZone = '${zone}'`);
        byZone.push(await column(client, `SELECT v FROM unnest($1::${type.sqlType}[]) WITH ORDINALITY t(v, i) ORDER BY i`, [inputs]));
      }
      const texts = inputs.map((_, i) => pick(byZone)[i]!);
      const serverOrder = (
        await rows(client, `SELECT i FROM unnest($1::${type.sqlType}[]) WITH ORDINALITY t(v, i) ORDER BY v${collate}, i`, [inputs])
      ).map((row) => Number(row.i) - 1);
      const mine = [...texts].sort(compare);
      expect(mine.map(keyOf), `${label}: ${type.sqlType}`).toEqual(serverOrder.map((i) => keyOf(texts[i]!)));

      // Pairs: random ones, and neighbours in the server's order (ties and near misses).
      const pairs: [number, number][] = [];
      for (let k = 0; k < 300; k++) pairs.push([int(0, inputs.length - 1), int(0, inputs.length - 1)]);
      for (let k = 0; k + 1 < serverOrder.length; k++)
        pairs.push(rand() < 0.5 ? [serverOrder[k]!, serverOrder[k + 1]!] : [serverOrder[k + 1]!, serverOrder[k]!]);
      const verdicts = await rows(
        client,
        `SELECT CASE WHEN a${collate} < b THEN -1 WHEN a${collate} = b THEN 0 ELSE 1 END AS "order"
           FROM unnest($1::${type.sqlType}[], $2::${type.sqlType}[]) WITH ORDINALITY t(a, b, k) ORDER BY k`,
        [pairs.map(([a]) => inputs[a]), pairs.map(([, b]) => inputs[b])],
      );
      pairs.forEach(([a, b], k) => {
        const context = `${label}: ${type.sqlType} ${JSON.stringify(texts[a])} vs ${JSON.stringify(texts[b])}`;
        expect(Math.sign(compare(texts[a]!, texts[b]!)), context).toBe(Number(verdicts[k]!.order));
        expect(keyOf(texts[a]!) === keyOf(texts[b]!), context).toBe(verdicts[k]!.order === '0');
      });
    });
  });
});
