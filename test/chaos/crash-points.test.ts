import { lastOfEach, sweptCases } from '../support/sweep.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import type { RecoveryReport } from '../../src/index.js';
import type { FaultPoint } from '../../src/twopc/test-hooks.js';
import { dropSchemas, shardConfigs, shardUrls, TEST_SHARDS, uniqueName, withServer } from '../support/cluster.js';
import { keyOn } from '../support/keys.js';
import type { Holds, KillRule, PlannedTransfer } from './crash-child.js';
import {
  createTransferTables,
  limiter,
  preparedOn,
  recoverUntilSettled,
  rollBackPrepared,
  runToEnd,
  waitForBackendsGone,
  wordsOf,
} from './support.js';

/**
 * A coordinator process SIGKILLed at each step of the two-phase commit, against the real shared
 * servers: recovery in a fresh router must settle every crash all-or-nothing, and the outcome
 * must be the one the crash point implies (abort before the decision, commit after it).
 *
 * Every case is its own cluster (catalog schema), so one case's recovery (grace 0) can never
 * settle another case's transaction while that case's child is still running.
 */

const INITIAL_BALANCE = 1000;
const data = uniqueName('chaos');
const catalogs: string[] = [];
const clusterIds: string[] = [];
// Children are whole Node processes: a few at a time keeps the 2-core machine responsive.
const childSlot = limiter(3);
let urls: string[];

beforeAll(async () => {
  urls = shardUrls().slice(0, TEST_SHARDS);
  await createTransferTables(urls, data);
});

afterAll(async () => {
  // Only a failed case leaves anything prepared; its locks would block the DROP.
  await rollBackPrepared(
    urls,
    clusterIds.map((id) => `psr:${id}:`),
  );
  await dropSchemas(data, ...catalogs);
});

/** Background recovery off: only the explicit passes after the crash settle anything. */
function connectRouter(catalog: string): Promise<ShardRouter> {
  return ShardRouter.connect({ shards: shardConfigs(), catalogSchema: catalog, recovery: { intervalMillis: 0, atConnect: false } });
}

/** A router on a brand-new cluster of its own. */
async function connectCluster(): Promise<{ router: ShardRouter; catalog: string }> {
  const catalog = uniqueName('cat');
  catalogs.push(catalog);
  const router = await connectRouter(catalog);
  clusterIds.push(router.clusterId);
  return { router, catalog };
}

/** Runs `work` with a router that knows nothing of the crashed coordinator. */
async function withFreshRouter<T>(catalog: string, work: (router: ShardRouter) => Promise<T>): Promise<T> {
  const router = await connectRouter(catalog);
  try {
    return await work(router);
  } finally {
    await router.close();
  }
}

/** One account per listed shard, `prefix`-named, opened with the initial balance. */
async function openAccounts(router: ShardRouter, shardIds: readonly string[], prefix: string): Promise<string[]> {
  const accounts = shardIds.map((shardId) => keyOn(router, shardId, prefix));
  for (const account of accounts) {
    await router.execute(account, `INSERT INTO ${data}.accounts (id, balance) VALUES ($1, $2)`, [account, INITIAL_BALANCE]);
  }
  return accounts;
}

/** Three shards for the n-th transfer: the decision shard first, rotated so every shard gets to be D. */
function threeShards(n: number): string[] {
  return [0, 1, 2].map((offset) => `s${(n + offset) % TEST_SHARDS}`);
}

/** Moves 20 out of the first account, 10 into each of the others: one leg row per shard. */
function transferOver(id: string, accounts: readonly string[]): PlannedTransfer {
  return { id, legs: accounts.map((account, i) => ({ account, delta: i === 0 ? -20 : 10 })) };
}

function runChild(catalog: string, application: string, transfers: readonly PlannedTransfer[], kill: KillRule, holds: Holds = {}) {
  return childSlot(() =>
    runToEnd('test/chaos/crash-child.ts', {
      CHAOS_SHARD_URLS: urls.join(','),
      CHAOS_CATALOG: catalog,
      CHAOS_DATA: data,
      CHAOS_APPLICATION: application,
      CHAOS_TRANSFERS: JSON.stringify(transfers),
      CHAOS_KILL: JSON.stringify(kill),
      CHAOS_HOLD: JSON.stringify(holds),
    }),
  );
}

