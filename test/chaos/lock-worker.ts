import { ShardRouter } from '../../src/index.js';
import { requiredEnv } from './child-env.js';

/**
 * Child of locks.test.ts: increments a counter under one lock key with a deliberately
 * non-atomic read-modify-write (read, pause, write the read value + 1), LOCK_ROUNDS times, or
 * until stdin closes when LOCK_ROUNDS is 0. The write is fenced by the lock's token.
 *
 * Env: LOCK_SHARD_URLS (comma-separated, shards s0..), LOCK_CATALOG, LOCK_DATA (counter table),
 * LOCK_KEY (the lock key, also the counter row's id), LOCK_WORKER (label), LOCK_ROUNDS.
 *
 * Stdout, one line per held lock, written synchronously while still holding it:
 *   hold <worker> <token> <shardId> <startNs> <endNs>    (process.hrtime: CLOCK_MONOTONIC, one clock for every process)
 *   fail <worker> <code>                                 an attempt that failed (LOCK_NOT_ACQUIRED, ...)
 *   done <worker>
 */

const urls = requiredEnv('LOCK_SHARD_URLS').split(',');
const data = requiredEnv('LOCK_DATA');
const key = requiredEnv('LOCK_KEY');
const label = requiredEnv('LOCK_WORKER');
const rounds = Number(requiredEnv('LOCK_ROUNDS'));

const say = (line: string) => process.stdout.write(`${line}\n`);
let stopping = rounds === 0 ? false : undefined;
process.stdin.on('end', () => (stopping = true)).resume();

const router = await ShardRouter.connect({
  shards: urls.map((connectionString, i) => ({ id: `s${i}`, connectionString })),
  catalogSchema: requiredEnv('LOCK_CATALOG'),
  applicationName: `lock-worker-${label}`,
  recovery: { intervalMillis: 0, atConnect: false },
  // A loaded test machine (many processes on 2 cores) can take seconds to accept a connection.
  pool: { connectTimeoutMillis: 60_000, acquireTimeoutMillis: 60_000 },
  mapRefresh: { intervalMillis: 200 },
});
say(`ready ${label}`);

for (let done = 0; rounds === 0 ? !stopping : done < rounds; ) {
  try {
    await router.withLock(
      key,
      async (_signal, lock) => {
        const start = process.hrtime.bigint();
        const { rows } = await router.execute<{ n: number }>(key, `SELECT n FROM ${data} WHERE id = $1`, [key]);
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 4));
        await lock.execute(`UPDATE ${data} SET n = $2 WHERE id = $1`, [key, rows[0]!.n + 1]);
        say(`hold ${label} ${lock.token} ${lock.shardId} ${start} ${process.hrtime.bigint()}`);
      },
      { waitMillis: 30_000 },
    );
    done++;
  } catch (error) {
    say(`fail ${label} ${(error as { code?: string }).code ?? String(error)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
await router.close();
say(`done ${label}`);
