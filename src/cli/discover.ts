import { readIdentity, readLatestMap } from '../catalog/catalog.js';
import { q } from '../sql.js';
import type { ShardIdentity } from '../catalog/catalog.js';
import { connectDedicated } from '../pool/dedicated.js';
import type { DedicatedConnection } from '../pool/session.js';
import { isPostgresUrl, redactConnectionString, resolveConfig } from '../config.js';
import { ShardRouterError } from '../errors.js';
import type { ErrorCode } from '../errors.js';

/**
 * The CLI is given URLs only; each server's catalog says which shard it is. Everything here
 * only reads, so `status` can promise not to change anything.
 */

export const CLI_APPLICATION_NAME = 'pg-shard-router-cli';
const CONNECT_TIMEOUT_MS = 5_000;

export interface DiscoveredShard {
  readonly id: string;
  readonly connectionString: string;
  /** Password replaced by ***: the only form of the URL that is ever printed. */
  readonly displayUrl: string;
}

export interface DiscoveredCluster {
  readonly clusterId: string;
  /** Sorted by shard id. */
  readonly shards: readonly DiscoveredShard[];
  /**
   * Shards whose catalog a router's connect would still write to: a creation that did not
   * finish, or a catalog older than the 2PC decision table.
   */
  readonly unfinished: readonly string[];
}

interface Probe {
  readonly url: string;
  readonly displayUrl: string;
  readonly identity: ShardIdentity;
  readonly hasDecisionTable: boolean;
  readonly mapOwners: readonly string[];
  readonly mapVersion: number;
}

class ProbeError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Validates the arguments (the catalog schema exactly as the router's config does, before it
 * is ever put into SQL), reads every server's identity and checks they form one whole cluster.
 * @throws ShardRouterError INVALID_ARGUMENT, INVALID_CONFIG, SHARD_UNAVAILABLE, SHARD_IDENTITY_MISMATCH
 */
export async function discoverCluster(urls: readonly string[], catalogSchema: string): Promise<DiscoveredCluster> {
  checkCatalogSchema(catalogSchema);
  checkUrls(urls);
  const probes = await probeAll(urls, catalogSchema);
  const clusterId = oneClusterId(probes);
  const byId = uniqueShardIds(probes);
  // Every shard holds the map; the newest copy says which shards the cluster has.
  const newest = probes.reduce((best, p) => (p.mapVersion > best.mapVersion ? p : best));
  const missing = [...new Set(newest.mapOwners)].filter((id) => !byId.has(id)).sort(byShardId);
  if (missing.length > 0) {
    throw new ShardRouterError(
      'INVALID_ARGUMENT',
      `cluster ${clusterId} also has shard(s) ${missing.join(', ')}, which the given URLs do not reach: list every shard's URL`,
    );
  }

  const sorted = [...probes].sort((a, b) => byShardId(a.identity.shardId, b.identity.shardId));
  return {
    clusterId,
    shards: sorted.map((p) => ({ id: p.identity.shardId, connectionString: p.url, displayUrl: p.displayUrl })),
    unfinished: sorted.filter((p) => !p.identity.complete || !p.hasDecisionTable).map((p) => p.identity.shardId),
  };
}

/** The catalog schema, checked exactly as the router's config does, before it is ever put into SQL. */
function checkCatalogSchema(catalogSchema: string): void {
  try {
    resolveConfig({ shards: [{ id: 'probe', connectionString: 'postgres://localhost' }], catalogSchema });
  } catch (error) {
    if (!(error instanceof ShardRouterError)) throw error;
    const problems = error.message.replace(/^invalid pg-shard-router config:\n/, '');
    throw new ShardRouterError(error.code, `--catalog-schema ${JSON.stringify(catalogSchema)} is not valid:\n${problems}`);
  }
}

/** Every URL a postgres:// URL with a host, none listed twice. */
function checkUrls(urls: readonly string[]): void {
  const seen = new Set<string>();
  urls.forEach((url, index) => {
    if (!isPostgresUrl(url)) {
      // Not echoed: a malformed URL may still hold a password in a form the redaction misses.
      throw new ShardRouterError('INVALID_ARGUMENT', `shard URL #${index + 1} is not a postgres:// or postgresql:// URL with a host`);
    }
    if (seen.has(url)) throw new ShardRouterError('INVALID_ARGUMENT', `${redactConnectionString(url)} is listed twice`);
    seen.add(url);
  });
}

