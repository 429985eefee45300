import { ShardRouter } from '../../src/index.js';
import { rebalanceHooks } from '../../src/rebalance/test-hooks.js';
import type { MoveStep } from '../../src/rebalance/test-hooks.js';
import { testHooks } from '../../src/twopc/test-hooks.js';
import type { FaultPoint } from '../../src/twopc/test-hooks.js';
import { requiredEnv } from './child-env.js';

/**
 * Child of rebalance-crash.test.ts: a rebalancer that moves one bucket and SIGKILLs itself at a
 * chosen step of the move (a MOVE_STEPS step, or a fault point of the map switch's two-phase
 * commit), so the parent can check what `resume()` makes of the state a real crash leaves.
 *
 * Env: CHAOS_SHARD_URLS (comma-separated, shards s0..), CHAOS_CATALOG, CHAOS_APPLICATION
 * (application_name, so the parent can see our backends go), CHAOS_BUCKET, CHAOS_TARGET,
 * CHAOS_KILL (JSON RebalanceKill).
 *
 * Stdout, one line per event, written synchronously (a pipe: synchronous on Linux), so the
 * lines survive the SIGKILL:
 *   step <step> <moveId>                          at every move step
 *   fault <point> <index> <of> <shardId> <gid>    at every fault callback of the switch's 2PC
 *   kill <step|point> <index|->                   right before dying
 */

export type RebalanceKill = { readonly step: MoveStep } | { readonly fault: FaultPoint; readonly index: number };

/** How long the move lingers at each step it survives (so the parent's writes interleave), and before the kill. */
const STEP_LINGER_MS = 30;
const KILL_LINGER_MS = 100;

const urls = requiredEnv('CHAOS_SHARD_URLS').split(',');
const bucket = Number(requiredEnv('CHAOS_BUCKET'));
const target = requiredEnv('CHAOS_TARGET');
const kill = JSON.parse(requiredEnv('CHAOS_KILL')) as RebalanceKill;

const say = (line: string) => process.stdout.write(`${line}\n`);
const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis));

async function die(what: string, index: number | undefined): Promise<never> {
  // Writers of the moving bucket pile up behind whatever this step holds before it is lost.
  await sleep(KILL_LINGER_MS);
  say(`kill ${what} ${index ?? '-'}`);
  process.kill(process.pid, 'SIGKILL');
  return new Promise<never>(() => undefined);
}

const router = await ShardRouter.connect({
  shards: urls.map((connectionString, i) => ({ id: `s${i}`, connectionString })),
  catalogSchema: requiredEnv('CHAOS_CATALOG'),
  applicationName: requiredEnv('CHAOS_APPLICATION'),
  // The parent is the only recoverer: a pass in here could settle what the crash should leave.
  recovery: { intervalMillis: 0, atConnect: false },
});

rebalanceHooks.step = async (step, moveId) => {
  say(`step ${step} ${moveId}`);
  if ('step' in kill && kill.step === step) await die(step, undefined);
  await sleep(STEP_LINGER_MS);
};

testHooks.fault = async ({ point, index, of, shardId, gid, attempt }) => {
  say(`fault ${point} ${index} ${of} ${shardId} ${gid}`);
  if ('fault' in kill && kill.fault === point && kill.index === index && attempt === 1) await die(point, index);
};

await router.rebalancer().moveBucket(bucket, target);
// Reaching this line means the kill point was never hit; the parent reports the exit code as a failure.
process.stderr.write('the kill point was never reached\n');
process.exit(3);
