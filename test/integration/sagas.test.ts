import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter, ShardRouterError } from '../../src/index.js';
import type { SagaError, SagaStepDefinition } from '../../src/index.js';
import { dropSchemas, rejectionOf, shardConfigs, uniqueName } from '../support/cluster.js';
import { keysOn } from '../support/keys.js';
import { runCli } from '../support/cli.js';

/**
 * Sagas on real shards (docs/sagas.md): completion, failure at each step with compensations in
 * reverse, retries, a compensation failing twice, parking with retry and resolve, pivots,
 * joining by sagaId, the epoch fence, a move of the log's bucket while sagas run, bad input.
 * The crash cases are in test/chaos/saga-crash.test.ts.
 */

const data = uniqueName('saga');
const catalog = uniqueName('cat');
let router: ShardRouter;
let sequence = 0;

beforeAll(async () => {
  router = await ShardRouter.connect({
    shards: shardConfigs(),
    catalogSchema: catalog,
    bucketCount: 64,
    recovery: { intervalMillis: 0, atConnect: false },
    idempotency: { gcIntervalMillis: 0 },
    sagas: { resumeIntervalMillis: 0, compensationBackoffMillis: 0, leaseMillis: 5_000 },
  });
  for (const shardId of router.shardIds) {
    await router.executeOn(shardId, `CREATE SCHEMA ${data}`);
    await router.executeOn(shardId, `CREATE TABLE ${data}.counters (id text PRIMARY KEY, n int NOT NULL)`);
  }
  await router.registerShardedTable(`${data}.counters`, 'id');
});

afterAll(async () => {
  await router.close();
  await dropSchemas(data, catalog);
});

/** Fresh counters, one per step, on three shards. */
async function freshCounters(): Promise<string[]> {
  const tag = `t${sequence++}`;
  const ids = ['s0', 's1', 's2'].map((shardId) => keysOn(router, [shardId], `${tag}-${shardId}`)[0]!);
  for (const id of ids) await router.execute(id, `INSERT INTO ${data}.counters (id, n) VALUES ($1, 0)`, [id]);
  return ids;
}

async function countersOf(ids: readonly string[]): Promise<number[]> {
  const values: number[] = [];
  for (const id of ids) {
    const { rows } = await router.execute<{ n: number }>(id, `SELECT n FROM ${data}.counters WHERE id = $1`, [id]);
    values.push(rows[0]!.n);
  }
  return values;
}

interface Faults {
  /** Step index -> how many times its run throws (before its database work). */
  run?: Record<number, number>;
  /** Step index -> how many times its compensation throws. */
  compensate?: Record<number, number>;
}

/** Three steps, each adding 1 to its counter (compensation: subtracting), with injected faults; `order` records every call. */
function countingSteps(ids: readonly string[], faults: Faults, order: string[], options: { pivot?: number; attempts?: number } = {}) {
  const runFaults = { ...faults.run };
  const compensateFaults = { ...faults.compensate };
  return ids.map(
    (id, index): SagaStepDefinition<{ ids: string[] }> => ({
      name: `step-${index}`,
      retry: { attempts: options.attempts ?? 1, backoffMillis: 0 },
      run: async (step, input, previous) => {
        order.push(`run ${index}`);
        expect(Object.keys(previous)).toEqual(ids.slice(0, index).map((_, j) => `step-${j}`));
        if ((runFaults[index] ?? 0) > 0) {
          runFaults[index]!--;
          throw new Error(`step ${index} fails`);
        }
        await step.execute(input.ids[index]!, `UPDATE ${data}.counters SET n = n + 1 WHERE id = $1`, [id]);
        return { step: index };
      },
      ...(options.pivot === index
        ? {}
        : {
            compensate: async (step, input, result) => {
              order.push(`compensate ${index}`);
              expect(result).toEqual({ step: index });
              if ((compensateFaults[index] ?? 0) > 0) {
                compensateFaults[index]!--;
                throw new Error(`compensation ${index} fails`);
              }
              await step.execute(input.ids[index]!, `UPDATE ${data}.counters SET n = n - 1 WHERE id = $1`, [id]);
            },
          }),
    }),
  );
}

