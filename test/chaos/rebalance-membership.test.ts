import type { ChildProcess } from 'node:child_process';
import { sweep } from '../support/sweep.js';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import { startLocalCluster } from '../../src/local.js';
import type { PlannedMove, RebalanceReport, ResumeReport } from '../../src/index.js';
import type { LocalCluster } from '../../src/local.js';
import type { MoveStep } from '../../src/rebalance/test-hooks.js';
import { createScratchDatabases, eventually, uniqueName, withServer } from '../support/cluster.js';
import { startMembershipWriters } from './membership-writers.js';
import type { MembershipTables } from './membership-writers.js';
import { preparedOn, rollBackPrepared, runToEnd, spawnTypeScript, waitForBackendsGone, wordsOf } from './support.js';

/**
 * Cluster membership changes under a SIGKILL (issue 19): while an application router in another
 * process (stale on purpose: no LISTEN, one-minute poll, so it learns new maps only from fences)
 * and this process keep writing sharded rows through `execute` and reference rows through
 * `broadcast`, a rebalancer process adds shards on servers no router config lists, rebalances
 * onto them, and removes a shard; it is SIGKILLed at a step of the removal's LAST move, when the
 * shard being removed owns no bucket any more. A fresh process (a new router whose config lists
 * the original shards only) then runs resume() and removeShard() again.
 *
 * Afterwards, reading every server directly with plain pg clients: reference tables are the
 * same on every active shard (the added ones included) and equal the acknowledged reference
 * writes; every acknowledged sharded write is there exactly once (a write of unknown outcome may
 * or may not be); no row sits on a shard that does not own its bucket in the newest map (the
 * removed shard's sharded tables are empty); nothing is left open or prepared; and
 * rebalancer().verify() agrees.
 *
 * Servers: the original shards s0..s2 and the first added one (s3) are databases on the four
 * shared test servers, one shard per server (a 2PC gid is the same on every participant, so two
 * shards of one cluster must not share a server); a second added shard, s4, is a server of its
 * own started here.
 */

// Fewer buckets in npm test: fewer moves per rebalance, the same steps and kill points (PSR_FULL_SWEEP=1: 64).
const BUCKETS = sweep(64, 16);
const ORIGINALS = 3;
const APP_KEYS = 60;
const APP_CODES = 8;
const PARENT_KEYS = 30;
const PARENT_CODES = 4;
const SEED_CODES = 5;
/** Acknowledged writes the stale application must make after the removal finished (by count, not time). */
const WRITES_AFTER = { sharded: 10, reference: 3 };

interface MembershipCase {
  readonly name: string;
  /** Shards the rebalancer adds: s3 on the fourth test server, s4 on the server started here. */
  readonly additions: readonly ('s3' | 's4')[];
  readonly remove: string;
  readonly killStep: MoveStep;
  readonly seed: number;
}

const CASES: readonly MembershipCase[] = [
  {
    // The removed shard is in no router's config and owns no bucket when the rebalancer dies:
    // the fresh process knows it only from the shard registry.
    name: 'add s3 and s4, rebalance, remove s4 (in no config); killed at step switched of the last move',
    additions: ['s3', 's4'],
    remove: 's4',
    killStep: 'switched',
    seed: 19_001,
  },
  {
    // The lowest shard (the rebalance lock's and the map switches' deciding shard) goes, with its rows already deleted.
    name: 'add s3, rebalance, remove s0 (the lowest original); killed at step cleaned of the last move',
    additions: ['s3'],
    remove: 's0',
    killStep: 'cleaned',
    seed: 19_002,
  },
];

let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;
let extra: LocalCluster;
/** The extra server's URL with the test servers' user and password (see beforeAll). */
let extraUrl: string;
const clusterIds: string[] = [];

beforeAll(async () => {
  scratch = await createScratchDatabases();
  extra = await startLocalCluster({ shards: 1 });
  // A router learns an added shard's URL from the shard registry (without password) and takes
  // the password of a configured shard with the same user: the extra server gets the user and
  // password of the test servers, as servers of one deployment would have.
  const known = new URL(scratch.urls[0]!);
  await withServer(extra.connectionStrings[0]!, async (client) => {
    const user = decodeURIComponent(known.username);
    const password = client.escapeLiteral(decodeURIComponent(known.password));
    const exists = await client.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [user]);
    const role = client.escapeIdentifier(user);
    await client.query(
      exists.rowCount ? `ALTER ROLE ${role} WITH LOGIN PASSWORD ${password}` : `CREATE ROLE ${role} SUPERUSER LOGIN PASSWORD ${password}`,
    );
  });
  const url = new URL(extra.connectionStrings[0]!);
  url.username = known.username;
  url.password = known.password;
  extraUrl = url.toString();
});

