import { lastOfEach, sweptCases } from '../support/sweep.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import type { FaultPoint } from '../../src/twopc/test-hooks.js';
import { dropSchemas, shardConfigs, shardUrls, TEST_SHARDS, uniqueName, withServer } from '../support/cluster.js';
import { keyOn } from '../support/keys.js';
import { createTransferTables, limiter, preparedOn, recoverUntilSettled, rollBackPrepared, runToEnd, wordsOf } from './support.js';

/**
 * The retry contract of idempotency keys (docs/idempotency.md), against real servers: a caller
 * SIGKILLed at every step of a 3-shard two-phase commit, then a fresh process retrying the same
 * call with the same idempotency key until it resolves. Whatever the crash point, the transfer
 * takes effect exactly once (one leg per account, balances moved once, money conserved), and
 * the retry replays exactly when the crash came after the commit point.
 *
 * Each case has a cluster (catalog schema) of its own: the retry's recovery cannot touch another
 * case's transactions.
 */

const INITIAL_BALANCE = 1000;
const data = uniqueName('idemchaos');
const catalogs: string[] = [];
const clusterIds: string[] = [];
const childSlot = limiter(3);
let urls: string[];

beforeAll(async () => {
  urls = shardUrls().slice(0, TEST_SHARDS);
  await createTransferTables(urls, data);
});

afterAll(async () => {
  await rollBackPrepared(
    urls,
    clusterIds.map((id) => `psr:${id}:`),
  );
  await dropSchemas(data, ...catalogs);
});

interface CrashCase {
  readonly point: FaultPoint;
  readonly index: number;
  /** After the commit point: the retry must find the record and replay. */
  readonly committed: boolean;
}

const CASES: readonly CrashCase[] = [
  { point: 'before-prepare', index: 1, committed: false },
  { point: 'before-prepare', index: 2, committed: false },
  { point: 'after-prepare', index: 1, committed: false },
  { point: 'after-prepare', index: 2, committed: false },
  { point: 'before-decision', index: 1, committed: false },
  { point: 'after-decision', index: 1, committed: true },
  { point: 'before-commit-prepared', index: 1, committed: true },
  { point: 'before-commit-prepared', index: 2, committed: true },
  { point: 'after-commit-prepared', index: 1, committed: true },
  { point: 'after-commit-prepared', index: 2, committed: true },
];

function runChild(env: Record<string, string>) {
  return childSlot(() => runToEnd('test/chaos/idempotency-child.ts', { CHAOS_SHARD_URLS: urls.join(','), CHAOS_DATA: data, ...env }));
}

async function legsOf(transferId: string): Promise<{ server: number; account: string; delta: number }[]> {
  const lists = await Promise.all(
    urls.map((url, server) =>
      withServer(url, async (client) => {
        const { rows } = await client.query<{ account: string; delta: string }>(
          `SELECT account, delta FROM ${data}.legs WHERE transfer_id = $1`,
          [transferId],
        );
        return rows.map((row) => ({ server, account: row.account, delta: Number(row.delta) }));
      }),
    ),
  );
  return lists.flat();
}

// npm test: one case per fault point (the later voter's); PSR_FULL_SWEEP=1: both voters of every point.
const SWEPT = sweptCases(
  CASES,
  lastOfEach(CASES, (crash) => crash.point),
);

describe.concurrent('a caller SIGKILLed at a 2PC step, then a retry with the same idempotency key from a fresh process', () => {
  it.each(SWEPT.map((crash, n) => ({ ...crash, n })))(
    '$point (index $index of 2): exactly one effect',
    async ({ n, point, index, committed }) => {
      const catalog = uniqueName('cat');
      catalogs.push(catalog);
      const router = await ShardRouter.connect({
        shards: shardConfigs(),
        catalogSchema: catalog,
        recovery: { intervalMillis: 0, atConnect: false },
      });
      clusterIds.push(router.clusterId);
      try {
        const tag = `${point}-${index}`;
        const accounts = [0, 1, 2].map((offset) => keyOn(router, `s${(n + offset) % TEST_SHARDS}`, tag));
        for (const account of accounts) {
          await router.execute(account, `INSERT INTO ${data}.accounts (id, balance) VALUES ($1, $2)`, [account, INITIAL_BALANCE]);
        }
        const env = {
          CHAOS_CATALOG: catalog,
          CHAOS_ACCOUNTS: JSON.stringify(accounts),
          CHAOS_TRANSFER: tag,
          CHAOS_IDEMPOTENCY_KEY: `pay-${tag}`,
        };

        const first = await runChild({
          ...env,
          CHAOS_MODE: 'first',
          CHAOS_APPLICATION: `idem-first-${tag}`,
          CHAOS_POINT: point,
          CHAOS_INDEX: String(index),
        });
        expect(first.signal, `the first caller should have died by SIGKILL:\n${first.stdout}\n${first.stderr}`).toBe('SIGKILL');
        const killed = wordsOf(first.stdout).find((words) => words[0] === 'kill');
        // The decision shard is the first key's, where the record lives.
        expect(killed?.[4]?.startsWith(`psr:${router.clusterId}:${router.shardFor(accounts[0]!)}:`)).toBe(true);

        // At once, as a client would: the dead caller's backends may still be finishing.
        const retry = await runChild({ ...env, CHAOS_MODE: 'retry', CHAOS_APPLICATION: `idem-retry-${tag}` });
        expect(retry.code, `the retry should have resolved:\n${retry.stdout}\n${retry.stderr}`).toBe(0);
        const lines = wordsOf(retry.stdout);
        const done = lines.find((words) => words[0] === 'done')!;
        expect(done[1], 'ran or replayed').toBe(committed ? 'replayed' : 'ran');
        expect(JSON.parse(done[3]!)).toEqual({ transfer: tag, legs: 3 });
        // Every failure the retry saw on the way was retryable (it retries only those).
        expect(lines.filter((words) => words[0] === 'error').every((words) => words[2] === 'true')).toBe(true);

        // A replay answers once D committed; the first caller's voters may still be prepared until recovery.
        await recoverUntilSettled(router, urls);
        expect(await preparedOn(urls, `psr:${router.clusterId}:`)).toEqual([]);
        const legs = await legsOf(tag);
        expect(legs.map((leg) => leg.account).sort()).toEqual([...accounts].sort());
        for (const [i, account] of accounts.entries()) {
          const { rows } = await router.execute<{ balance: string }>(account, `SELECT balance FROM ${data}.accounts WHERE id = $1`, [
            account,
          ]);
          expect(Number(rows[0]!.balance), account).toBe(INITIAL_BALANCE + (i === 0 ? -20 : 10));
        }
        // One record, on the decision shard, holding the result.
        const { rows: records } = await router.execute<{ result: string }>(
          accounts[0]!,
          `SELECT result FROM ${catalog}.idempotency_records WHERE idempotency_key = $1`,
          [`pay-${tag}`],
        );
        expect(records.map((record) => JSON.parse(record.result))).toEqual([{ value: { transfer: tag, legs: 3 } }]);
      } finally {
        await router.close();
      }
    },
    // Children queue for a slot (3 at a time) and the machine is shared: generous, not a timing assertion.
    600_000,
  );
});
