import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createScratchDatabases, runTypeScript, uniqueName } from '../support/cluster.js';

/** README's router.query example, run as written against scratch databases on the real shards. */

const root = path.resolve(import.meta.dirname, '../..');
let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;

function readmeExample(name: string): string {
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
  const match = new RegExp(`<!-- readme-example: ${name}\\b[^>]*-->\\s*\`\`\`ts\\n([\\s\\S]*?)\`\`\``).exec(readme);
  if (!match) throw new Error(`README.md has no example named ${name}`);
  return match[1]!;
}

beforeAll(async () => {
  scratch = await createScratchDatabases();
});

afterAll(() => scratch.drop());

it('README query example runs as written: split INSERT with DEFAULT ids, keyed reads, a refused unkeyed delete', async () => {
  mkdirSync(path.join(root, '.tmp'), { recursive: true });
  const file = path.join(root, '.tmp', `${uniqueName('readme')}.ts`);
  writeFileSync(file, readmeExample('query').replace(`from 'pg-shard-router'`, `from '../src/index.js'`));
  let stdout: string;
  try {
    ({ stdout } = await runTypeScript(file, { PG_SHARD_URLS: scratch.urls.join(',') }));
  } finally {
    rmSync(file, { force: true });
  }
  const lines = stdout.split('\n');
  expect(lines[0]).toBe('inserted for users 1, 2, 3 on 3 distinct ids');
  expect(lines[1]).toMatch(/^user 2: second \(from (s\d), the owner of key 2: \1\)$/);
  expect(lines[2]).toBe('users 1-3: 3 notes');
  expect(lines[3]).toMatch(/pins the shard key/);
  expect(lines[4]).toBe('unkeyed delete: KEY_REQUIRED');
  // A child process compiled by tsx: on a loaded machine it alone can take a minute.
}, 180_000);
