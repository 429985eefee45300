import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import { dropSchemas, shardConfigs, uniqueName } from '../support/cluster.js';

/**
 * More callers than connections: a released connection is handed straight to the oldest waiter
 * (src/pool/hand-off.ts). Every caller must be served, also when connections are destroyed
 * while others wait (a backend terminated under a statement: its connection is destroyed).
 * The acquire timeout is generous: a lost hand-off shows as POOL_TIMEOUT, not as slowness.
 */
const catalog = uniqueName('cat');
let router: ShardRouter;
let key: string;

beforeAll(async () => {
  router = await ShardRouter.connect({ shards: shardConfigs(), catalogSchema: catalog, pool: { max: 2, acquireTimeoutMillis: 60_000 } });
  key = Array.from({ length: 100 }, (_, i) => `k${i}`).find((k) => router.shardFor(k) === 's0')!;
});

afterAll(async () => {
  await router.close();
  await dropSchemas(catalog);
});

async function closedLoop(workers: number, perWorker: number, killEvery = 0): Promise<number[]> {
  const answers: number[] = [];
  let maxSize = 0;
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      for (let i = 0; i < perWorker; i++) {
        const n = w * perWorker + i;
        if (killEvery > 0 && n % killEvery === 0) {
          const killed = await router.execute(key, 'SELECT pg_terminate_backend(pg_backend_pid())').catch((error: unknown) => error);
          expect(killed).toMatchObject({ code: 'CONNECTION_LOST' });
        }
        const { rows } = await router.execute<{ n: number }>(key, 'SELECT $1::int AS n', [n]);
        answers.push(rows[0]!.n);
        maxSize = Math.max(maxSize, router.poolStats().s0!.size);
      }
    }),
  );
  expect(maxSize).toBeLessThanOrEqual(2);
  return answers.sort((a, b) => a - b);
}

describe('pool hand-off under contention', () => {
  it('serves every one of 16 callers looping over 2 connections', async () => {
    const answers = await closedLoop(16, 20);
    expect(answers).toEqual(Array.from({ length: 320 }, (_, n) => n));
    expect(router.poolStats().s0!.pending).toBe(0);
  });

  it('serves every caller while connections are destroyed under it (backends terminated)', async () => {
    const answers = await closedLoop(12, 15, 7);
    expect(answers).toEqual(Array.from({ length: 180 }, (_, n) => n));
    expect(router.poolStats().s0!.pending).toBe(0);
  });
});
