import { runReadmeExample as runExample } from '../support/readme.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScratchDatabases } from '../support/cluster.js';

/** The README's withLock example, run as written against fresh databases on the test servers. */

let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;

beforeAll(async () => {
  scratch = await createScratchDatabases();
});

afterAll(() => scratch?.drop());

describe('README: distributed locks', () => {
  it('the withLock example runs as written: ten read-modify-writes under one lock, none lost; a second holder is refused', async () => {
    const stdout = await runExample('locks', scratch.urls);
    expect(stdout).toBe('runs: 10, newest token: 10\na second holder: LOCK_NOT_ACQUIRED (retryable: true)\n');
  }, 300_000);
});
