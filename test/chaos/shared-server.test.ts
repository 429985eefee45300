import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import { FAULT_POINTS } from '../../src/twopc/test-hooks.js';
import type { FaultPoint } from '../../src/twopc/test-hooks.js';
import { shardUrls, uniqueName, withServer } from '../support/cluster.js';
import { sweep } from '../support/sweep.js';
import { keyOn } from '../support/keys.js';
import type { Holds, KillRule, PlannedTransfer } from './crash-child.js';
import {
  createTransferTables,
  gidOfPreparedName,
  recoverUntilSettled,
  rollBackPrepared,
  runToEnd,
  waitForBackendsGone,
  wordsOf,
} from './support.js';

/**
 * Two shards that are two databases of ONE PostgreSQL server (s0 and s1 on server 0; s2 on
 * server 1). Prepared-transaction names are unique per server, so the participants of one
 * transaction must each PREPARE under their own name (`<gid>:<participant>`); recovery maps
 * them back to the gid's decision, and each shard's recovery settles only its own database's.
 */

const INITIAL_BALANCE = 1000;
const database = uniqueName('twodb');
const data = 'chaos_data';
let urls: string[];
let servers: string[];

function withDatabase(url: string, name: string): string {
  const copy = new URL(url);
  copy.pathname = `/${name}`;
  return copy.toString();
}

beforeAll(async () => {
  servers = shardUrls().slice(0, 2);
  // s0 and s1: databases a and b of server 0; s2: database a of server 1.
  urls = [
    withDatabase(servers[0]!, `${database}_a`),
    withDatabase(servers[0]!, `${database}_b`),
    withDatabase(servers[1]!, `${database}_a`),
  ];
  await withServer(servers[0]!, async (client) => {
    await client.query(`CREATE DATABASE ${database}_a`);
    await client.query(`CREATE DATABASE ${database}_b`);
  });
  await withServer(servers[1]!, (client) => client.query(`CREATE DATABASE ${database}_a`));
  await createTransferTables(urls, data);
});

afterAll(async () => {
  // Only a failed case leaves anything prepared (its locks would hold up DROP DATABASE).
  await rollBackPrepared(
    urls,
    clusterIds.map((id) => `psr:${id}:`),
  ).catch(() => undefined);
  for (const [server, names] of [
    [servers[0]!, [`${database}_a`, `${database}_b`]],
    [servers[1]!, [`${database}_a`]],
  ] as const) {
    await withServer(server, async (client) => {
      for (const name of names) await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    });
  }
});

const clusterIds: string[] = [];

async function connect(): Promise<ShardRouter> {
  const router = await ShardRouter.connect({
    shards: urls.map((connectionString, i) => ({ id: `s${i}`, connectionString })),
    recovery: { intervalMillis: 0, atConnect: false },
  });
  clusterIds.push(router.clusterId);
  return router;
}

/** This cluster's prepared transactions in each shard's own database: [shard index, prepared name]. */
async function preparedByShard(clusterId: string): Promise<[number, string][]> {
  const lists = await Promise.all(
    urls.map((url, shard) =>
      withServer(url, async (client) => {
        const { rows } = await client.query<{ gid: string }>(
          'SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND starts_with(gid, $1)',
          [`psr:${clusterId}:`],
        );
        return rows.map((row): [number, string] => [shard, row.gid]);
      }),
    ),
  );
  return lists.flat();
}

async function openAccounts(router: ShardRouter, shardIds: readonly string[], prefix: string): Promise<string[]> {
  const accounts = shardIds.map((shardId) => keyOn(router, shardId, prefix));
  for (const account of accounts) {
    await router.execute(account, `INSERT INTO ${data}.accounts (id, balance) VALUES ($1, $2)`, [account, INITIAL_BALANCE]);
  }
  return accounts;
}

