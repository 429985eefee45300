import type { MoveReport, ShardRouter } from '../../src/index.js';
import { atLeast, atMost, check, size } from '../section.js';
import type { Figure, GuardCheck, Section, SectionContext } from '../section.js';
import { formatTable, max, median, nowNs, pairedRatios, percentile, secondsSince, summarize } from '../stats.js';
import type { Series } from '../stats.js';
import { closedLoop, interleavedRounds } from '../workload.js';

/**
 * Online rebalancing (docs/rebalance.md) on the bench's local shards, through one router over
 * two of them:
 *
 * 1. Copy rate: one bucket holding ~10 MB of rows (keys found with router.bucketFor) moved with
 *    rebalancer.moveBucket; MB/s = MoveReport.bytesCopied / copyMillis. First with nobody
 *    writing, then in every round under writers. After every move the same rows are copied back
 *    the barest way (one SELECT row_to_json by key list, one INSERT json_populate_recordset, no
 *    bucket hashing, batching or 2PC): the baseline that says how much of the rate is the
 *    machine's and how much the rebalancer's.
 * 2. Write pause: while the bucket moves, writers keep sending single-row UPDATEs and INSERTs
 *    to keys of the moving bucket (and UPDATEs to other buckets of the source shard) through
 *    the router; every write's latency is recorded. Each round first runs the same writers for
 *    a while with no move (the baseline, same round), then moves the bucket, back and forth.
 * 3. Fencing cost: the same single-row INSERTs through router.execute into a registered table
 *    (statement fence trigger) and into an identical unregistered one, interleaved rounds. Then
 *    two finer looks, since round-to-round noise on a shared machine is larger than the effect:
 *    one closed loop whose statements alternate between the tables (A B B A ...), so both see
 *    exactly the same noise, compared by mean latency; and the same INSERTs in a server-side
 *    loop (DO) on a router connection (which carries its map version): the trigger's own cost
 *    without the round trip, once with a COMMIT after every INSERT (as router.execute's
 *    autocommit INSERTs; synchronous_commit off for the loop's transactions, so no WAL flush
 *    drowns the difference) and once with all INSERTs in one transaction.
 *
 * The moves go back and forth an even number of times, so the bucket ends on the shard that
 * owned it at the start: the catalog is shared with other sections over the same shard count.
 * The section's tables stay in that catalog's table registry after its schema is dropped (there
 * is no unregister); only a rebalancer reads the registry, and no other section rebalances.
 */

export const COPY_RATE_TARGET_MB_PER_SECOND = 20;
export const MOVING_WRITE_P99_TARGET_MILLIS = 100;
export const FENCE_RATIO_TARGET = 0.95;

/** MB here is 2^20 bytes, as in the stream section. */
const MB = 2 ** 20;
const MIN_PAYLOAD = 200;
const MAX_PAYLOAD = 1_000;
const FENCE_PAYLOAD = 'f'.repeat(MIN_PAYLOAD);
const VARIANTS = ['fenced', 'plain'] as const;
type Variant = (typeof VARIANTS)[number];

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
  readonly bytesCopied: number;
  /** MoveReport.copyMillis: copy start to the cutover lock (snapshot copy and catch-up rounds). */
  readonly copyMillis: number;
  /** MoveReport.pauseMillis: cutover lock taken to the switch committed. */
  readonly pauseMillis: number;
  /** moveBucket's wall time, call to return (start, copy, cutover, switch, drain, clean-up). */
  readonly moveMillis: number;
  /** From the first 'copying' progress report to the first 'catching-up' one: the snapshot copy. */
  readonly snapshotCopyMillis: number;
  readonly copyMBPerSecond: number;
  readonly copyRowsPerSecond: number;
  /** The same rows copied back right after the move the barest way (see the top of this file). */
  readonly bare: { readonly rows: number; readonly bytes: number; readonly millis: number; readonly mbPerSecond: number };
  /** Writes to the moving bucket's keys: with no move running (baseline) and during the move. */
  readonly moving?: { readonly quiet: LatencySummary; readonly move: LatencySummary };
  /** Writes to other buckets of the source shard, same phases. */
  readonly other?: { readonly quiet: LatencySummary; readonly move: LatencySummary };
  /** When the slowest moving-bucket write of the move started, ms after moveBucket was called. */
  readonly slowestMovingWriteStartedAtMillis?: number;
}

export interface FenceDetails {
  readonly concurrency: number;
  readonly insertsPerRound: number;
  readonly rounds: number;
  readonly payloadBytes: number;
  readonly insertsPerSecond: Readonly<Record<Variant, Series>>;
  readonly ratio: number;
  readonly ratioOfMedians: number;
  readonly cpuMicrosPerInsert: Readonly<Record<Variant, Series>>;
  /** The server-side loops: µs per INSERT inside one DO block, per round. */
  readonly serverSide: {
    readonly shardId: string;
    readonly insertsPerRound: number;
    readonly rounds: number;
    /** A COMMIT after every INSERT (synchronous_commit off). */
    readonly commitEach: ServerLoopResult;
    /** Every INSERT in one transaction. */
    readonly oneTransaction: ServerLoopResult;
  };
  /** One closed loop of `statements` INSERTs alternating between the tables (A B B A ...). */
  readonly alternating: {
    readonly statements: number;
    readonly meanMillis: Readonly<Record<Variant, number>>;
    readonly p50Millis: Readonly<Record<Variant, number>>;
    /** mean fenced / mean plain. */
    readonly ratio: number;
  };
}

