import type { ShardPool } from '../pool/shard-pool.js';
import type { TextOrder } from './values/order.js';
import type { ServerRanker } from './merge/row-order.js';

/** What the broadcast layer learns from the shards at connect. */
export interface BroadcastCapabilities {
  /** 'codepoint' when every shard's database collation orders text by code point, else 'server'. */
  readonly textOrder: TextOrder;
  /** Names of aggregate and window functions on any shard (lower case), user-defined ones included. */
  readonly aggregateNames: ReadonlySet<string>;
}

/** libc locales whose collation is byte (= code point) order; the builtin provider's C locales too. */
const CODE_POINT_LOCALES = new Set(['C', 'POSIX', 'C.UTF-8', 'C.utf8', 'C.UTF8']);

/** Reads every shard's default collation and its aggregate function names. */
export async function probeBroadcastCapabilities(pools: readonly ShardPool[]): Promise<BroadcastCapabilities> {
  const answers = await Promise.all(
    pools.map(async (pool) => {
      // One round trip per shard at connect. datlocprovider exists from PostgreSQL 15; to_jsonb
      // keeps older servers (libc only) working.
      const { rows } = await pool.query<{ datcollate: string; provider: string; locale: string; names: string[] }>(
        `SELECT datcollate, coalesce(to_jsonb(d) ->> 'datlocprovider', 'c') AS provider,
                coalesce(to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticulocale', '') AS locale,
                (SELECT coalesce(array_agg(DISTINCT lower(proname::text)), '{}') FROM pg_proc WHERE prokind IN ('a', 'w')) AS names
           FROM pg_database d WHERE datname = current_database()`,
        [],
      );
      const row = rows[0]!;
      // 'c' libc: datcollate is the locale; 'b' builtin: C or C.UTF-8 order by code point; 'i' ICU never does.
      const codePoint =
        row.provider === 'b' ? CODE_POINT_LOCALES.has(row.locale) : row.provider === 'c' && CODE_POINT_LOCALES.has(row.datcollate);
      return { codePoint, names: row.names };
    }),
  );
  return {
    textOrder: answers.every((answer) => answer.codePoint) ? 'codepoint' : 'server',
    aggregateNames: new Set(answers.flatMap((answer) => answer.names)),
  };
}

/** Converts values (e.g. parameters) to a type's text form the way the server does: `$1::type::text`. */
export type ServerCaster = (oid: number, values: readonly (string | null)[]) => Promise<(string | null)[]>;

/**
 * Server-side help for the merge, on the first reachable shard: ranking values PostgreSQL's way
 * (dense_rank under a type and collation) and casting parameter values to a column's type.
 */
export function serverHelpers(pools: readonly ShardPool[]): { ranker: ServerRanker; caster: ServerCaster } {
  const typeNames = new Map<number, string>();
  const onAnyShard = async <T>(work: (pool: ShardPool, typeName: string) => Promise<T>, oid: number): Promise<T> => {
    let lastError: unknown;
    for (const pool of pools) {
      try {
        let typeName = typeNames.get(oid);
        if (typeName === undefined) {
          // format_type without a modifier would make bpchar `character`, i.e. char(1).
          typeName =
            oid === 1042
              ? 'bpchar'
              : (await pool.query<{ name: string }>('SELECT format_type($1::oid, NULL) AS name', [oid])).rows[0]!.name;
          typeNames.set(oid, typeName);
        }
        return await work(pool, typeName);
      } catch (error) {
        lastError = error;
      }
    }
    throw lastError;
  };
  // typeName comes from the server's own format_type, a collation from the parser (quoted).
  const ranker: ServerRanker = (oid, collation, values) =>
    onAnyShard(async (pool, typeName) => {
      const { rows } = await pool.query<{ i: number; r: string }>(
        `SELECT u.i::int4 AS i, dense_rank() OVER (ORDER BY u.t::${typeName}${collation ? ` COLLATE ${collation}` : ''}) AS r
           FROM unnest($1::text[]) WITH ORDINALITY AS u(t, i)`,
        [values],
      );
      const ranks = new Map<string, number>();
      for (const row of rows) ranks.set(values[row.i - 1]!, Number(row.r));
      return ranks;
    }, oid);
  const caster: ServerCaster = (oid, values) =>
    onAnyShard(async (pool, typeName) => {
      const { rows } = await pool.query<{ v: string | null }>(
        `SELECT u.t::${typeName}::text AS v FROM unnest($1::text[]) WITH ORDINALITY AS u(t, i) ORDER BY u.i`,
        [values],
      );
      return rows.map((row) => row.v);
    }, oid);
  return { ranker, caster };
}
