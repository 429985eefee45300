import pg from 'pg';
import type { MoveReport, ShardRouter } from '../../src/index.js';
import { copyPipe } from '../copy-protocol.js';
import { check, size } from '../section.js';
import type { GuardCheck, SectionContext } from '../section.js';
import { max, nowNs, percentile, secondsSince } from '../stats.js';

/**
 * The rebalance section's moves (see rebalance.ts): one bucket loaded with ~10 MB, moved back
 * and forth with rebalancer.moveBucket, first with nobody writing, then under writers whose
 * latencies are filed by phase; after every move the bare copy of the same rows; then the guard
 * that every acknowledged write is on the bucket's owner.
 */

/** MB here is 2^20 bytes, as in the stream section. */
export const MB = 2 ** 20;
export const MIN_PAYLOAD = 200;
export const MAX_PAYLOAD = 1_000;

export interface LatencySummary {
  readonly writes: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

export interface MoveRound {
  readonly round: number;
  /** False for the first moves, which run with nobody writing. */
  readonly underWrites: boolean;
  readonly from: string;
  readonly to: string;
  readonly rowsCopied: number;
  /** The snapshot's COPY text (MoveReport.bytesCopied). */
  readonly bytesCopied: number;
  /** MoveReport.copyMillis: copy start to the cutover lock (snapshot copy, catch-up rounds, cutover lock wait). */
  readonly copyMillis: number;
  /** MoveReport.pauseMillis: cutover lock taken to the switch committed. */
  readonly pauseMillis: number;
  /** moveBucket's wall time, call to return (start, copy, cutover, switch, drain, clean-up). */
  readonly moveMillis: number;
  /** The copy alone: from the first 'copying' progress report to 'copied' (the snapshot piped into the target). */
  readonly snapshotCopyMillis: number;
  /** 'catching-up' to 'caught-up': the catch-up rounds while the writers go on. */
  readonly catchUpMillis: number;
  /** 'caught-up' to 'paused': closing the lock gates and waiting for the move row's lock. */
  readonly cutoverWaitMillis: number;
  /** The copy's rate: bytesCopied / snapshotCopyMillis. */
  readonly copyMBPerSecond: number;
  readonly copyRowsPerSecond: number;
  /** bytesCopied / copyMillis: the copy with the catch-up and the cutover wait. */
  readonly copyToCutoverMBPerSecond: number;
  /**
   * The same rows piped just before the move, the same way round and under the same writers
   * (none for the first moves): the move's SELECT (through the bucket index) in COPY TO STDOUT
   * into COPY FROM STDIN of a table like the moving one (same indexes, no triggers).
   */
  readonly bareCopy: { readonly rows: number; readonly bytes: number; readonly millis: number; readonly mbPerSecond: number };
  /** The copy's rate over the bare pipe's: copyMBPerSecond / bareCopy.mbPerSecond. */
  readonly copyRatio: number;
  /** Writes to the moving bucket's keys: with no move running (baseline) and during the move. */
  readonly moving?: { readonly quiet: LatencySummary; readonly move: LatencySummary };
  /** Writes to other buckets of the source shard, same phases. */
  readonly other?: { readonly quiet: LatencySummary; readonly move: LatencySummary };
  /** When the slowest moving-bucket write of the move started, ms after moveBucket was called. */
  readonly slowestMovingWriteStartedAtMillis?: number;
}

/** The sizes of the moves part. */
export interface MovePlan {
  readonly poolMax: number;
  readonly movingWriters: number;
  readonly otherWriters: number;
  readonly payloadBytes: number;
  /** An even number of moves in all (idle + loaded), so the bucket ends where it started. */
  readonly idleMoves: number;
  readonly loadRounds: number;
  readonly quietMillis: number;
  readonly warmMillis: number;
  readonly table: string;
  readonly bareTable: string;
}

export function movePlan(ctx: SectionContext): MovePlan {
  return {
    poolMax: 16,
    movingWriters: 4,
    otherWriters: 2,
    payloadBytes: size(ctx, 10 * MB, 3 * MB),
    idleMoves: size(ctx, 2, 1),
    loadRounds: size(ctx, 4, 1),
    quietMillis: size(ctx, 1_000, 500),
    warmMillis: 300,
    table: `${ctx.schema}.moving`,
    bareTable: `${ctx.schema}.bare`,
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function summarizeLatencies(values: readonly number[]): LatencySummary {
  return { writes: values.length, p50: percentile(values, 50), p99: percentile(values, 99), max: max(values) };
}

/** Payload length of the n-th generated key: spread evenly over 200..1000 bytes. */
export function payloadLength(n: number): number {
  return MIN_PAYLOAD + ((n * 7919) % (MAX_PAYLOAD - MIN_PAYLOAD + 1));
}

export interface BucketKeys {
  readonly bucket: number;
  /** Rows loaded before the first move, with their payload lengths. */
  readonly initial: readonly string[];
  readonly initialLengths: readonly number[];
  readonly initialPayloadBytes: number;
  /** Fresh keys of the same bucket, for the writers' INSERTs. */
  readonly spare: readonly string[];
  /** Keys of other buckets, by the shard that owns them. */
  readonly otherByShard: ReadonlyMap<string, readonly string[]>;
}

function generateKeys(router: ShardRouter, payloadBytes: number, spareCount: number, othersPerShard: number): BucketKeys {
  const bucket = router.bucketFor('rb-0');
  const initial: string[] = [];
  const initialLengths: number[] = [];
  const spare: string[] = [];
  const otherByShard = new Map(router.shardIds.map((id) => [id, [] as string[]]));
  let bytes = 0;
  for (
    let n = 0;
    bytes < payloadBytes || spare.length < spareCount || [...otherByShard.values()].some((keys) => keys.length < othersPerShard);
    n++
  ) {
    const key = `rb-${n}`;
    if (router.bucketFor(key) !== bucket) {
      const others = otherByShard.get(router.shardFor(key))!;
      if (others.length < othersPerShard) others.push(key);
    } else if (bytes < payloadBytes) {
      const length = payloadLength(n);
      initial.push(key);
      initialLengths.push(length);
      bytes += length;
    } else if (spare.length < spareCount) {
      spare.push(key);
    }
  }
  return { bucket, initial, initialLengths, initialPayloadBytes: bytes, spare, otherByShard };
}

/** Row payload: md5 hex of the key repeated to `length` characters (server-side for the bulk load). */
const PAYLOAD_SQL = (id: string, length: string) => `substr(repeat(md5(${id}), 32), 1, ${length})`;

/**
 * Writers through the router. Each moving-bucket writer owns a share of the bucket's keys (so
 * its acknowledged writes to a key are ordered and the model is exact) and of the spare keys;
 * every fifth write is an INSERT of a spare key, the others UPDATE v = v + 1. Other-bucket
 * writers UPDATE keys of other buckets on the move's source shard. Latencies are filed by the
 * phase the write started in.
 */
class WriteLoad {
  phase: 'warm' | 'bare' | 'quiet' | 'move' | 'done' = 'warm';
  #moveStart = 0n;
  readonly moving = { quiet: [] as number[], move: [] as number[] };
  readonly other = { quiet: [] as number[], move: [] as number[] };
  slowestMovingWrite = { millis: -1, startedAtMillis: Number.NaN };
  readonly #loops: Promise<void>[];
  readonly #router: ShardRouter;
  readonly #update: string;
  readonly #insert: string;
  readonly #model: Map<string, number>;
  readonly #failures: string[];

  constructor(
    router: ShardRouter,
    table: string,
    movingShares: readonly WriterShare[],
    otherKeys: readonly string[],
    otherWriters: number,
    model: Map<string, number>,
    failures: string[],
  ) {
    this.#router = router;
    this.#update = `UPDATE ${table} SET v = v + 1 WHERE id = $1`;
    this.#insert = `INSERT INTO ${table} (id, v, payload) VALUES ($1, 0, $2)`;
    this.#model = model;
    this.#failures = failures;
    const movingLoops = movingShares.map((share) => this.#movingWriter(share));
    const otherLoops = Array.from({ length: otherWriters }, (_, writer) =>
      this.#otherWriter(otherKeys.filter((_, index) => index % otherWriters === writer)),
    );
    this.#loops = [...movingLoops, ...otherLoops];
  }

  async #timed(kind: 'moving' | 'other', write: () => Promise<void>): Promise<void> {
    const phase = this.phase;
    const start = nowNs();
    await write();
    const millis = secondsSince(start) * 1e3;
    if (phase !== 'quiet' && phase !== 'move') return;
    this[kind][phase].push(millis);
    if (kind === 'moving' && phase === 'move' && millis > this.slowestMovingWrite.millis) {
      this.slowestMovingWrite = { millis, startedAtMillis: Number(start - this.#moveStart) / 1e6 };
    }
  }

  /** One writer's key: UPDATE, `kind` tells which latencies it is filed under. */
  async #updateOne(kind: 'moving' | 'other', key: string): Promise<void> {
    await this.#timed(kind, async () => {
      const result = await this.#router.execute(key, this.#update, [key]);
      if (result.rowCount !== 1) throw new Error(`UPDATE of ${key} reported ${result.rowCount} rows`);
    });
    this.#model.set(key, (this.#model.get(key) ?? 0) + 1);
  }

  async #movingWriter(share: WriterShare): Promise<void> {
    try {
      while (this.phase !== 'done') {
        share.ops++;
        if (share.ops % 5 === 0 && share.nextSpare < share.spare.length) {
          const key = share.spare[share.nextSpare++]!;
          await this.#timed('moving', async () => {
            const result = await this.#router.execute(key, this.#insert, [key, 'i'.repeat(payloadLength(share.ops))]);
            if (result.rowCount !== 1) throw new Error(`INSERT of ${key} reported ${result.rowCount} rows`);
          });
          this.#model.set(key, 0);
        } else {
          await this.#updateOne('moving', share.keys[share.ops % share.keys.length]!);
        }
      }
    } catch (error) {
      this.#failures.push(`moving-bucket writer: ${String(error)}`);
    }
  }

  async #otherWriter(keys: readonly string[]): Promise<void> {
    try {
      for (let op = 0; this.phase !== 'done'; op++) await this.#updateOne('other', keys[op % keys.length]!);
    } catch (error) {
      this.#failures.push(`other-bucket writer: ${String(error)}`);
    }
  }

  startMove(): void {
    this.#moveStart = nowNs();
    this.phase = 'move';
  }

  async stop(): Promise<void> {
    this.phase = 'done';
    await Promise.all(this.#loops);
  }
}

