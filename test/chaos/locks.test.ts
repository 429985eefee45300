import type { ChildProcess } from 'node:child_process';
import { sweep } from '../support/sweep.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ShardRouter } from '../../src/index.js';
import { connectFreshRouter, dropSchemas, shardUrls, uniqueName, withServer } from '../support/cluster.js';
import { runToEnd, spawnTypeScript, waitForBackendsGone, wordsOf } from './support.js';
import { LOCK_CLASS_ID, hashKey } from '../../src/index.js';

/**
 * withLock across processes (docs/locks.md): worker processes (lock-worker.ts) increment one
 * counter under one lock key with a non-atomic read-modify-write. Mutual exclusion shows as an
 * exact final count and as hold intervals (one monotonic clock for all processes) that never
 * overlap, with tokens growing in the order of the intervals. The second test moves the key's
 * bucket back and forth between shards while they run: holders on both sides, never two at once.
 */

const WORKER = 'test/chaos/lock-worker.ts';
let router: ShardRouter;
let schema: string;
const data = uniqueName('lockcount');

beforeAll(async () => {
  schema = uniqueName('cat');
  router = await connectFreshRouter({
    catalogSchema: schema,
    recovery: { intervalMillis: 0, atConnect: false },
    pool: { connectTimeoutMillis: 60_000, acquireTimeoutMillis: 60_000 },
  });
  for (const id of router.shardIds) await router.executeOn(id, `CREATE TABLE ${data} (id text PRIMARY KEY, n integer NOT NULL)`);
  await router.registerShardedTable(data, 'id');
}, 120_000);

afterAll(async () => {
  await router?.close();
  await dropSchemas(schema);
  await Promise.all(shardUrls().map((url) => withServer(url, (client) => client.query(`DROP TABLE IF EXISTS ${data}`))));
}, 120_000);

interface Hold {
  readonly worker: string;
  readonly token: number;
  readonly shardId: string;
  readonly start: bigint;
  readonly end: bigint;
}

interface Worker {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; stdout: string; stderr: string }>;
  readonly ready: Promise<void>;
}

function startWorker(label: string, key: string, rounds: number): Worker {
  const child = spawnTypeScript(WORKER, {
    LOCK_SHARD_URLS: shardUrls().slice(0, 4).join(','),
    LOCK_CATALOG: schema,
    LOCK_DATA: data,
    LOCK_KEY: key,
    LOCK_WORKER: label,
    LOCK_ROUNDS: String(rounds),
  });
  if (rounds > 0) child.stdin?.end();
  let stdout = '';
  let stderr = '';
  let signalReady!: () => void;
  const ready = new Promise<void>((resolve) => (signalReady = resolve));
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    if (stdout.includes('ready ')) signalReady();
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code) => resolve({ code, stdout, stderr })),
  );
  return { child, exited, ready };
}

function holdsOf(stdout: string): Hold[] {
  return wordsOf(stdout)
    .filter((words) => words[0] === 'hold')
    .map(([, worker, token, shardId, start, end]) => ({
      worker: worker!,
      token: Number(token),
      shardId: shardId!,
      start: BigInt(start!),
      end: BigInt(end!),
    }));
}

/** Every pair of intervals in time order: the next starts after the previous ended, with a larger token. */
function expectOneHolderAtATime(holds: readonly Hold[]): void {
  const ordered = [...holds].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  for (let i = 1; i < ordered.length; i++) {
    const before = ordered[i - 1]!;
    const after = ordered[i]!;
    expect(
      after.start > before.end,
      `${after.worker} (token ${after.token}) started before ${before.worker} (token ${before.token}) ended`,
    ).toBe(true);
    expect(after.token).toBeGreaterThan(before.token);
  }
}

async function counter(key: string): Promise<number> {
  const { rows } = await router.execute<{ n: number }>(key, `SELECT n FROM ${data} WHERE id = $1`, [key]);
  return rows[0]!.n;
}

