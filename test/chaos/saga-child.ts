import { ShardRouter } from '../../src/index.js';
import type { SagaStepContext } from '../../src/index.js';
import { sagaTestHooks } from '../../src/saga/context.js';
import { requiredEnv } from './child-env.js';

/**
 * Child of saga-crash.test.ts: a 3-step saga (each step adds 1 to a counter on its own shard
 * and writes an effect row, in one idempotent step transaction; compensations undo it), with
 * step 2 failing when CHAOS_FAIL=step2.
 *
 * CHAOS_MODE=first: runs the saga and SIGKILLs itself at CHAOS_KILL: `before-N` / `after-N`
 * (around the runner's N-th log write; after-0 is right after the insert), `in-run-K` /
 * `in-compensate-K` (step K's database work committed, its log entry not yet written).
 * CHAOS_MODE=resume: calls router.resumeSagas() until the saga is no longer active, as another
 * router would. Every step call first records (saga, step, kind, pid, epoch) in a plain table
 * on s0, outside the saga's idempotency, so the parent can see who ran what, when.
 *
 * Stdout: `kill <point>` right before dying; `done <state>` when the saga ended (resume mode).
 */

const urls = requiredEnv('CHAOS_SHARD_URLS').split(',');
const data = requiredEnv('CHAOS_DATA');
const mode = requiredEnv('CHAOS_MODE');
const sagaId = requiredEnv('CHAOS_SAGA_ID');
const ids = JSON.parse(requiredEnv('CHAOS_KEYS')) as string[];
const fail = process.env.CHAOS_FAIL === 'step2';
const kill = process.env.CHAOS_KILL ?? '';
const say = (line: string) => process.stdout.write(`${line}\n`);
const die = (point: string) => {
  say(`kill ${point}`);
  process.kill(process.pid, 'SIGKILL');
};

const router = await ShardRouter.connect({
  shards: urls.map((connectionString, i) => ({ id: `s${i}`, connectionString })),
  catalogSchema: requiredEnv('CHAOS_CATALOG'),
  applicationName: requiredEnv('CHAOS_APPLICATION'),
  recovery: { intervalMillis: 0, atConnect: false },
  idempotency: { gcIntervalMillis: 0 },
  transactions: { lockTimeoutMillis: 2_000 },
  // The resumers wait out the dead runner's lease, once per case: short, but several renewals
  // (every third of it) long, so a live runner merely slowed by the loaded machine keeps it.
  sagas: { leaseMillis: 2_500, resumeIntervalMillis: 0, compensationBackoffMillis: 50 },
});

interface Input {
  readonly ids: string[];
  readonly fail: boolean;
}

// Everything from the input and the step context, not from this process's env: a resumer takes
// over every orphaned chaos-order saga of the cluster, other test cases' too.
async function effect(step: SagaStepContext, input: Input, index: number, delta: number): Promise<void> {
  const { ids, fail } = input;
  await router.executeOn('s0', `INSERT INTO ${data}.step_runs (saga_id, step, kind, pid, epoch) VALUES ($1, $2, $3, $4, $5)`, [
    step.sagaId,
    index,
    step.kind,
    process.pid,
    step.fencingToken,
  ]);
  if (fail && index === 2 && step.kind === 'run') throw new Error('step 2 fails');
  await step.transaction([ids[index]!], async (tx) => {
    await tx.execute(ids[index]!, `UPDATE ${data}.counters SET n = n + $2 WHERE id = $1`, [ids[index], delta]);
    await tx.execute(ids[index]!, `INSERT INTO ${data}.effects (saga_id, step, kind) VALUES ($1, $2, $3)`, [step.sagaId, index, step.kind]);
  });
  if (step.sagaId === sagaId && kill === `in-${step.kind}-${index}`) die(kill);
}

const saga = router.defineSaga<Input, number>(
  'chaos-order',
  [0, 1, 2].map((index) => ({
    name: `step-${index}`,
    run: async (step, input) => {
      await effect(step, input, index, 1);
      return index;
    },
    compensate: async (step, input) => effect(step, input, index, -1),
  })),
);

if (mode === 'first') {
  sagaTestHooks.logWrite = (event) => {
    if (event.sagaId === sagaId && kill === `${event.phase}-${event.n}`) die(kill);
  };
  const outcome = await saga.run(ids[0]!, { ids, fail }, { sagaId }).then(
    () => 'completed',
    (error: { code?: string }) => error.code,
  );
  say(`done ${outcome}`);
  process.exit(0);
}

for (let pass = 0; pass < 400; pass++) {
  // A shard slow to answer on a loaded machine is no reason to give up: a real resumer retries.
  const record = await router
    .resumeSagas()
    .then(() => router.sagas.get(sagaId))
    .catch(() => undefined);
  if (record && record.state !== 'running' && record.state !== 'compensating') {
    say(`done ${record.state}`);
    await router.close();
    process.exit(0);
  }
  await new Promise((resolve) => setTimeout(resolve, 200));
}
process.exit(5);