interface WriterShare {
  readonly keys: readonly string[];
  readonly spare: readonly string[];
  nextSpare: number;
  ops: number;
}

export function shardIndex(ctx: SectionContext, shardId: string): number {
  const index = ctx.shards.findIndex((shard) => shard.id === shardId);
  if (index < 0) throw new Error(`shard ${shardId} is not one of the run's shards`);
  return index;
}

/** Current v of `keys` on their owner shards (as the router routes now), as key -> v. */
async function readValues(ctx: SectionContext, router: ShardRouter, table: string, keys: readonly string[]): Promise<Map<string, number>> {
  const values = new Map<string, number>();
  for (const shardId of router.shardIds) {
    const mine = keys.filter((key) => router.shardFor(key) === shardId);
    if (mine.length === 0) continue;
    const rows = await ctx.admin<{ id: string; v: string }>(
      shardIndex(ctx, shardId),
      `SELECT id, v::text FROM ${table} WHERE id = ANY ($1::text[])`,
      [mine],
    );
    for (const row of rows) values.set(row.id, Number(row.v));
  }
  return values;
}

async function countKeysOn(ctx: SectionContext, shardId: string, table: string, keys: readonly string[]): Promise<number> {
  const rows = await ctx.admin<{ n: number }>(
    shardIndex(ctx, shardId),
    `SELECT count(*)::int AS n FROM ${table} WHERE id = ANY ($1::text[])`,
    [keys],
  );
  return rows[0]?.n ?? 0;
}

