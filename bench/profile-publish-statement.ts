/**
 * What the publish statement costs the server, alone (not a bench section; run by hand):
 *   npx tsx bench/profile-publish-statement.ts [transactions=3000] [--async-commit]
 * One local server, one connection, one transaction after the other: BEGIN, one statement,
 * COMMIT. Per transaction: the backend's CPU (from /proc, so 10 ms ticks: use a few thousand
 * transactions) and the WAL it wrote. Variants: an empty transaction, an UPDATE of one row, a
 * hand-written outbox INSERT (bigserial key, jsonb payload), the outbox's own publish statement
 * (tx.publish) and its per-key sequence upsert alone. `--async-commit` sets synchronous_commit
 * off, which leaves out the WAL flush.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { ShardRouter } from '../src/index.js';
import { startLocalCluster } from '../src/local.js';
import { publishSql } from '../src/outbox/publish.js';

const transactions = Number(process.argv[2] ?? 3_000);
const asyncCommit = process.argv.includes('--async-commit');
const catalog = 'prof_catalog';
const TICK_MICROS = 1e6 / 100; // USER_HZ

const cluster = await startLocalCluster({ shards: 1 });
try {
  // The catalog with the outbox's tables, as a router installs them.
  const router = await ShardRouter.connect({
    shards: cluster.shardConfigs(),
    catalogSchema: catalog,
    recovery: { intervalMillis: 0, atConnect: false },
  });
  await router.close();
  const client = new pg.Client({ connectionString: cluster.connectionStrings[0] });
  await client.connect();
  await client.query('CREATE TABLE public.accounts (id text PRIMARY KEY, balance bigint NOT NULL)');
  await client.query(`INSERT INTO public.accounts SELECT 'k' || i, 0 FROM generate_series(0, 511) i`);
  await client.query(
    'CREATE TABLE public.handwritten_outbox (id bigserial PRIMARY KEY, key text NOT NULL, topic text NOT NULL, payload jsonb NOT NULL, headers jsonb NOT NULL)',
  );
  if (asyncCommit) await client.query('SET synchronous_commit = off');
  const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  const backendCpu = (): number => {
    const text = readFileSync(`/proc/${rows[0]!.pid}/stat`, 'utf8');
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * TICK_MICROS;
  };
  const payload = JSON.stringify({ from: 'acct-1', to: 'acct-2', amount: 1 });
  const event = (i: number) => [`k${i % 512}`, randomUUID(), 'bench.transfer', payload, '{}'];
  const variants: Record<string, { text: string; values: (i: number) => unknown[] }> = {
    empty: { text: 'SELECT 1', values: () => [] },
    update: { text: 'UPDATE public.accounts SET balance = balance + 1 WHERE id = $1', values: (i) => [`k${i % 512}`] },
    handwritten: {
      text: 'INSERT INTO public.handwritten_outbox (key, topic, payload, headers) VALUES ($1, $3, $4::jsonb, $5::jsonb) RETURNING $2::uuid',
      values: event,
    },
    publish: { text: publishSql(catalog), values: event },
    sequenceOnly: {
      text: `INSERT INTO "${catalog}".outbox_keys AS k (key, last_seq) VALUES ($1, 1) ON CONFLICT (key) DO UPDATE SET last_seq = k.last_seq + 1`,
      values: (i) => [`k${i % 512}`],
    },
  };
  console.log(`${transactions} transactions per variant, synchronous_commit ${asyncCommit ? 'off' : 'on'}; round 1 is a warm-up`);
  for (let round = 0; round < 3; round++) {
    for (const [name, variant] of Object.entries(variants)) {
      const { rows: lsn } = await client.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn');
      const cpuBefore = backendCpu();
      const started = performance.now();
      for (let i = 0; i < transactions; i++) {
        await client.query('BEGIN');
        await client.query({ name: `profile_${name}`, text: variant.text, values: variant.values(i) });
        await client.query('COMMIT');
      }
      const wallMicros = ((performance.now() - started) * 1000) / transactions;
      const cpuMicros = (backendCpu() - cpuBefore) / transactions;
      const { rows: wal } = await client.query<{ bytes: string }>(
        'SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1)::text AS bytes',
        [lsn[0]!.lsn],
      );
      if (round > 0)
        console.log(
          `${name.padEnd(12)} server ${cpuMicros.toFixed(0).padStart(4)} µs/tx, wall ${wallMicros.toFixed(0).padStart(5)} µs/tx, WAL ${(Number(wal[0]!.bytes) / transactions).toFixed(0)} B/tx`,
        );
    }
  }
  await client.end();
} finally {
  await cluster.stop();
}