afterAll(async () => {
  const urls = scratch ? [...scratch.urls, ...(extraUrl ? [extraUrl] : [])] : [];
  // Only a failed case leaves anything prepared; it would keep DROP DATABASE from running.
  if (scratch)
    await rollBackPrepared(
      urls,
      clusterIds.map((id) => `psr:${id}:`),
    );
  await scratch?.drop();
  await extra?.stop();
});

/** What the acknowledged writes left, from this process's writers and the application child's lines. */
class Model {
  readonly balances = new Map<string, number>();
  readonly ledger: string[] = [];
  /** Keys whose last write has an unknown outcome: [before, after], -1 for absent. */
  readonly pending = new Map<string, [number, number]>();
  readonly references = new Map<string, number>();
  readonly referencePending = new Map<string, [number, number]>();
  readonly failures: string[] = [];
  acknowledged = 0;
  referenceAcknowledged = 0;

  ack(key: string, after: number): void {
    if (after === -1) this.balances.delete(key);
    else this.balances.set(key, after);
    this.ledger.push(`${key}:${after}`);
    this.acknowledged++;
  }

  ref(code: string, v: number): void {
    this.references.set(code, v);
    this.referenceAcknowledged++;
  }
}

/** The stale application router in a child process; its lines feed the model as they arrive. */
function startApplication(env: Record<string, string>, model: Model) {
  const child: ChildProcess = spawnTypeScript('test/chaos/membership-app-child.ts', env);
  let stdout = '';
  let stderr = '';
  let buffer = '';
  let ready = false;
  let done = false;
  const counts = { acknowledged: 0, referenceAcknowledged: 0 };
  const onLine = (words: string[]) => {
    const [kind, name, a, b] = words;
    if (kind === 'ready') ready = true;
    else if (kind === 'done') done = true;
    else if (kind === 'ack') {
      model.ack(name!, Number(a));
      counts.acknowledged++;
    } else if (kind === 'pending') model.pending.set(name!, [Number(a), Number(b)]);
    else if (kind === 'ref') {
      model.ref(name!, Number(a));
      counts.referenceAcknowledged++;
    } else if (kind === 'refpending') model.referencePending.set(name!, [Number(a), Number(b)]);
    else model.failures.push(`application: ${words.join(' ')}`);
  };
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    buffer += chunk;
    for (let newline = buffer.indexOf('\n'); newline >= 0; newline = buffer.indexOf('\n')) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line !== '') onLine(line.split(' '));
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  return {
    counts,
    get ready() {
      return ready;
    },
    get done() {
      return done;
    },
    output: () => `stdout (tail):\n${stdout.slice(-3_000)}\nstderr:\n${stderr.slice(-3_000)}`,
    exited: () => child.exitCode !== null || child.signalCode !== null,
    /** Ends its stdin: it stops writing, closes its router and exits. */
    async stop() {
      child.stdin!.end();
      return closed;
    },
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

/** Waits (bounded) for a condition on counts, failing with `what`; not a timing assertion. */
function until(what: string, check: () => boolean, app?: { exited(): boolean; output(): string }): Promise<void> {
  return eventually(
    what,
    async () => {
      if (app?.exited()) throw new Error(`the application child exited while waiting for ${what}:\n${app.output()}`);
      return check();
    },
    3_000,
    20,
  );
}

function firstLine(lines: string[][], kind: string): string[] | undefined {
  return lines.find((words) => words[0] === kind);
}

interface Placement {
  /** shard id -> rows of the sharded tables on it whose bucket it does not own. */
  misplaced: Record<string, string[]>;
  balances: Map<string, number>;
  duplicated: string[];
  ledger: string[];
  /** shard id -> rows of each sharded table on it. */
  rowCounts: Record<string, { accounts: number; ledger: number }>;
}

/** Every sharded row on every server, read directly, with its bucket and that bucket's owner in `owners`. */
async function readPlacement(
  urlOf: Record<string, string>,
  catalog: string,
  tables: MembershipTables,
  owners: readonly string[],
): Promise<Placement> {
  const placement: Placement = { misplaced: {}, balances: new Map(), duplicated: [], ledger: [], rowCounts: {} };
  for (const [shardId, url] of Object.entries(urlOf)) {
    await withServer(url, async (client) => {
      const accounts = await client.query<{ id: string; balance: string; bucket: number }>(
        `SELECT id, balance::text AS balance, "${catalog}".bucket_of(id::text, ${BUCKETS}) AS bucket FROM ${tables.accounts}`,
      );
      const ledger = await client.query<{ account_id: string; balance: string; bucket: number }>(
        `SELECT account_id, balance::text AS balance, "${catalog}".bucket_of(account_id::text, ${BUCKETS}) AS bucket FROM ${tables.ledger}`,
      );
      const misplaced: string[] = [];
      for (const row of accounts.rows) {
        if (owners[row.bucket] !== shardId)
          misplaced.push(`${tables.accounts} ${row.id} (bucket ${row.bucket}, owner ${owners[row.bucket]})`);
        if (placement.balances.has(row.id)) placement.duplicated.push(`${row.id} (also on ${shardId})`);
        placement.balances.set(row.id, Number(row.balance));
      }
      for (const row of ledger.rows) {
        if (owners[row.bucket] !== shardId)
          misplaced.push(`${tables.ledger} ${row.account_id}:${row.balance} (bucket ${row.bucket}, owner ${owners[row.bucket]})`);
        placement.ledger.push(`${row.account_id}:${Number(row.balance)}`);
      }
      if (misplaced.length > 0) placement.misplaced[shardId] = misplaced;
      placement.rowCounts[shardId] = { accounts: accounts.rowCount ?? 0, ledger: ledger.rowCount ?? 0 };
    });
  }
  placement.ledger.sort();
  return placement;
}

async function newestMap(url: string, catalog: string): Promise<{ version: number; owners: string[] }> {
  return withServer(url, async (client) => {
    const { rows } = await client.query<{ version: string; owners: string[] }>(
      // Ordered by the column, not by the text output column of the same name.
      `SELECT m.version::text AS version, m.owners FROM "${catalog}".bucket_map m ORDER BY m.version DESC LIMIT 1`,
    );
    return { version: Number(rows[0]!.version), owners: rows[0]!.owners };
  });
}

async function registryOn(url: string, catalog: string): Promise<Record<string, string>> {
  return withServer(url, async (client) => {
    const { rows } = await client.query<{ shard_id: string; state: string }>(
      `SELECT shard_id, state FROM "${catalog}".shards ORDER BY shard_id`,
    );
    return Object.fromEntries(rows.map((row) => [row.shard_id, row.state]));
  });
}

async function referenceRowsOn(url: string, tables: MembershipTables): Promise<Map<string, number>> {
  return withServer(url, async (client) => {
    const { rows } = await client.query<{ code: string; v: number }>(`SELECT code, v FROM ${tables.reference} ORDER BY code`);
    return new Map(rows.map((row) => [row.code, row.v]));
  });
}

/** The entries of keys without a write of unknown outcome (those are checked on their own: either value). */
function withoutPending<V>(values: ReadonlyMap<string, V>, pending: ReadonlyMap<string, unknown>): Map<string, V> {
  return new Map([...values].filter(([key]) => !pending.has(key)));
}

describe.concurrent('membership changes (addShard, rebalance, removeShard) with the rebalancer SIGKILLed in the removal, under a stale application router', () => {
  // Concurrent cases: every assertion goes through the case's own `expect` (the test context's).
  it.for(CASES)('$name', { timeout: 120_000 }, async ({ additions, remove, killStep, seed }, { expect }) => {
    const catalog = uniqueName('cat');
    const tables: MembershipTables = { accounts: uniqueName('acc'), ledger: uniqueName('led'), reference: uniqueName('ref') };
    const originals = scratch.urls.slice(0, ORIGINALS);
    const added = additions.map((id) => ({ id, connectionString: id === 's3' ? scratch.urls[ORIGINALS]! : extraUrl }));
    const urlOf: Record<string, string> = Object.fromEntries([
      ...originals.map((url, index) => [`s${index}`, url] as const),
      ...added.map((shard) => [shard.id, shard.connectionString] as const),
    ]);
    const allUrls = Object.values(urlOf);
    const remaining = Object.keys(urlOf).filter((id) => id !== remove);
    for (const url of allUrls) {
      await withServer(url, async (client) => {
        await client.query(`CREATE TABLE ${tables.accounts} (id text PRIMARY KEY, balance bigint NOT NULL)`);
        await client.query(`CREATE TABLE ${tables.ledger} (account_id text NOT NULL, balance bigint NOT NULL)`);
        await client.query(`CREATE TABLE ${tables.reference} (code text PRIMARY KEY, v integer NOT NULL)`);
      });
    }

    const router = await ShardRouter.connect({
      shards: originals.map((connectionString, i) => ({ id: `s${i}`, connectionString })),
      catalogSchema: catalog,
      bucketCount: BUCKETS,
      recovery: { intervalMillis: 0, atConnect: false },
    });
    clusterIds.push(router.clusterId);
    const model = new Model();
    let app: ReturnType<typeof startApplication> | undefined;
    let writers: ReturnType<typeof startMembershipWriters> | undefined;
    try {
      await router.registerShardedTable(tables.accounts, 'id');
      await router.registerShardedTable(tables.ledger, 'account_id');
      await router.registerReferenceTable(tables.reference);
      for (let n = 0; n < SEED_CODES; n++) {
        await router.broadcast(`INSERT INTO ${tables.reference} (code, v) VALUES ($1, 1)`, [`seed-${n}`]);
        model.ref(`seed-${n}`, 1);
      }

      // (1) The stale application router, writing before, during and after the membership changes.
      app = startApplication(
        {
          CHAOS_SHARD_URLS: originals.join(','),
          CHAOS_CATALOG: catalog,
          CHAOS_APPLICATION: uniqueName('chaos_app'),
          CHAOS_TABLES: JSON.stringify(tables),
          CHAOS_KEYS: Array.from({ length: APP_KEYS }, (_, n) => `a-${n}`).join(','),
          CHAOS_CODES: Array.from({ length: APP_CODES }, (_, n) => `ac-${n}`).join(','),
          CHAOS_SEED: String(seed),
        },
        model,
      );
      const application = app;
      await until(
        'the application writing',
        () => application.ready && application.counts.acknowledged >= 20 && application.counts.referenceAcknowledged >= 4,
        app,
      );
      writers = startMembershipWriters(
        router,
        tables,
        {
          keys: Array.from({ length: PARENT_KEYS }, (_, n) => `p-${n}`),
          codes: Array.from({ length: PARENT_CODES }, (_, n) => `pc-${n}`),
          shardedLoops: 2,
          referenceLoops: 1,
          seed: seed + 1,
          pauseMillis: 10,
        },
        {
          ack: (key, after) => model.ack(key, after),
          pending: (key, before, after) => model.pending.set(key, [before, after]),
          ref: (code, v) => model.ref(code, v),
          refPending: (code, before, after) => model.referencePending.set(code, [before, after]),
          failure: (error) => model.failures.push(`parent: ${error instanceof Error ? error.stack : String(error)}`),
        },
      );

      // (2)+(3) The rebalancer: add, rebalance, remove; SIGKILLed in the removal's last move.
      const rebalancerApplication = uniqueName('chaos_rebalancer');
      const crashed = await runToEnd('test/chaos/membership-rebalancer-child.ts', {
        CHAOS_MODE: 'crash',
        CHAOS_SHARD_URLS: originals.join(','),
        CHAOS_CATALOG: catalog,
        CHAOS_APPLICATION: rebalancerApplication,
        CHAOS_ADD: JSON.stringify(added),
        CHAOS_REMOVE: remove,
        CHAOS_KILL_STEP: killStep,
      });
      expect(
        crashed.signal,
        `the rebalancer should have died by SIGKILL; it ended with code ${crashed.code}:\n${crashed.stdout}\n${crashed.stderr}`,
      ).toBe('SIGKILL');
      const lines = wordsOf(crashed.stdout);
      expect(lines.filter((words) => words[0] === 'added').map((words) => words[1])).toEqual([...additions]);
      for (const words of lines.filter((line) => line[0] === 'added')) {
        // Every added shard got the reference table's rows (how many depends on the writers).
        expect(Object.values(JSON.parse(words[2]!) as Record<string, number>)[0]).toBeGreaterThanOrEqual(SEED_CODES);
      }
      expect(Number(firstLine(lines, 'rebalanced')?.[1])).toBeGreaterThan(0);
      const plan = JSON.parse(firstLine(lines, 'plan')!.slice(1).join(' ')) as PlannedMove[];
      expect(plan.length).toBeGreaterThan(0);
      expect(plan.every((move) => move.source === remove)).toBe(true);
      const removalMoves = [...new Set(lines.filter((words) => words[0] === 'step' && words[1] === 'remove').map((words) => words[3]!))];
      expect(removalMoves).toHaveLength(plan.length);
      const killed = firstLine(lines, 'kill');
      expect(killed?.slice(1)).toEqual([killStep, removalMoves.at(-1)]);
      const moveId = removalMoves.at(-1)!;
      const lastMove = plan.at(-1)!;
      // What the crash left is final once the dead rebalancer's backends are gone.
      await waitForBackendsGone(allUrls, rebalancerApplication);

      // The state the crash left: the last move switched (its row on the shard being removed),
      // that shard owns no bucket but is still an active member.
      const moveRow = await withServer(urlOf[remove]!, async (client) => {
        const { rows } = await client.query<{ state: string; buckets: number[]; target_shard: string }>(
          `SELECT state, buckets, target_shard FROM "${catalog}".moves WHERE move_id = $1`,
          [moveId],
        );
        return rows[0];
      });
      expect(moveRow?.state).toBe('switched');
      expect([...moveRow!.buckets].sort((a, b) => a - b)).toEqual([...lastMove.buckets].sort((a, b) => a - b));
      expect(moveRow?.target_shard).toBe(lastMove.target);
      const crashMap = await newestMap(urlOf[remaining[0]!]!, catalog);
      expect(crashMap.owners).not.toContain(remove);
      expect((await registryOn(urlOf[remaining[0]!]!, catalog))[remove]).toBe('active');
      if (killStep === 'cleaned') {
        const left = await withServer(urlOf[remove]!, async (client) => {
          const { rows } = await client.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM ${tables.accounts} WHERE "${catalog}".bucket_of(id::text, ${BUCKETS}) = ANY ($1)`,
            [lastMove.buckets],
          );
          return rows[0]!.n;
        });
        expect(left).toBe(0);
      }

      // (3) A fresh process, config listing the original shards only: resume, then remove again.
      const resumedRun = await runToEnd('test/chaos/membership-rebalancer-child.ts', {
        CHAOS_MODE: 'resume',
        CHAOS_SHARD_URLS: originals.join(','),
        CHAOS_CATALOG: catalog,
        CHAOS_APPLICATION: uniqueName('chaos_resume'),
        CHAOS_REMOVE: remove,
      });
      const resumedLines = wordsOf(resumedRun.stdout);
      const detail = `resume process (code ${resumedRun.code}, signal ${resumedRun.signal}):\n${resumedRun.stdout}\n${resumedRun.stderr}`;
      const resumeLine = firstLine(resumedLines, 'resumed');
      const resumed = resumeLine ? (JSON.parse(resumeLine.slice(1).join(' ')) as ResumeReport) : undefined;
      // It must find the switched move on the shard being removed, though that shard owns no bucket.
      expect.soft(resumed, detail).toEqual({ finished: [moveId], restarted: [], undone: [] });
      const removedLine = firstLine(resumedLines, 'removed');
      const removal = removedLine ? (JSON.parse(removedLine.slice(1).join(' ')) as RebalanceReport) : undefined;
      expect.soft(removal?.plan, detail).toEqual([]);
      expect.soft(Object.keys(removal?.bucketsPerShard ?? {}).sort(), detail).toEqual(remaining);
      expect.soft(resumedRun.code, detail).toBe(0);

      // Writes go on after the removal: the stale application learns it from fences.
      const after = { ...app.counts };
      await until(
        'application writes after the removal',
        () =>
          application.counts.acknowledged >= after.acknowledged + WRITES_AFTER.sharded &&
          application.counts.referenceAcknowledged >= after.referenceAcknowledged + WRITES_AFTER.reference,
        app,
      );
      const exit = await app.stop();
      expect.soft(exit, app.output()).toEqual({ code: 0, signal: null });
      expect.soft(app.done, app.output()).toBe(true);
      await writers.stop();
      expect.soft(model.failures, 'writes that failed').toEqual([]);

      // (4) Every server read directly.
      const maps = await Promise.all(remaining.map((id) => newestMap(urlOf[id]!, catalog)));
      const map = maps[0]!;
      expect
        .soft(
          maps.map((each) => each.version),
          'every active shard has the newest map',
        )
        .toEqual(maps.map(() => map.version));
      expect.soft(new Set(map.owners), 'owners of the newest map').toEqual(new Set(remaining));
      for (const id of remaining) {
        expect.soft(await registryOn(urlOf[id]!, catalog), `shard registry on ${id}`).toEqual(
          Object.fromEntries(
            Object.keys(urlOf)
              .sort()
              .map((shardId) => [shardId, shardId === remove ? 'removed' : 'active']),
          ),
        );
      }

      // Reference tables: the same on every active shard, the added ones included, and equal to the acknowledged writes.
      const expectedReferences = withoutPending(model.references, model.referencePending);
      const referenceCopies = new Map<string, Map<string, number>>();
      for (const id of remaining) referenceCopies.set(id, await referenceRowsOn(urlOf[id]!, tables));
      for (const id of remaining) {
        const copy = referenceCopies.get(id)!;
        expect.soft(withoutPending(copy, model.referencePending), `reference table on ${id}`).toEqual(expectedReferences);
        expect.soft(copy, `reference table on ${id} against ${remaining[0]}`).toEqual(referenceCopies.get(remaining[0]!));
        for (const [code, [before, afterValue]] of model.referencePending)
          expect.soft([before, afterValue], `pending ${code} on ${id}`).toContain(copy.get(code) ?? -1);
      }

      // Sharded tables: nothing on a non-owner (the removed shard empty), every acknowledged write exactly once.
      const placement = await readPlacement(urlOf, catalog, tables, map.owners);
      expect.soft(placement.misplaced, 'rows on a shard that does not own their bucket').toEqual({});
      expect.soft(placement.rowCounts[remove], `sharded tables on the removed shard ${remove}`).toEqual({ accounts: 0, ledger: 0 });
      expect.soft(placement.duplicated).toEqual([]);
      expect.soft(withoutPending(placement.balances, model.pending), 'balances').toEqual(withoutPending(model.balances, model.pending));
      for (const [key, [before, afterValue]] of model.pending)
        expect.soft([before, afterValue], `pending ${key}`).toContain(placement.balances.get(key) ?? -1);
      const ofPending = (entry: string) => model.pending.has(entry.slice(0, entry.lastIndexOf(':')));
      expect
        .soft(
          placement.ledger.filter((entry) => !ofPending(entry)),
          'ledger',
        )
        .toEqual(model.ledger.filter((entry) => !ofPending(entry)).sort());
      for (const [key, [, afterValue]] of model.pending) {
        const expected = model.ledger.filter((entry) => entry.startsWith(`${key}:`)).sort();
        const actual = placement.ledger.filter((entry) => entry.startsWith(`${key}:`));
        expect.soft([expected, [...expected, `${key}:${afterValue}`].sort()], `ledger of pending ${key}`).toContainEqual(actual);
      }

      // No move open anywhere, no capture trigger left, nothing of the cluster prepared.
      for (const [id, url] of Object.entries(urlOf)) {
        await withServer(url, async (client) => {
          const open = await client.query(`SELECT move_id, state FROM "${catalog}".moves WHERE state IN ('copying', 'switched')`);
          expect.soft(open.rows, `open moves on ${id}`).toEqual([]);
          const triggers = await client.query(`SELECT tgname FROM pg_trigger WHERE tgname = $1`, [`${catalog}_move`]);
          expect.soft(triggers.rowCount, `capture triggers on ${id}`).toBe(0);
        });
      }
      expect.soft(await preparedOn(allUrls, `psr:${router.clusterId}:`)).toEqual([]);

      // verify() agrees with the direct read.
      const verify = await router.rebalancer().verify();
      expect.soft(verify.misplaced).toEqual([]);
      expect.soft(verify.divergent).toEqual([]);
      expect.soft(verify.openMoves).toBe(0);
      expect.soft(verify.ok).toBe(true);
      expect.soft([...router.shardIds].sort(), 'members as the parent router sees them').toEqual(remaining);
    } finally {
      app?.kill();
      await rollBackPrepared(allUrls, [`psr:${router.clusterId}:`]);
      await writers?.stop();
      await router.close();
    }
  });
});
