import { describe, expect, it } from 'vitest';
import { ShardRouterError } from '../../src/errors.js';
import { checkJson } from '../../src/outbox/json.js';
import { checkTopic } from '../../src/outbox/publish.js';

function problem(value: unknown): string | undefined {
  try {
    checkJson(value, 'payload');
    return undefined;
  } catch (error) {
    expect(error).toBeInstanceOf(ShardRouterError);
    expect((error as ShardRouterError).code).toBe('INVALID_ARGUMENT');
    return (error as Error).message;
  }
}

describe('checkJson (what tx.publish accepts as payload and headers)', () => {
  it('accepts JSON, including one object reached twice (not a cycle) and nesting up to the limit', () => {
    const shared = { n: 1 };
    expect(problem({ a: shared, b: [shared, shared], s: 'x', t: true, z: null, f: 1.5 })).toBeUndefined();
    expect(problem(JSON.parse(`${'['.repeat(101)}${']'.repeat(101)}`))).toBeUndefined();
    expect(problem(Object.create(null))).toBeUndefined();
  });

  it('names what is not JSON', () => {
    const cyclic: unknown[] = [];
    cyclic.push({ back: cyclic });
    expect(problem(cyclic)).toMatch(/cycle/);
    expect(problem(JSON.parse(`${'['.repeat(102)}${']'.repeat(102)}`))).toMatch(/deeper than 100/);
    // biome-ignore lint/suspicious/noSparseArray: the hole is the case under test
    expect(problem([1, , 3])).toMatch(/undefined is not JSON/);
    expect(problem({ [`a\u0000`]: 1 })).toMatch(/keys cannot contain/);
    expect(problem({ m: new Map() })).toMatch(/Map object is not JSON/);
    expect(problem({ n: Number.POSITIVE_INFINITY })).toMatch(/Infinity is not a JSON number/);
  });
});

describe('checkTopic', () => {
  it('counts code points, not UTF-16 units, against the 200 limit', () => {
    expect(() => checkTopic('😀'.repeat(200))).not.toThrow();
    expect(() => checkTopic('😀'.repeat(201))).toThrow(/1-200 printable/);
    expect(() => checkTopic('x'.repeat(200))).not.toThrow();
    expect(() => checkTopic('x'.repeat(201))).toThrow(/1-200 printable/);
  });
});
