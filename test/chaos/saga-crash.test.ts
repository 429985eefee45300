import { sweptCases } from '../support/sweep.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import { dropSchemas, shardConfigs, shardUrls, TEST_SHARDS, uniqueName } from '../support/cluster.js';
import { keyOn } from '../support/keys.js';
import { limiter, runToEnd, wordsOf } from './support.js';

/**
 * Sagas survive their runner's death (docs/sagas.md): a process running a 3-step saga is
 * SIGKILLed at every log transition (and right after a step's database work, before its log
 * entry), then two other router processes resume it at once. For each case: every step's
 * effect and every compensation's effect happened at most once (exactly once where the outcome
 * needs it), the saga ends completed or fully compensated, and no two processes ran it at once
 * (each epoch belongs to one process, and no call of an older epoch starts after a newer one).
 */

const data = uniqueName('sagachaos');
const catalog = uniqueName('cat');
const childSlot = limiter(3);
let urls: string[];
let router: ShardRouter;

beforeAll(async () => {
  urls = shardUrls().slice(0, TEST_SHARDS);
  router = await ShardRouter.connect({
    shards: shardConfigs(),
    catalogSchema: catalog,
    recovery: { intervalMillis: 0, atConnect: false },
    sagas: { resumeIntervalMillis: 0 },
  });
  for (const shardId of router.shardIds) {
    await router.executeOn(shardId, `CREATE SCHEMA ${data}`);
    await router.executeOn(shardId, `CREATE TABLE ${data}.counters (id text PRIMARY KEY, n int NOT NULL)`);
    await router.executeOn(shardId, `CREATE TABLE ${data}.effects (saga_id text NOT NULL, step int NOT NULL, kind text NOT NULL)`);
    await router.executeOn(
      shardId,
      `CREATE TABLE ${data}.step_runs (id bigserial PRIMARY KEY, saga_id text, step int, kind text, pid int, epoch int)`,
    );
  }
  await router.registerShardedTable(`${data}.counters`, 'id');
});

afterAll(async () => {
  await router.close();
  await dropSchemas(data, catalog);
});

interface CrashCase {
  readonly fail: 'none' | 'step2';
  readonly kill: string;
}

const COMPLETING = ['after-0', 'before-1', 'after-1', 'before-2', 'after-2', 'before-3', 'after-3', 'in-run-0', 'in-run-1', 'in-run-2'];
const COMPENSATING = ['after-0', ...[1, 2, 3, 4, 5].flatMap((n) => [`before-${n}`, `after-${n}`]), 'in-compensate-1', 'in-compensate-0'];
const CASES: readonly CrashCase[] = [
  ...COMPLETING.map((kill) => ({ fail: 'none' as const, kill })),
  ...COMPENSATING.map((kill) => ({ fail: 'step2' as const, kill })),
];

function child(env: Record<string, string>) {
  return childSlot(() =>
    runToEnd('test/chaos/saga-child.ts', { CHAOS_SHARD_URLS: urls.join(','), CHAOS_DATA: data, CHAOS_CATALOG: catalog, ...env }),
  );
}

// npm test: each kind of kill point in each direction (after the start, before and after a
// step's log entry, inside a step's work, the last entry; the same while compensating, and
// inside a compensation); PSR_FULL_SWEEP=1: every transition.
const REDUCED = new Set([
  'none after-0',
  'none before-2',
  'none after-2',
  'none in-run-1',
  'none after-3',
  'step2 before-4',
  'step2 after-4',
  'step2 in-compensate-1',
]);
const SWEPT = sweptCases(CASES, (crash) => REDUCED.has(`${crash.fail} ${crash.kill}`));

describe.concurrent('a saga runner SIGKILLed at a log transition, resumed by two other processes', () => {
  it.each(SWEPT.map((crash, n) => ({ ...crash, n })))(
    'fail=$fail, killed at $kill',
    async ({ n, fail, kill }) => {
      const sagaId = `chaos-${fail}-${kill}`;
      const ids = [0, 1, 2].map((offset) => keyOn(router, `s${(n + offset) % 3}`, `c${n}`));
      for (const id of ids) await router.execute(id, `INSERT INTO ${data}.counters (id, n) VALUES ($1, 0)`, [id]);
      const env = { CHAOS_SAGA_ID: sagaId, CHAOS_KEYS: JSON.stringify(ids), CHAOS_FAIL: fail };

      const first = await child({ ...env, CHAOS_MODE: 'first', CHAOS_KILL: kill, CHAOS_APPLICATION: `saga-first-${n}` });
      expect(first.signal, `the runner should have died by SIGKILL:\n${first.stdout}\n${first.stderr}`).toBe('SIGKILL');

      const resumers = await Promise.all(
        [1, 2].map((r) => child({ ...env, CHAOS_MODE: 'resume', CHAOS_APPLICATION: `saga-resume-${n}-${r}` })),
      );
      const expected = fail === 'none' ? 'completed' : 'compensated';
      for (const resumer of resumers) {
        expect(resumer.code, `a resumer should have seen the end:\n${resumer.stdout}\n${resumer.stderr}`).toBe(0);
        expect(wordsOf(resumer.stdout).find((words) => words[0] === 'done')).toEqual(['done', expected]);
      }

      // Effects: at most once each, exactly the ones the outcome needs.
      const effects = await Promise.all(
        ids.map((id) =>
          router.execute<{ step: number; kind: string; n: number }>(
            id,
            `SELECT step, kind, count(*)::int AS n FROM ${data}.effects WHERE saga_id = $1 GROUP BY step, kind ORDER BY step, kind`,
            [sagaId],
          ),
        ),
      );
      const counted = effects.flatMap((result) => result.rows.map((row) => `${row.step}:${row.kind}:${row.n}`)).sort();
      expect(counted).toEqual(
        fail === 'none' ? ['0:run:1', '1:run:1', '2:run:1'] : ['0:compensate:1', '0:run:1', '1:compensate:1', '1:run:1'],
      );
      const counters = await Promise.all(
        ids.map((id) => router.execute<{ n: number }>(id, `SELECT n FROM ${data}.counters WHERE id = $1`, [id])),
      );
      expect(counters.map((result) => result.rows[0]!.n)).toEqual(fail === 'none' ? [1, 1, 1] : [0, 0, 0]);

      // Never two runners at once: one process per epoch, and epochs never go back in call order.
      const { rows: calls } = await router.executeOn<{ pid: number; epoch: number }>(
        's0',
        `SELECT pid, epoch FROM ${data}.step_runs WHERE saga_id = $1 ORDER BY id`,
        [sagaId],
      );
      const owners = new Map<number, Set<number>>();
      for (const call of calls) owners.set(call.epoch, (owners.get(call.epoch) ?? new Set()).add(call.pid));
      for (const [epoch, pids] of owners) expect(pids.size, `epoch ${epoch} ran in ${[...pids].join(', ')}`).toBe(1);
      const epochs = calls.map((call) => call.epoch);
      expect(epochs).toEqual([...epochs].sort((a, b) => a - b));
      const record = await router.sagas.get(sagaId);
      expect(record?.state).toBe(expected);
      expect(record?.leaseOwner).toBeNull();
    },
    600_000,
  );
});
