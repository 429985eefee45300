import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScratchDatabases, runTypeScript, uniqueName, withServer } from '../support/cluster.js';

/** README's ORM, Kysely and timeout examples, run as written against real shards. */

const root = path.resolve(import.meta.dirname, '../..');
let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;

function readmeExample(name: string): string {
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
  const match = new RegExp(`<!-- readme-example: ${name}\\b[^>]*-->\\s*\`\`\`ts\\n([\\s\\S]*?)\`\`\``).exec(readme);
  if (!match) throw new Error(`README.md has no example named ${name}`);
  return match[1]!;
}

/** Runs a README example with the package names pointing at this checkout's source. */
async function runReadmeExample(name: string): Promise<string> {
  mkdirSync(path.join(root, '.tmp'), { recursive: true });
  const file = path.join(root, '.tmp', `${uniqueName('readme')}.ts`);
  writeFileSync(
    file,
    readmeExample(name)
      .replace(`from 'pg-shard-router/kysely'`, `from '../src/kysely.js'`)
      .replace(`from 'pg-shard-router'`, `from '../src/index.js'`),
  );
  try {
    return (await runTypeScript(file, { PG_SHARD_URLS: scratch.urls.join(',') })).stdout;
  } finally {
    rmSync(file, { force: true });
  }
}

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
