import { randomBytes } from 'node:crypto';
import { ShardRouterError } from '../errors.js';

/**
 * A global transaction id: `psr:<cluster id>:<decision shard id>:<unique part>`.
 *
 * Built only from internal, validated data (the cluster's uuid, a configured shard id, random
 * bytes), never from user input. It names the shard that holds the commit decision, so any
 * router can settle a prepared transaction it finds without any other state. PostgreSQL allows
 * 199 bytes; ours are at most 4 + 36 + 1 + 63 + 1 + 27 = 132.
 */
export type Gid = string & { readonly __brand: 'Gid' };

const GID_PATTERN = /^psr:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:([A-Za-z0-9_-]{1,63}):[0-9a-z]{1,13}-[0-9a-f]{16}$/;
const CLUSTER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The prefix of every gid of a cluster: recovery matches it exactly (never with LIKE). */
export function gidPrefix(clusterId: string): string {
  if (!CLUSTER_ID.test(clusterId)) throw new ShardRouterError('INVALID_ARGUMENT', 'cluster id is not a lower-case uuid');
  return `psr:${clusterId}:`;
}

/** A fresh gid whose decision lives on `decisionShardId`. Time first, so gids sort roughly by age. */
export function newGid(clusterId: string, decisionShardId: string): Gid {
  return asGid(`${gidPrefix(clusterId)}${decisionShardId}:${Date.now().toString(36)}-${randomBytes(8).toString('hex')}`);
}

/** Validates a gid read back from a server (pg_prepared_xacts, decision rows). */
export function asGid(text: string): Gid {
  if (!GID_PATTERN.test(text)) throw new ShardRouterError('INVALID_ARGUMENT', 'not a pg-shard-router transaction id');
  return text as Gid;
}

/** The shard holding the decision of a gid of this cluster, or null when it is not one of ours. */
export function decisionShardOf(gid: string, clusterId: string): string | null {
  if (!gid.startsWith(gidPrefix(clusterId))) return null;
  return GID_PATTERN.exec(gid)?.[1] ?? null;
}

/**
 * The gid as a SQL string literal. PREPARE TRANSACTION and COMMIT/ROLLBACK PREPARED take no
 * parameters; the pattern check above (no quotes, no backslashes) is what makes this safe.
 */
export function gidLiteral(gid: Gid): string {
  return `'${asGid(gid)}'`;
}
