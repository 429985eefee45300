import { runReadmeExample as runExample } from '../support/readme.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScratchDatabases, withServer } from '../support/cluster.js';

/** README's ORM, Kysely and timeout examples, run as written against real shards. */

let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;

const runReadmeExample = (name: string) => runExample(name, scratch.urls);

beforeAll(async () => {
  scratch = await createScratchDatabases();
});

afterAll(() => scratch.drop());

describe('README integration examples', () => {
  it('kysely: rows written through Kysely land on their owners, the cross-shard transaction on both', async () => {
    const stdout = await runReadmeExample('kysely');
    const lines = stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^user 42 on (s\d): hello, sent to 7$/);
    expect(lines[1]).toMatch(/^user 7 on (s\d): from 42$/);
    for (const [line, userId] of [
      [lines[0]!, 42],
      [lines[1]!, 7],
    ] as const) {
      const shard = Number(/on s(\d)/.exec(line)![1]);
      const { rows } = await withServer(scratch.urls[shard]!, (client) =>
        client.query('SELECT count(*)::int AS n FROM notes WHERE user_id = $1', [userId]),
      );
      expect(rows[0].n).toBeGreaterThan(0);
    }
  });

  it('drizzle: the transaction commits on the owning shard', async () => {
    const stdout = await runReadmeExample('drizzle');
    const match = /^Ada Lovelace lives on s(\d)\n$/.exec(stdout);
    expect(match).not.toBeNull();
    const { rows } = await withServer(scratch.urls[Number(match![1])]!, (client) =>
      client.query('SELECT name FROM profiles WHERE user_id = 42'),
    );
    expect(rows).toEqual([{ name: 'Ada Lovelace' }]);
  });

  it('timeouts: a signal and a per-call timeout stop pg_sleep(600) with typed, retryable errors', async () => {
    const stdout = await runReadmeExample('timeouts');
    expect(stdout).toBe('STATEMENT_CANCELLED, retryable: true\nSTATEMENT_TIMEOUT, retryable: true\n');
  });
});
