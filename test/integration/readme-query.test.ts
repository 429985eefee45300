import { runReadmeExample as runExample } from '../support/readme.js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createScratchDatabases } from '../support/cluster.js';

/** README's router.query example, run as written against scratch databases on the real shards. */

let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;

beforeAll(async () => {
  scratch = await createScratchDatabases();
});

afterAll(() => scratch.drop());

it('README query example runs as written: split INSERT with DEFAULT ids, keyed reads, a refused unkeyed delete', async () => {
  const stdout = await runExample('query', scratch.urls);
  const lines = stdout.split('\n');
  expect(lines[0]).toBe('inserted for users 1, 2, 3 on 3 distinct ids');
  expect(lines[1]).toMatch(/^user 2: second \(from (s\d), the owner of key 2: \1\)$/);
  expect(lines[2]).toBe('users 1-3: 3 notes');
  expect(lines[3]).toMatch(/pins the shard key/);
  expect(lines[4]).toBe('unkeyed delete: KEY_REQUIRED');
  // A child process compiled by tsx: on a loaded machine it alone can take a minute.
}, 180_000);