/**
 * The baseline: the bucket's rows piped from shard `from` into `plan.bareTable` on `to` the
 * barest way, with the move's own SELECT (the same rows, read through the bucket index) in
 * `COPY (...) TO STDOUT` (text) into `COPY ... FROM STDIN` of a table like the moving one (same
 * columns and indexes, no triggers), autocommit, each CopyData chunk forwarded as it arrives,
 * on connections opened beforehand; then emptied again. What the move adds is the rebalancer's
 * own work: the snapshot transaction, the target's 2PC transaction, batching, the other tables.
 */
async function bareCopyPipe(
  ctx: SectionContext,
  plan: MovePlan,
  bucket: BucketSql,
  from: number,
  to: number,
): Promise<MoveRound['bareCopy']> {
  const source = new pg.Client({ connectionString: ctx.shards[from]!.connectionString });
  const target = new pg.Client({ connectionString: ctx.shards[to]!.connectionString });
  await Promise.all([source.connect(), target.connect()]);
  try {
    const condition = `"${bucket.catalogSchema}".bucket_of(id::text, ${bucket.bucketCount}) = ANY ('{${bucket.bucket}}'::int[])`;
    const start = nowNs();
    const { bytes, rows } = await copyPipe(
      source,
      `COPY (SELECT id, v, payload FROM ${plan.table} t WHERE ${condition}) TO STDOUT`,
      target,
      `COPY ${plan.bareTable} (id, v, payload) FROM STDIN`,
    );
    const millis = secondsSince(start) * 1e3;
    await target.query(`TRUNCATE ${plan.bareTable}`);
    return { rows, bytes, millis, mbPerSecond: bytes / MB / (millis / 1e3) };
  } finally {
    await Promise.all([source.end(), target.end()]);
  }
}