/** Probes every URL at once; any failure fails the whole (all of them reported). */
async function probeAll(urls: readonly string[], catalogSchema: string): Promise<Probe[]> {
  const outcomes = await Promise.allSettled(urls.map((url) => probe(url, catalogSchema)));
  const failures = outcomes.flatMap((outcome) => (outcome.status === 'rejected' ? [outcome.reason as unknown] : []));
  if (failures.length > 0) {
    const first = failures[0];
    const code = first instanceof ProbeError ? first.code : 'SHARD_UNAVAILABLE';
    const lines = failures.map((failure) => (failure instanceof Error ? failure.message : String(failure)));
    const message = lines.length === 1 ? lines[0]! : `${lines.length} of ${urls.length} URLs failed:\n  ${lines.join('\n  ')}`;
    throw new ShardRouterError(code, message);
  }
  return outcomes.flatMap((outcome) => (outcome.status === 'fulfilled' ? [outcome.value] : []));
}

/** The one cluster all the servers belong to. */
function oneClusterId(probes: readonly Probe[]): string {
  const clusterIds = new Set(probes.map((p) => p.identity.clusterId));
  if (clusterIds.size > 1) {
    const which = probes.map((p) => `${p.displayUrl} is shard ${p.identity.shardId} of cluster ${p.identity.clusterId}`);
    throw new ShardRouterError('SHARD_IDENTITY_MISMATCH', `the URLs belong to different clusters:\n  ${which.join('\n  ')}`);
  }
  return probes[0]!.identity.clusterId;
}

/** The probes by shard id; two URLs of the same shard are refused. */
function uniqueShardIds(probes: readonly Probe[]): Map<string, Probe> {
  const byId = new Map<string, Probe>();
  for (const p of probes) {
    const other = byId.get(p.identity.shardId);
    if (other) {
      throw new ShardRouterError(
        'SHARD_IDENTITY_MISMATCH',
        `${other.displayUrl} and ${p.displayUrl} are both shard ${p.identity.shardId}: the same database under two URLs?`,
      );
    }
    byId.set(p.identity.shardId, p);
  }
  return byId;
}

async function probe(url: string, schema: string): Promise<Probe> {
  const displayUrl = redactConnectionString(url);
  let client: DedicatedConnection;
  try {
    client = await connectDedicated(url, { applicationName: CLI_APPLICATION_NAME, connectTimeoutMillis: CONNECT_TIMEOUT_MS });
  } catch (error) {
    throw new ProbeError('SHARD_UNAVAILABLE', `cannot connect to ${displayUrl}: ${messageOf(error)}`);
  }
  try {
    const identity = await readIdentity(client, schema);
    if (!identity) {
      throw new ProbeError(
        'INVALID_ARGUMENT',
        `${displayUrl} has no pg-shard-router catalog (no table "${schema}".shard_identity): not a shard, or the wrong database or --catalog-schema`,
      );
    }
    const map = await readLatestMap(client, schema);
    const { rows } = await client.query<{ present: boolean }>('SELECT to_regclass($1) IS NOT NULL AS present', [
      `${q(schema)}.twopc_decisions`,
    ]);
    return {
      url,
      displayUrl,
      identity,
      hasDecisionTable: rows[0]?.present === true,
      mapOwners: map?.owners ?? [],
      mapVersion: map?.version ?? 0,
    };
  } catch (error) {
    if (error instanceof ProbeError) throw error;
    throw new ProbeError('SHARD_UNAVAILABLE', `reading the catalog of ${displayUrl} failed: ${messageOf(error)}`);
  } finally {
    await client.end();
  }
}

/** s2 before s10. */
export function byShardId(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

export function messageOf(error: unknown): string {
  // Node's dual-stack connect fails with an AggregateError whose own message is empty.
  if (error instanceof AggregateError && error.message === '') return error.errors.map(messageOf).join('; ');
  return error instanceof Error ? error.message : String(error);
}
