import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScratchDatabases, runTypeScript, uniqueName } from '../support/cluster.js';

/** The README's withLock example, run as written against fresh databases on the test servers. */

const root = path.resolve(import.meta.dirname, '../..');
let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;

beforeAll(async () => {
  scratch = await createScratchDatabases();
});

afterAll(() => scratch?.drop());

function readmeExample(name: string): string {
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
  const match = new RegExp(`<!-- readme-example: ${name}\\b[^>]*-->\\s*\`\`\`ts\\n([\\s\\S]*?)\`\`\``).exec(readme);
  if (!match) throw new Error(`README.md has no example named ${name}`);
  return match[1]!;
}

describe('README: distributed locks', () => {
  it('the withLock example runs as written: ten read-modify-writes under one lock, none lost; a second holder is refused', async () => {
    mkdirSync(path.join(root, '.tmp'), { recursive: true });
    const file = path.join(root, '.tmp', `${uniqueName('readme')}.ts`);
    writeFileSync(file, readmeExample('locks').replace(`from 'pg-shard-router'`, `from '../src/index.js'`));
    try {
      const { stdout } = await runTypeScript(file, { PG_SHARD_URLS: scratch.urls.join(',') });
      expect(stdout).toBe('runs: 10, newest token: 10\na second holder: LOCK_NOT_ACQUIRED (retryable: true)\n');
    } finally {
      rmSync(file, { force: true });
    }
  }, 300_000);
});
