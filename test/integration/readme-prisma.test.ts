import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScratchDatabases, withServer } from '../support/cluster.js';
import { runReadmeExample } from '../support/readme.js';

/**
 * README's Prisma example, run as written against real shards with @prisma/client and
 * @prisma/adapter-pg. The client is the one the `prisma-client` generator wrote for README's
 * schema, committed in test/fixtures/prisma/ (so no test or CI run calls `prisma generate`,
 * which would fetch an engine from outside npm); the first test checks it was generated from
 * that schema.
 */

const FIXTURE = 'test/fixtures/prisma';
const root = path.resolve(import.meta.dirname, '../..');
let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;

beforeAll(async () => {
  scratch = await createScratchDatabases();
});

afterAll(() => scratch.drop());

describe('README Prisma example', () => {
  it("the committed client was generated from README's schema", () => {
    const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
    const schema = /#### Prisma[\s\S]*?```prisma\n([\s\S]*?)```/.exec(readme)![1];
    expect(readFileSync(path.join(root, FIXTURE, 'prisma/schema.prisma'), 'utf8')).toBe(schema);
    const generated = readFileSync(path.join(root, FIXTURE, 'generated/prisma/internal/class.ts'), 'utf8');
    const inline = JSON.parse(/"inlineSchema": ("(?:[^"\\]|\\.)*")/.exec(generated)![1]!) as string;
    // prisma generate stores the schema formatted: compare it without spacing.
    expect(inline.replace(/\s+/g, ' ').trim()).toBe(schema!.replace(/\s+/g, ' ').trim());
  });

  it('commits on the owner of user 42, rolls back the transaction that throws, writes nowhere else', async () => {
    const stdout = await runReadmeExample('prisma', scratch.urls, {
      './generated/prisma/client.js': `${FIXTURE}/generated/prisma/client.js`,
    });
    const match = /^rolled back: changed my mind\nAda Lovelace lives on s(\d)\n$/.exec(stdout);
    expect(match, stdout).not.toBeNull();
    const owner = Number(match![1]);
    for (const [index, url] of scratch.urls.entries()) {
      const { rows } = await withServer(url, (client) => client.query('SELECT user_id::int AS id, name FROM profiles'));
      expect(rows).toEqual(index === owner ? [{ id: 42, name: 'Ada Lovelace' }] : []);
    }
  });
});
