import { randomUUID } from 'node:crypto';
import type { ResolvedConfig } from '../config.js';
import { DEFAULT_BUCKET_COUNT, urlWithoutPassword } from '../config.js';
import { ShardRouterError } from '../errors.js';
import { BucketMap } from '../placement/bucket-map.js';
import { hashKey } from '../placement/hash.js';
import type { Queryable, ShardSession } from '../pool/session.js';
import { q } from '../sql.js';
import { ensureRegistries, readRegistry, readShardRegistry } from './registries.js';
import type { RegisteredShard, RegisteredTable } from './registries.js';

/**
 * The catalog: every shard holds, in its own schema (default `shard_router`), its identity
 * (cluster id, shard id, bucket count) and a full copy of the versioned bucket map. There is no
 * metadata server: any router can read the map from any shard, and a shard can tell whether a
 * connection string really points at it.
 *
 * Creation is two passes under an advisory lock on the lowest shard id: install identity and
 * map on every shard, then mark every shard `complete`. A creation cut short during the first
 * pass leaves no shard complete, and the next connect finishes it with the same cluster id and
 * map; one cut short during the second pass leaves every shard installed and is finished by
 * marking the rest. Once any shard is complete, a configured shard without a catalog is an
 * error (a new or wiped server), never silently adopted.
 */

const CATALOG_FORMAT = 1;
/** Advisory-lock class id ("PSHR"); the object id is derived from the catalog schema name. */
const LOCK_CLASS = 0x50534852;
const LOCK_WAIT_MS = 30_000;

export interface ShardIdentity {
  readonly clusterId: string;
  readonly shardId: string;
  readonly bucketCount: number;
  readonly complete: boolean;
}

export interface OpenedCatalog {
  readonly clusterId: string;
  readonly map: BucketMap;
  /** True when this connect created the cluster. */
  readonly created: boolean;
  /** What each shard's server can do, by shard id. */
  readonly capabilities: ReadonlyMap<string, ShardCapabilities>;
  /** Every shard that ever joined the cluster (from the shard registry). */
  readonly registeredShards: readonly RegisteredShard[];
  readonly tables: readonly RegisteredTable[];
}

/**
 * What a layer above adds to every shard's catalog (the two-phase commit's decision log, the
 * rebalancing tables and functions): the catalog installs it on every shard at connect and on a
 * new shard, without knowing what it is, so it imports none of those layers.
 */
export interface CatalogExtension {
  readonly name: string;
  /** Creates what is missing; idempotent, and cheap when everything is there. */
  ensure(session: Queryable, schema: string): Promise<void>;
  /**
   * Runs at connect after `ensure` on every shard, under the catalog lock, with one session per
   * configured shard: for what must agree across shards (e.g. the id slots). Idempotent.
   */
  ensureCluster?(sessions: readonly ShardSession[], schema: string): Promise<void>;
}

export interface ShardCapabilities {
  /** server_version_num, e.g. 170002. */
  readonly serverVersion: number;
  /** 0 means the shard cannot take part in two-phase commit. */
  readonly maxPreparedTransactions: number;
}

export async function probeCapabilities(session: ShardSession): Promise<ShardCapabilities> {
  const { rows } = await session.query<{ version: number; max_prepared: number }>(
    "SELECT current_setting('server_version_num')::int AS version, current_setting('max_prepared_transactions')::int AS max_prepared",
  );
  return { serverVersion: rows[0]?.version ?? 0, maxPreparedTransactions: rows[0]?.max_prepared ?? 0 };
}

export async function readIdentity(session: Queryable, schema: string): Promise<ShardIdentity | null> {
  const exists = await session.query<{ present: boolean }>('SELECT to_regclass($1) IS NOT NULL AS present', [
    `${q(schema)}.shard_identity`,
  ]);
  if (!exists.rows[0]?.present) return null;
  const { rows } = await session.query<{ cluster_id: string; shard_id: string; bucket_count: number; complete: boolean }>(
    `SELECT cluster_id::text, shard_id, bucket_count, complete FROM ${q(schema)}.shard_identity`,
  );
  const row = rows[0];
  if (!row) return null;
  return { clusterId: row.cluster_id, shardId: row.shard_id, bucketCount: row.bucket_count, complete: row.complete };
}

