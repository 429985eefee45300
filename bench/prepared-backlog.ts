import { randomBytes } from 'node:crypto';
import pg from 'pg';

/**
 * The state a crash leaves behind, built directly with pg (bench/sections/recovery.ts and
 * test/integration/recovery-scale.test.ts): `count` cross-shard transactions whose voter is
 * PREPAREd under our naming (`<gid>:<voter>`) and whose decision shard D holds, by index: a
 * commit row (with D's own write, committed), an abort row, or no row at all (the coordinator
 * died before the decision). Shard i is `urls[i]`, id `s<i>`; D = s(i mod n), voter = s(i+1 mod n).
 */

export type BacklogOutcome = 'commit' | 'abort' | 'undecided';

export interface BacklogEntry {
  readonly gid: string;
  readonly decider: number;
  readonly voter: number;
  readonly outcome: BacklogOutcome;
}

export interface BacklogOptions {
  readonly urls: readonly string[];
  readonly clusterId: string;
  readonly catalog: string;
  /** `schema.table` with one text column `gid`, on every shard. */
  readonly table: string;
  readonly count: number;
  /** Connections per shard used to build (and, in `finishDirectly`, to finish) the backlog. */
  readonly connectionsPerShard: number;
}

const OUTCOMES: readonly BacklogOutcome[] = ['commit', 'abort', 'undecided'];

export function planBacklog(options: Pick<BacklogOptions, 'urls' | 'clusterId' | 'count'>): BacklogEntry[] {
  const n = options.urls.length;
  const time = Date.now().toString(36);
  return Array.from({ length: options.count }, (_, i) => ({
    gid: `psr:${options.clusterId}:s${i % n}:${time}-${randomBytes(8).toString('hex')}`,
    decider: i % n,
    voter: (i + 1) % n,
    outcome: OUTCOMES[i % OUTCOMES.length]!,
  }));
}

/** Runs `work` for each item over `connections` clients of `url`. */
async function overConnections<T>(
  url: string,
  connections: number,
  items: readonly T[],
  work: (client: pg.Client, item: T) => Promise<void>,
) {
  let cursor = 0;
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(connections, items.length)) }, async () => {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        for (let item = items[cursor++]; item !== undefined; item = items[cursor++]) await work(client, item);
      } finally {
        await client.end();
      }
    }),
  );
}

/** Leaves the planned backlog on the servers. Names and gids are ours (hex, base36), so they are safe as literals. */
export async function leaveBacklog(options: BacklogOptions, entries: readonly BacklogEntry[]): Promise<void> {
  const { urls, catalog, table } = options;
  await Promise.all(
    urls.map(async (url, shard) => {
      const decided = entries.filter((entry) => entry.decider === shard && entry.outcome !== 'undecided');
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        const commits = decided.filter((entry) => entry.outcome === 'commit').map((entry) => entry.gid);
        const aborts = decided.filter((entry) => entry.outcome === 'abort').map((entry) => entry.gid);
        // D's own write commits with its commit row (in one transaction, as the protocol does).
        await client.query('BEGIN');
        await client.query(`INSERT INTO ${table} (gid) SELECT unnest($1::text[])`, [commits]);
        await client.query(
          `INSERT INTO ${catalog}.twopc_decisions (gid, outcome, created_at, keep_until)
           SELECT unnest($1::text[]), 'commit', now() - interval '10 minutes', now() - interval '1 minute'`,
          [commits],
        );
        await client.query(`INSERT INTO ${catalog}.twopc_decisions (gid, outcome) SELECT unnest($1::text[]), 'abort'`, [aborts]);
        await client.query('COMMIT');
      } finally {
        await client.end();
      }
      const voting = entries.filter((entry) => entry.voter === shard);
      await overConnections(url, options.connectionsPerShard, voting, async (voter, entry) => {
        await voter.query(`BEGIN; INSERT INTO ${table} (gid) VALUES ('${entry.gid}'); PREPARE TRANSACTION '${entry.gid}:s${shard}'`);
      });
    }),
  );
}

/** The baseline: the same prepared transactions finished by plain COMMIT/ROLLBACK PREPARED, sent directly. */
export async function finishDirectly(options: BacklogOptions, entries: readonly BacklogEntry[]): Promise<void> {
  await Promise.all(
    options.urls.map((url, shard) =>
      overConnections(
        url,
        options.connectionsPerShard,
        entries.filter((entry) => entry.voter === shard),
        async (client, entry) => {
          await client.query(`${entry.outcome === 'commit' ? 'COMMIT' : 'ROLLBACK'} PREPARED '${entry.gid}:s${shard}'`);
        },
      ),
    ),
  );
}

export interface BacklogCheck {
  /** Entries whose voter row is present when it should not be, or missing when it should be. */
  readonly wrongOutcomes: number;
  readonly preparedLeft: number;
  /** Commit rows of the backlog still in the decision tables. */
  readonly commitRowsLeft: number;
}

export async function checkBacklog(options: BacklogOptions, entries: readonly BacklogEntry[]): Promise<BacklogCheck> {
  let wrongOutcomes = 0;
  let preparedLeft = 0;
  let commitRowsLeft = 0;
  const gids = entries.map((entry) => entry.gid);
  await Promise.all(
    options.urls.map(async (url, shard) => {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        const present = new Set(
          (await client.query<{ gid: string }>(`SELECT gid FROM ${options.table} WHERE gid = ANY($1::text[])`, [gids])).rows.map(
            (row) => row.gid,
          ),
        );
        for (const entry of entries) {
          if (entry.voter === shard && present.has(entry.gid) !== (entry.outcome === 'commit')) wrongOutcomes++;
        }
        const prepared = (
          await client.query<{ n: number }>(
            'SELECT count(*)::int AS n FROM pg_prepared_xacts WHERE database = current_database() AND starts_with(gid, $1)',
            [`psr:${options.clusterId}:`],
          )
        ).rows[0]!.n;
        const commitRows = (
          await client.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM ${options.catalog}.twopc_decisions WHERE outcome = 'commit' AND gid = ANY($1::text[])`,
            [gids],
          )
        ).rows[0]!.n;
        // Added after the awaits: `x += await y` would read x before waiting and lose the other shard's count.
        preparedLeft += prepared;
        commitRowsLeft += commitRows;
      } finally {
        await client.end();
      }
    }),
  );
  return { wrongOutcomes, preparedLeft, commitRowsLeft };
}
