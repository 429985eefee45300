import { ShardRouterError } from '../errors.js';
import type { Analysis } from './analysis.js';
import { keysOf } from './key-values.js';
import { keyRequired, unsupportedQuery } from './refusals.js';

/**
 * Where one call of router.query goes: the analysis (by SQL text) applied to the call's
 * parameter values and the map of the moment. Plain data, printed by explainQuery.
 */
export type QueryRoute =
  /** One shard runs the statement as written. */
  | { readonly kind: 'shard'; readonly shardId: string; readonly reason: string }
  /**
   * A SELECT whose keys fall on several shards (read on their owners only, `keys` set), or that
   * pins no key (every shard): the broadcast planner's exact merge, or its UNSUPPORTED.
   */
  | { readonly kind: 'broadcast'; readonly shardIds: readonly string[]; readonly keys?: readonly string[]; readonly reason: string }
  /** UPDATE/DELETE on the shards of its keys (or every shard), in one two-phase commit. */
  | { readonly kind: 'write'; readonly shardIds: readonly string[] | 'all'; readonly reason: string }
  /** A multi-row INSERT split by shard, written in one two-phase commit. */
  | {
      readonly kind: 'insert';
      readonly parts: readonly { readonly shardId: string; readonly rows: readonly number[] }[];
      readonly reason: string;
    };

/** What routing needs of the moment: the owner of a key in the map the call routes by. */
export interface RouteMap {
  shardFor(key: string): string;
  /** The members of that map (a statement that matches no key goes to the first). */
  readonly members: readonly string[];
}

export interface RouteOptions {
  readonly requireKey: boolean;
  /** Round-robin position for reads of reference tables. */
  readonly turn: number;
}

/**
 * The route of one call.
 * @throws ShardRouterError KEY_REQUIRED, UNSUPPORTED (a join whose keys fall on several shards), INVALID_ARGUMENT (a key value of the wrong form)
 */
export function routeOf(analysis: Analysis, params: readonly unknown[], map: RouteMap, options: RouteOptions): QueryRoute {
  switch (analysis.kind) {
    case 'unregistered':
      return { kind: 'shard', shardId: analysis.shardId, reason: 'unregistered tables live on the configured shard' };
    case 'reference':
      if (analysis.statement === 'select') {
        return {
          kind: 'shard',
          shardId: map.members[options.turn % map.members.length]!,
          reason: 'reads only reference tables (a copy on every shard)',
        };
      }
      return { kind: 'write', shardIds: 'all', reason: 'writes reference tables: every shard, one two-phase commit' };
    case 'insert':
      return insertRoute(analysis, params, map);
    case 'keyed':
      return keyedRoute(analysis, params, map, options);
    default: {
      const never: never = analysis;
      throw new Error(`unknown analysis ${String(never)}`);
    }
  }
}

function keyedRoute(
  analysis: Extract<Analysis, { kind: 'keyed' }>,
  params: readonly unknown[],
  map: RouteMap,
  options: RouteOptions,
): QueryRoute {
  const unpinned = analysis.groups.find((group) => !group.pin || !group.keyType);
  const joins = analysis.groups.length > 1 || analysis.tables.length > 1;
  if (unpinned) {
    const table = unpinned.tables[0]!.written;
    if (options.requireKey) throw keyRequired(table, analysis.statement.toUpperCase());
    // A read goes to the broadcast planner, which answers joins and subqueries exactly or refuses them.
    if (analysis.statement !== 'select' && joins) {
      throw unsupportedQuery(
        `a join of sharded tables without a pinned shard key (${table})`,
        "pin the key (WHERE t.key = $1, IN or = ANY) so the join runs where the rows live, and equate the tables' keys (ON a.key = b.key)",
      );
    }
    const why = unpinned.pin
      ? `the key column of ${table} has a type the router does not route by`
      : `no condition pins the shard key of ${table}`;
    return analysis.statement === 'select'
      ? { kind: 'broadcast', shardIds: map.members, reason: `${why}: every shard, merged` }
      : { kind: 'write', shardIds: 'all', reason: `${why}: every shard, one two-phase commit` };
  }
  const shards = new Set<string>();
  const keys: string[] = [];
  for (const group of analysis.groups) {
    for (const key of keysOf(group.pin!.sources, params, group.keyType!)) {
      shards.add(map.shardFor(key));
      keys.push(key);
    }
  }
  const conditions = analysis.groups.map((group) => group.pin!.condition).join(' and ');
  if (shards.size === 0)
    return { kind: 'shard', shardId: map.members[0]!, reason: `${conditions} matches no key (NULL or empty): any one shard answers` };
  const shardIds = [...shards].sort();
  if (shardIds.length === 1) return { kind: 'shard', shardId: shardIds[0]!, reason: `${conditions} pins the shard key` };
  if (analysis.statement === 'select') {
    return {
      kind: 'broadcast',
      shardIds,
      keys: [...new Set(keys)],
      reason: `${conditions} names keys on ${shardIds.length} shards: read on those shards only, merged like broadcast`,
    };
  }
  if (joins) {
    throw unsupportedQuery(
      `a write joining tables whose shard keys fall on several shards (${shardIds.join(', ')})`,
      'run one statement per key; each shard would join only its own rows',
    );
  }
  return { kind: 'write', shardIds, reason: `${conditions} names keys on ${shardIds.length} shards: one two-phase commit` };
}

function insertRoute(analysis: Extract<Analysis, { kind: 'insert' }>, params: readonly unknown[], map: RouteMap): QueryRoute {
  const byShard = new Map<string, number[]>();
  analysis.rows.keys.forEach((source, row) => {
    const [key] = keysOf([source], params, analysis.rows.keyType);
    if (key === undefined) {
      throw new ShardRouterError('INVALID_ARGUMENT', `row ${row + 1} of the INSERT into ${analysis.table.written} has a NULL shard key`);
    }
    const shardId = map.shardFor(key);
    byShard.set(shardId, [...(byShard.get(shardId) ?? []), row]);
  });
  if (byShard.size === 1) {
    const [shardId] = byShard.keys();
    return { kind: 'shard', shardId: shardId!, reason: `every row's key (${analysis.table.registered!.shardKey}) is on one shard` };
  }
  if (analysis.rows.returning && analysis.rows.onConflict) {
    throw unsupportedQuery(
      'INSERT ... ON CONFLICT ... RETURNING whose rows fall on several shards',
      'skipped rows would leave the RETURNING rows unmatched to their input rows; insert per key, or drop RETURNING',
    );
  }
  const parts = [...byShard].sort(([a], [b]) => (a < b ? -1 : 1)).map(([shardId, rows]) => ({ shardId, rows }));
  return { kind: 'insert', parts, reason: `rows fall on ${parts.length} shards: one INSERT per shard, one two-phase commit` };
}