/** Legs of a transfer on every shard: all of them, or none. Returns which. */
async function legsOf(router: ShardRouter, transfer: PlannedTransfer): Promise<'all' | 'none'> {
  let found = 0;
  for (const { account, delta } of transfer.legs) {
    const { rows } = await router.execute<{ delta: string }>(account, `SELECT delta FROM ${data}.legs WHERE transfer_id = $1`, [
      transfer.id,
    ]);
    const balance = await router.execute<{ balance: string }>(account, `SELECT balance FROM ${data}.accounts WHERE id = $1`, [account]);
    expect(rows.length, `legs of ${transfer.id} on ${router.shardFor(account)}`).toBeLessThanOrEqual(1);
    found += rows.length;
    expect(Number(balance.rows[0]?.balance), account).toBe(INITIAL_BALANCE + (rows.length === 1 ? delta : 0));
  }
  expect([0, transfer.legs.length], `all-or-nothing: ${transfer.id}`).toContain(found);
  return found === 0 ? 'none' : 'all';
}

describe('two shards that are two databases of one server', () => {
  it('take part in one two-phase commit, each PREPAREd under its own name', async () => {
    const router = await connect();
    try {
      const [a, b, c] = await openAccounts(router, ['s0', 's1', 's2'], 'plain');
      const prepares: string[] = [];
      const { testHooks } = await import('../../src/twopc/test-hooks.js');
      testHooks.statement = (shardId, sql) => {
        if (sql.startsWith('PREPARE TRANSACTION')) prepares.push(`${shardId} ${sql}`);
      };
      try {
        await router.transaction([a!, b!, c!], async (tx) => {
          await tx.execute(a!, `UPDATE ${data}.accounts SET balance = balance - 20 WHERE id = $1`, [a]);
          await tx.execute(b!, `UPDATE ${data}.accounts SET balance = balance + 10 WHERE id = $1`, [b]);
          await tx.execute(c!, `UPDATE ${data}.accounts SET balance = balance + 10 WHERE id = $1`, [c]);
        });
        // D = s0 (first key); the voters s1 (same server as D) and s2 each under their own name.
        expect(prepares.map((line) => line.replace(/'psr:[^']+:(s\d)'/, '<gid>:$1')).sort()).toEqual([
          's1 PREPARE TRANSACTION <gid>:s1',
          's2 PREPARE TRANSACTION <gid>:s2',
        ]);
        // The case that broke: both voters (s0, s1) on one server, decided by s2.
        prepares.length = 0;
        await router.transaction([c!, a!, b!], async (tx) => {
          await tx.execute(b!, `UPDATE ${data}.accounts SET balance = balance + 1 WHERE id = $1`, [b]);
          await tx.execute(a!, `UPDATE ${data}.accounts SET balance = balance - 1 WHERE id = $1`, [a]);
          await tx.execute(c!, 'SELECT 1');
        });
        expect(prepares).toHaveLength(2);
      } finally {
        testHooks.statement = undefined;
      }
      const balances = [];
      for (const key of [a!, b!, c!]) {
        balances.push(
          Number((await router.execute<{ b: string }>(key, `SELECT balance AS b FROM ${data}.accounts WHERE id = $1`, [key])).rows[0]?.b),
        );
      }
      expect(balances).toEqual([979, 1011, 1010]);
      expect(await preparedByShard(router.clusterId)).toEqual([]);
    } finally {
      await router.close();
    }
  });

  it('a coordinator SIGKILLed with transactions at every step: recovery settles each shard own, all-or-nothing', async () => {
    const router = await connect();
    try {
      // Three-shard transfers rotating D over s0, s1, s2, and two-shard ones inside server 0.
      const layouts = [
        ['s0', 's1', 's2'],
        ['s1', 's2', 's0'],
        ['s2', 's0', 's1'],
        ['s0', 's1'],
        ['s1', 's0'],
        ['s0', 's1', 's2'],
        ['s1', 's0'],
      ];
      const transfers: PlannedTransfer[] = [];
      for (const [n, shards] of layouts.entries()) {
        const accounts = await openAccounts(router, shards, `mix${n}`);
        transfers.push({
          id: `mix-${n}`,
          legs: accounts.map((account, i) => ({ account, delta: i === 0 ? 10 - 10 * shards.length : 10 })),
        });
      }
      const holds: Holds = { 'mix-0': 'after-prepare', 'mix-1': 'before-decision', 'mix-2': 'after-decision', 'mix-3': 'after-decision' };
      const kill: KillRule = { point: 'before-commit-prepared', index: 1, nth: 2 };
      const application = `chaos-twodb-${database}`;
      const child = await runToEnd('test/chaos/crash-child.ts', {
        CHAOS_SHARD_URLS: urls.join(','),
        CHAOS_CATALOG: 'shard_router',
        CHAOS_DATA: data,
        CHAOS_APPLICATION: application,
        CHAOS_TRANSFERS: JSON.stringify(transfers),
        CHAOS_KILL: JSON.stringify(kill),
        CHAOS_HOLD: JSON.stringify(holds),
      });
      expect(child.signal, `${child.stdout}\n${child.stderr}`).toBe('SIGKILL');
      expect(child.stderr).not.toMatch(/already in use/);
      const lines = wordsOf(child.stdout);
      await waitForBackendsGone(servers, application);

      const left = await preparedByShard(router.clusterId);
      // Every prepared name is `<gid>:<participant>`, in that participant's own database.
      for (const [shard, name] of left) expect(name.endsWith(`:s${shard}`), name).toBe(true);
      // Decided and held inside server 0: its voter is still prepared.
      const heldGid = (id: string) => lines.find((words) => words[0] === 'hold' && words[1] === id)?.[3];
      expect(left.filter(([, name]) => gidOfPreparedName(name) === heldGid('mix-3'))).toHaveLength(1);

      const reports = await withRecoverer((recoverer) => recoverUntilSettled(recoverer, servers));
      expect(await preparedByShard(router.clusterId)).toEqual([]);
      for (const settled of reports.flatMap((report) => [...report.committed, ...report.rolledBack])) {
        expect(left).toContainEqual([Number(settled.shardId.slice(1)), `${settled.gid}:${settled.shardId}`]);
      }
      const outcomes = new Map<string, 'all' | 'none'>();
      for (const transfer of transfers) outcomes.set(transfer.id, await legsOf(router, transfer));
      for (const [id, point] of Object.entries(holds)) expect(outcomes.get(id), id).toBe(point === 'after-decision' ? 'all' : 'none');
      const killed = lines.find((words) => words[0] === 'kill');
      expect(outcomes.get(killed![1]!)).toBe('all');
      for (const { id } of transfers) {
        if (lines.some((words) => words[0] === 'ack' && words[1] === id)) expect(outcomes.get(id), id).toBe('all');
      }
    } finally {
      await router.close();
    }
  });
});