describe('withLock across processes', () => {
  // npm test: 4 processes (PSR_FULL_SWEEP=1: 8); contention is the same kind either way.
  const processes = sweep(8, 4);
  it(`${processes} processes incrementing one counter non-atomically under one lock: the count is exact, one holder at a time`, async () => {
    const key = uniqueName('counter');
    await router.execute(key, `INSERT INTO ${data} (id, n) VALUES ($1, 0)`, [key]);
    const rounds = 12;
    const workers = Array.from({ length: processes }, (_, i) => startWorker(`w${i}`, key, rounds));
    const results = await Promise.all(workers.map((worker) => worker.exited));
    for (const result of results) expect(result.code, result.stderr).toBe(0);
    const holds = results.flatMap((result) => holdsOf(result.stdout));
    expect(holds).toHaveLength(processes * rounds);
    expect(await counter(key)).toBe(processes * rounds);
    expectOneHolderAtATime(holds);
    expect(new Set(holds.map((hold) => hold.token)).size).toBe(holds.length);
  }, 600_000);

  it('moves of the lock key’s bucket while locks are held: holders on both shards, never two at once, tokens keep growing', async () => {
    const key = uniqueName('moving');
    await router.execute(key, `INSERT INTO ${data} (id, n) VALUES ($1, 0)`, [key]);
    const bucket = router.bucketFor(key);
    const home = router.shardFor(key);
    const away = router.shardIds.find((id) => id !== home)!;
    const workers = Array.from({ length: 4 }, (_, i) => startWorker(`m${i}`, key, 0));
    await Promise.all(workers.map((worker) => worker.ready));
    const rebalancer = router.rebalancer();
    const moves = 4;
    for (let move = 0; move < moves; move++) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      await rebalancer.moveBucket(bucket, move % 2 === 0 ? away : home);
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    for (const worker of workers) worker.child.stdin?.end();
    const results = await Promise.all(workers.map((worker) => worker.exited));
    for (const result of results) expect(result.code, result.stderr).toBe(0);
    const holds = results.flatMap((result) => holdsOf(result.stdout));
    expect(router.shardFor(key)).toBe(home);
    expect(new Set(holds.map((hold) => hold.shardId))).toEqual(new Set([home, away]));
    expectOneHolderAtATime(holds);
    expect(await counter(key)).toBe(holds.length);
  }, 600_000);

  it('a holder paused past its lease loses the lock on the server; the next holder gets a higher token; the paused one’s late write is refused', async () => {
    const key = uniqueName('paused');
    await router.execute(key, `INSERT INTO ${data} (id, n) VALUES ($1, 0)`, [key]);
    const child = spawnTypeScript('test/chaos/lock-pause-child.ts', {
      LOCK_SHARD_URLS: shardUrls().slice(0, 4).join(','),
      LOCK_CATALOG: schema,
      LOCK_DATA: data,
      LOCK_KEY: key,
    });
    child.stdin?.end();
    let stdout = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
    await eventuallyTrue(() => /held \d+/.test(stdout));
    const pausedToken = Number(/held (\d+)/.exec(stdout)![1]);
    child.kill('SIGSTOP');
    try {
      // The server ends the silent session after the lease (idle_session_timeout), which frees the lock.
      const next = await router.withLock(
        key,
        async (_signal, lock) => {
          await lock.execute(`UPDATE ${data} SET n = n + 1 WHERE id = $1`, [key]);
          return lock.token;
        },
        { waitMillis: 10_000 },
      );
      expect(next).toBeGreaterThan(pausedToken);
    } finally {
      child.kill('SIGCONT');
    }
    expect(await closed).toBe(0);
    const lines = stdout.trim().split('\n');
    expect(lines).toContain('write LOCK_FENCED');
    expect(lines).toContain('error LOCK_LOST');
    expect(await counter(key)).toBe(1);
  }, 600_000);

  it('SIGKILL of the holder at every step: the server releases the lock, the next holder gets a larger token, writes are never lost or doubled', async () => {
    const key = uniqueName('crash');
    await router.execute(key, `INSERT INTO ${data} (id, n) VALUES ($1, 0)`, [key]);
    let newest = 0;
    let writes = 0;
    for (const step of ['locked', 'token', 'fn', 'releasing'] as const) {
      const exit = await runToEnd('test/chaos/lock-crash-child.ts', {
        LOCK_SHARD_URLS: shardUrls().slice(0, 4).join(','),
        LOCK_CATALOG: schema,
        LOCK_DATA: data,
        LOCK_KEY: key,
        LOCK_KILL_AT: step,
      });
      expect(exit.signal, `${step}: ${exit.stderr}`).toBe('SIGKILL');
      expect(exit.stdout).toContain(`kill ${step}`);
      const token = /token (\d+)/.exec(exit.stdout);
      if (token) newest = Math.max(newest, Number(token[1]));
      // fn's fenced write committed before the kill at 'fn' and at 'releasing'.
      if (step === 'fn' || step === 'releasing') writes++;
      await waitForBackendsGone(shardUrls().slice(0, 4), `lock-crash-${step}%`);
      const owner = shardUrls()[Number(router.shardFor(key).slice(1))]!;
      const left = await withServer(owner, (client) =>
        client.query("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2::oid AND objsubid = 2", [
          LOCK_CLASS_ID,
          hashKey(key),
        ]),
      );
      expect(left.rowCount, `lock left behind after a kill at ${step}`).toBe(0);
      const next = await router.withLock(key, (_signal, lock) => lock.token, { waitMillis: 0 });
      expect(next, `token after a kill at ${step}`).toBeGreaterThan(newest);
      newest = next;
    }
    expect(await counter(key)).toBe(writes);
  }, 600_000);
});

async function eventuallyTrue(check: () => boolean): Promise<void> {
  for (let i = 0; i < 3_000 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 20));
  expect(check()).toBe(true);
}