/** Leg rows of the given transfers on every server, with the server they were found on. */
async function legsOf(transferIds: readonly string[]): Promise<{ server: number; transferId: string; account: string; delta: number }[]> {
  const lists = await Promise.all(
    urls.map((url, server) =>
      withServer(url, async (client) => {
        const { rows } = await client.query<{ transfer_id: string; account: string; delta: string }>(
          `SELECT transfer_id, account, delta FROM ${data}.legs WHERE transfer_id = ANY($1::text[])`,
          [transferIds],
        );
        return rows.map((row) => ({ server, transferId: row.transfer_id, account: row.account, delta: Number(row.delta) }));
      }),
    ),
  );
  return lists.flat();
}

async function balancesOf(router: ShardRouter, accounts: readonly string[]): Promise<Map<string, number>> {
  const balances = new Map<string, number>();
  for (const account of accounts) {
    const { rows } = await router.execute<{ balance: string }>(account, `SELECT balance FROM ${data}.accounts WHERE id = $1`, [account]);
    balances.set(account, Number(rows[0]?.balance));
  }
  return balances;
}

/** The durable decision of `gid` on its decision shard, or undefined when there is no row. */
async function decisionOf(router: ShardRouter, catalog: string, gid: string): Promise<string | undefined> {
  const deciderId = gid.split(':')[2]!;
  const { rows } = await router.executeOn<{ outcome: string }>(deciderId, `SELECT outcome FROM ${catalog}.twopc_decisions WHERE gid = $1`, [
    gid,
  ]);
  return rows[0]?.outcome;
}

function settledIn(reports: readonly RecoveryReport[], gid: string): { committed: number; rolledBack: number } {
  return {
    committed: reports.flatMap((report) => report.committed).filter((settled) => settled.gid === gid).length,
    rolledBack: reports.flatMap((report) => report.rolledBack).filter((settled) => settled.gid === gid).length,
  };
}

/** The outbox events the transfers published (one per leg, deferred to the commit step): transfer id and account, by shard. */
async function eventsOf(router: ShardRouter, catalog: string): Promise<{ shardId: string; transfer: string; account: string }[]> {
  const events: { shardId: string; transfer: string; account: string }[] = [];
  for (const shardId of router.shardIds) {
    const { rows } = await router.executeOn<{ transfer: string; account: string }>(
      shardId,
      `SELECT payload->>'transfer' AS transfer, payload->>'account' AS account FROM "${catalog}".outbox_events WHERE topic = 'crash'`,
    );
    events.push(...rows.map((row) => ({ shardId, ...row })));
  }
  return events;
}

/**
 * Balances, legs and events agree: all-or-nothing per transfer (a leg and an event on every one
 * of its shards, or none), each balance = initial + its legs, money neither created nor destroyed.
 */
async function expectConsistent(
  router: ShardRouter,
  catalog: string,
  transfers: readonly PlannedTransfer[],
): Promise<Map<string, 'all' | 'none'>> {
  const legs = await legsOf(transfers.map((transfer) => transfer.id));
  const events = await eventsOf(router, catalog);
  const outcomes = new Map<string, 'all' | 'none'>();
  const accounts = transfers.flatMap((transfer) => transfer.legs.map((leg) => leg.account));
  const balances = await balancesOf(router, accounts);
  for (const transfer of transfers) {
    const found = legs.filter((leg) => leg.transferId === transfer.id);
    if (found.length === 0) {
      outcomes.set(transfer.id, 'none');
    } else {
      const expected = transfer.legs.map((leg) => ({
        server: Number(router.shardFor(leg.account).slice(1)),
        transferId: transfer.id,
        ...leg,
      }));
      expect(
        found.sort((a, b) => a.server - b.server),
        `legs of ${transfer.id}`,
      ).toEqual(expected.sort((a, b) => a.server - b.server));
      outcomes.set(transfer.id, 'all');
    }
    const published = events.filter((event) => event.transfer === transfer.id);
    const expectedEvents =
      outcomes.get(transfer.id) === 'all'
        ? transfer.legs.map((leg) => ({ shardId: router.shardFor(leg.account), transfer: transfer.id, account: leg.account }))
        : [];
    const byAccount = (a: { account: string }, b: { account: string }) => a.account.localeCompare(b.account);
    expect(published.sort(byAccount), `events of ${transfer.id}`).toEqual(expectedEvents.sort(byAccount));
    for (const { account } of transfer.legs) {
      const moved = found.filter((leg) => leg.account === account).reduce((sum, leg) => sum + leg.delta, 0);
      expect(balances.get(account), `balance of ${account}`).toBe(INITIAL_BALANCE + moved);
    }
  }
  const total = [...balances.values()].reduce((sum, balance) => sum + balance, 0);
  expect(total).toBe(INITIAL_BALANCE * accounts.length);
  return outcomes;
}

