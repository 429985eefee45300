import type { Queryable } from '../pool/session.js';
import { movesGuardCondition } from '../rebalance/schema.js';
import { q } from '../sql.js';

/**
 * The consumer's statements on one shard (docs/outbox.md, "Claims and leases"). Every write goes
 * through a router connection stamped with the map version it routed by, so a shard's fence and
 * a move's capture trigger treat it like any other write (O5).
 */

/** An event as the consumer hands it out. */
export interface ClaimedEvent {
  readonly key: string;
  readonly seq: number;
  readonly id: string;
  readonly topic: string;
  readonly payload: unknown;
  readonly headers: Record<string, unknown>;
  readonly publishedAt: Date;
}

/** A key this consumer leased, with its next events in order. */
export interface ClaimedKey {
  readonly key: string;
  readonly token: string;
  /** Deliveries started for the first event (this one included). */
  readonly attempt: number;
  readonly events: readonly ClaimedEvent[];
}

/** What the consumer reports for a key when it gives the lease back. */
export interface KeyOutcome {
  readonly key: string;
  readonly token: string;
  readonly ackedSeq: number;
  /** Deliveries started for the event after ackedSeq (0 when nothing failed). */
  readonly attempt: number;
  /** The failed event's seq when it is parked, else null. */
  readonly parkedSeq: number | null;
  readonly error: string | null;
  /** Wait before the next delivery of the failed event, else null. */
  readonly backoffMillis: number | null;
  /** Give the lease back (the run is over), or keep it, extended (progress before the next event). */
  readonly release: boolean;
}

interface ClaimParams {
  readonly schema: string;
  readonly bucketCount: number;
  readonly version: number;
  readonly group: string;
  readonly keys: number;
  readonly eventsPerKey: number;
  readonly leaseMillis: number;
  /** Where the scan for keys starts (just after this key, then round): the last key of this shard's previous claim. */
  readonly after: string;
  /** How candidates are found: see {@link CandidateSearch}. */
  readonly search: CandidateSearch;
}

/**
 * 'walk': the key walk (candidatesSql), cheap per key taken, so the choice while a shard has a
 * backlog (its previous claim was full). 'events': the group's pending events through the events'
 * indexes (topic, published_at), cheap when few events are pending, so the choice when the shard
 * has caught up: a walk then goes round every key the shard retains, which for a group that
 * reads one topic among many, or starts at 'latest', is every retained key on every claim
 * (commit-to-handler p50 went from 16 to 164 ms in the bench with the walk alone). Either finds
 * claimable keys only; the lease's upsert re-checks, so the choice never changes what is claimed.
 */
export type CandidateSearch = 'walk' | 'events';

const CLAIMABLE = `(o.lease_until IS NULL OR o.lease_until < now()) AND o.parked_seq IS NULL AND (o.not_before IS NULL OR o.not_before <= now())`;

/**
 * Keys of this shard with an event the group has not acknowledged, that nobody holds, in key
 * order from just after `after` ($6), wrapping around to the first key: a scan of `outbox_keys`
 * that stops at `$2` keys, so a claim costs about the keys it takes, not every retained event.
 * Per key, `last_seq` against the group's `acked_seq` skips a done key without reading its
 * events (every event of a key has a seq at or below the `last_seq` committed with it, O2); the
 * events are read only for a key that may have one pending. A scan that finds fewer than `$2`
 * keys went round every key of the shard. The last key in that order is where the next claim
 * on the shard starts (`reached`), so successive claims go round the keys instead of reading
 * the same finished ones again.
 */
