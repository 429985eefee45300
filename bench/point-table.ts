import type { SectionContext } from './section.js';

/**
 * A table of point-query rows `(id int PRIMARY KEY, v int)`, each row only on the shard a given
 * placement says owns it. A query routed to the wrong shard finds no row, and `v` is a function of
 * `id` that no neighbouring id shares, so the guard catches both a wrong shard and a wrong row.
 */

/** The value stored with `id`. */
export function pointValue(id: number): number {
  return (id * 7919) % 1_000_003;
}

export function pointQuery(schema: string, table: string): string {
  return `SELECT v FROM ${schema}.${table} WHERE id = $1`;
}

/**
 * Creates `${ctx.schema}.${table}` on shards 0 .. shardCount-1 and puts ids 1..count where
 * `place(id)` (a shard index) says. Returns the rows per shard.
 */
export async function createPointTable(
  ctx: SectionContext,
  table: string,
  count: number,
  shardCount: number,
  place: (id: number) => number,
): Promise<number[]> {
  const ids = Array.from({ length: shardCount }, () => [] as number[]);
  for (let id = 1; id <= count; id++) ids[place(id)]!.push(id);
  for (let shard = 0; shard < shardCount; shard++) {
    await ctx.admin(shard, `CREATE TABLE ${ctx.schema}.${table} (id int PRIMARY KEY, v int NOT NULL)`);
    await ctx.admin(
      shard,
      `INSERT INTO ${ctx.schema}.${table} (id, v) SELECT id, (id::bigint * 7919 % 1000003)::int FROM unnest($1::int[]) AS id`,
      [ids[shard]],
    );
    await ctx.admin(shard, `ANALYZE ${ctx.schema}.${table}`);
  }
  return ids.map((list) => list.length);
}

/** Rows in `${ctx.schema}.${table}` on each of the first `shardCount` shards. */
export async function countRows(ctx: SectionContext, table: string, shardCount: number): Promise<number[]> {
  const counts: number[] = [];
  for (let shard = 0; shard < shardCount; shard++) {
    const rows = await ctx.admin<{ n: number }>(shard, `SELECT count(*)::int AS n FROM ${ctx.schema}.${table}`);
    counts.push(rows[0]?.n ?? 0);
  }
  return counts;
}
