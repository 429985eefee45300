import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import { rebalanceHooks } from '../../src/rebalance/test-hooks.js';
import { createScratchDatabases, rejectionOf, uniqueName, withServer } from '../support/cluster.js';

/**
 * The snapshot copy's COPY pipe (docs/rebalance.md, step 2): every column type arrives as it
 * was, whatever the two servers' DateStyle, IntervalStyle, extra_float_digits and bytea_output;
 * and a pipe whose source or target backend is terminated mid-stream leaves nothing on the
 * target, the map unchanged and the move open, for a resume to copy again or undo. Changes
 * made while the pipe runs reach the target through the catch-up (JSON, read under the same
 * text forms), with a log larger than a catch-up batch and a small one.
 *
 * Two shards on two servers (a two-phase commit needs a server per shard).
 */

const BUCKETS = 16;
const schema = uniqueName('cpy');
const table = 'copied';
/** Enough COPY text (about 12 MB) that the source is still sending when a backend is terminated. */
const BIG_ROWS = 1_200;
let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;
let router: ShardRouter;
let bucket: number;

/** Settings a server may have that change COPY text: the copy must not depend on them. */
const ODD_SETTINGS = ["DateStyle = 'SQL, DMY'", "IntervalStyle = 'sql_standard'", 'extra_float_digits = 0', "bytea_output = 'escape'"];

beforeAll(async () => {
  scratch = await createScratchDatabases();
  const database = new URL(scratch.urls[0]!).pathname.slice(1);
  for (const url of scratch.urls.slice(0, 2)) {
    await withServer(url, async (client) => {
      for (const setting of ODD_SETTINGS) await client.query(`ALTER DATABASE ${database} SET ${setting}`);
      await client.query(`CREATE TABLE ${table} (
        id text PRIMARY KEY, n bigint GENERATED ALWAYS AS IDENTITY, f float8, at timestamptz, d date, iv interval,
        b bytea, tags text[], j jsonb, note text, twice bigint GENERATED ALWAYS AS (n * 2) STORED)`);
    });
  }
  router = await ShardRouter.connect({
    shards: scratch.urls.slice(0, 2).map((url, index) => ({ id: `s${index}`, connectionString: url })),
    catalogSchema: schema,
    bucketCount: BUCKETS,
    recovery: { intervalMillis: 0, atConnect: false },
  });
  await router.registerShardedTable(table, 'id', { bucketIndex: true });
  bucket = router.bucketFor('odd-0');
  // Values whose COPY text depends on the settings above, or that need escaping.
  await insertOnOwner(keysIn(bucket, 'odd-', 40));
  await insertBig(keysIn(bucket, 'big-', BIG_ROWS));
}, 120_000);

afterAll(async () => {
  rebalanceHooks.copyBatch = undefined;
  await router?.close();
  await scratch?.drop();
});

function keysIn(target: number, prefix: string, count: number): string[] {
  const keys: string[] = [];
  for (let n = 0; keys.length < count; n++) if (router.bucketFor(`${prefix}${n}`) === target) keys.push(`${prefix}${n}`);
  return keys;
}

function ownerIndex(): number {
  return Number(router.shardFor('odd-0').slice(1));
}

async function insertOnOwner(keys: string[]): Promise<void> {
  await withServer(scratch.urls[ownerIndex()]!, (client) =>
    client.query(
      `INSERT INTO ${table} (id, f, at, d, iv, b, tags, j, note)
       SELECT k, 0.1 + i / 3.0, timestamptz '2026-03-04 05:06:07.891234+02' + i * interval '1 day', date '2026-02-03' + i::int,
              interval '-1 year 2 months -3 days 04:05:06.7' * i, decode('00ff5c0a09' || lpad(to_hex(i), 2, '0'), 'hex'),
              ARRAY['a,b', E'tab\\there', NULL, 'quote"d', i::text], jsonb_build_object('i', i, 's', E'line\\nbreak\\\\'),
              CASE WHEN i % 5 = 0 THEN NULL ELSE E'back\\\\slash\\ttab\\nnewline é€😀 ' || i END
         FROM unnest($1::text[]) WITH ORDINALITY AS u(k, i)`,
      [keys],
    ),
  );
}

async function insertBig(keys: string[]): Promise<void> {
  await withServer(scratch.urls[ownerIndex()]!, (client) =>
    client.query(`INSERT INTO ${table} (id, note) SELECT k, repeat(md5(k), 320) FROM unnest($1::text[]) AS k`, [keys]),
  );
}

/** The bucket's rows on one server as text under fixed settings, in key order, and how many. */
async function rowsOn(server: number): Promise<{ count: number; digest: string }> {
  return withServer(scratch.urls[server]!, async (client) => {
    await client.query("SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'");
    const { rows } = await client.query<{ count: number; digest: string | null }>(
      `SELECT count(*)::int AS count, md5(string_agg(t::text, '|' ORDER BY id)) AS digest FROM ${table} t WHERE ${schema}.bucket_of(id, ${BUCKETS}) = $1`,
      [bucket],
    );
    return { count: rows[0]!.count, digest: rows[0]!.digest ?? '' };
  });
}

async function preparedOn(server: number): Promise<number> {
  return withServer(scratch.urls[server]!, async (client) => {
    const { rows } = await client.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM pg_prepared_xacts WHERE database = current_database()',
    );
    return rows[0]!.n;
  });
}