interface CrashCase {
  readonly point: FaultPoint;
  readonly index: number;
  /** Prepared halves of the gid the crash leaves on the servers (inclusive range). */
  readonly preparedLeft: readonly [number, number];
  /** The decision row right after the crash: the COMMIT on D happened or it did not. */
  readonly decisionLeft: 'commit' | undefined;
  readonly outcome: 'all' | 'none';
}

// In a 3-shard transaction there are 2 voters; index = which one (after-prepare: the k-th PREPARE
// that completed). Before the decision nothing may commit; after it everything must.
const CASES: readonly CrashCase[] = [
  // Voter 1's hook runs before voter 2's, so killing at 1 means no PREPARE was sent at all.
  { point: 'before-prepare', index: 1, preparedLeft: [0, 0], decisionLeft: undefined, outcome: 'none' },
  { point: 'before-prepare', index: 2, preparedLeft: [0, 1], decisionLeft: undefined, outcome: 'none' },
  // The other voter's PREPARE was already on its way: it may have completed after the kill.
  { point: 'after-prepare', index: 1, preparedLeft: [1, 2], decisionLeft: undefined, outcome: 'none' },
  { point: 'after-prepare', index: 2, preparedLeft: [2, 2], decisionLeft: undefined, outcome: 'none' },
  { point: 'before-decision', index: 1, preparedLeft: [2, 2], decisionLeft: undefined, outcome: 'none' },
  { point: 'after-decision', index: 1, preparedLeft: [2, 2], decisionLeft: 'commit', outcome: 'all' },
  { point: 'before-commit-prepared', index: 1, preparedLeft: [2, 2], decisionLeft: 'commit', outcome: 'all' },
  { point: 'before-commit-prepared', index: 2, preparedLeft: [1, 2], decisionLeft: 'commit', outcome: 'all' },
  // The killed voter finished; the other one's COMMIT PREPARED may or may not have.
  { point: 'after-commit-prepared', index: 1, preparedLeft: [0, 1], decisionLeft: 'commit', outcome: 'all' },
  { point: 'after-commit-prepared', index: 2, preparedLeft: [0, 1], decisionLeft: 'commit', outcome: 'all' },
];

// npm test: one case per fault point (the later voter's, where the other's message may be in
// flight); PSR_FULL_SWEEP=1: both voters of every point.
const SWEPT = sweptCases(
  CASES,
  lastOfEach(CASES, (crash) => crash.point),
);

describe.concurrent('a coordinator SIGKILLed at one step of a 3-shard transaction', () => {
  it.each(SWEPT.map((crash, n) => ({ ...crash, n })))(
    '$point (index $index of 2) ends $outcome',
    async ({ n, point, index, preparedLeft, decisionLeft, outcome }) => {
      const { router, catalog } = await connectCluster();
      try {
        const tag = `${point}-${index}`;
        const accounts = await openAccounts(router, threeShards(n), tag);
        const transfer = transferOver(tag, accounts);
        const application = `chaos-crash-${tag}`;

        const child = await runChild(catalog, application, [transfer], { point, index, nth: 1 });
        expect(
          child.signal,
          `the child should have died by SIGKILL; it ended with code ${child.code}:\n${child.stdout}\n${child.stderr}`,
        ).toBe('SIGKILL');
        const killed = wordsOf(child.stdout).find((words) => words[0] === 'kill');
        expect(killed?.slice(0, 4)).toEqual(['kill', tag, point, String(index)]);
        const killedShard = killed![4]!;
        const gid = killed![5]!;
        // The decision shard is the first key's.
        expect(gid.startsWith(`psr:${router.clusterId}:${router.shardFor(accounts[0]!)}:`)).toBe(true);

        // What the crash left, once the dead coordinator's backends are gone.
        await waitForBackendsGone(urls, application);
        const left = await preparedOn(urls, `psr:${router.clusterId}:`);
        expect(left.every((prepared) => prepared.gid === gid)).toBe(true);
        expect(left.length).toBeGreaterThanOrEqual(preparedLeft[0]);
        expect(left.length).toBeLessThanOrEqual(preparedLeft[1]);
        if (point === 'after-commit-prepared') expect(left.map((prepared) => `s${prepared.server}`)).not.toContain(killedShard);
        expect(await decisionOf(router, catalog, gid)).toBe(decisionLeft);

        const reports = await withFreshRouter(catalog, (recoverer) => recoverUntilSettled(recoverer, urls));
        expect(await preparedOn(urls, `psr:${router.clusterId}:`)).toEqual([]);
        expect(settledIn(reports, gid)).toEqual(
          outcome === 'all' ? { committed: left.length, rolledBack: 0 } : { committed: 0, rolledBack: left.length },
        );
        // Recovery consults (and, for an abort, writes) the decision only when something was prepared.
        expect(await decisionOf(router, catalog, gid)).toBe(outcome === 'all' ? 'commit' : left.length > 0 ? 'abort' : undefined);

        const outcomes = await expectConsistent(router, catalog, [transfer]);
        expect(outcomes.get(transfer.id)).toBe(outcome);
      } finally {
        await router.close();
      }
    },
    // Each case starts a child process (tsx) while the others run: slow on a loaded 2-core machine.
    180_000,
  );
});

