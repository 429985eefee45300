import v8 from 'node:v8';
import pg from 'pg';
import Cursor from 'pg-cursor';
import type { ShardRouter } from '../../src/index.js';
import { atLeast, check, size } from '../section.js';
import type { Section, SectionContext } from '../section.js';
import { formatTable, nowNs, pairedRatios, secondsSince, summarize } from '../stats.js';
import type { Series } from '../stats.js';
import { interleavedRounds } from '../workload.js';

/**
 * `router.broadcastStream('SELECT id, v FROM s ORDER BY id', [], { batchSize })`: 4 shards' ordered
 * cursors k-way merged into one ordered stream, against the baseline of the same rows read from
 * one server over one connection with pg-cursor (what an unsharded application would do), in
 * interleaved rounds. Both sides check every row (ids 1..N in order, each v right) and sample the
 * heap, so the figure is rows/s of a right answer and how much memory the stream needed.
 */

export const STREAM_TARGET_ROWS_PER_SECOND = 1e6;
const VARIANTS = ['stream', 'cursor'] as const;
type Variant = (typeof VARIANTS)[number];
/** Rows between heap samples. */
const HEAP_SAMPLE_EVERY = 4096;

const vOf = (id: number) => (id * 7919) % 1_000_003;

interface PassResult {
  readonly rowsPerSecond: number;
  readonly rows: number;
  /** Rows that were out of order, missing or wrong. */
  readonly wrong: number;
  /** Highest heapUsed seen during the pass minus heapUsed right before it (after a full GC), MB. */
  readonly peakHeapGrowthMB: number;
}