/** Before the decision nothing may commit; from D's commit on, everything must. */
const COMMITTED_FROM: readonly FaultPoint[] = ['after-decision', 'before-commit-prepared', 'after-commit-prepared'];
// The mix above covers after-prepare, before-decision, after-decision and before-commit-prepared.
const KILL_POINTS = sweep<readonly FaultPoint[]>(FAULT_POINTS, ['before-prepare', 'after-commit-prepared']);

describe.each(KILL_POINTS)('both voters on one server, D on another: a coordinator SIGKILLed at %s', (point) => {
  it('ends all-or-nothing after recovery, as the step implies', async () => {
    const router = await connect();
    try {
      const accounts = await openAccounts(router, ['s2', 's0', 's1'], `one-${point}`);
      const transfer: PlannedTransfer = {
        id: `one-${point}`,
        legs: accounts.map((account, i) => ({ account, delta: i === 0 ? -20 : 10 })),
      };
      const application = `chaos-twodb-${point}-${database}`;
      const child = await runToEnd('test/chaos/crash-child.ts', {
        CHAOS_SHARD_URLS: urls.join(','),
        CHAOS_CATALOG: 'shard_router',
        CHAOS_DATA: data,
        CHAOS_APPLICATION: application,
        CHAOS_TRANSFERS: JSON.stringify([transfer]),
        CHAOS_KILL: JSON.stringify({ point, index: 1, nth: 1 } satisfies KillRule),
      });
      expect(child.signal, `${child.stdout}\n${child.stderr}`).toBe('SIGKILL');
      await waitForBackendsGone(servers, application);
      await withRecoverer((recoverer) => recoverUntilSettled(recoverer, servers));
      expect(await preparedByShard(router.clusterId)).toEqual([]);
      expect(await legsOf(router, transfer)).toBe(COMMITTED_FROM.includes(point) ? 'all' : 'none');
    } finally {
      await router.close();
    }
  });
});

async function withRecoverer<T>(work: (router: ShardRouter) => Promise<T>): Promise<T> {
  const router = await connect();
  try {
    return await work(router);
  } finally {
    await router.close();
  }
}
