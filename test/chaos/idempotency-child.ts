import { ShardRouter } from '../../src/index.js';
import { testHooks } from '../../src/twopc/test-hooks.js';
import type { FaultPoint } from '../../src/twopc/test-hooks.js';
import { requiredEnv } from './child-env.js';

/**
 * Child of idempotency-crash.test.ts: one idempotent 3-shard transfer (a leg row and a balance
 * update per account), keyed by CHAOS_IDEMPOTENCY_KEY.
 *
 * CHAOS_MODE=first: SIGKILLs itself at the CHAOS_POINT fault callback with index CHAOS_INDEX
 * (first attempts only), like crash-child.ts. CHAOS_MODE=retry: a fresh process retrying the
 * same call, as a client would after a crash: again on every `retryable` error, with a short
 * backoff, until it resolves. Background recovery runs in the retry process (it is what ends
 * the first attempt's prepared transactions); the first one has it off.
 *
 * Env: CHAOS_SHARD_URLS, CHAOS_CATALOG, CHAOS_DATA, CHAOS_APPLICATION, CHAOS_ACCOUNTS (JSON
 * string[], the first one's shard decides), CHAOS_TRANSFER (the transfer's id).
 *
 * Stdout, one line per event, written synchronously so they survive the SIGKILL:
 *   kill <point> <index> <shardId> <gid>      right before dying
 *   error <code> <retryable>                  a retried failure (retry mode)
 *   done <ran|replayed> <attempts> <json>     when the call resolved
 */

const urls = requiredEnv('CHAOS_SHARD_URLS').split(',');
const data = requiredEnv('CHAOS_DATA');
const mode = requiredEnv('CHAOS_MODE');
const accounts = JSON.parse(requiredEnv('CHAOS_ACCOUNTS')) as string[];
const transferId = requiredEnv('CHAOS_TRANSFER');
const say = (line: string) => process.stdout.write(`${line}\n`);

const router = await ShardRouter.connect({
  shards: urls.map((connectionString, i) => ({ id: `s${i}`, connectionString })),
  catalogSchema: requiredEnv('CHAOS_CATALOG'),
  applicationName: requiredEnv('CHAOS_APPLICATION'),
  recovery: mode === 'retry' ? { intervalMillis: 300, graceMillis: 300, atConnect: true } : { intervalMillis: 0, atConnect: false },
  transactions: { lockTimeoutMillis: 1_000 },
  // The machine is shared and small: a connect that times out is not what this test is about.
  pool: { connectTimeoutMillis: 30_000, acquireTimeoutMillis: 30_000 },
});

if (mode === 'first') {
  const point = requiredEnv('CHAOS_POINT') as FaultPoint;
  const index = Number(requiredEnv('CHAOS_INDEX'));
  testHooks.fault = (context) => {
    if (context.attempt === 1 && context.point === point && context.index === index) {
      say(`kill ${point} ${index} ${context.shardId} ${context.gid}`);
      process.kill(process.pid, 'SIGKILL');
    }
  };
}

let ran = false;
const call = () =>
  router.transaction(
    accounts,
    async (tx) => {
      ran = true;
      for (const [i, account] of accounts.entries()) {
        const delta = i === 0 ? -20 : 10;
        await tx.execute(account, `UPDATE ${data}.accounts SET balance = balance + $2 WHERE id = $1`, [account, delta]);
        await tx.execute(account, `INSERT INTO ${data}.legs (transfer_id, account, delta) VALUES ($1, $2, $3)`, [
          transferId,
          account,
          delta,
        ]);
      }
      return { transfer: transferId, legs: accounts.length };
    },
    { idempotencyKey: requiredEnv('CHAOS_IDEMPOTENCY_KEY') },
  );

for (let attempt = 1; attempt <= 120; attempt++) {
  try {
    ran = false;
    const result = await call();
    say(`done ${ran ? 'ran' : 'replayed'} ${attempt} ${JSON.stringify(result)}`);
    await router.close();
    process.exit(0);
  } catch (error) {
    const { code, retryable } = error as { code?: string; retryable?: boolean };
    say(`error ${code ?? 'NO_CODE'} ${retryable === true}`);
    if (mode !== 'retry' || retryable !== true) {
      process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`);
      process.exit(mode === 'retry' ? 4 : 3);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
process.exit(5);
