import { afterAll, beforeAll, expect, it } from 'vitest';
import type { ShardRouter } from '../../src/index.js';
import { runCli } from '../support/cli.js';
import { connectFreshRouter, dropSchemas, eventually, shardConfigs, uniqueName } from '../support/cluster.js';

/** `pg-shard-router outbox ...` against a real cluster with one parked event. */

const catalog = uniqueName('cat');
let router: ShardRouter;
let env: Record<string, string>;

beforeAll(async () => {
  router = await connectFreshRouter({ catalogSchema: catalog, recovery: { intervalMillis: 0, atConnect: false } });
  env = {
    PG_SHARD_URLS: shardConfigs()
      .map((shard) => shard.connectionString)
      .join(','),
  };
});

afterAll(async () => {
  await router?.close();
  await dropSchemas(catalog);
});

it('status, parked, retry and skip; bad arguments exit 1 with INVALID_ARGUMENT', async () => {
  const event = await router.transaction(['cli-key'], (tx) => tx.publish('cli-key', 'cli.topic', { n: 1 }));
  const consumer = router.consume({
    group: 'ops',
    topics: ['cli.topic'],
    maxAttempts: 1,
    pollIntervalMillis: 50,
    handler: () => {
      throw new Error('boom');
    },
  });
  await eventually('parked', async () => (await router.outbox.parked({ group: 'ops' })).length === 1, 1_000);
  await consumer.stop();
  const flags = ['--catalog-schema', catalog];

  const status = await runCli(['outbox', 'status', ...flags, '--json'], env);
  expect(status.code).toBe(0);
  const rows = JSON.parse(status.stdout) as { group: string; shardId: string; pending: number; parked: number }[];
  expect(rows.find((row) => row.shardId === event.shardId)).toMatchObject({ group: 'ops', pending: 1, parked: 1 });

  const parked = await runCli(['outbox', 'parked', '--group', 'ops', ...flags], env);
  expect(parked.code).toBe(0);
  expect(parked.stdout).toContain(`${event.id}  ${event.shardId}  key cli-key #1  cli.topic  attempts 1  boom`);

  const skip = await runCli(['outbox', 'skip', event.id, '--group', 'ops', ...flags], env);
  expect(skip).toMatchObject({ code: 0, stdout: 'event skipped in group ops\n' });
  expect(await router.outbox.parked({ group: 'ops' })).toEqual([]);

  const again = await runCli(['outbox', 'retry', event.id, '--group', 'ops', ...flags], env);
  expect(again.code).toBe(1);
  expect(again.stderr).toContain('INVALID_ARGUMENT: event');
  for (const args of [['outbox'], ['outbox', 'frobnicate'], ['outbox', 'parked'], ['outbox', 'skip', '--group', 'ops']]) {
    const bad = await runCli([...args, ...flags], env);
    expect(bad.code, args.join(' ')).toBe(1);
    expect(bad.stderr, args.join(' ')).toContain('INVALID_ARGUMENT');
  }
}, 240_000);
