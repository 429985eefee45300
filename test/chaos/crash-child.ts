import { AsyncLocalStorage } from 'node:async_hooks';
import { ShardRouter } from '../../src/index.js';
import { testHooks } from '../../src/twopc/test-hooks.js';
import { requiredEnv } from './child-env.js';
import type { FaultPoint } from '../../src/twopc/test-hooks.js';

/**
 * Child of crash-points.test.ts: runs cross-shard transfers (each leg also publishes an outbox event) with a fault hook that SIGKILLs this
 * very process at a chosen protocol step, so the parent can check what recovery makes of the
 * state a real crash leaves on real servers.
 *
 * Env: CHAOS_SHARD_URLS (comma-separated, shards s0..), CHAOS_CATALOG, CHAOS_DATA (schema of
 * accounts and legs), CHAOS_APPLICATION (application_name, so the parent can see our backends
 * go), CHAOS_TRANSFERS (JSON PlannedTransfer[], run concurrently), CHAOS_KILL (JSON KillRule),
 * CHAOS_HOLD (optional JSON Holds: transfers frozen at a step, so the kill finds them there).
 *
 * Stdout, one line per event, written synchronously (stdout is a pipe: synchronous on Linux) so
 * the lines survive the SIGKILL:
 *   fault <transfer> <point> <index> <of> <attempt> <shardId> <gid>   at every fault callback
 *   hold <transfer> <point> <gid>                                     when a transfer freezes
 *   kill <transfer> <point> <index> <shardId> <gid>                   right before dying
 *   ack <transfer> | fail <transfer> <code> | doubt <transfer>        when transaction() settles
 */

export interface PlannedTransfer {
  readonly id: string;
  /** One leg per account; the first account's shard is the decision shard. Deltas sum to 0. */
  readonly legs: readonly { readonly account: string; readonly delta: number }[];
}

/** Die at the `nth` fault callback (first attempts only) matching `point` and `index` when given. */
export interface KillRule {
  readonly nth: number;
  readonly point?: FaultPoint;
  readonly index?: number;
}

/** Transfer id -> the step at which its first callback (index 1, first attempt) never returns. */
export type Holds = Readonly<Record<string, FaultPoint>>;

const urls = requiredEnv('CHAOS_SHARD_URLS').split(',');
const data = requiredEnv('CHAOS_DATA');
const transfers = JSON.parse(requiredEnv('CHAOS_TRANSFERS')) as PlannedTransfer[];
const kill = JSON.parse(requiredEnv('CHAOS_KILL')) as KillRule;
const holds = JSON.parse(process.env.CHAOS_HOLD ?? '{}') as Holds;

const say = (line: string) => process.stdout.write(`${line}\n`);

const router = await ShardRouter.connect({
  shards: urls.map((connectionString, i) => ({ id: `s${i}`, connectionString })),
  catalogSchema: requiredEnv('CHAOS_CATALOG'),
  applicationName: requiredEnv('CHAOS_APPLICATION'),
  // The parent is the only recoverer: a pass in here could settle what the crash should leave.
  recovery: { intervalMillis: 0, atConnect: false },
});

// The fault context names the gid, not the transfer: the transfer id travels with the async context.
const currentTransfer = new AsyncLocalStorage<string>();
let matching = 0;
// The free transfers start their work only once every held one is frozen in place, so the kill
// (counted among the free ones) is sure to find the held ones at their steps.
let heldCount = 0;
let releaseFree: () => void = () => undefined;
const everyHoldInPlace = Object.keys(holds).length === 0 ? Promise.resolve() : new Promise<void>((resolve) => (releaseFree = resolve));
testHooks.fault = async (context) => {
  const transfer = currentTransfer.getStore() ?? '?';
  const { point, index, of, attempt, shardId, gid } = context;
  say(`fault ${transfer} ${point} ${index} ${of} ${attempt} ${shardId} ${gid}`);
  const matches = attempt === 1 && (kill.point === undefined || kill.point === point) && (kill.index === undefined || kill.index === index);
  if (matches && ++matching === kill.nth) {
    say(`kill ${transfer} ${point} ${index} ${shardId} ${gid}`);
    process.kill(process.pid, 'SIGKILL');
  }
  if (holds[transfer] === point && index === 1 && attempt === 1) {
    say(`hold ${transfer} ${point} ${gid}`);
    if (++heldCount === Object.keys(holds).length) releaseFree();
    await new Promise<never>(() => undefined);
  }
};

async function run(transfer: PlannedTransfer): Promise<void> {
  const keys = transfer.legs.map((leg) => leg.account);
  try {
    await currentTransfer.run(transfer.id, () =>
      router.transaction(keys, async (tx) => {
        if (holds[transfer.id] === undefined) await everyHoldInPlace;
        for (const { account, delta } of transfer.legs) {
          const updated = await tx.execute(account, `UPDATE ${data}.accounts SET balance = balance + $2 WHERE id = $1`, [account, delta]);
          if (updated.rowCount !== 1) throw new Error(`account ${account} does not exist`);
          await tx.execute(account, `INSERT INTO ${data}.legs (transfer_id, account, delta) VALUES ($1, $2, $3)`, [
            transfer.id,
            account,
            delta,
          ]);
        }
        // One event per leg, published last: each rides with its shard's commit step (PREPARE
        // on a voter, the decision on D), so every kill point also checks the events (O1).
        for (const { account } of transfer.legs) await tx.publish(account, 'crash', { transfer: transfer.id, account });
      }),
    );
    say(`ack ${transfer.id}`);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    say(code === 'IN_DOUBT' ? `doubt ${transfer.id}` : `fail ${transfer.id} ${typeof code === 'string' ? code : 'NO_CODE'}`);
  }
}

// Held transfers never settle, so only the others are awaited.
const running = transfers.map(run);
await Promise.all(transfers.flatMap((transfer, i) => (holds[transfer.id] === undefined ? [running[i]] : [])));
// Reaching this line means the kill point was never hit; the parent reports the exit code as a failure.
process.stderr.write('the kill point was never reached\n');
process.exit(3);