/** What the bare pipe's SELECT needs to name the bucket as the move does. */
interface BucketSql {
  readonly catalogSchema: string;
  readonly bucketCount: number;
  readonly bucket: number;
}

/** The moving bucket's rows and writers, loaded and ready for the first move. */
export interface LoadedBucket {
  readonly keys: BucketKeys;
  readonly keyGenerationSeconds: number;
  readonly homeShard: string;
  readonly shares: readonly WriterShare[];
  /** Expected v of every key a writer updates. */
  readonly model: Map<string, number>;
}

/** Data: one bucket with ~10 MB, spare keys for INSERTs, keys of other buckets. */
export async function loadBucket(ctx: SectionContext, router: ShardRouter, plan: MovePlan): Promise<LoadedBucket> {
  const { table, bareTable, movingWriters } = plan;
  const keyStart = nowNs();
  const keys = generateKeys(router, plan.payloadBytes, movingWriters * 1_500, 64 * plan.otherWriters);
  const keyGenerationSeconds = secondsSince(keyStart);
  const homeShard = router.shardFor(keys.initial[0]!);
  ctx.log(
    `bucket ${keys.bucket} of ${router.bucketCount} (owner ${homeShard}): ${keys.initial.length.toLocaleString('en-US')} rows, ` +
      `${(keys.initialPayloadBytes / MB).toFixed(1)} MB of payload (keys found in ${keyGenerationSeconds.toFixed(1)} s)`,
  );
  for (let i = 0; i < 2; i++) await ctx.admin(i, `CREATE TABLE ${table} (id text PRIMARY KEY, v bigint NOT NULL, payload text NOT NULL)`);
  await router.registerShardedTable(table, 'id', { bucketIndex: true });
  // The bare pipe's target: the same columns and indexes (the bucket index too), not registered.
  for (let i = 0; i < 2; i++) await ctx.admin(i, `CREATE TABLE ${bareTable} (LIKE ${table} INCLUDING ALL)`);
  await loadRows(ctx, table, homeShard, keys.initial, keys.initialLengths);
  for (const [shardId, others] of keys.otherByShard)
    await loadRows(
      ctx,
      table,
      shardId,
      others,
      others.map((_, i) => payloadLength(i)),
    );
  // VACUUM too: the first read of freshly loaded rows would set their hint bits, and only the first bare pipe would pay.
  for (let i = 0; i < 2; i++) await ctx.admin(i, `VACUUM ANALYZE ${table}`);

  // Moving-bucket writers own the first keys of the bucket (round robin) and their share of the spare keys.
  const updatedKeys = keys.initial.slice(0, movingWriters * 50);
  const shares: WriterShare[] = Array.from({ length: movingWriters }, (_, w) => ({
    keys: updatedKeys.filter((_, i) => i % movingWriters === w),
    spare: keys.spare.filter((_, i) => i % movingWriters === w),
    nextSpare: 0,
    ops: 0,
  }));
  const model = new Map<string, number>();
  for (const key of updatedKeys) model.set(key, 0);
  for (const others of keys.otherByShard.values()) for (const key of others) model.set(key, 0);
  return { keys, keyGenerationSeconds, homeShard, shares, model };
}