export interface ServerLoopResult {
  readonly microsPerInsert: Readonly<Record<Variant, Series>>;
  /** Median of paired fenced/plain ratios. */
  readonly ratio: number;
  /** Median of paired (fenced - plain) differences, µs. */
  readonly extraMicros: number;
}

export interface RebalanceDetails {
  readonly shardIds: readonly string[];
  readonly bucketCount: number;
  readonly bucket: number;
  readonly homeShard: string;
  readonly initialRows: number;
  readonly initialPayloadMB: number;
  readonly movingWriters: number;
  readonly otherWriters: number;
  readonly quietMillis: number;
  readonly keyGenerationSeconds: number;
  readonly rounds: readonly MoveRound[];
  readonly idleMoves: number;
  readonly loadedMoves: number;
  /** Worst over the moves under writes, each with its baseline from the same move's round. */
  readonly worst: {
    readonly movingP99: number;
    /** p99 of the same writers just before that move. */
    readonly movingQuietP99: number;
    readonly movingMax: number;
    /** MoveReport.pauseMillis of the move with that max. */
    readonly pauseMillisAtMax: number;
    readonly pauseMillis: number;
    readonly otherP99: number;
    readonly otherQuietP99: number;
  };
  readonly fence: FenceDetails;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function summarizeLatencies(values: readonly number[]): LatencySummary {
  return { writes: values.length, p50: percentile(values, 50), p99: percentile(values, 99), max: max(values) };
}

/** Payload length of the n-th generated key: spread evenly over 200..1000 bytes. */
function payloadLength(n: number): number {
  return MIN_PAYLOAD + ((n * 7919) % (MAX_PAYLOAD - MIN_PAYLOAD + 1));
}

interface BucketKeys {
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
  for (let n = 0; bytes < payloadBytes || spare.length < spareCount || [...otherByShard.values()].some((keys) => keys.length < othersPerShard); n++) {
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
  phase: 'warm' | 'quiet' | 'move' | 'done' = 'warm';
  #moveStart = 0n;
  readonly moving = { quiet: [] as number[], move: [] as number[] };
  readonly other = { quiet: [] as number[], move: [] as number[] };
  slowestMovingWrite = { millis: -1, startedAtMillis: Number.NaN };
  readonly #loops: Promise<void>[];

  constructor(
    router: ShardRouter,
    table: string,
    movingShares: readonly WriterShare[],
    otherKeys: readonly string[],
    otherWriters: number,
    model: Map<string, number>,
    failures: string[],
  ) {
    const update = `UPDATE ${table} SET v = v + 1 WHERE id = $1`;
    const insert = `INSERT INTO ${table} (id, v, payload) VALUES ($1, 0, $2)`;
    const timed = async (kind: 'moving' | 'other', write: () => Promise<void>): Promise<void> => {
      const phase = this.phase;
      const start = nowNs();
      await write();
      const millis = secondsSince(start) * 1e3;
      if (phase !== 'quiet' && phase !== 'move') return;
      this[kind][phase].push(millis);
      if (kind === 'moving' && phase === 'move' && millis > this.slowestMovingWrite.millis) {
        this.slowestMovingWrite = { millis, startedAtMillis: Number(start - this.#moveStart) / 1e6 };
      }
    };
    const movingLoops = movingShares.map(async (share) => {
      try {
        while (this.phase !== 'done') {
          share.ops++;
          if (share.ops % 5 === 0 && share.nextSpare < share.spare.length) {
            const key = share.spare[share.nextSpare++]!;
            await timed('moving', async () => {
              const result = await router.execute(key, insert, [key, 'i'.repeat(payloadLength(share.ops))]);
              if (result.rowCount !== 1) throw new Error(`INSERT of ${key} reported ${result.rowCount} rows`);
            });
            model.set(key, 0);
          } else {
            const key = share.keys[share.ops % share.keys.length]!;
            await timed('moving', async () => {
              const result = await router.execute(key, update, [key]);
              if (result.rowCount !== 1) throw new Error(`UPDATE of ${key} reported ${result.rowCount} rows`);
            });
            model.set(key, (model.get(key) ?? 0) + 1);
          }
        }
      } catch (error) {
        failures.push(`moving-bucket writer: ${String(error)}`);
      }
    });
    const otherLoops = Array.from({ length: otherWriters }, async (_, writer) => {
      const keys = otherKeys.filter((_, index) => index % otherWriters === writer);
      try {
        for (let op = 0; this.phase !== 'done'; op++) {
          const key = keys[op % keys.length]!;
          await timed('other', async () => {
            const result = await router.execute(key, update, [key]);
            if (result.rowCount !== 1) throw new Error(`UPDATE of ${key} reported ${result.rowCount} rows`);
          });
          model.set(key, (model.get(key) ?? 0) + 1);
        }
      } catch (error) {
        failures.push(`other-bucket writer: ${String(error)}`);
      }
    });
    this.#loops = [...movingLoops, ...otherLoops];
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

function shardIndex(ctx: SectionContext, shardId: string): number {
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
    const rows = await ctx.admin<{ id: string; v: string }>(shardIndex(ctx, shardId), `SELECT id, v::text FROM ${table} WHERE id = ANY ($1::text[])`, [mine]);
    for (const row of rows) values.set(row.id, Number(row.v));
  }
  return values;
}

async function countKeysOn(ctx: SectionContext, shardId: string, table: string, keys: readonly string[]): Promise<number> {
  const rows = await ctx.admin<{ n: number }>(shardIndex(ctx, shardId), `SELECT count(*)::int AS n FROM ${table} WHERE id = ANY ($1::text[])`, [keys]);
  return rows[0]?.n ?? 0;
}

/**
 * The baseline copy: the rows of `keys` read from shard `from` with one SELECT row_to_json (by
 * key, through the primary key: no bucket hashing) and inserted on shard `to` into `bareTable`
 * (same columns, not registered) with one INSERT json_populate_recordset; then emptied again.
 */
async function bareCopy(ctx: SectionContext, table: string, bareTable: string, keys: readonly string[], from: number, to: number): Promise<MoveRound['bare']> {
  const start = nowNs();
  const rows = await ctx.admin<{ j: string }>(from, `SELECT row_to_json(t)::text AS j FROM ${table} t WHERE id = ANY ($1::text[])`, [keys]);
  const json = `[${rows.map((row) => row.j).join(',')}]`;
  await ctx.admin(to, `INSERT INTO ${bareTable} (id, v, payload) SELECT id, v, payload FROM json_populate_recordset(NULL::${bareTable}, $1::json)`, [json]);
  const millis = secondsSince(start) * 1e3;
  await ctx.admin(to, `TRUNCATE ${bareTable}`);
  return { rows: rows.length, bytes: json.length, millis, mbPerSecond: json.length / MB / (millis / 1e3) };
}

function describeServerLoop(r: ServerLoopResult): string {
  return `${r.microsPerInsert.fenced.median.toFixed(2)} µs per INSERT with the fence vs ${r.microsPerInsert.plain.median.toFixed(2)} µs without (+${r.extraMicros.toFixed(2)} µs, ratio ${r.ratio.toFixed(3)})`;
}

/** Triggers (not internal ones) on `table` on shard `index`. */
async function triggerCount(ctx: SectionContext, index: number, table: string): Promise<number> {
  const rows = await ctx.admin<{ n: number }>(index, 'SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal', [table]);
  return rows[0]?.n ?? 0;
}

export const rebalanceSection: Section<RebalanceDetails> = {
  name: 'rebalance',
  title: 'rebalance: bucket copy MB/s, write latency of the moving bucket during a move, cost of the write fence',
  async run(ctx) {
    if (ctx.shards.length < 2) throw new Error('the rebalance section needs at least 2 shards');
    const poolMax = 16;
    const router = await ctx.router(2, { poolMax });
    const shardIds = router.shardIds;
    const movingWriters = 4;
    const otherWriters = 2;
    const payloadBytes = size(ctx, 10 * MB, 3 * MB);
    // An even number of moves in all, so the bucket ends where it started.
    const idleMoves = size(ctx, 2, 1);
    const loadRounds = size(ctx, 4, 1);
    const quietMillis = size(ctx, 1_000, 500);
    const warmMillis = 300;
    const table = `${ctx.schema}.moving`;

    // --- Data: one bucket with ~10 MB, spare keys for INSERTs, keys of other buckets ---------
    const keyStart = nowNs();
    const keys = generateKeys(router, payloadBytes, movingWriters * 1_500, 64 * otherWriters);
    const keyGenerationSeconds = secondsSince(keyStart);
    const homeShard = router.shardFor(keys.initial[0]!);
    ctx.log(
      `bucket ${keys.bucket} of ${router.bucketCount} (owner ${homeShard}): ${keys.initial.length.toLocaleString('en-US')} rows, ` +
        `${(keys.initialPayloadBytes / MB).toFixed(1)} MB of payload (keys found in ${keyGenerationSeconds.toFixed(1)} s)`,
    );
    const bareTable = `${ctx.schema}.bare`;
    for (let i = 0; i < 2; i++) {
      for (const name of [table, bareTable]) await ctx.admin(i, `CREATE TABLE ${name} (id text PRIMARY KEY, v bigint NOT NULL, payload text NOT NULL)`);
    }
    await router.registerShardedTable(table, 'id');
    const load = async (shardId: string, ids: readonly string[], lengths: readonly number[]) => {
      for (let offset = 0; offset < ids.length; offset += 5_000) {
        await ctx.admin(
          shardIndex(ctx, shardId),
          `INSERT INTO ${table} (id, v, payload) SELECT id, 0, ${PAYLOAD_SQL('id', 'len')} FROM unnest($1::text[], $2::int[]) AS u(id, len)`,
          [ids.slice(offset, offset + 5_000), lengths.slice(offset, offset + 5_000)],
        );
      }
    };
    await load(homeShard, keys.initial, keys.initialLengths);
    for (const [shardId, others] of keys.otherByShard) await load(shardId, others, others.map((_, i) => payloadLength(i)));
    for (let i = 0; i < 2; i++) await ctx.admin(i, `ANALYZE ${table}`);

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
    const failures: string[] = [];
    const moveGuards: GuardCheck[] = [];

    // --- Moves: first with nobody writing, then rounds under writers, back and forth -----------
    const rounds: MoveRound[] = [];
    const totalMoves = idleMoves + loadRounds;
    if (totalMoves % 2 !== 0) throw new Error('an even number of moves is needed to bring the bucket home');
    const stepAt = new Map<string, number>();
    const rebalancer = router.rebalancer({
      onProgress: (progress) => {
        if (!stepAt.has(progress.current.step)) stepAt.set(progress.current.step, performance.now());
      },
    });
    for (let r = 0; r < totalMoves; r++) {
      const underWrites = r >= idleMoves;
      const from = router.shardFor(keys.initial[0]!);
      const to = shardIds.find((id) => id !== from)!;
      let writes: WriteLoad | undefined;
      if (underWrites) {
        writes = new WriteLoad(router, table, shares, keys.otherByShard.get(from)!, otherWriters, model, failures);
        await sleep(warmMillis);
        writes.phase = 'quiet';
        await sleep(quietMillis);
        writes.startMove();
      }
      const moveStart = nowNs();
      stepAt.clear();
      let report;
      try {
        report = await rebalancer.moveBucket(keys.bucket, to);
      } finally {
        await writes?.stop();
      }
      const moveMillis = secondsSince(moveStart) * 1e3;
      const move: MoveReport | undefined = report.moves[0];
      if (report.moves.length !== 1 || move === undefined || move.source !== from || move.target !== to) {
        moveGuards.push(check(`move ${r + 1} moved bucket ${keys.bucket} from ${from} to ${to}`, false, `report: ${JSON.stringify(report.moves)}`));
        continue;
      }
      const snapshotCopyMillis = (stepAt.get('catching-up') ?? Number.NaN) - (stepAt.get('copying') ?? Number.NaN);
      const keysNow = [...keys.initial, ...shares.flatMap((share) => share.spare.slice(0, share.nextSpare))];
      const bare = await bareCopy(ctx, table, bareTable, keysNow, shardIndex(ctx, to), shardIndex(ctx, from));
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
        copyMBPerSecond: move.bytesCopied / MB / (move.copyMillis / 1e3),
        copyRowsPerSecond: move.rowsCopied / (move.copyMillis / 1e3),
        bare,
        ...(writes === undefined
          ? {}
          : {
              moving: { quiet: summarizeLatencies(writes.moving.quiet), move: summarizeLatencies(writes.moving.move) },
              other: { quiet: summarizeLatencies(writes.other.quiet), move: summarizeLatencies(writes.other.move) },
              slowestMovingWriteStartedAtMillis: writes.slowestMovingWrite.startedAtMillis,
            }),
      };
      rounds.push(result);
      ctx.log(
        `move ${r + 1} ${from} -> ${to}${underWrites ? '' : ' (no writers)'}: ${move.rowsCopied.toLocaleString('en-US')} rows, ${(move.bytesCopied / MB).toFixed(1)} MB ` +
          `copied in ${move.copyMillis} ms (snapshot ${Math.round(snapshotCopyMillis)}) = ${result.copyMBPerSecond.toFixed(1)} MB/s (bare copy ${bare.mbPerSecond.toFixed(1)}), ` +
          `pause ${move.pauseMillis} ms, move ${Math.round(moveMillis)} ms` +
          (result.moving === undefined
            ? ''
            : `; moving-bucket writes p50/p99/max ${result.moving.move.p50.toFixed(1)}/${result.moving.move.p99.toFixed(1)}/${result.moving.move.max.toFixed(1)} ms ` +
              `(no move: p99 ${result.moving.quiet.p99.toFixed(1)}), other buckets p99 ${result.other!.move.p99.toFixed(1)} ms (no move: ${result.other!.quiet.p99.toFixed(1)})`),
      );
    }

    // --- Guard for the moves: every acknowledged write is on the bucket's owner, nothing left behind
    await router.refreshMap();
    const bucketKeys = [...keys.initial, ...shares.flatMap((share) => share.spare.slice(0, share.nextSpare))];
    const owner = router.shardFor(keys.initial[0]!);
    const elsewhere = shardIds.filter((id) => id !== owner);
    const onOwner = await countKeysOn(ctx, owner, table, bucketKeys);
    let leftBehind = 0;
    for (const id of elsewhere) leftBehind += await countKeysOn(ctx, id, table, bucketKeys);
    const values = await readValues(ctx, router, table, [...model.keys()]);
    const wrongValues = [...model].filter(([key, v]) => values.get(key) !== v).length;
    const verify = await rebalancer.verify();
    const movingWrites = rounds.reduce((sum, r) => sum + (r.moving ? r.moving.quiet.writes + r.moving.move.writes : 0), 0);
    const otherWrites = rounds.reduce((sum, r) => sum + (r.other ? r.other.quiet.writes + r.other.move.writes : 0), 0);
    moveGuards.push(
      check('no write failed during the moves', failures.length === 0, failures.length === 0 ? `${movingWrites + otherWrites} timed writes, none failed` : failures.slice(0, 3).join('; ')),
      check(
        'the bucket is back home, every row once, on its owner',
        owner === homeShard && onOwner === bucketKeys.length && leftBehind === 0,
        `${totalMoves} moves; owner ${owner} (home ${homeShard}) holds ${onOwner}/${bucketKeys.length} rows, ${leftBehind} left on ${elsewhere.join(', ')}`,
      ),
      check('every acknowledged write is there (v = its UPDATE count)', wrongValues === 0, `${model.size - wrongValues}/${model.size} keys right`),
      check('every bare copy copied the whole bucket', rounds.every((r) => r.bare.rows >= keys.initial.length), `rows per bare copy: ${rounds.map((r) => r.bare.rows).join(', ')}`),
      check('every move copied the whole bucket', rounds.every((r) => r.rowsCopied >= keys.initial.length), `rows copied per move: ${rounds.map((r) => r.rowsCopied).join(', ')} (bucket had ${keys.initial.length} before the writers)`),
      check('verify: placement clean, no open move', verify.ok && verify.openMoves === 0, `ok ${verify.ok}, ${verify.misplaced.length} misplaced, ${verify.openMoves} open moves`),
    );

    // --- Fencing cost: the same INSERTs into a registered (fenced) and an unregistered table ------
    const concurrency = 8;
    // Short rounds, many of them: the two halves of a pair then see nearly the same machine noise.
    const insertsPerRound = size(ctx, 1_000, 500);
    const fenceRounds = size(ctx, 40, 8);
    const fenceTable = (variant: Variant) => `${ctx.schema}.${variant}`;
    for (let i = 0; i < 2; i++) {
      for (const variant of VARIANTS) await ctx.admin(i, `CREATE TABLE ${fenceTable(variant)} (id text PRIMARY KEY, v bigint NOT NULL, payload text NOT NULL)`);
    }
    await router.registerShardedTable(fenceTable('fenced'), 'id');
    const runs: Record<Variant, number> = { fenced: 0, plain: 0 };
    let fenceWrong = 0;
    ctx.log(`fence: ${concurrency} in flight, 2 warm-up rounds, then ${fenceRounds} rounds of ${insertsPerRound} single-row INSERTs per table`);
    const fenceResults = await interleavedRounds(
      VARIANTS,
      { rounds: fenceRounds, warmupRounds: 2 },
      async (variant) => {
        const run = runs[variant]++;
        const sql = `INSERT INTO ${fenceTable(variant)} (id, v, payload) VALUES ($1, $2, $3)`;
        const result = await closedLoop(insertsPerRound, concurrency, async (index) => {
          const key = `f${run}-${index}`;
          const inserted = await router.execute(key, sql, [key, index, FENCE_PAYLOAD]);
          return inserted.rowCount === 1;
        });
        fenceWrong += result.wrong;
        return result;
      },
      (r, q) => {
        if (r % 5 === 0 || r === fenceRounds) ctx.log(`round ${r}: fenced ${Math.round(q.fenced.opsPerSecond)}  plain ${Math.round(q.plain.opsPerSecond)} inserts/s  (ratio ${(q.fenced.opsPerSecond / q.plain.opsPerSecond).toFixed(3)})`);
      },
    );

    // Statement-level interleaving: the same closed loop alternates the two tables (A B B A ...).
    const alternatingStatements = size(ctx, 20_000, 4_000);
    const alternatingVariant = (index: number): Variant => VARIANTS[(index + (index >> 1)) % 2]!;
    const alternatingRun = await closedLoop(
      alternatingStatements,
      concurrency,
      async (index) => {
        const key = `a-${index}`;
        const inserted = await router.execute(key, `INSERT INTO ${fenceTable(alternatingVariant(index))} (id, v, payload) VALUES ($1, $2, $3)`, [key, index, FENCE_PAYLOAD]);
        return inserted.rowCount === 1;
      },
      { latencies: true },
    );
    fenceWrong += alternatingRun.wrong;
    const latencyOf = (variant: Variant) => alternatingRun.latenciesMillis.filter((_, index) => alternatingVariant(index) === variant);
    const mean = (values: readonly number[]) => values.reduce((sum, v) => sum + v, 0) / values.length;
    const alternating = {
      statements: alternatingStatements,
      meanMillis: { fenced: mean(latencyOf('fenced')), plain: mean(latencyOf('plain')) },
      p50Millis: { fenced: percentile(latencyOf('fenced'), 50), plain: percentile(latencyOf('plain'), 50) },
      ratio: mean(latencyOf('fenced')) / mean(latencyOf('plain')),
    };
    ctx.log(
      `alternating statements: mean ${alternating.meanMillis.fenced.toFixed(3)} ms registered vs ${alternating.meanMillis.plain.toFixed(3)} ms unregistered ` +
        `(p50 ${alternating.p50Millis.fenced.toFixed(3)} vs ${alternating.p50Millis.plain.toFixed(3)})`,
    );

    // The same INSERTs in a server-side loop on a router connection: the trigger's own cost.
    const loopShard = shardIds[0]!;
    const loopInserts = size(ctx, 5_000, 2_000);
    const loopRounds = size(ctx, 15, 5);
    const loopRuns: Record<Variant, number> = { fenced: 0, plain: 0 };
    const serverLoop = async (variant: Variant, prefix: string, commitEach: boolean): Promise<number> => {
      const insert = `INSERT INTO ${fenceTable(variant)} (id, v, payload) VALUES ('${prefix}-' || i, i, repeat('f', ${FENCE_PAYLOAD.length}))`;
      // set_config(..., true) lasts one transaction: nothing leaks into the pooled connection.
      const body = commitEach ? `PERFORM set_config('synchronous_commit', 'off', true); ${insert}; COMMIT;` : `${insert};`;
      const start = nowNs();
      await router.executeOn(loopShard, `DO $loop$ BEGIN FOR i IN 1..${loopInserts} LOOP ${body} END LOOP; END $loop$`);
      return (secondsSince(start) * 1e6) / loopInserts;
    };
    const loopResults = await interleavedRounds(VARIANTS, { rounds: loopRounds, warmupRounds: 1 }, async (variant) => {
      const run = loopRuns[variant]++;
      return { commitEach: await serverLoop(variant, `c${run}`, true), oneTransaction: await serverLoop(variant, `d${run}`, false) };
    });
    const loopSummary = (mode: 'commitEach' | 'oneTransaction'): ServerLoopResult => {
      const fenced = loopResults.fenced.map((r) => r[mode]);
      const plain = loopResults.plain.map((r) => r[mode]);
      return {
        microsPerInsert: { fenced: summarize(fenced), plain: summarize(plain) },
        ratio: summarize(pairedRatios(fenced, plain)).median,
        extraMicros: median(fenced.map((f, i) => f - plain[i]!)),
      };
    };
    const serverSide = { shardId: loopShard, insertsPerRound: loopInserts, rounds: loopRounds, commitEach: loopSummary('commitEach'), oneTransaction: loopSummary('oneTransaction') };
    ctx.log(`server-side loop on ${loopShard}, COMMIT after each INSERT: ${describeServerLoop(serverSide.commitEach)}`);
    ctx.log(`server-side loop on ${loopShard}, one transaction: ${describeServerLoop(serverSide.oneTransaction)}`);
    const ips = (v: Variant) => fenceResults[v].map((r) => r.opsPerSecond);
    const cpu = (v: Variant) => fenceResults[v].map((r) => r.cpuMicrosPerOp);
    const insertsPerSecond = { fenced: summarize(ips('fenced')), plain: summarize(ips('plain')) };
    const fenceRatio = summarize(pairedRatios(ips('fenced'), ips('plain'))).median;
    const fence: FenceDetails = {
      concurrency,
      insertsPerRound,
      rounds: fenceRounds,
      payloadBytes: FENCE_PAYLOAD.length,
      insertsPerSecond,
      ratio: fenceRatio,
      ratioOfMedians: insertsPerSecond.fenced.median / insertsPerSecond.plain.median,
      cpuMicrosPerInsert: { fenced: summarize(cpu('fenced')), plain: summarize(cpu('plain')) },
      serverSide,
      alternating,
    };
    const expectedRows = (runs.fenced + runs.plain) * insertsPerRound + alternatingStatements + 2 * (loopRuns.fenced + loopRuns.plain) * loopInserts;
    let fenceRows = 0;
    const triggers: Record<Variant, number> = { fenced: 0, plain: 0 };
    for (let i = 0; i < 2; i++) {
      for (const variant of VARIANTS) {
        fenceRows += (await ctx.admin<{ n: number }>(i, `SELECT count(*)::int AS n FROM ${fenceTable(variant)}`))[0]?.n ?? 0;
        triggers[variant] += await triggerCount(ctx, i, fenceTable(variant));
      }
    }

    // --- Figures --------------------------------------------------------------------------------
    const idle = rounds.filter((r) => !r.underWrites);
    const loaded = rounds.filter((r) => r.underWrites && r.moving !== undefined);
    // The move where `pick` is highest (the worst), so its baseline comes from the same round.
    const worstRound = (pick: (r: MoveRound) => number): MoveRound | undefined => loaded.reduce<MoveRound | undefined>((a, r) => (a === undefined || pick(r) > pick(a) ? r : a), undefined);
    const byMovingP99 = worstRound((r) => r.moving!.move.p99);
    const byMovingMax = worstRound((r) => r.moving!.move.max);
    const byOtherP99 = worstRound((r) => r.other!.move.p99);
    const worst = {
      movingP99: byMovingP99?.moving!.move.p99 ?? Number.NaN,
      movingQuietP99: byMovingP99?.moving!.quiet.p99 ?? Number.NaN,
      movingMax: byMovingMax?.moving!.move.max ?? Number.NaN,
      pauseMillisAtMax: byMovingMax?.pauseMillis ?? Number.NaN,
      pauseMillis: max(loaded.map((r) => r.pauseMillis)),
      otherP99: byOtherP99?.other!.move.p99 ?? Number.NaN,
      otherQuietP99: byOtherP99?.other!.quiet.p99 ?? Number.NaN,
    };
    const loadedCopy = summarize(loaded.map((r) => r.copyMBPerSecond));
    const figures: Figure[] = [];
    if (idle.length > 0) {
      const idleCopy = summarize(idle.map((r) => r.copyMBPerSecond));
      figures.push({
        label: 'bucket copy rate, no writers',
        value: idleCopy.median,
        unit: 'MB/s',
        baseline: { label: 'bare JSON copy, same rows', value: median(idle.map((r) => r.bare.mbPerSecond)) },
        ratio: median(idle.map((r) => r.copyMBPerSecond / r.bare.mbPerSecond)),
        note:
          `median of ${idle.length} move(s) of ${(median(idle.map((r) => r.bytesCopied)) / MB).toFixed(1)} MB (row JSON), ${Math.round(median(idle.map((r) => r.copyRowsPerSecond))).toLocaleString('en-US')} rows/s; ` +
          `the source table holds little besides this bucket, and the copy's bucket_of() filter scans the whole table`,
        target: atLeast('value', idleCopy.median, COPY_RATE_TARGET_MB_PER_SECOND, 'MB/s'),
      });
    }
    if (loaded.length > 0) {
      figures.push(
        {
          label: 'bucket copy rate, under writes',
          value: loadedCopy.median,
          unit: 'MB/s',
          note: `median of ${loaded.length} moves (min ${loadedCopy.min.toFixed(1)}); ${Math.round(median(loaded.map((r) => r.copyRowsPerSecond))).toLocaleString('en-US')} rows/s; copyMillis includes the catch-up of the writers' changes`,
          target: atLeast('value', loadedCopy.median, COPY_RATE_TARGET_MB_PER_SECOND, 'MB/s'),
        },
        {
          label: 'moving-bucket write p99 during a move',
          value: worst.movingP99,
          unit: 'ms',
          baseline: { label: 'same writers, no move', value: worst.movingQuietP99 },
          ratio: worst.movingP99 / worst.movingQuietP99,
          note: `worst of ${loaded.length} moves (baseline: that move's round); p50 ${median(loaded.map((r) => r.moving!.move.p50)).toFixed(1)} ms (median of moves); ${movingWriters} writers`,
          target: atMost('value', worst.movingP99, MOVING_WRITE_P99_TARGET_MILLIS, 'ms'),
        },
        {
          label: 'moving-bucket write max during a move',
          value: worst.movingMax,
          unit: 'ms',
          baseline: { label: 'that move\'s pauseMillis', value: worst.pauseMillisAtMax },
          ratio: worst.movingMax / worst.pauseMillisAtMax,
          note: `worst of ${loaded.length} moves; pause per move: ${loaded.map((r) => r.pauseMillis).join(', ')} ms`,
        },
        {
          label: 'other-bucket write p99 during a move',
          value: worst.otherP99,
          unit: 'ms',
          baseline: { label: 'same writers, no move', value: worst.otherQuietP99 },
          ratio: worst.otherP99 / worst.otherQuietP99,
          note: `worst of ${loaded.length} moves (baseline: that move's round); other buckets of the source shard, ${otherWriters} writers`,
        },
      );
    }
    figures.push({
      label: 'single-row INSERT, registered table (fence)',
      value: insertsPerSecond.fenced.median,
      unit: 'queries/s',
      baseline: { label: 'unregistered table', value: insertsPerSecond.plain.median },
      ratio: fenceRatio,
      note: `median of ${fenceRounds} paired rounds; per-round ratios ${Math.min(...pairedRatios(ips('fenced'), ips('plain'))).toFixed(2)}..${Math.max(...pairedRatios(ips('fenced'), ips('plain'))).toFixed(2)}`,
      target: atLeast('ratio', fenceRatio, FENCE_RATIO_TARGET, 'x'),
    });
    figures.push({
      label: 'INSERT latency, registered table, statements alternated',
      value: alternating.meanMillis.fenced,
      unit: 'ms',
      baseline: { label: 'unregistered table', value: alternating.meanMillis.plain },
      ratio: alternating.ratio,
      note:
        `mean over ${alternatingStatements.toLocaleString('en-US')} INSERTs alternating between the tables in one closed loop (${concurrency} in flight); lower is better; ` +
        `+${((alternating.meanMillis.fenced - alternating.meanMillis.plain) * 1e3).toFixed(0)} µs per statement (both see the same queueing, so this ratio understates a CPU-bound throughput loss)`,
    });
    figures.push({
      label: 'INSERT + COMMIT in a server-side loop, registered table',
      value: serverSide.commitEach.microsPerInsert.fenced.median,
      unit: 'µs',
      baseline: { label: 'unregistered table', value: serverSide.commitEach.microsPerInsert.plain.median },
      ratio: serverSide.commitEach.ratio,
      note:
        `median of ${loopRounds} paired rounds of ${loopInserts} INSERTs, a COMMIT after each, in one DO block on ${loopShard}: the fence adds ${serverSide.commitEach.extraMicros.toFixed(1)} µs per transaction ` +
        `(all in one transaction: +${serverSide.oneTransaction.extraMicros.toFixed(1)} µs, ${serverSide.oneTransaction.microsPerInsert.fenced.median.toFixed(1)} vs ${serverSide.oneTransaction.microsPerInsert.plain.median.toFixed(1)} µs); lower is better`,
    });

    return {
      setup:
        `router over ${shardIds.join(', ')} (pool max ${poolMax}), ${router.bucketCount} buckets. ${table} (id text PK, v bigint, payload text ${MIN_PAYLOAD}-${MAX_PAYLOAD} B): ` +
        `bucket ${keys.bucket} loaded with ${keys.initial.length.toLocaleString('en-US')} rows (${(keys.initialPayloadBytes / MB).toFixed(1)} MB payload) and moved ${totalMoves} times back and forth with moveBucket: ` +
        `${idleMoves} time(s) with no writers, then ${loadRounds} time(s) while ${movingWriters} writers send single-row UPDATE (4 of 5) / INSERT (1 of 5) to the bucket's keys and ${otherWriters} send UPDATEs to other buckets of the source ` +
        `through router.execute; each of those rounds first runs the same writers ${quietMillis} ms with no move (baseline). Copy MB/s = bytesCopied (row JSON, MB = 2^20 B) / copyMillis (copy start to cutover lock); ` +
        `after each move the same rows are copied back with one SELECT row_to_json by key and one INSERT json_populate_recordset (baseline). ` +
        `Fence: ${concurrency} in flight, ${fenceRounds} interleaved rounds of ${insertsPerRound} single-row INSERTs (${FENCE_PAYLOAD.length} B payload) through router.execute into a registered vs an identical unregistered table; ` +
        `then ${alternatingStatements} INSERTs alternating between the two in one closed loop; and ${loopRounds} interleaved rounds of ${loopInserts} INSERTs in a DO loop on one router connection, with a COMMIT after each (synchronous_commit off) and in one transaction`,
      figures,
      guard: [
        ...moveGuards,
        check('fence: every INSERT inserted one row', fenceWrong === 0 && fenceRows === expectedRows, `${fenceRows}/${expectedRows} rows, ${fenceWrong} wrong answers (warm-up included)`),
        check('fence: the registered table has its trigger, the plain one none', triggers.fenced === 2 && triggers.plain === 0, `triggers on 2 shards: registered ${triggers.fenced}, plain ${triggers.plain}`),
      ],
      details: {
        shardIds,
        bucketCount: router.bucketCount,
        bucket: keys.bucket,
        homeShard,
        initialRows: keys.initial.length,
        initialPayloadMB: keys.initialPayloadBytes / MB,
        movingWriters,
        otherWriters,
        quietMillis,
        keyGenerationSeconds,
        idleMoves,
        loadedMoves: loadRounds,
        rounds,
        worst,
        fence,
      },
    };
  },
  format(outcome) {
    const d = outcome.details;
    const f1 = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? '' : v.toFixed(1));
    const moves = formatTable(
      ['move', 'writers', 'rows', 'MB', 'copy ms', 'snapshot ms', 'MB/s', 'rows/s', 'bare MB/s', 'pause ms', 'move ms', 'moving p50', 'p99', 'max', 'p99 no move', 'other p99', 'p99 no move'],
      d.rounds.map((r) => [
        `${r.round} ${r.from}->${r.to}`,
        r.underWrites ? `${d.movingWriters}+${d.otherWriters}` : '0',
        String(r.rowsCopied),
        f1(r.bytesCopied / MB),
        String(r.copyMillis),
        String(Math.round(r.snapshotCopyMillis)),
        f1(r.copyMBPerSecond),
        String(Math.round(r.copyRowsPerSecond)),
        f1(r.bare.mbPerSecond),
        String(r.pauseMillis),
        String(Math.round(r.moveMillis)),
        f1(r.moving?.move.p50),
        f1(r.moving?.move.p99),
        f1(r.moving?.move.max),
        f1(r.moving?.quiet.p99),
        f1(r.other?.move.p99),
        f1(r.other?.quiet.p99),
      ]),
    );
    const fence = d.fence;
    const q = (v: number) => Math.round(v).toString();
    const row = (name: string, s: Series, cpu: Series) => [name, q(s.median), q(s.min), q(s.max), cpu.median.toFixed(1)];
    const fenceTable = formatTable(
      ['single-row INSERT into', 'median inserts/s', 'min', 'max', 'CPU µs/insert'],
      [row('registered table (fence trigger)', fence.insertsPerSecond.fenced, fence.cpuMicrosPerInsert.fenced), row('unregistered table', fence.insertsPerSecond.plain, fence.cpuMicrosPerInsert.plain)],
    );
    return (
      `${moves}\n(write latencies in ms; "no move": the same writers just before the move; bare: the same rows copied back with one SELECT and one INSERT)\n` +
      `copy target >= ${COPY_RATE_TARGET_MB_PER_SECOND} MB/s; moving-bucket write p99 target <= ${MOVING_WRITE_P99_TARGET_MILLIS} ms (worst ${d.worst.movingP99.toFixed(1)} ms)\n\n` +
      `${fenceTable}\nratio registered/unregistered ${fence.ratio.toFixed(3)} (median of paired rounds; ratio of medians ${fence.ratioOfMedians.toFixed(3)}); target >= ${FENCE_RATIO_TARGET}\n` +
      `alternating statements (${fence.alternating.statements}, one closed loop): mean ${fence.alternating.meanMillis.fenced.toFixed(3)} ms registered vs ${fence.alternating.meanMillis.plain.toFixed(3)} ms unregistered ` +
      `(ratio ${fence.alternating.ratio.toFixed(3)}; p50 ${fence.alternating.p50Millis.fenced.toFixed(3)} vs ${fence.alternating.p50Millis.plain.toFixed(3)})\n` +
      `server-side loop on ${fence.serverSide.shardId}, COMMIT after each INSERT: ${describeServerLoop(fence.serverSide.commitEach)}\n` +
      `server-side loop on ${fence.serverSide.shardId}, one transaction: ${describeServerLoop(fence.serverSide.oneTransaction)}`
    );
  },
};
