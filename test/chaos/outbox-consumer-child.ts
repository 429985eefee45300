import { appendFileSync } from 'node:fs';
import { ShardRouter } from '../../src/index.js';
import { requiredEnv } from './child-env.js';

/**
 * Child of outbox-consumers.test.ts: one consumer process of the group OUTBOX_GROUP. Its handler
 * appends `<key> <seq> <id> <pid>` to OUTBOX_CALL_LOG (one synchronous O_APPEND write, so the
 * file's order is the order of the calls over all processes and a line survives a SIGKILL right
 * after it), sleeps a little (so kills land while handling), then applies the event to an
 * idempotent sink: INSERT of the event id ON CONFLICT DO NOTHING, on the key's shard. The parent
 * SIGKILLs it at random. Prints `ready` once consuming.
 *
 * Env: OUTBOX_SHARD_URLS (comma-separated, shards s0..), OUTBOX_CATALOG, OUTBOX_DATA, OUTBOX_GROUP,
 * OUTBOX_TOPIC, OUTBOX_CALL_LOG.
 */

const urls = requiredEnv('OUTBOX_SHARD_URLS').split(',');
const data = requiredEnv('OUTBOX_DATA');
const log = requiredEnv('OUTBOX_CALL_LOG');

const router = await ShardRouter.connect({
  shards: urls.map((connectionString, i) => ({ id: `s${i}`, connectionString })),
  catalogSchema: requiredEnv('OUTBOX_CATALOG'),
  applicationName: 'outbox-chaos-consumer',
  recovery: { intervalMillis: 0, atConnect: false },
  // Generous, like the other chaos children: a loaded machine is not what this test is about.
  pool: { connectTimeoutMillis: 60_000, acquireTimeoutMillis: 60_000 },
});

const consumer = router.consume({
  group: requiredEnv('OUTBOX_GROUP'),
  topics: [requiredEnv('OUTBOX_TOPIC')],
  concurrency: 8,
  batchSize: 4,
  leaseMillis: 1_500,
  pollIntervalMillis: 100,
  maxAttempts: 1_000,
  retryBackoffMillis: 10,
  onError: (error) => process.stderr.write(`consumer error: ${String(error)}\n`),
  handler: async (event) => {
    appendFileSync(log, `${event.key} ${event.seq} ${event.id} ${process.pid} ${Date.now()} ${event.attempt}\n`);
    await new Promise((resolve) => setTimeout(resolve, Math.floor(Math.random() * 15)));
    await router.execute(event.key, `INSERT INTO ${data}.sink (event_id, key, seq) VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING`, [
      event.id,
      event.key,
      event.seq,
    ]);
  },
});
await consumer.ready;
process.stdout.write('ready\n');