/** Terminates the backend on `server` running a statement that starts with `prefix`, and waits until it is gone. */
async function terminate(server: number, prefix: string): Promise<number> {
  return withServer(scratch.urls[server]!, async (client) => {
    const { rows } = await client.query<{ done: boolean }>(
      `SELECT pg_terminate_backend(pid, 5000) AS done FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active' AND query LIKE $1`,
      [`${prefix}%`],
    );
    return rows.filter((row) => row.done).length;
  });
}

describe('the COPY pipe of a move', () => {
  it('copies every column type as it was, whatever either server’s text settings', async () => {
    const home = ownerIndex();
    const other = 1 - home;
    const before = await rowsOn(home);
    expect(before.count).toBe(40 + BIG_ROWS);
    const report = await router.rebalancer().moveBucket(bucket, `s${other}`);
    expect(report.moves[0]!.rowsCopied).toBe(before.count);
    expect(await rowsOn(other)).toEqual(before);
    expect((await rowsOn(home)).count).toBe(0);
    expect((await router.rebalancer().verify()).ok).toBe(true);
  }, 60_000);

  it('carries the changes made during the copy: a log larger than a batch, then a small one', async () => {
    const fresh = keysIn(bucket, 'new-', 4);
    const odd = keysIn(bucket, 'odd-', 40);
    // More log entries than the catch-up's batch of keys (2000).
    const large = [
      `UPDATE ${table} SET note = note || 'x' WHERE id LIKE 'big-%'`,
      `UPDATE ${table} SET note = note || 'y', f = f * 2 WHERE id LIKE 'big-%' OR id LIKE 'odd-%'`,
      `DELETE FROM ${table} WHERE id = ANY ('{${odd.slice(0, 3).join(',')}}')`,
      `INSERT INTO ${table} (id, f, iv, tags, note) VALUES ('${fresh[0]}', 1.5, '-1 day', '{x,NULL}', E'new\\trow'), ('${fresh[1]}', NULL, NULL, NULL, NULL)`,
    ];
    // A few.
    const small = [
      `UPDATE ${table} SET at = at + interval '1 hour', tags = tags || 'z'::text WHERE id = ANY ('{${odd.slice(3, 8).join(',')}}')`,
      `DELETE FROM ${table} WHERE id = '${fresh[0]}'`,
      `INSERT INTO ${table} (id, b, j) VALUES ('${fresh[2]}', '\\x00ff', '{"a": [1, null]}')`,
    ];
    for (const changes of [large, small]) {
      const home = ownerIndex();
      const other = 1 - home;
      let expected: Promise<{ count: number; digest: string }> | undefined;
      rebalanceHooks.copyBatch = async () => {
        expected ??= withServer(scratch.urls[home]!, async (client) => {
          for (const change of changes) await client.query(change);
        }).then(() => rowsOn(home));
        await expected;
      };
      try {
        await router.rebalancer().moveBucket(bucket, `s${other}`);
      } finally {
        rebalanceHooks.copyBatch = undefined;
      }
      expect(expected, 'the changes ran during the copy').toBeDefined();
      expect(await rowsOn(other)).toEqual(await expected);
      expect((await rowsOn(home)).count).toBe(0);
    }
    expect((await router.rebalancer().verify()).ok).toBe(true);
  }, 120_000);

  for (const side of ['source', 'target'] as const) {
    it(`a ${side} backend terminated mid-stream leaves nothing on the target and the move open; ${side === 'source' ? 'resume copies again' : 'resume --undo abandons it'}`, async () => {
      const home = ownerIndex();
      const other = 1 - home;
      const before = await rowsOn(home);
      // At the first batch read from the source: the target's COPY has begun, the source's is still sending.
      let killing: Promise<number> | undefined;
      rebalanceHooks.copyBatch = async () => {
        killing ??= side === 'source' ? terminate(home, 'COPY (SELECT') : terminate(other, `COPY public.${table}`);
        await killing;
      };
      let failure: unknown;
      try {
        failure = await rejectionOf(router.rebalancer().moveBucket(bucket, `s${other}`));
      } finally {
        rebalanceHooks.copyBatch = undefined;
      }
      expect(await killing, 'the COPY backend was found and terminated').toBe(1);
      expect(failure).toBeInstanceOf(Error);
      // Nothing on the target, nothing prepared, the map unchanged, the move open.
      expect((await rowsOn(other)).count).toBe(0);
      expect([await preparedOn(0), await preparedOn(1)]).toEqual([0, 0]);
      expect(router.shardFor('odd-0')).toBe(`s${home}`);
      expect(await rowsOn(home)).toEqual(before);
      expect((await router.rebalancer().verify()).openMoves).toBe(1);

      if (side === 'source') {
        const resumed = await router.rebalancer().resume();
        expect(resumed.restarted.map((move) => move.rowsCopied)).toEqual([before.count]);
        expect(router.shardFor('odd-0')).toBe(`s${other}`);
        expect(await rowsOn(other)).toEqual(before);
        expect((await rowsOn(home)).count).toBe(0);
      } else {
        const resumed = await router.rebalancer().resume({ undo: true });
        expect(resumed.undone).toHaveLength(1);
        expect(router.shardFor('odd-0')).toBe(`s${home}`);
        expect(await rowsOn(home)).toEqual(before);
        expect((await rowsOn(other)).count).toBe(0);
      }
      const verify = await router.rebalancer().verify();
      expect(verify.openMoves).toBe(0);
      expect(verify.ok).toBe(true);
    }, 60_000);
  }
});
