import { ShardRouter } from '../../src/index.js';
import { lockHooks } from '../../src/lock/test-hooks.js';
import type { LockStep } from '../../src/lock/test-hooks.js';
import { requiredEnv } from './child-env.js';

/**
 * Child of locks.test.ts: takes LOCK_KEY and SIGKILLs itself at step LOCK_KILL_AT ('locked',
 * 'token', 'releasing', or 'fn': inside fn, after a fenced write).
 *
 * Stdout: `token <n>` once fn runs (synchronous: survives the kill), `kill <step>` just before it.
 */

const key = requiredEnv('LOCK_KEY');
const killAt = requiredEnv('LOCK_KILL_AT') as LockStep | 'fn';
const data = requiredEnv('LOCK_DATA');
const say = (line: string) => process.stdout.write(`${line}\n`);
const die = (step: string) => {
  say(`kill ${step}`);
  process.kill(process.pid, 'SIGKILL');
};
lockHooks.step = (step) => {
  if (step === killAt) die(step);
};
const router = await ShardRouter.connect({
  shards: requiredEnv('LOCK_SHARD_URLS')
    .split(',')
    .map((connectionString, i) => ({ id: `s${i}`, connectionString })),
  catalogSchema: requiredEnv('LOCK_CATALOG'),
  applicationName: `lock-crash-${killAt}`,
  recovery: { intervalMillis: 0, atConnect: false },
  // A loaded test machine (many processes on 2 cores) can take seconds to accept a connection.
  pool: { connectTimeoutMillis: 60_000, acquireTimeoutMillis: 60_000 },
});
await router.withLock(key, async (_signal, lock) => {
  say(`token ${lock.token}`);
  await lock.execute(`UPDATE ${data} SET n = n + 1 WHERE id = $1`, [key]);
  if (killAt === 'fn') die('fn');
});
say('survived');
await router.close();