/** Frozen at a step until the kill: so the crash finds transactions before, at and after the decision. */
const HELD: Holds = { 'mix-5': 'after-prepare', 'mix-6': 'before-decision', 'mix-7': 'after-decision' };
/** The 3rd COMMIT PREPARED of a first voter (the other 5 transfers run freely). */
const KILL_IN_FLIGHT: KillRule = { point: 'before-commit-prepared', index: 1, nth: 3 };

describe('a coordinator SIGKILLed with several transactions in flight', () => {
  it('leaves every transfer all-or-nothing: committed where the decision was made, rolled back where COMMIT was never sent', async () => {
    const { router, catalog } = await connectCluster();
    try {
      const transfers: PlannedTransfer[] = [];
      for (let n = 0; n < 8; n++) {
        const id = `mix-${n}`;
        transfers.push(transferOver(id, await openAccounts(router, threeShards(n), id)));
      }
      const application = 'chaos-crash-mix';
      const child = await runChild(catalog, application, transfers, KILL_IN_FLIGHT, HELD);
      expect(
        child.signal,
        `the child should have died by SIGKILL; it ended with code ${child.code}:\n${child.stdout}\n${child.stderr}`,
      ).toBe('SIGKILL');
      const lines = wordsOf(child.stdout);
      const killed = lines.find((words) => words[0] === 'kill');
      expect(killed?.slice(0, 4)).toEqual(['kill', expect.any(String), 'before-commit-prepared', '1']);
      const held = lines.filter((words) => words[0] === 'hold');
      expect(held.map((words) => `${words[1]} ${words[2]}`).sort()).toEqual(
        Object.entries(HELD)
          .map(([id, point]) => `${id} ${point}`)
          .sort(),
      );

      await waitForBackendsGone(urls, application);
      const left = await preparedOn(urls, `psr:${router.clusterId}:`);
      const preparedHalves = (gid: string | undefined) => left.filter((prepared) => prepared.gid === gid).length;
      // Decided and both voters prepared: the killing transfer and the one held after the decision.
      expect(preparedHalves(killed![5])).toBe(2);
      for (const words of held) expect(preparedHalves(words[3]), words[1]).toBeGreaterThanOrEqual(1);

      await withFreshRouter(catalog, (recoverer) => recoverUntilSettled(recoverer, urls));
      expect(await preparedOn(urls, `psr:${router.clusterId}:`)).toEqual([]);
      const outcomes = await expectConsistent(router, catalog, transfers);

      expect(outcomes.get(killed![1]!)).toBe('all');
      for (const [id, point] of Object.entries(HELD)) expect(outcomes.get(id), id).toBe(point === 'after-decision' ? 'all' : 'none');
      const seen = (id: string, point: FaultPoint) => lines.some((words) => words[0] === 'fault' && words[1] === id && words[2] === point);
      const settled = (verdict: string, id: string) => lines.some((words) => words[0] === verdict && words[1] === id);
      for (const { id } of transfers) {
        // The decision is D's COMMIT: seen to succeed means committed; never sent means rolled back.
        if (settled('ack', id) || seen(id, 'after-decision')) expect(outcomes.get(id), id).toBe('all');
        if (settled('fail', id) || !seen(id, 'before-decision')) expect(outcomes.get(id), id).toBe('none');
      }
    } finally {
      await router.close();
    }
  });
});