async function loadRows(
  ctx: SectionContext,
  table: string,
  shardId: string,
  ids: readonly string[],
  lengths: readonly number[],
): Promise<void> {
  for (let offset = 0; offset < ids.length; offset += 5_000) {
    await ctx.admin(
      shardIndex(ctx, shardId),
      `INSERT INTO ${table} (id, v, payload) SELECT id, 0, ${PAYLOAD_SQL('id', 'len')} FROM unnest($1::text[], $2::int[]) AS u(id, len)`,
      [ids.slice(offset, offset + 5_000), lengths.slice(offset, offset + 5_000)],
    );
  }
}

/** The moves and the guards on them. */
export interface MovesResult {
  readonly rounds: readonly MoveRound[];
  readonly guards: readonly GuardCheck[];
}

type Rebalancer = ReturnType<ShardRouter['rebalancer']>;

/** Moves: first with nobody writing, then rounds under writers, back and forth. */
export async function measureMoves(ctx: SectionContext, router: ShardRouter, plan: MovePlan, data: LoadedBucket): Promise<MovesResult> {
  const rounds: MoveRound[] = [];
  const moveGuards: GuardCheck[] = [];
  const failures: string[] = [];
  const totalMoves = plan.idleMoves + plan.loadRounds;
  if (totalMoves % 2 !== 0) throw new Error('an even number of moves is needed to bring the bucket home');
  const stepAt = new Map<string, number>();
  const rebalancer = router.rebalancer({
    onProgress: (progress) => {
      if (!stepAt.has(progress.current.step)) stepAt.set(progress.current.step, performance.now());
    },
  });
  for (let r = 0; r < totalMoves; r++) {
    const outcome = await moveOnce(ctx, router, plan, data, { r, rebalancer, stepAt, failures });
    if ('guard' in outcome) moveGuards.push(outcome.guard);
    else rounds.push(outcome.round);
  }
  moveGuards.push(...(await movesGuard(ctx, router, plan, data, { rounds, failures, rebalancer })));
  return { rounds, guards: moveGuards };
}

interface MoveState {
  readonly r: number;
  readonly rebalancer: Rebalancer;
  /** When each progress step was first reported during the current move (performance.now()). */
  readonly stepAt: Map<string, number>;
  readonly failures: string[];
}

/**
 * One move of the bucket to the other shard (under writers after the idle moves), right after
 * its bare pipe: the same rows, the same way round, under the same writers.
 */
