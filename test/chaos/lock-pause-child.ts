import { ShardRouter } from '../../src/index.js';
import { requiredEnv } from './child-env.js';

/**
 * Child of locks.test.ts: takes LOCK_KEY with a short lease, says `held <token>`, sleeps 1 s
 * (the parent SIGSTOPs it meanwhile, past the lease), then at once, without looking at the
 * signal, makes a fenced write of the counter row: the late write of a paused holder.
 *
 * Stdout: `held <token>`, then `write ok` or `write <code>`, `signal <aborted>`, and the end:
 * `result <value>` or `error <code>`.
 */

const key = requiredEnv('LOCK_KEY');
const data = requiredEnv('LOCK_DATA');
const say = (line: string) => process.stdout.write(`${line}\n`);
const router = await ShardRouter.connect({
  shards: requiredEnv('LOCK_SHARD_URLS')
    .split(',')
    .map((connectionString, i) => ({ id: `s${i}`, connectionString })),
  catalogSchema: requiredEnv('LOCK_CATALOG'),
  recovery: { intervalMillis: 0, atConnect: false },
  // A loaded test machine (many processes on 2 cores) can take seconds to accept a connection.
  pool: { connectTimeoutMillis: 60_000, acquireTimeoutMillis: 60_000 },
});
try {
  const result = await router.withLock(
    key,
    async (signal, lock) => {
      say(`held ${lock.token}`);
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      try {
        await lock.execute(`UPDATE ${data} SET n = n + 1000 WHERE id = $1`, [key]);
        say('write ok');
      } catch (error) {
        say(`write ${(error as { code?: string }).code ?? String(error)}`);
      }
      say(`signal ${signal.aborted}`);
      return 'finished';
    },
    { leaseMillis: 600 },
  );
  say(`result ${result}`);
} catch (error) {
  say(`error ${(error as { code?: string }).code ?? String(error)}`);
}
await router.close();
