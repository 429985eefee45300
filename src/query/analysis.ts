import type { KeySource, KeyType } from './key-values.js';
import type { KeyGroup, TableRef } from './scope.js';

/**
 * A statement's analysis, cached by SQL text: everything about its route that does not depend
 * on the parameter values. The route itself (which shards) is a function of the params,
 * computed per call by route.ts: a prepared statement's text says where to look for the key,
 * its values say which shard.
 */

export type StatementKind = 'select' | 'insert' | 'update' | 'delete';

/** One group of co-located sharded tables and how to read its keys. */
export interface RoutedGroup extends KeyGroup {
  /** The key type of the group's key columns (undefined: not routable, e.g. numeric keys). */
  readonly keyType: KeyType | undefined;
}

/** The rows of a multi-row INSERT into a sharded table: each row's key source. */
export interface InsertRows {
  /** Per VALUES row, where its key comes from. */
  readonly keys: readonly KeySource[];
  readonly keyType: KeyType;
  /** RETURNING present: rows come back in input order. */
  readonly returning: boolean;
  readonly onConflict: boolean;
}

export type Analysis =
  /** Only reference tables (or none): reads go to one shard, writes to every shard. */
  | { readonly kind: 'reference'; readonly statement: StatementKind; readonly sql: string; readonly tables: readonly TableRef[] }
  /** Only unregistered tables, and the config names the shard they live on. */
  | { readonly kind: 'unregistered'; readonly statement: StatementKind; readonly sql: string; readonly shardId: string }
  /** SELECT / UPDATE / DELETE over sharded tables (and reference tables). */
  | {
      readonly kind: 'keyed';
      readonly statement: Exclude<StatementKind, 'insert'>;
      readonly sql: string;
      readonly tables: readonly TableRef[];
      readonly groups: readonly RoutedGroup[];
      /** Set when one `key = $n` pins everything: the hot path reads params[index] and hashes it. */
      readonly point: { readonly index: number; readonly keyType: KeyType } | undefined;
    }
  /** INSERT ... VALUES into a sharded table. */
  | {
      readonly kind: 'insert';
      readonly statement: 'insert';
      readonly sql: string;
      readonly table: TableRef;
      readonly rows: InsertRows;
      /** The parsed statement, for per-shard rewrites (never mutated). */
      readonly tree: Record<string, unknown>;
    };