function candidatesSql(p: ClaimParams): string {
  const s = q(p.schema);
  const group = (column: string) => `(SELECT g.${column} FROM ${s}.outbox_groups g WHERE g.group_name = $1)`;
  // The offsets row and the events are read per key (LATERAL and EXISTS kept as subqueries by
  // OFFSET 0), so the plan walks the key index in order and stops at $2 keys: a join of the
  // whole tables would cost every key of the shard, whatever the limit. The guard (as for
  // broadcast reads) refuses a shard whose map is not the routed version and skips the rows of
  // buckets this shard has handed over but not yet cleaned up.
  const from = (range: string, wrapped: boolean) => `(SELECT k.key, ${wrapped} AS wrapped FROM ${s}.outbox_keys k
        LEFT JOIN LATERAL (SELECT * FROM ${s}.outbox_offsets o WHERE o.group_name = $1 AND o.key = k.key OFFSET 0) o ON true
       WHERE ${range} AND ${movesGuardCondition(p.schema, 'key', p.bucketCount, 3, 'k')}
         AND k.last_seq > coalesce(o.acked_seq, 0) AND (o.key IS NULL OR (${CLAIMABLE}))
         AND EXISTS (SELECT 1 FROM ${s}.outbox_events e
                      WHERE e.key = k.key AND e.seq > coalesce(o.acked_seq, 0)
                        AND e.topic = ANY (CAST(${group('topics')} AS text[])) AND e.published_at >= ${group('starts_at')} OFFSET 0)
       ORDER BY k.key LIMIT $2)`;
  return `${from('k.key > $6', false)} UNION ALL ${from('k.key <= $6', true)} LIMIT $2`;
}

/** The 'events' search: keys with an event the group has not acknowledged, found from the events (no `$6`: it starts nowhere). */
function pendingEventsSql(p: ClaimParams): string {
  const s = q(p.schema);
  return `SELECT DISTINCT e.key, false AS wrapped FROM
       (SELECT key, seq, topic, published_at FROM ${s}.outbox_events WHERE ${movesGuardCondition(p.schema, 'key', p.bucketCount, 3)}) e
       JOIN ${s}.outbox_groups g ON g.group_name = $1
       LEFT JOIN ${s}.outbox_offsets o ON o.group_name = $1 AND o.key = e.key
      WHERE e.seq > coalesce(o.acked_seq, 0) AND e.topic = ANY (g.topics) AND e.published_at >= g.starts_at
        AND (o.key IS NULL OR (${CLAIMABLE}))
      LIMIT $2`;
}

/** The claim statement's text, built once per catalog schema and bucket count (it is the same for every claim). */
const claimSqlCache = new Map<string, string>();

function claimSql(p: ClaimParams): string {
  const cacheKey = `${p.schema}\u0000${p.bucketCount}\u0000${p.search}`;
  const cached = claimSqlCache.get(cacheKey);
  if (cached !== undefined) return cached;
  const s = q(p.schema);
  const sql = `WITH candidates AS (${p.search === 'walk' ? candidatesSql(p) : pendingEventsSql(p)}),
     leased AS (
       INSERT INTO ${s}.outbox_offsets AS o (group_name, key, attempt, lease_token, lease_until)
       SELECT $1, key, 1, gen_random_uuid(), now() + $4 * interval '1 ms' FROM candidates ORDER BY key
       ON CONFLICT (group_name, key) DO UPDATE
          SET lease_token = excluded.lease_token, lease_until = excluded.lease_until, attempt = o.attempt + 1
        WHERE ${CLAIMABLE}
       RETURNING o.key, o.lease_token::text AS token, o.attempt, o.acked_seq)
     SELECT (SELECT c.key FROM candidates c ORDER BY c.wrapped DESC, c.key DESC LIMIT 1) AS reached,
            l.key, l.token, l.attempt, e.seq::text AS seq, e.id::text AS id, e.topic, e.payload, e.headers,
            -- Milliseconds since the epoch (a Date's precision): cheaper to read than a timestamp's text.
            floor(extract(epoch FROM e.published_at) * 1000)::float8 AS published_ms
       FROM leased l
       JOIN ${s}.outbox_groups g ON g.group_name = $1
       LEFT JOIN LATERAL (SELECT * FROM ${s}.outbox_events x
                           WHERE x.key = l.key AND x.seq > l.acked_seq AND x.topic = ANY (g.topics) AND x.published_at >= g.starts_at
                           ORDER BY x.seq LIMIT $5) e ON true
      ORDER BY l.key, e.seq`;
  claimSqlCache.set(cacheKey, sql);
  return sql;
}

/**
 * One claim on a shard, one statement (one round trip, its own transaction): finds up to `keys`
 * claimable keys, leases them, and reads each one's next events in seq order. The lease is an
 * upsert whose DO UPDATE re-checks "claimable" on the newest row version under the row lock, so
 * two consumers claiming the same key at once never both get it (the second waits for the first
 * and then finds the lease taken); keys are taken in sorted order, so two claims cannot deadlock.
 */
