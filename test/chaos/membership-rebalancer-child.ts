import { ShardRouter } from '../../src/index.js';
import type { PlannedMove } from '../../src/index.js';
import { rebalanceHooks } from '../../src/rebalance/test-hooks.js';
import type { MoveStep } from '../../src/rebalance/test-hooks.js';
import { requiredEnv } from './child-env.js';
import { describeError } from './membership-writers.js';

/**
 * Child of rebalance-membership.test.ts, in one of two modes (CHAOS_MODE):
 *
 * - `crash`: a rebalancer that adds shards (CHAOS_ADD, JSON [{ id, connectionString }]), runs
 *   rebalance() onto them, plans removeShard(CHAOS_REMOVE) with a dry run, then removes it and
 *   SIGKILLs itself at step CHAOS_KILL_STEP of the plan's LAST move (the first move whose id is
 *   the plan's length-th distinct one).
 * - `resume`: a fresh router (its config lists the original shards only) that runs
 *   rebalancer().resume() and then removeShard(CHAOS_REMOVE) again, and exits 0.
 *
 * Env: CHAOS_SHARD_URLS (comma-separated original shards s0..), CHAOS_CATALOG, CHAOS_APPLICATION.
 *
 * Stdout, one line per event, written synchronously (a pipe: synchronous on Linux), so the lines
 * survive the SIGKILL:
 *   added <shardId> <referenceRows JSON>
 *   rebalanced <moves> <bucketsPerShard JSON>
 *   plan <PlannedMove[] JSON>                   removeShard's dry run
 *   step <phase> <step> <moveId>                at every move step (phase: rebalance | remove)
 *   kill <step> <moveId>                        right before dying
 *   shards <shardIds JSON>                      (resume) the fresh router's members at connect
 *   resumed <ResumeReport JSON>                 (resume)
 *   removed <RebalanceReport JSON>              (resume)
 *   error <description>                         a call failed (then exit 1)
 */

const STEP_LINGER_MS = 20;
const KILL_LINGER_MS = 100;

const mode = requiredEnv('CHAOS_MODE');
const removing = requiredEnv('CHAOS_REMOVE');

const say = (line: string) => process.stdout.write(`${line}\n`);
const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis));

const router = await ShardRouter.connect({
  shards: requiredEnv('CHAOS_SHARD_URLS')
    .split(',')
    .map((connectionString, i) => ({ id: `s${i}`, connectionString })),
  catalogSchema: requiredEnv('CHAOS_CATALOG'),
  applicationName: requiredEnv('CHAOS_APPLICATION'),
  // The crash must leave what it leaves; resume() settles in-doubt switches itself (grace 0).
  recovery: { intervalMillis: 0, atConnect: false },
});

try {
  if (mode === 'crash') await crash();
  else if (mode === 'resume') await resume();
  else throw new Error(`unknown CHAOS_MODE ${mode}`);
} catch (error) {
  say(`error ${describeError(error).replace(/\s+/g, ' ')}`);
  process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
}

async function crash(): Promise<never> {
  const killStep = requiredEnv('CHAOS_KILL_STEP') as MoveStep;
  const additions = JSON.parse(requiredEnv('CHAOS_ADD')) as { id: string; connectionString: string }[];
  const rebalancer = router.rebalancer({ bucketsPerMove: 8 });
  let phase: 'rebalance' | 'remove' = 'rebalance';
  let plan: readonly PlannedMove[] = [];
  const removalMoves: string[] = [];

  rebalanceHooks.step = async (step, moveId) => {
    say(`step ${phase} ${step} ${moveId}`);
    if (phase === 'remove') {
      if (!removalMoves.includes(moveId)) removalMoves.push(moveId);
      if (step === killStep && removalMoves.length === plan.length && removalMoves.at(-1) === moveId) {
        // Writers pile up behind whatever this step holds before it is lost.
        await sleep(KILL_LINGER_MS);
        say(`kill ${step} ${moveId}`);
        process.kill(process.pid, 'SIGKILL');
        await new Promise<never>(() => undefined);
      }
    }
    await sleep(STEP_LINGER_MS);
  };

  for (const shard of additions) {
    const added = await rebalancer.addShard(shard);
    say(`added ${added.shardId} ${JSON.stringify(added.referenceRows)}`);
  }
  const rebalanced = await rebalancer.rebalance();
  say(`rebalanced ${rebalanced.moves.length} ${JSON.stringify(rebalanced.bucketsPerShard)}`);
  plan = (await rebalancer.removeShard(removing, { dryRun: true })).plan;
  say(`plan ${JSON.stringify(plan)}`);
  phase = 'remove';
  await rebalancer.removeShard(removing);
  // Reaching this line means the kill point was never hit; the parent reports the exit code.
  throw new Error(`the kill point (step ${killStep} of move ${plan.length} of ${plan.length}) was never reached`);
}

async function resume(): Promise<void> {
  say(`shards ${JSON.stringify(router.shardIds)}`);
  const rebalancer = router.rebalancer();
  const resumed = await rebalancer.resume();
  say(`resumed ${JSON.stringify(resumed)}`);
  const removed = await rebalancer.removeShard(removing);
  say(`removed ${JSON.stringify(removed)}`);
  await router.close();
  process.exit(0);
}