async function moveOnce(
  ctx: SectionContext,
  router: ShardRouter,
  plan: MovePlan,
  data: LoadedBucket,
  state: MoveState,
): Promise<{ round: MoveRound } | { guard: GuardCheck }> {
  const { r, stepAt } = state;
  const { keys, shares } = data;
  const underWrites = r >= plan.idleMoves;
  const from = router.shardFor(keys.initial[0]!);
  const to = router.shardIds.find((id) => id !== from)!;
  const bucketSql = { catalogSchema: ctx.catalogSchema(2), bucketCount: router.bucketCount, bucket: keys.bucket };
  let writes: WriteLoad | undefined;
  let bareCopy: MoveRound['bareCopy'];
  if (underWrites) {
    writes = new WriteLoad(router, plan.table, shares, keys.otherByShard.get(from)!, plan.otherWriters, data.model, state.failures);
    await sleep(plan.warmMillis);
    writes.phase = 'bare';
    bareCopy = await bareCopyPipe(ctx, plan, bucketSql, shardIndex(ctx, from), shardIndex(ctx, to));
    writes.phase = 'quiet';
    await sleep(plan.quietMillis);
    writes.startMove();
  } else {
    bareCopy = await bareCopyPipe(ctx, plan, bucketSql, shardIndex(ctx, from), shardIndex(ctx, to));
  }
  const moveStart = nowNs();
  stepAt.clear();
  let report: Awaited<ReturnType<typeof state.rebalancer.moveBucket>>;
  try {
    report = await state.rebalancer.moveBucket(keys.bucket, to);
  } finally {
    await writes?.stop();
  }
  const moveMillis = secondsSince(moveStart) * 1e3;
  const move: MoveReport | undefined = report.moves[0];
  if (report.moves.length !== 1 || move === undefined || move.source !== from || move.target !== to) {
    return {
      guard: check(`move ${r + 1} moved bucket ${keys.bucket} from ${from} to ${to}`, false, `report: ${JSON.stringify(report.moves)}`),
    };
  }
  const between = (first: string, next: string) => (stepAt.get(next) ?? Number.NaN) - (stepAt.get(first) ?? Number.NaN);
  const snapshotCopyMillis = between('copying', 'copied');
  const copyMBPerSecond = move.bytesCopied / MB / (snapshotCopyMillis / 1e3);
  const result: MoveRound = {
    round: r + 1,
    underWrites,
    from,
    to,
    rowsCopied: move.rowsCopied,
    bytesCopied: move.bytesCopied,
    copyMillis: move.copyMillis,
    pauseMillis: move.pauseMillis,
    moveMillis,
    snapshotCopyMillis,
    catchUpMillis: between('catching-up', 'caught-up'),
    cutoverWaitMillis: between('caught-up', 'paused'),
    copyMBPerSecond,
    copyRowsPerSecond: move.rowsCopied / (snapshotCopyMillis / 1e3),
    copyToCutoverMBPerSecond: move.bytesCopied / MB / (move.copyMillis / 1e3),
    bareCopy,
    copyRatio: copyMBPerSecond / bareCopy.mbPerSecond,
    ...(writes === undefined ? {} : writeLatencies(writes)),
  };
  logMove(ctx, result);
  return { round: result };
}

function writeLatencies(writes: WriteLoad): Pick<MoveRound, 'moving' | 'other' | 'slowestMovingWriteStartedAtMillis'> {
  return {
    moving: { quiet: summarizeLatencies(writes.moving.quiet), move: summarizeLatencies(writes.moving.move) },
    other: { quiet: summarizeLatencies(writes.other.quiet), move: summarizeLatencies(writes.other.move) },
    slowestMovingWriteStartedAtMillis: writes.slowestMovingWrite.startedAtMillis,
  };
}