function sagaName(): string {
  return `saga-${sequence++}`;
}

describe('sagas', () => {
  it('completes: every step once, the last result, the log completed and listed', async () => {
    const ids = await freshCounters();
    const order: string[] = [];
    const saga = router.defineSaga<{ ids: string[] }, { step: number }>(sagaName(), countingSteps(ids, {}, order));
    const outcome = await saga.run(ids[0]!, { ids });
    expect(outcome).toMatchObject({ status: 'completed', result: { step: 2 } });
    expect(order).toEqual(['run 0', 'run 1', 'run 2']);
    expect(await countersOf(ids)).toEqual([1, 1, 1]);
    const record = await router.sagas.get(outcome.sagaId);
    expect(record?.state).toBe('completed');
    expect(record?.steps.map((step) => [step.state, step.runs])).toEqual([
      ['done', 1],
      ['done', 1],
      ['done', 1],
    ]);
    expect(record?.leaseOwner).toBeNull();
    const listed = await router.sagas.list({ name: saga.name });
    expect(listed.map((entry) => entry.sagaId)).toEqual([outcome.sagaId]);
    // Joining by id: the stored outcome, nothing runs again.
    expect(await saga.run(ids[0]!, { ids }, { sagaId: outcome.sagaId })).toEqual(outcome);
    expect(order).toHaveLength(3);
    expect(await countersOf(ids)).toEqual([1, 1, 1]);
  });

  it.each([0, 1, 2])('a failure at step %i compensates the done steps in reverse and rejects SAGA_COMPENSATED', async (failing) => {
    const ids = await freshCounters();
    const order: string[] = [];
    const saga = router.defineSaga(sagaName(), countingSteps(ids, { run: { [failing]: 1 } }, order));
    const error = (await rejectionOf(saga.run(ids[1]!, { ids }))) as SagaError;
    expect(error).toBeInstanceOf(ShardRouterError);
    expect(error.code).toBe('SAGA_COMPENSATED');
    expect((error.cause as Error).message).toBe(`step ${failing} fails`);
    const ran = Array.from({ length: failing + 1 }, (_, i) => `run ${i}`);
    const compensated = Array.from({ length: failing }, (_, i) => `compensate ${failing - 1 - i}`);
    expect(order).toEqual([...ran, ...compensated]);
    expect(await countersOf(ids)).toEqual([0, 0, 0]);
    const record = await router.sagas.get(error.sagaId);
    expect(record?.state).toBe('compensated');
    expect(record?.steps.map((step) => step.state)).toEqual(
      [0, 1, 2].map((i) => (i < failing ? 'compensated' : i === failing ? 'failed' : 'pending')),
    );
    // Joining a compensated saga: the same rejection, from the log.
    const again = (await rejectionOf(saga.run(ids[1]!, { ids }, { sagaId: error.sagaId }))) as SagaError;
    expect(again.code).toBe('SAGA_COMPENSATED');
    expect((again.cause as Error).message).toBe(`step ${failing} fails`);
  });

  it('retries a step up to its attempts', async () => {
    const ids = await freshCounters();
    const order: string[] = [];
    const saga = router.defineSaga(sagaName(), countingSteps(ids, { run: { 1: 2 } }, order, { attempts: 3 }));
    const outcome = await saga.run(ids[0]!, { ids });
    expect(outcome.status).toBe('completed');
    expect(order).toEqual(['run 0', 'run 1', 'run 1', 'run 1', 'run 2']);
    expect(await countersOf(ids)).toEqual([1, 1, 1]);
    const record = await router.sagas.get(outcome.sagaId);
    expect(record?.steps[1]).toMatchObject({ state: 'done', runs: 3, failures: 2 });
  });

  it('a compensation that fails twice then succeeds: compensated, nothing dropped', async () => {
    const ids = await freshCounters();
    const order: string[] = [];
    const saga = router.defineSaga(sagaName(), countingSteps(ids, { run: { 2: 1 }, compensate: { 0: 2 } }, order));
    const error = (await rejectionOf(saga.run(ids[0]!, { ids }))) as SagaError;
    expect(error.code).toBe('SAGA_COMPENSATED');
    expect(order).toEqual(['run 0', 'run 1', 'run 2', 'compensate 1', 'compensate 0', 'compensate 0', 'compensate 0']);
    expect(await countersOf(ids)).toEqual([0, 0, 0]);
    const record = await router.sagas.get(error.sagaId);
    expect(record?.steps[0]).toMatchObject({ state: 'compensated', compensations: 3, compensationFailures: 2 });
  });

  it('parks after maxCompensationAttempts; retry continues where it stopped; resolve closes another', async () => {
    const ids = await freshCounters();
    const order: string[] = [];
    const saga = router.defineSaga(sagaName(), countingSteps(ids, { run: { 2: 1 }, compensate: { 1: 3 } }, order), {
      maxCompensationAttempts: 2,
    });
    const error = (await rejectionOf(saga.run(ids[0]!, { ids }))) as SagaError;
    expect(error.code).toBe('SAGA_PARKED');
    expect(order).toEqual(['run 0', 'run 1', 'run 2', 'compensate 1', 'compensate 1']);
    expect(await countersOf(ids)).toEqual([1, 1, 0]);
    const parked = await router.sagas.list({ state: 'parked', name: saga.name });
    expect(parked.map((entry) => entry.sagaId)).toEqual([error.sagaId]);
    expect(parked[0]?.error?.message).toBe('compensation 1 fails');
    // A fresh budget of 2: the third failure and then success.
    const retried = (await rejectionOf(router.sagas.retry(error.sagaId))) as SagaError;
    expect(retried.code).toBe('SAGA_COMPENSATED');
    expect((retried.cause as Error).message).toBe('step 2 fails');
    expect(order.slice(5)).toEqual(['compensate 1', 'compensate 1', 'compensate 0']);
    expect(await countersOf(ids)).toEqual([0, 0, 0]);
    expect((await router.sagas.get(error.sagaId))?.state).toBe('compensated');
    expect(((await rejectionOf(router.sagas.retry(error.sagaId))) as ShardRouterError).code).toBe('INVALID_ARGUMENT');

    const other = await freshCounters();
    const second = router.defineSaga(sagaName(), countingSteps(other, { run: { 1: 1 }, compensate: { 0: 9 } }, []), {
      maxCompensationAttempts: 1,
    });
    const stuck = (await rejectionOf(second.run(other[0]!, { ids: other }))) as SagaError;
    expect(stuck.code).toBe('SAGA_PARKED');
    const resolved = await router.sagas.resolve(stuck.sagaId, { note: 'refunded by hand' });
    expect(resolved).toMatchObject({ state: 'resolved', note: 'refunded by hand' });
    const joined = (await rejectionOf(second.run(other[0]!, { ids: other }, { sagaId: stuck.sagaId }))) as SagaError;
    expect(joined.code).toBe('SAGA_PARKED');
    expect(joined.message).toContain('refunded by hand');
  });

  it('CLI: sagas --parked lists a parked saga; saga retry hands it back, a defining router resumes it; saga resolve', async () => {
    const ids = await freshCounters();
    const order: string[] = [];
    const saga = router.defineSaga(sagaName(), countingSteps(ids, { run: { 1: 1 }, compensate: { 0: 1 } }, order), {
      maxCompensationAttempts: 1,
    });
    const parked = (await rejectionOf(saga.run(ids[0]!, { ids }))) as SagaError;
    expect(parked.code).toBe('SAGA_PARKED');
    const cluster = [
      '--shards',
      shardConfigs()
        .map((shard) => shard.connectionString)
        .join(','),
      '--catalog-schema',
      catalog,
    ];
    const listed = await runCli(['sagas', '--parked', ...cluster]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain(parked.sagaId);
    expect(listed.stdout).toContain('compensation 0 fails');
    const retried = await runCli(['saga', 'retry', parked.sagaId, ...cluster]);
    expect(retried.code, retried.stderr).toBe(0);
    expect((await router.sagas.get(parked.sagaId))?.state).toBe('compensating');
    const report = await router.resumeSagas();
    expect(report.resumed).toContainEqual({ sagaId: parked.sagaId, name: saga.name, outcome: 'compensated' });
    expect(await countersOf(ids)).toEqual([0, 0, 0]);

    const bad = await runCli(['saga', 'resolve', 'no-such-saga', ...cluster]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('INVALID_ARGUMENT');
  }, 300_000);

  it('a failure after a pivot parks (forward only); retry re-runs the failed step', async () => {
    const ids = await freshCounters();
    const order: string[] = [];
    const saga = router.defineSaga(sagaName(), countingSteps(ids, { run: { 2: 1 } }, order, { pivot: 1 }));
    const error = (await rejectionOf(saga.run(ids[0]!, { ids }))) as SagaError;
    expect(error.code).toBe('SAGA_PARKED');
    expect(order).toEqual(['run 0', 'run 1', 'run 2']);
    const outcome = await router.sagas.retry(error.sagaId);
    expect(outcome).toMatchObject({ status: 'completed', result: { step: 2 } });
    expect(await countersOf(ids)).toEqual([1, 1, 1]);
  });

  it('fences a runner whose epoch was taken: its next write is refused with SAGA_LEASE_LOST', async () => {
    const ids = await freshCounters();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let started!: () => void;
    const running = new Promise<void>((resolve) => (started = resolve));
    const saga = router.defineSaga(sagaName(), [
      {
        name: 'wait',
        run: async () => {
          started();
          await gate;
          return 1;
        },
      },
      {
        name: 'after',
        run: async (step) => step.execute(ids[0]!, `UPDATE ${data}.counters SET n = n + 1 WHERE id = $1`, [ids[0]]).then(() => 2),
      },
    ]);
    const run = saga.run(ids[0]!, {}, { sagaId: `fenced-${sequence++}` });
    await running;
    // Another runner's takeover, as the SQL does it: the epoch grows.
    await router.execute(ids[0]!, `UPDATE ${catalog}.saga_log SET epoch = epoch + 1 WHERE saga_key = $1`, [ids[0]]);
    release();
    const error = (await rejectionOf(run)) as ShardRouterError;
    expect(error.code).toBe('SAGA_LEASE_LOST');
    expect(error.retryable).toBe(true);
    expect(await countersOf(ids)).toEqual([0, 0, 0]);
  });

  it('sagas keep running while their log bucket moves', async () => {
    const ids = await freshCounters();
    const sagaKey = ids[0]!;
    const saga = router.defineSaga<{ ids: string[] }>(
      sagaName(),
      countingSteps(ids, {}, []).map((step) => ({
        ...step,
        run: async (context, input, previous) => {
          await new Promise((resolve) => setTimeout(resolve, 20));
          return step.run(context, input, previous);
        },
      })),
    );
    // Sagas start one after another for as long as the move runs, so some run across its cutover;
    // at most four at a time (a slow machine makes the move long, not the pool exhausted). Each
    // outcome is caught at once, so a failure is an assertion below, not an unhandled rejection.
    const runs: Promise<string>[] = [];
    const inFlight = new Set<Promise<string>>();
    let moving = true;
    const move = router
      .rebalancer()
      .moveBucket(router.bucketFor(sagaKey), 's3')
      .finally(() => {
        moving = false;
      });
    while (moving || runs.length < 4) {
      if (inFlight.size >= 4) await Promise.race(inFlight);
      const run: Promise<string> = saga
        .run(sagaKey, { ids }, { sagaId: `moving-${sequence}-${runs.length}` })
        .then(
          (outcome) => outcome.status,
          (error: unknown) => `failed: ${error instanceof Error ? error.message : String(error)}`,
        )
        .finally(() => inFlight.delete(run));
      inFlight.add(run);
      runs.push(run);
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
    await move;
    const outcomes = await Promise.all(runs);
    expect(outcomes.filter((status) => status !== 'completed')).toEqual([]);
    const n = runs.length;
    expect(await countersOf(ids)).toEqual([n, n, n]);
    expect(router.shardFor(sagaKey)).toBe('s3');
    const { rows } = await router.executeOn<{ n: number }>(
      's3',
      `SELECT count(*)::int AS n FROM ${catalog}.saga_log WHERE saga_key = $1 AND state = 'completed'`,
      [sagaKey],
    );
    expect(rows[0]!.n).toBe(runs.length);
  }, 300_000);
});

describe('saga bad input: typed errors, nothing written', () => {
  async function logRows(): Promise<number> {
    let total = 0;
    for (const shardId of router.shardIds) {
      // The bad calls below all use the saga key 'k' (or an invalid one).
      const { rows } = await router.executeOn<{ n: number }>(
        shardId,
        `SELECT count(*)::int AS n FROM ${catalog}.saga_log WHERE saga_key = 'k'`,
      );
      total += rows[0]!.n;
    }
    return total;
  }

  it('refuses bad definitions, input, ids and keys', async () => {
    const before = await logRows();
    const code = (thunk: () => unknown) => rejectionOf(thunk).then((error) => (error as ShardRouterError).code);
    const run = async () => 1;
    expect(
      await code(() =>
        router.defineSaga('dup-steps', [
          { name: 'a', run },
          { name: 'a', run },
        ]),
      ),
    ).toBe('INVALID_ARGUMENT');
    expect(await code(() => router.defineSaga('no steps', []))).toBe('INVALID_ARGUMENT');
    expect(await code(() => router.defineSaga('bad-step', [{ name: 'a' } as never]))).toBe('INVALID_ARGUMENT');
    expect(await code(() => router.defineSaga('bad-retry', [{ name: 'a', run, retry: { attempts: 0 } }]))).toBe('INVALID_ARGUMENT');
    const saga = router.defineSaga('ok-bad-input', [{ name: 'a', run }]);
    expect(await code(() => router.defineSaga('ok-bad-input', [{ name: 'a', run }]))).toBe('INVALID_ARGUMENT');
    expect(await code(() => saga.run('k', { when: new Date() }))).toBe('INVALID_ARGUMENT');
    expect(await code(() => saga.run('k', { n: Number.NaN }))).toBe('INVALID_ARGUMENT');
    expect(await code(() => saga.run('k', {}, { sagaId: '' }))).toBe('INVALID_ARGUMENT');
    expect(await code(() => saga.run('', {}))).toBe('INVALID_KEY');
    expect(await code(() => router.sagas.list({ state: 'nope' as never }))).toBe('INVALID_ARGUMENT');
    expect(await code(() => router.sagas.retry('no-such-saga'))).toBe('INVALID_ARGUMENT');
    expect(await logRows()).toBe(before);
  });

  it('a saga unknown to this router cannot be retried here; a non-JSON step result fails the step typed', async () => {
    const ids = await freshCounters();
    const saga = router.defineSaga(`nonjson-${sequence++}`, [
      { name: 'ok', run: async () => 'fine', compensate: async () => undefined },
      { name: 'bad', run: async () => ({ at: new Date() }) },
    ]);
    const error = (await rejectionOf(saga.run(ids[0]!, {}))) as SagaError;
    expect(error.code).toBe('SAGA_COMPENSATED');
    expect((error.cause as ShardRouterError).code).toBe('INVALID_ARGUMENT');

    const parking = router.defineSaga(
      `unknown-${sequence++}`,
      [
        { name: 'a', run: async () => 1, compensate: async () => Promise.reject(new Error('no')) },
        { name: 'b', run: async () => Promise.reject(new Error('fail')) },
      ],
      { maxCompensationAttempts: 1 },
    );
    const parked = (await rejectionOf(parking.run(ids[1]!, {}))) as SagaError;
    expect(parked.code).toBe('SAGA_PARKED');
    const other = await ShardRouter.connect({
      shards: shardConfigs(),
      catalogSchema: catalog,
      recovery: { intervalMillis: 0, atConnect: false },
    });
    try {
      const unknown = (await rejectionOf(other.sagas.retry(parked.sagaId))) as ShardRouterError;
      expect(unknown.code).toBe('INVALID_ARGUMENT');
      expect(unknown.message).toContain('not defined on this router');
      expect((await other.sagas.get(parked.sagaId))?.state).toBe('parked');
    } finally {
      await other.close();
    }
  });
});
