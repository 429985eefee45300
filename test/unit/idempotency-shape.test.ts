import { describe, expect, it } from 'vitest';
import { decodeExecuteResult, encodeExecuteResult } from '../../src/idempotency/execute-result.js';
import { checkIdempotencyKey, fingerprintOf, parseTransactionResult, transactionResultText } from '../../src/idempotency/shape.js';
import type { ShardQueryResult } from '../../src/pool/session.js';

describe('idempotency keys', () => {
  it('accepts 1-200 characters (code points) and refuses everything else with INVALID_ARGUMENT', () => {
    expect(checkIdempotencyKey('a')).toBe('a');
    expect(checkIdempotencyKey('😀'.repeat(200))).toBe('😀'.repeat(200));
    for (const bad of ['', 'x'.repeat(201), '😀'.repeat(201), 'a\u0000b', '\uDC00', 'x\uD800', 7, undefined, null, {}]) {
      expect(() => checkIdempotencyKey(bad), JSON.stringify(bad)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
  });
});

describe('fingerprints', () => {
  it('are stable for the same shape and differ whenever pg would send something else', () => {
    const at = new Date('2026-01-02T03:04:05.678Z');
    const base = ['execute', '42', 'INSERT INTO t VALUES ($1, $2)', [1, at]];
    expect(fingerprintOf(base)).toBe(fingerprintOf(['execute', '42', 'INSERT INTO t VALUES ($1, $2)', [1, new Date(at.getTime())]]));
    const variants = [
      ['transaction', '42', 'INSERT INTO t VALUES ($1, $2)', [1, at]],
      ['execute', '43', 'INSERT INTO t VALUES ($1, $2)', [1, at]],
      ['execute', '42', 'INSERT INTO t VALUES ($1,$2)', [1, at]],
      ['execute', '42', 'INSERT INTO t VALUES ($1, $2)', ['1', at]],
      ['execute', '42', 'INSERT INTO t VALUES ($1, $2)', [1n, at]],
      ['execute', '42', 'INSERT INTO t VALUES ($1, $2)', [1, at.toISOString()]],
      ['execute', '42', 'INSERT INTO t VALUES ($1, $2)', [1, Buffer.from('x')]],
      ['execute', '42', 'INSERT INTO t VALUES ($1, $2)', [1, [at]]],
    ];
    const prints = new Set([fingerprintOf(base), ...variants.map(fingerprintOf)]);
    expect(prints.size).toBe(variants.length + 1);
    expect(fingerprintOf(base)).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('transaction results', () => {
  it('stores what survives a JSON round trip, undefined included, and replays it equal', () => {
    for (const value of [undefined, null, 0, 'text', true, [1, 'a', null, { b: [false] }], { nested: { list: [1.5, -2] } }]) {
      expect(parseTransactionResult(transactionResultText(value))).toEqual(value);
    }
  });

  it('refuses what would come back different, naming where', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    let deep: unknown = 1;
    for (let i = 0; i < 100_000; i++) deep = [deep];
    const refused: [unknown, RegExp][] = [
      [new Date(), /Date/],
      [{ at: new Date() }, /\$\.at is a Date/],
      [5n, /bigint/],
      [Number.POSITIVE_INFINITY, /Infinity/],
      [new Array(2), /hole/],
      [{ f: () => 1 }, /function/],
      [{ u: undefined }, /\$\.u is undefined/],
      [new Map(), /Map/],
      [cyclic, /cycle/],
      [{ toJSON: () => 1 }, /toJSON/],
      [{ [Symbol('s')]: 1 }, /symbol/],
      [deep, /nested too deeply/],
    ];
    for (const [value, why] of refused) {
      expect(() => transactionResultText(value)).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(why) }),
      );
    }
  });
});

describe('execute results', () => {
  it('round-trip rows with dates, buffers, bigints, json, arrays and non-finite numbers, with their fields and tag', () => {
    const fields = ['at', 'bytes', 'big', 'doc', 'list', 'inf', 'n', 's', 'nothing'].map((name, i) => ({
      name,
      tableID: 0,
      columnID: i,
      dataTypeID: 25,
      dataTypeSize: -1,
      dataTypeModifier: -1,
      format: 'text' as const,
    }));
    const row = {
      at: new Date('2026-05-06T07:08:09.123Z'),
      bytes: Buffer.from([0, 1, 255]),
      big: 2n ** 70n,
      doc: { d: 'not a date', a: [1, { j: 2 }] },
      list: [new Date(0), null, 'x'],
      inf: Number.NEGATIVE_INFINITY,
      n: 1.25,
      s: 'text',
      nothing: null,
    };
    const result: ShardQueryResult = { rows: [row, { ...row, n: 2 }], rowCount: 2, fields, command: 'INSERT', shardId: 's0' };
    const replayed = decodeExecuteResult(encodeExecuteResult(result), 's3');
    expect(replayed).toEqual({ ...result, shardId: 's3' });
    expect(replayed.rows[0]!.at).toBeInstanceOf(Date);
    expect(Buffer.isBuffer(replayed.rows[0]!.bytes)).toBe(true);
  });

  it('refuses a value of another class (an interval object, say), naming the column', () => {
    class PostgresInterval {
      days = 1;
    }
    const result: ShardQueryResult = { rows: [{ i: new PostgresInterval() }], rowCount: 1, fields: [], command: 'SELECT', shardId: 's0' };
    expect(() => encodeExecuteResult(result)).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/column "i" holds a PostgresInterval/) }),
    );
  });
});