function logMove(ctx: SectionContext, result: MoveRound): void {
  const { from, to, bareCopy } = result;
  const ms = (v: number) => Math.round(v).toString();
  ctx.log(
    `move ${result.round} ${from} -> ${to}${result.underWrites ? '' : ' (no writers)'}: ${result.rowsCopied.toLocaleString('en-US')} rows, ${(result.bytesCopied / MB).toFixed(1)} MB ` +
      `copied in ${ms(result.snapshotCopyMillis)} ms = ${result.copyMBPerSecond.toFixed(1)} MB/s (bare COPY just before ${bareCopy.mbPerSecond.toFixed(1)} MB/s in ${ms(bareCopy.millis)} ms: ratio ${result.copyRatio.toFixed(2)}); ` +
      `then catch-up ${ms(result.catchUpMillis)} ms, cutover wait ${ms(result.cutoverWaitMillis)} ms (copy to cutover ${result.copyMillis} ms = ${result.copyToCutoverMBPerSecond.toFixed(1)} MB/s), ` +
      `pause ${result.pauseMillis} ms, move ${ms(result.moveMillis)} ms` +
      (result.moving === undefined
        ? ''
        : `; moving-bucket writes p50/p99/max ${result.moving.move.p50.toFixed(1)}/${result.moving.move.p99.toFixed(1)}/${result.moving.move.max.toFixed(1)} ms ` +
          `(no move: p99 ${result.moving.quiet.p99.toFixed(1)}), other buckets p99 ${result.other!.move.p99.toFixed(1)} ms (no move: ${result.other!.quiet.p99.toFixed(1)})`),
  );
}

/** Guard for the moves: every acknowledged write is on the bucket's owner, nothing left behind. */
async function movesGuard(
  ctx: SectionContext,
  router: ShardRouter,
  plan: MovePlan,
  data: LoadedBucket,
  done: { readonly rounds: readonly MoveRound[]; readonly failures: readonly string[]; readonly rebalancer: Rebalancer },
): Promise<GuardCheck[]> {
  const { keys, shares, model, homeShard } = data;
  const { rounds, failures } = done;
  const totalMoves = plan.idleMoves + plan.loadRounds;
  await router.refreshMap();
  const bucketKeys = [...keys.initial, ...shares.flatMap((share) => share.spare.slice(0, share.nextSpare))];
  const owner = router.shardFor(keys.initial[0]!);
  const elsewhere = router.shardIds.filter((id) => id !== owner);
  const onOwner = await countKeysOn(ctx, owner, plan.table, bucketKeys);
  let leftBehind = 0;
  for (const id of elsewhere) leftBehind += await countKeysOn(ctx, id, plan.table, bucketKeys);
  const values = await readValues(ctx, router, plan.table, [...model.keys()]);
  const wrongValues = [...model].filter(([key, v]) => values.get(key) !== v).length;
  const verify = await done.rebalancer.verify();
  const movingWrites = rounds.reduce((sum, r) => sum + (r.moving ? r.moving.quiet.writes + r.moving.move.writes : 0), 0);
  const otherWrites = rounds.reduce((sum, r) => sum + (r.other ? r.other.quiet.writes + r.other.move.writes : 0), 0);
  return [
    check(
      'no write failed during the moves',
      failures.length === 0,
      failures.length === 0 ? `${movingWrites + otherWrites} timed writes, none failed` : failures.slice(0, 3).join('; '),
    ),
    check(
      'the bucket is back home, every row once, on its owner',
      owner === homeShard && onOwner === bucketKeys.length && leftBehind === 0,
      `${totalMoves} moves; owner ${owner} (home ${homeShard}) holds ${onOwner}/${bucketKeys.length} rows, ${leftBehind} left on ${elsewhere.join(', ')}`,
    ),
    check(
      'every acknowledged write is there (v = its UPDATE count)',
      wrongValues === 0,
      `${model.size - wrongValues}/${model.size} keys right`,
    ),
    check(
      'every bare pipe copied the whole bucket',
      rounds.every((r) => r.bareCopy.rows >= keys.initial.length),
      `rows per bare pipe: ${rounds.map((r) => r.bareCopy.rows).join(', ')}`,
    ),
    check(
      'every move copied the whole bucket',
      rounds.every((r) => r.rowsCopied >= keys.initial.length),
      `rows copied per move: ${rounds.map((r) => r.rowsCopied).join(', ')} (bucket had ${keys.initial.length} before the writers)`,
    ),
    check(
      'verify: placement clean, no open move',
      verify.ok && verify.openMoves === 0,
      `ok ${verify.ok}, ${verify.misplaced.length} misplaced, ${verify.openMoves} open moves`,
    ),
  ];
}
