import { randomFillSync } from 'node:crypto';
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

const GID_BODY = 'psr:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:([A-Za-z0-9_-]{1,63}):[0-9a-z]{1,13}-[0-9a-f]{16}';
const GID_PATTERN = new RegExp(`^${GID_BODY}$`);
/** A participant's prepared name: the gid, then `:<participant shard id>` (names prepared before participant suffixes existed are the bare gid). */
const PREPARED_NAME_PATTERN = new RegExp(`^(${GID_BODY})(?::([A-Za-z0-9_-]{1,63}))?$`);
const CLUSTER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The prefix of every gid of a cluster: recovery matches it exactly (never with LIKE). */
export function gidPrefix(clusterId: string): string {
  if (!CLUSTER_ID.test(clusterId)) throw new ShardRouterError('INVALID_ARGUMENT', 'cluster id is not a lower-case uuid');
  return `psr:${clusterId}:`;
}

/** A fresh gid whose decision lives on `decisionShardId`. Time first, so gids sort roughly by age. */
export function newGid(clusterId: string, decisionShardId: string): Gid {
  return asGid(`${gidPrefix(clusterId)}${decisionShardId}:${Date.now().toString(36)}-${randomHex8()}`);
}

/**
 * Random bytes for gids, drawn from the same CSPRNG as randomBytes but 4 KiB at a time: one
 * randomBytes(8) per transaction cost about 11 µs of client CPU here (a system call each),
 * against 0.4 µs from the pool. Each gid still gets 8 bytes no other gid of this process got.
 */
const RANDOM_POOL = Buffer.alloc(4096);
let randomOffset = RANDOM_POOL.length;

function randomHex8(): string {
  if (randomOffset + 8 > RANDOM_POOL.length) {
    randomFillSync(RANDOM_POOL);
    randomOffset = 0;
  }
  const hex = RANDOM_POOL.toString('hex', randomOffset, randomOffset + 8);
  randomOffset += 8;
  return hex;
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
 * The name participant `participantShardId` PREPAREs the transaction under: `<gid>:<participant>`.
 * Two shards may be two databases of one PostgreSQL server, and prepared-transaction names are
 * unique per server, not per database, so each participant needs its own. At most 132 + 1 + 63
 * = 196 bytes (PostgreSQL allows 199). Recovery maps it back to the gid (`parsePreparedName`).
 */
export type PreparedName = string & { readonly __brand: 'PreparedName' };

export function preparedName(gid: Gid, participantShardId: string): PreparedName {
  return asPreparedName(`${asGid(gid)}:${participantShardId}`);
}

/** A prepared name read back from a server, split into its gid and participant (undefined for a bare gid). */
export interface ParsedPreparedName {
  readonly name: PreparedName;
  readonly gid: Gid;
  readonly decisionShardId: string;
  readonly participantShardId: string | undefined;
}

/** Parses a prepared name of this cluster; null when it is not one of ours (or not well-formed). */
export function parsePreparedName(text: string, clusterId: string): ParsedPreparedName | null {
  if (!text.startsWith(gidPrefix(clusterId))) return null;
  const match = PREPARED_NAME_PATTERN.exec(text);
  if (!match) return null;
  return { name: text as PreparedName, gid: match[1] as Gid, decisionShardId: match[2]!, participantShardId: match[3] };
}

function asPreparedName(text: string): PreparedName {
  if (!PREPARED_NAME_PATTERN.test(text)) throw new ShardRouterError('INVALID_ARGUMENT', 'not a pg-shard-router prepared transaction name');
  return text as PreparedName;
}

/**
 * A prepared name as a SQL string literal (PREPARE TRANSACTION and COMMIT/ROLLBACK PREPARED take
 * no parameters); the pattern check (no quotes, no backslashes) is what makes this safe.
 */
export function preparedLiteral(name: PreparedName): string {
  return `'${asPreparedName(name)}'`;
}

/**
 * The gid as a SQL string literal. PREPARE TRANSACTION and COMMIT/ROLLBACK PREPARED take no
 * parameters; the pattern check above (no quotes, no backslashes) is what makes this safe.
 */
export function gidLiteral(gid: Gid): string {
  return `'${asGid(gid)}'`;
}
