import { runReadmeExample as runExample } from '../support/readme.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalCluster } from '../../src/local.js';
import { createScratchDatabases, runTypeScript, withServer } from '../support/cluster.js';

let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;

const runReadmeExample = (name: string) => runExample(name, scratch.urls);

beforeAll(async () => {
  scratch = await createScratchDatabases();
});

afterAll(() => scratch.drop());

describe('README and demo', () => {
  it('quick start example runs as written against real shards', async () => {
    const stdout = await runReadmeExample('quickstart');
    expect(stdout).toMatch(/^user 42 lives on s[0-3]: balance 100\nall shards: 1 user\(s\), total balance 100\n$/);
    // And the row really is on that shard.
    const shard = Number(/on s(\d)/.exec(stdout)![1]);
    const { rows } = await withServer(scratch.urls[shard]!, (client) =>
      client.query('SELECT balance::int AS b FROM accounts WHERE user_id = 42'),
    );
    expect(rows).toEqual([{ b: 100 }]);
  });

  it('transfer example runs as written: the transfer commits on two shards, the failing one on neither', async () => {
    const stdout = await runReadmeExample('transfer');
    expect(stdout).toBe('refused: QUERY_FAILED, nothing committed\nuser 1 on s0: 70\nuser 2 on s2: 130\n');
    // Nothing left prepared on any shard.
    for (const url of scratch.urls) {
      const { rows } = await withServer(url, (client) =>
        client.query('SELECT gid FROM pg_prepared_xacts WHERE database = current_database()'),
      );
      expect(rows).toEqual([]);
    }
  });

  it('broadcast example runs as written: merged aggregates, explain, a stream and an atomic write', async () => {
    const stdout = await runReadmeExample('broadcast');
    const lines = stdout.split('\n');
    // 40 orders: user ids not divisible by 3 are paid (27, totalling 2.5 x 547), the rest open (13, 2.5 x 273).
    expect(lines[0]).toBe('paid: 27 orders, revenue 1367.50, average 50.6481481481481481');
    expect(lines[1]).toBe('open: 13 orders, revenue 682.50, average 52.5000000000000000');
    expect(stdout).toContain('Shard query: SELECT user_id, total FROM orders ORDER BY total DESC LIMIT 3');
    expect(stdout).toContain('streamed 40 orders in total order');
    expect(stdout).toContain('closed 13 orders');
  });

  it('idempotency example runs as written: the retries replay and take no effect', async () => {
    const stdout = await runReadmeExample('idempotency');
    expect(stdout).toBe(
      'first replayed: false, retry replayed: true, amount 25\n{"moved":10}\nanswered from the record\n{"moved":10}\npayments: 3\n',
    );
  });

  it('observability example runs as written: Prometheus text, spans per statement and per shard, router.metrics()', async () => {
    const stdout = await runReadmeExample('observability');
    const lines = stdout.trim().split('\n');
    expect(lines).toContain('pg_shard_router_statements_total{route="single",outcome="ok"} 1');
    expect(lines).toContain('pg_shard_router_statements_total{route="broadcast",outcome="ok"} 1');
    const spans = lines.filter((line) => line.startsWith('span '));
    expect(spans).toContain('span BROADCAST on all shards');
    // The broadcast's shard spans, one per shard, plus the execute's on key 7's shard (s2 of 4).
    expect(spans.filter((line) => line.startsWith('span SELECT')).sort()).toEqual([
      'span SELECT on s0',
      'span SELECT on s1',
      'span SELECT on s2',
      'span SELECT on s2',
      'span SELECT on s3',
    ]);
    expect(stdout).toMatch(/router\.metrics\(\): 1 single-shard statement\(s\), \d+\.\d ms in total/);
  });

  it('outbox example runs as written: orders publish events, a group projects them idempotently', async () => {
    const stdout = await runReadmeExample('outbox');
    expect(stdout).toBe('NO 42, PT 20\n');
  });

  it('sagas example runs as written: one order completes, the failing one is compensated', async () => {
    const stdout = await runReadmeExample('sagas');
    expect(stdout).toBe(
      [
        'order-1: completed, {"shipped":"order-1"}',
        'order-2: SAGA_COMPENSATED (no carrier goes there)',
        'lamps left: 4, charges: 1',
        'order-2: compensated [reserve-stock=compensated charge=compensated ship=failed]',
        'order-1: completed [reserve-stock=done charge=done ship=done]',
        '',
      ].join('\n'),
    );
  });

  it('npm run demo writes and reads back every user from its owning shard, then grows to five shards', async () => {
    // The shard the demo adds runs on a server of its own (two databases of one server cannot
    // both prepare the same gid: see docs/rebalance.md, Limits).
    const spare = await startLocalCluster({ shards: 1 });
    let stdout: string;
    try {
      ({ stdout } = await runTypeScript('demo/demo.ts', { PG_SHARD_URLS: [...scratch.urls, spare.connectionStrings[0]!].join(',') }));
    } finally {
      await spare.stop();
    }
    expect(stdout).toContain('every user read back exactly as written, from the shard that owns it');
    const perShard = [...stdout.matchAll(/ {2}(s\d): (\d+) users, (\d+) orders/g)];
    expect(perShard).toHaveLength(4);
    expect(perShard.reduce((sum, match) => sum + Number(match[2]), 0)).toBe(12);
    // The broadcast report: merged over all shards, equal to the per-shard counts above.
    const orders = perShard.reduce((sum, match) => sum + Number(match[3]), 0);
    expect(stdout).toContain(`${orders} orders, revenue 1695.00, average 56.5000000000000000`);
    expect(stdout).toContain('users per country: US 7, GB 3, FI 1, NL 1');
    expect(stdout).toContain('the merged revenue and user count equal what was written');
    // The cross-shard transfer: both balances moved, on two different shards, by 2PC.
    const balances = /balances: Ada 75\.00 on (s\d), \w+ 125\.00 on (s\d)/.exec(stdout);
    expect(balances).not.toBeNull();
    expect(balances![1]).not.toBe(balances![2]);
    expect(stdout).toContain('committed with a two-phase commit');
    expect(stdout).toMatch(/recovery pass: committed 0, rolled back 0, in doubt 0/);
    // The fifth shard: reference table copied, buckets balanced +-1, nothing lost, verify clean.
    expect(stdout).toContain('s4 joined with no buckets; reference tables copied to it: shard_router_demo.countries (4 rows)');
    const perShardBuckets = /buckets per shard now: (.*) \(map version/
      .exec(stdout)![1]!
      .split(' ')
      .map((entry) => Number(entry.split('=')[1]));
    expect(perShardBuckets).toHaveLength(5);
    expect(Math.max(...perShardBuckets) - Math.min(...perShardBuckets)).toBeLessThanOrEqual(1);
    // 3 of the demo's, the library's idempotency records, saga log and 4 outbox tables (in the catalog schema).
    expect(stdout).toContain('verify: 9 tables, 0 misplaced row groups, 0 divergent reference tables');
    expect(stdout).toContain('every acknowledged order is there, each row on the shard that owns its bucket');
    // The metrics summary at the end: what the router counted along the way.
    expect(stdout).toMatch(/ {2}single: \d+ ok, 0 failed, mean \d+\.\d ms/);
    expect(stdout).toMatch(/ {2}transaction_2pc: [1-9]\d* ok/);
    const moved = / moves (\d+) \((\d+) buckets, (\d+) rows copied\)/.exec(stdout);
    expect(Number(moved![1])).toBeGreaterThan(0);
    // Every bucket the fifth shard owns came to it by a move.
    expect(Number(moved![2])).toBeGreaterThanOrEqual(perShardBuckets.at(-1)!);
    // The outbox: 36 orders, each event projected once, totals equal to the orders.
    expect(stdout).toContain('36 orders placed, each publishing order.placed in its own transaction');
    expect(stdout).toContain('group country-totals projected 36 event(s): FI 3/66, GB 9/243, NL 3/72, US 21/');
    expect(stdout).toContain('totals per country equal the orders placed; 0 event(s) pending');
    // ~20 s on a quiet machine; the default 60 s ran out at load 19.
  }, 180_000);
});