export async function claimKeys(session: Queryable, p: ClaimParams): Promise<{ keys: ClaimedKey[]; reached: string | null }> {
  const { rows } = await session.query<{
    reached: string | null;
    key: string;
    token: string;
    attempt: number;
    seq: string | null;
    id: string | null;
    topic: string;
    payload: unknown;
    headers: Record<string, unknown>;
    published_ms: number;
  }>(claimSql(p), [p.group, p.keys, p.version, p.leaseMillis, p.eventsPerKey, ...(p.search === 'walk' ? [p.after] : [])]);
  const claimed = new Map<string, { key: string; token: string; attempt: number; events: ClaimedEvent[] }>();
  for (const row of rows) {
    let entry = claimed.get(row.key);
    if (!entry) {
      entry = { key: row.key, token: row.token, attempt: row.attempt, events: [] };
      claimed.set(row.key, entry);
    }
    if (row.seq === null || row.id === null) continue;
    entry.events.push({
      key: row.key,
      seq: Number(row.seq),
      id: row.id,
      topic: row.topic,
      payload: row.payload,
      headers: row.headers,
      publishedAt: new Date(row.published_ms),
    });
  }
  return { keys: [...claimed.values()], reached: rows[0]?.reached ?? null };
}

/**
 * Records what happened to leased keys: the new acknowledged seq and, for a failed event, its
 * attempts, backoff or parking; then gives the lease back (`release`) or keeps it, extended, for
 * the key's next event. Only rows still leased by the same token change, so a consumer whose
 * lease was taken over cannot move another's progress. Returns the keys it did change.
 */
export async function settleKeys(
  session: Queryable,
  schema: string,
  group: string,
  outcomes: readonly KeyOutcome[],
  leaseMillis: number,
): Promise<Set<string>> {
  const sorted = [...outcomes].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const { rows } = await session.query<{ key: string }>(
    `UPDATE ${q(schema)}.outbox_offsets o
        SET acked_seq = greatest(o.acked_seq, a.acked), attempt = a.attempt, parked_seq = a.parked, last_error = a.error,
            not_before = CASE WHEN a.backoff IS NULL THEN NULL ELSE now() + a.backoff * interval '1 ms' END,
            lease_token = CASE WHEN a.release THEN NULL ELSE o.lease_token END,
            lease_until = CASE WHEN a.release THEN NULL ELSE now() + $10 * interval '1 ms' END
       FROM unnest($2::text[], $3::uuid[], $4::bigint[], $5::int[], $6::bigint[], $7::text[], $8::bigint[], $9::boolean[])
            AS a(key, token, acked, attempt, parked, error, backoff, release)
      WHERE o.group_name = $1 AND o.key = a.key AND o.lease_token = a.token
      RETURNING o.key`,
    [
      group,
      sorted.map((o) => o.key),
      sorted.map((o) => o.token),
      sorted.map((o) => o.ackedSeq),
      sorted.map((o) => o.attempt),
      sorted.map((o) => o.parkedSeq),
      sorted.map((o) => o.error),
      sorted.map((o) => o.backoffMillis),
      sorted.map((o) => o.release),
      leaseMillis,
    ],
  );
  return new Set(rows.map((row) => row.key));
}

/** Extends the leases this consumer still holds; returns the keys whose lease it still had. */
export async function renewLeases(
  session: Queryable,
  schema: string,
  group: string,
  leases: readonly { key: string; token: string }[],
  leaseMillis: number,
): Promise<Set<string>> {
  const sorted = [...leases].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const { rows } = await session.query<{ key: string }>(
    `UPDATE ${q(schema)}.outbox_offsets o SET lease_until = now() + $4 * interval '1 ms'
       FROM unnest($2::text[], $3::uuid[]) AS a(key, token)
      WHERE o.group_name = $1 AND o.key = a.key AND o.lease_token = a.token
      RETURNING o.key`,
    [group, sorted.map((l) => l.key), sorted.map((l) => l.token), leaseMillis],
  );
  return new Set(rows.map((row) => row.key));
}
