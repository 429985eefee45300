import { ShardRouterError } from '../errors.js';
import type { QueryResultRow } from '../pool/session.js';
import type { ShardQueryResult } from '../pool/shard-pool.js';
import type { RoutedQueryResult, Transaction } from '../twopc/coordinator.js';
import type { Analysis } from './analysis.js';
import { insertPart } from './insert-split.js';
import type { QueryRoute } from './route.js';

/** Results of routed statements: one shard's, several shards' combined, INSERT parts back in input order; and tx.query's execution. */

/**
 * Runs a route inside a transaction, among its participants: a shard it did not declare (or
 * every shard) is KEY_NOT_IN_TRANSACTION. A SELECT whose pinned keys fall on several
 * participants is read by `mergedRead` (the broadcast merge, on the transaction's sessions).
 */
export async function runInTransaction<R extends QueryResultRow>(
  tx: Transaction,
  analysis: Analysis,
  route: QueryRoute,
  params: readonly unknown[],
  mergedRead: (keys: readonly string[], shardIds: readonly string[]) => Promise<RoutedQueryResult<R>>,
): Promise<RoutedQueryResult<R>> {
  const members = tx.shardIds;
  const sql = analysis.sql;
  const outside = (shardIds: readonly string[]) => shardIds.filter((id) => !members.includes(id));
  const refuse = (shardIds: readonly string[]) =>
    new ShardRouterError('KEY_NOT_IN_TRANSACTION', `tx.query needs shard(s) ${shardIds.join(', ')}, which the transaction did not declare`);
  switch (route.kind) {
    case 'shard':
      if (outside([route.shardId]).length > 0) throw refuse([route.shardId]);
      return single(await tx.executeOn<R>(route.shardId, sql, params as unknown[]));
    case 'write': {
      if (route.shardIds === 'all') throw refuse(['(every shard)']);
      if (outside(route.shardIds).length > 0) throw refuse(outside(route.shardIds));
      return combine(await Promise.all(route.shardIds.map((shardId) => tx.executeOn<R>(shardId, sql, params as unknown[]))));
    }
    case 'insert': {
      const missing = outside(route.parts.map((part) => part.shardId));
      if (missing.length > 0) throw refuse(missing);
      const insert = analysis as Extract<Analysis, { kind: 'insert' }>;
      const results = [];
      for (const part of route.parts) {
        const built = insertPart(insert.tree, part.rows, params);
        results.push(await tx.executeOn<R>(part.shardId, built.sql, built.params as unknown[]));
      }
      return inInputOrder(route.parts, results, insert.rows.keys.length);
    }
    case 'broadcast':
      // No pinned key: every shard of a map that may move on during the transaction.
      if (route.keys === undefined) throw refuse(['(every shard)']);
      if (outside(route.shardIds).length > 0) throw refuse(outside(route.shardIds));
      return mergedRead(route.keys, route.shardIds);
    default: {
      const never: never = route;
      throw new Error(`unknown route ${String(never)}`);
    }
  }
}

export function single<R extends QueryResultRow>(result: ShardQueryResult<R>): RoutedQueryResult<R> {
  return {
    rows: result.rows,
    rowCount: result.rowCount ?? result.rows.length,
    fields: result.fields,
    command: result.command,
    shardIds: [result.shardId],
  };
}

export function combine<R extends QueryResultRow>(results: readonly ShardQueryResult<R>[]): RoutedQueryResult<R> {
  const first = results[0]!;
  return {
    rows: results.flatMap((result) => result.rows),
    rowCount: results.reduce((sum, result) => sum + (result.rowCount ?? 0), 0),
    fields: first.fields,
    command: first.command,
    shardIds: results.map((result) => result.shardId),
  };
}

/** Puts each shard's RETURNING rows back at their rows' input positions. */
export function inInputOrder<R extends QueryResultRow>(
  parts: readonly { readonly rows: readonly number[] }[],
  results: readonly ShardQueryResult<R>[],
  rowCount: number,
): RoutedQueryResult<R> {
  const combined = combine(results);
  if (combined.rows.length === 0) return combined;
  const rows: R[] = new Array(rowCount);
  parts.forEach((part, index) => {
    const returned = results[index]!.rows;
    if (returned.length !== part.rows.length) {
      // Thrown inside the transaction's work: nothing commits.
      throw new ShardRouterError(
        'UNSUPPORTED',
        `a shard returned ${returned.length} RETURNING rows for ${part.rows.length} inserted (a trigger or rule skipped or added rows), ` +
          'so they cannot be matched to the input rows; nothing was committed. Insert per key, or drop RETURNING',
      );
    }
    part.rows.forEach((row, j) => {
      rows[row] = returned[j]!;
    });
  });
  return { ...combined, rows };
}
