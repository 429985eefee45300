/**
 * The `pg-shard-router/kysely` entry point: typed Kysely instances over a sharded cluster, from
 * the optional peer dependency kysely. Kept off the root entry so that importing
 * `pg-shard-router` never loads it.
 *
 * @example
 * import { shardedKysely } from 'pg-shard-router/kysely';
 */
export { shardedKysely } from './integrations/kysely.js';
export type { ShardedKysely, ShardedKyselyOptions, ShardedKyselyTransaction } from './integrations/kysely.js';