/** Collects garbage when the process was started with --expose-gc (npm run bench does that). */
function collectGarbage(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

/** Walks the rows, checking each; `rows` yields one row at a time. */
async function consume(rows: AsyncIterable<{ id: number; v: number }>, expected: number): Promise<PassResult> {
  collectGarbage();
  const heapBefore = v8.getHeapStatistics().used_heap_size;
  let peak = heapBefore;
  let count = 0;
  let wrong = 0;
  const start = nowNs();
  for await (const row of rows) {
    count++;
    if (row.id !== count || row.v !== vOf(row.id)) wrong++;
    if ((count & (HEAP_SAMPLE_EVERY - 1)) === 0) {
      const used = v8.getHeapStatistics().used_heap_size;
      if (used > peak) peak = used;
    }
  }
  const seconds = secondsSince(start);
  if (count !== expected) wrong += Math.abs(expected - count);
  return { rowsPerSecond: count / seconds, rows: count, wrong, peakHeapGrowthMB: (peak - heapBefore) / 2 ** 20 };
}

/** pg-cursor batches as a row iterable. */
async function* cursorRows(client: pg.Client, sql: string, batchSize: number): AsyncGenerator<{ id: number; v: number }> {
  const cursor = client.query(new Cursor<{ id: number; v: number }>(sql));
  try {
    for (;;) {
      const batch = await cursor.read(batchSize);
      if (batch.length === 0) return;
      yield* batch;
    }
  } finally {
    await cursor.close();
  }
}

async function loadRows(ctx: SectionContext, router: ShardRouter, shardCount: number, rows: number): Promise<number[]> {
  const index = new Map(ctx.shards.map((s, i) => [s.id, i]));
  const ids = Array.from({ length: shardCount }, () => [] as number[]);
  for (let id = 1; id <= rows; id++) ids[index.get(router.shardFor(id))!]!.push(id);
  for (let shard = 0; shard < shardCount; shard++) {
    await ctx.admin(shard, `CREATE TABLE ${ctx.schema}.s (id int PRIMARY KEY, v int NOT NULL)`);
    await ctx.admin(
      shard,
      `INSERT INTO ${ctx.schema}.s SELECT id, (id::bigint * 7919 % 1000003)::int FROM unnest($1::int[]) AS id ORDER BY id`,
      [ids[shard]],
    );
    await ctx.admin(shard, `VACUUM ANALYZE ${ctx.schema}.s`);
  }
  await ctx.admin(0, `CREATE TABLE ${ctx.schema}.s_all (id int PRIMARY KEY, v int NOT NULL)`);
  await ctx.admin(
    0,
    `INSERT INTO ${ctx.schema}.s_all SELECT id, (id::bigint * 7919 % 1000003)::int FROM generate_series(1, ${rows}) AS id`,
  );
  await ctx.admin(0, `VACUUM ANALYZE ${ctx.schema}.s_all`);
  return ids.map((list) => list.length);
}

export interface StreamDetails {
  readonly shards: number;
  readonly rows: number;
  readonly rowsPerShard: readonly number[];
  readonly batchSize: number;
  readonly rounds: number;
  readonly rowsPerSecond: Readonly<Record<Variant, Series>>;
  readonly ratio: number;
  readonly peakHeapGrowthMB: Readonly<Record<Variant, Series>>;
  readonly gcExposed: boolean;
}

interface StreamPlan {
  readonly shardCount: number;
  readonly rows: number;
  readonly rounds: number;
  readonly batchSize: number;
  readonly rowsPerShard: readonly number[];
}

/** Interleaved rounds: the ordered broadcastStream against a pg-cursor read of the same rows on one server. */
async function measureRounds(
  ctx: SectionContext,
  router: ShardRouter,
  client: pg.Client,
  plan: StreamPlan,
): Promise<{ results: Record<Variant, PassResult[]>; checked: Record<Variant, number>; wrong: Record<Variant, number> }> {
  const { shardCount, rows, rounds, batchSize, rowsPerShard } = plan;
  const sql = (table: string) => `SELECT id, v FROM ${ctx.schema}.${table} ORDER BY id`;
  const checked = { stream: 0, cursor: 0 };
  const wrong = { stream: 0, cursor: 0 };
  const pass: Record<Variant, () => Promise<PassResult>> = {
    stream: () => consume(router.broadcastStream<{ id: number; v: number }>(sql('s'), [], { batchSize }), rows),
    cursor: () => consume(cursorRows(client, sql('s_all'), batchSize), rows),
  };
  ctx.log(
    `${rows.toLocaleString('en-US')} rows (${rowsPerShard.join(' + ')} on ${shardCount} shards), batch ${batchSize}; 1 warm-up round, then ${rounds} rounds per side`,
  );
  const results = await interleavedRounds(
    VARIANTS,
    { rounds, warmupRounds: 1 },
    async (variant) => {
      const result = await pass[variant]();
      checked[variant] += result.rows;
      wrong[variant] += result.wrong;
      return result;
    },
    (r, t) =>
      ctx.log(
        `round ${r}: stream ${Math.round(t.stream.rowsPerSecond)} rows/s (heap +${t.stream.peakHeapGrowthMB.toFixed(1)} MB)  ` +
          `cursor ${Math.round(t.cursor.rowsPerSecond)} rows/s (heap +${t.cursor.peakHeapGrowthMB.toFixed(1)} MB)`,
      ),
  );
  return { results, checked, wrong };
}

export const streamSection: Section<StreamDetails> = {
  name: 'stream',
  title: 'broadcastStream: ordered k-way merge of 4 shards, rows/s and peak heap vs a raw pg-cursor read',
  async run(ctx) {
    const shardCount = Math.min(4, ctx.shards.length);
    const rows = size(ctx, 1_000_000, 100_000);
    const rounds = size(ctx, 3, 2);
    const batchSize = 1000;
    const router = await ctx.router(shardCount, { poolMax: 4 });
    const rowsPerShard = await loadRows(ctx, router, shardCount, rows);
    const client = new pg.Client({ connectionString: ctx.shards[0]!.connectionString, application_name: 'bench cursor' });
    client.on('error', () => undefined);
    await client.connect();
    try {
      const { results, checked, wrong } = await measureRounds(ctx, router, client, { shardCount, rows, rounds, batchSize, rowsPerShard });
      const rps = (v: Variant) => results[v].map((r) => r.rowsPerSecond);
      const heap = (v: Variant) => summarize(results[v].map((r) => r.peakHeapGrowthMB));
      const rowsPerSecond = { stream: summarize(rps('stream')), cursor: summarize(rps('cursor')) };
      const ratio = summarize(pairedRatios(rps('stream'), rps('cursor'))).median;
      const peakHeapGrowthMB = { stream: heap('stream'), cursor: heap('cursor') };
      const gcExposed = typeof (globalThis as { gc?: unknown }).gc === 'function';
      return {
        setup:
          `SELECT id, v FROM s ORDER BY id over ${shardCount} shards (${rows.toLocaleString('en-US')} rows, int columns) through router.broadcastStream with batchSize ${batchSize}, ` +
          `vs the same rows from one table on one server read with pg-cursor over one connection, batches of ${batchSize}; ${rounds} interleaved rounds; ` +
          `heap sampled every ${HEAP_SAMPLE_EVERY} rows${gcExposed ? ' after a full GC' : ' (no --expose-gc: without a GC first)'}`,
        figures: [
          {
            label: `broadcastStream ORDER BY merge, ${shardCount} shards`,
            value: rowsPerSecond.stream.median,
            unit: 'rows/s',
            baseline: { label: 'pg-cursor, one server', value: rowsPerSecond.cursor.median },
            ratio,
            note: `median of ${rounds} paired rounds`,
            target: atLeast('value', rowsPerSecond.stream.median, STREAM_TARGET_ROWS_PER_SECOND, 'rows/s'),
          },
          {
            label: 'broadcastStream peak heap growth',
            value: peakHeapGrowthMB.stream.max,
            unit: 'MB',
            baseline: { label: 'pg-cursor', value: peakHeapGrowthMB.cursor.max },
            ratio: peakHeapGrowthMB.stream.max / peakHeapGrowthMB.cursor.max,
            note: `highest over ${rounds} rounds, including garbage not yet collected`,
          },
        ],
        guard: VARIANTS.map((v) =>
          check(
            `${v}: every row, in order, with its value`,
            wrong[v] === 0 && checked[v] > 0,
            `${(checked[v] - wrong[v]).toLocaleString('en-US')}/${checked[v].toLocaleString('en-US')} rows right (warm-up included)`,
          ),
        ),
        details: { shards: shardCount, rows, rowsPerShard, batchSize, rounds, rowsPerSecond, ratio, peakHeapGrowthMB, gcExposed },
      };
    } finally {
      await client.end().catch(() => undefined);
    }
  },
  format(outcome) {
    const d = outcome.details;
    const q = (v: number) => Math.round(v).toString();
    const row = (name: string, v: Variant) => [
      name,
      q(d.rowsPerSecond[v].median),
      q(d.rowsPerSecond[v].min),
      q(d.rowsPerSecond[v].max),
      d.peakHeapGrowthMB[v].max.toFixed(1),
    ];
    return (
      formatTable(
        ['variant', 'median rows/s', 'min', 'max', 'peak heap +MB'],
        [row(`router.broadcastStream (${d.shards} shards)`, 'stream'), row('pg-cursor (one server)', 'cursor')],
      ) + `\nratio stream/cursor ${d.ratio.toFixed(3)}; target >= ${STREAM_TARGET_ROWS_PER_SECOND / 1e6} M rows/s`
    );
  },
};