export async function readLatestMap(session: Queryable, schema: string): Promise<BucketMap | null> {
  const { rows } = await session.query<{ version: string; owners: string[] }>(
    `SELECT version::text AS version, owners FROM ${q(schema)}.bucket_map m ORDER BY m.version DESC LIMIT 1`,
  );
  const row = rows[0];
  return row ? BucketMap.fromOwners(Number(row.version), row.owners) : null;
}

export async function installCatalog(session: ShardSession, schema: string, identity: ShardIdentity, map: BucketMap): Promise<void> {
  await session.query('BEGIN');
  try {
    await session.query(`CREATE SCHEMA IF NOT EXISTS ${q(schema)}`);
    await session.query(
      `CREATE TABLE IF NOT EXISTS ${q(schema)}.shard_identity (
         only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
         format integer NOT NULL,
         cluster_id uuid NOT NULL,
         shard_id text NOT NULL,
         bucket_count integer NOT NULL CHECK (bucket_count > 0),
         complete boolean NOT NULL DEFAULT false,
         created_at timestamptz NOT NULL DEFAULT now())`,
    );
    await session.query(
      `CREATE TABLE IF NOT EXISTS ${q(schema)}.bucket_map (
         version bigint PRIMARY KEY CHECK (version > 0),
         owners text[] NOT NULL,
         created_at timestamptz NOT NULL DEFAULT now())`,
    );
    await session.query(
      `INSERT INTO ${q(schema)}.shard_identity (format, cluster_id, shard_id, bucket_count) VALUES ($1, $2, $3, $4)
       ON CONFLICT (only_row) DO NOTHING`,
      [CATALOG_FORMAT, identity.clusterId, identity.shardId, identity.bucketCount],
    );
    await session.query(`INSERT INTO ${q(schema)}.bucket_map (version, owners) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING`, [
      map.version,
      map.owners,
    ]);
    await session.query('COMMIT');
  } catch (error) {
    await session.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/**
 * Verifies that every configured connection is the shard it claims to be, creating the cluster
 * on first use, installs the layers' catalog extensions, and returns the cluster id and the
 * newest bucket map. `sessions` holds one session per configured shard, in config order.
 */
export async function openCatalog(
  config: ResolvedConfig,
  sessions: readonly ShardSession[],
  extensions: readonly CatalogExtension[],
): Promise<OpenedCatalog> {
  const schema = config.catalogSchema;
  const lockHolder = [...sessions].sort((a, b) => (a.shardId < b.shardId ? -1 : 1))[0]!;
  const lockArgs = [LOCK_CLASS, hashKey(`pg-shard-router:${schema}`) | 0];
  // Bounded wait: a router stuck inside openLocked (an unresponsive shard) must not block every
  // other router's connect forever.
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    const { rows } = await lockHolder.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS locked', lockArgs);
    if (rows[0]?.locked) break;
    if (Date.now() > deadline) {
      throw new ShardRouterError(
        'SHARD_UNAVAILABLE',
        `another router has held the catalog lock on shard ${lockHolder.shardId} for over ${LOCK_WAIT_MS / 1000} s`,
        { shardId: lockHolder.shardId },
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  try {
    return await openLocked(config, sessions, extensions);
  } finally {
    await lockHolder.query('SELECT pg_advisory_unlock($1, $2)', lockArgs).catch(() => undefined);
  }
}

/** A configured session and the identity its shard holds (null: no catalog there). */
interface Found {
  readonly session: ShardSession;
  readonly identity: ShardIdentity | null;
}

async function openLocked(
  config: ResolvedConfig,
  sessions: readonly ShardSession[],
  extensions: readonly CatalogExtension[],
): Promise<OpenedCatalog> {
  const schema = config.catalogSchema;
  const found: Found[] = await Promise.all(sessions.map(async (session) => ({ session, identity: await readIdentity(session, schema) })));
  checkIdentities(config, found);
  const { clusterId, map, created } = await clusterAndMap(config, found);
  checkConfigAgainst(config, found, clusterId, map, created);
  const registry = await readKnownRegistry(found, schema);
  const unknownOwners = map
    .shardIds()
    .filter((id) => !found.some(({ session }) => session.shardId === id) && registry.get(id)?.state !== 'active');
  if (unknownOwners.length > 0) {
    throw new ShardRouterError(
      'INVALID_CONFIG',
      `bucket map version ${map.version} of cluster ${clusterId} assigns buckets to shard(s) ${unknownOwners.join(', ')}, ` +
        'which the config does not list',
    );
  }
  if (found.some(({ identity }) => !identity?.complete)) await finishCreation(config, found, clusterId, map);
  // The registries and the layers' extensions (catalogs created before they existed get them
  // here too); configured shards missing from the shard registry are recorded.
  const capabilities = new Map<string, ShardCapabilities>();
  for (const session of sessions) {
    await ensureRegistries(session, schema);
    for (const extension of extensions) await extension.ensure(session, schema);
    capabilities.set(session.shardId, await probeCapabilities(session));
  }
  for (const extension of extensions) await extension.ensureCluster?.(sessions, schema);
  await registerConfiguredShards(config, sessions, registry, created ? undefined : map);
  const tables = await readRegistry(sessions[0]!, schema);
  return { clusterId, map, created, capabilities, registeredShards: [...registry.values()], tables };
}

/** Each catalog found must name the shard it is configured as, and all must be one cluster's. */
function checkIdentities(config: ResolvedConfig, found: readonly Found[]): void {
  const displayUrl = new Map(config.shards.map((shard) => [shard.id, shard.displayUrl]));
  for (const { identity, session } of found) {
    if (identity && identity.shardId !== session.shardId) {
      throw new ShardRouterError(
        'SHARD_IDENTITY_MISMATCH',
        `the connection configured as shard ${session.shardId} (${displayUrl.get(session.shardId)}) reaches shard ` +
          `${identity.shardId} of cluster ${identity.clusterId}: are the shard connection strings swapped?`,
        { shardId: session.shardId },
      );
    }
  }
  const known = found.flatMap(({ identity }) => (identity ? [identity] : []));
  if (new Set(known.map((identity) => identity.clusterId)).size > 1) {
    const byCluster = known.map((identity) => `${identity.shardId} -> cluster ${identity.clusterId}`).join(', ');
    throw new ShardRouterError('SHARD_IDENTITY_MISMATCH', `the configured shards belong to different clusters (${byCluster})`);
  }
}

/** The existing cluster's id and newest map, or a new cluster's (no shard has a catalog yet). */
async function clusterAndMap(
  config: ResolvedConfig,
  found: readonly Found[],
): Promise<{ clusterId: string; map: BucketMap; created: boolean }> {
  const known = found.filter(({ identity }) => identity !== null);
  if (known.length === 0) {
    const map = BucketMap.even(
      found.map(({ session }) => session.shardId),
      config.bucketCount ?? DEFAULT_BUCKET_COUNT,
    );
    return { clusterId: randomUUID(), map, created: true };
  }
  const clusterId = known[0]!.identity!.clusterId;
  const maps = await Promise.all(known.map(({ session }) => readLatestMap(session, config.catalogSchema)));
  const newest = maps.reduce<BucketMap | null>((best, m) => (m && (!best || m.version > best.version) ? m : best), null);
  if (!newest) throw new ShardRouterError('SHARD_IDENTITY_MISMATCH', `cluster ${clusterId} has an identity but no bucket map`);
  return { clusterId, map: newest, created: false };
}

/** Refuses configs that would silently misplace data: a wiped server, another bucket count, a changed unfinished creation. */
function checkConfigAgainst(config: ResolvedConfig, found: readonly Found[], clusterId: string, map: BucketMap, created: boolean): void {
  const missing = found.filter(({ identity }) => identity === null).map(({ session }) => session.shardId);
  const anyComplete = found.some(({ identity }) => identity?.complete);
  if (missing.length > 0 && anyComplete) {
    throw new ShardRouterError(
      'SHARD_IDENTITY_MISMATCH',
      `shard(s) ${missing.join(', ')} have no pg-shard-router catalog (schema ${config.catalogSchema}) but cluster ${clusterId} was created without ` +
        'them: a new or wiped server cannot join by connecting; check the connection strings',
      { shardId: missing[0]! },
    );
  }
  if (config.bucketCount !== undefined && config.bucketCount !== map.bucketCount) {
    throw new ShardRouterError(
      'INVALID_CONFIG',
      `bucketCount ${config.bucketCount} differs from cluster ${clusterId}'s ${map.bucketCount}, fixed when it was created; omit it`,
    );
  }
  if (created || anyComplete) return;
  // An unfinished creation is finished with its own map; a config that has since changed its
  // shards would silently give a new shard no buckets, so say so instead.
  const configured = new Set(found.map(({ session }) => session.shardId));
  const planned = new Set(map.shardIds());
  if (planned.size !== configured.size || [...planned].some((id) => !configured.has(id))) {
    throw new ShardRouterError(
      'INVALID_CONFIG',
      `cluster ${clusterId} was being created over shards ${[...planned].join(', ')} and that creation did not finish; ` +
        'connect once with exactly those shards to finish it',
    );
  }
}

/** The shard registry as the shards with a catalog hold it (older catalogs may lack the table). */
async function readKnownRegistry(found: readonly Found[], schema: string): Promise<Map<string, RegisteredShard>> {
  const registry = new Map<string, RegisteredShard>();
  for (const { session, identity } of found) {
    if (!identity) continue;
    const present = await session.query<{ present: boolean }>('SELECT to_regclass($1) IS NOT NULL AS present', [`${q(schema)}.shards`]);
    if (!present.rows[0]?.present) continue;
    for (const shard of await readShardRegistry(session, schema)) registry.set(shard.shardId, shard);
  }
  return registry;
}

/**
 * Finishes (or does) creation: installs the catalog where it is missing, checks that each really
 * took (two "shards" that are one database would both claim it), then marks every shard complete.
 */
async function finishCreation(config: ResolvedConfig, found: readonly Found[], clusterId: string, map: BucketMap): Promise<void> {
  const schema = config.catalogSchema;
  const displayUrl = new Map(config.shards.map((shard) => [shard.id, shard.displayUrl]));
  for (const { session, identity } of found) {
    if (!identity)
      await installCatalog(session, schema, { clusterId, shardId: session.shardId, bucketCount: map.bucketCount, complete: false }, map);
  }
  for (const { session } of found) {
    const identity = await readIdentity(session, schema);
    if (identity?.clusterId !== clusterId || identity.shardId !== session.shardId) {
      throw new ShardRouterError(
        'SHARD_IDENTITY_MISMATCH',
        `the connection configured as shard ${session.shardId} (${displayUrl.get(session.shardId)}) reaches the database ` +
          `of shard ${identity?.shardId ?? '?'}: two shard ids point at the same database`,
        { shardId: session.shardId },
      );
    }
  }
  for (const { session } of found) await session.query(`UPDATE ${q(schema)}.shard_identity SET complete = true WHERE NOT complete`);
}

/** Records configured shards the registry lacks: all of them for a new cluster, else the map's owners. */
async function registerConfiguredShards(
  config: ResolvedConfig,
  sessions: readonly ShardSession[],
  registry: Map<string, RegisteredShard>,
  existingMap: BucketMap | undefined,
): Promise<void> {
  const owners = existingMap?.shardIds();
  const unregistered = config.shards.filter((shard) => !registry.has(shard.id) && (!owners || owners.includes(shard.id)));
  for (const shard of unregistered) {
    const url = urlWithoutPassword(shard.connectionString);
    for (const session of sessions) {
      await session.query(
        `INSERT INTO ${q(config.catalogSchema)}.shards (shard_id, url) VALUES ($1, $2) ON CONFLICT (shard_id) DO NOTHING`,
        [shard.id, url],
      );
    }
    registry.set(shard.id, { shardId: shard.id, url, state: 'active' });
  }
}
