import { redactConnectionString } from '../config.js';
import { ShardRouterError } from '../errors.js';
import type { Rebalancer, RebalanceProgress, RebalanceReport, ResumeReport, VerifyReport } from '../rebalance/rebalancer.js';
import { ShardRouter } from '../router/shard-router.js';
import { nonNegativeInteger, parseFlags, positiveInteger, shardUrlsFrom } from './args.js';
import { CLI_APPLICATION_NAME, byShardId, discoverCluster } from './discover.js';
import type { DiscoveredCluster } from './discover.js';
import { formatAge, formatTable, plural } from './format.js';
import { withRouter } from './inspect.js';

/**
 * `pg-shard-router rebalance | move-bucket | add-shard | remove-shard | verify`: the rebalancer
 * (docs/rebalance.md) for operators, over the shards' URLs. Every command that changes something
 * first prints its plan (a dry run of the same call), then runs it with a progress line on stderr.
 */

const DEFAULT_CATALOG_SCHEMA = 'shard_router';
/** Exit code of `verify` when rows are misplaced or reference tables differ. */
export const EXIT_VERIFY_FAILED = 2;

const CLUSTER_FLAGS = {
  shards: { type: 'string' },
  'catalog-schema': { type: 'string', default: DEFAULT_CATALOG_SCHEMA },
  json: { type: 'boolean', default: false },
} as const;

const DRY_RUN_FLAG = { 'dry-run': { type: 'boolean', default: false } } as const;

type Write = (text: string) => void;

/** Where the progress line goes (process.stderr): a redrawn line on a terminal, else a log line now and then. */
export interface ProgressStream {
  write(text: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

export interface RebalanceCliIo {
  /** Results (stdout). */
  readonly write: Write;
  /** The progress line (stderr). */
  readonly progress: ProgressStream;
}

// ---------------------------------------------------------------------------------------------
// Pure formatting (unit-tested in test/unit/cli-progress.test.ts)

const MB = 1_000_000;
const BAR_WIDTH = 20;

/** 1234567 -> "1,234,567". */
function thousands(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

function megabytes(bytes: number): string {
  return (bytes / MB).toFixed(1);
}

/** Buckets finished, counting the running move once it reported 'done' (the rebalancer counts it only after). */
function bucketsFinished(progress: RebalanceProgress): number {
  const done = progress.bucketsDone + (progress.current.step === 'done' ? progress.current.buckets.length : 0);
  return Math.min(done, progress.bucketsTotal);
}

/**
 * One progress line: bar, buckets done/total, the running move, rows and MB copied, MB/s and an
 * ETA. `elapsedMillis` is the time since the rebalance started at the moment of drawing (the
 * progress event may be older); the ETA assumes the remaining buckets take as long each as the
 * finished ones did, so it is unknown ("--") until the first move finishes.
 *
 * @example
 * [#####...............]  16/64 buckets  move 2/4 s0->s4 copying  120,000 rows  14.2 MB  3.1 MB/s  ETA 13.8 s
 */
export function formatProgress(progress: RebalanceProgress, elapsedMillis: number = progress.elapsedMillis): string {
  const total = progress.bucketsTotal;
  const done = bucketsFinished(progress);
  const filled = total === 0 ? BAR_WIDTH : Math.min(BAR_WIDTH, Math.floor((BAR_WIDTH * done) / total));
  const bar = `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}]`;
  const seconds = Math.max(0, elapsedMillis) / 1_000;
  const rate = seconds > 0 ? progress.bytesCopied / MB / seconds : 0;
  let eta: string;
  if (done >= total) eta = 'ETA 0 s';
  else if (done === 0) eta = 'ETA --';
  else eta = `ETA ${formatAge((elapsedMillis * (total - done)) / done)}`;
  const current = progress.current;
  return [
    bar,
    `${done}/${total} buckets`,
    `${current.resumed ? 'resumed ' : ''}move ${progress.move}/${progress.moves} ${current.source}->${current.target} ${current.step}`,
    `${thousands(progress.rowsCopied)} rows`,
    `${megabytes(progress.bytesCopied)} MB`,
    `${rate.toFixed(1)} MB/s`,
    eta,
  ].join('  ');
}

/** [0,1,2,3,7,9,10] -> "0-3, 7, 9-10". */
export function formatBuckets(buckets: readonly number[]): string {
  const sorted = [...buckets].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(j === i ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(', ');
}

/** The plan of a (dry-run) report, with buckets per shard before and after. */
export function formatPlan(report: RebalanceReport, before: ReadonlyMap<string, number>, title: string): string {
  const bucketsMoving = report.plan.reduce((sum, move) => sum + move.buckets.length, 0);
  if (report.plan.length === 0) return `${title}: nothing to move\n${formatShardCounts(report, before)}\n`;
  const lines = [`${title}: ${plural(report.plan.length, 'move')}, ${plural(bucketsMoving, 'bucket')}`];
  lines.push(
    indent(
      formatColumns(
        ['move', 'from', 'to', 'buckets', 'which'],
        report.plan.map((move, index) => [String(index + 1), move.source, move.target, String(move.buckets.length), formatBuckets(move.buckets)]),
        [0, 3],
      ),
    ),
  );
  lines.push(formatShardCounts(report, before));
  return `${lines.join('\n')}\n`;
}

function formatShardCounts(report: RebalanceReport, before: ReadonlyMap<string, number>): string {
  const ids = [...new Set([...before.keys(), ...Object.keys(report.bucketsPerShard)])].sort(byShardId);
  const rows = ids.map((id) => [id, String(before.get(id) ?? 0), String(report.bucketsPerShard[id] ?? 0)]);
  return `buckets per shard:\n${indent(formatTable(['shard', 'now', 'after'], rows))}`;
}

/** The end of a run: totals, the longest write pause, buckets per shard. */
export function formatRunSummary(report: RebalanceReport, elapsedMillis: number): string {
  const moves = report.moves;
  const buckets = moves.reduce((sum, move) => sum + move.buckets.length, 0);
  const rows = moves.reduce((sum, move) => sum + move.rowsCopied, 0);
  const bytes = moves.reduce((sum, move) => sum + move.bytesCopied, 0);
  const lines = [
    `done: ${plural(moves.length, 'move')}, ${plural(buckets, 'bucket')}, ${thousands(rows)} rows, ${megabytes(bytes)} MB copied in ${formatAge(elapsedMillis)}; bucket map version ${report.mapVersion}`,
  ];
  const longest = moves.reduce<(typeof moves)[number] | undefined>((best, move) => (best === undefined || move.pauseMillis > best.pauseMillis ? move : best), undefined);
  if (longest) {
    lines.push(
      `longest write pause: ${formatAge(longest.pauseMillis)} (move ${longest.moveId}, ${longest.source}->${longest.target}, buckets ${formatBuckets(longest.buckets)})`,
    );
  }
  const ids = Object.keys(report.bucketsPerShard).sort(byShardId);
  lines.push('buckets per shard:', indent(formatTable(['shard', 'buckets'], ids.map((id) => [id, String(report.bucketsPerShard[id])]))));
  return `${lines.join('\n')}\n`;
}

export function formatResume(report: ResumeReport): string {
  const total = report.finished.length + report.restarted.length + report.undone.length;
  if (total === 0) return 'resume: no open moves\n';
  const lines = [`resume: ${plural(total, 'open move')}`];
  for (const id of report.finished) lines.push(`  finished (was switched)  ${id}`);
  for (const move of report.restarted) {
    lines.push(`  copied again and switched  ${move.moveId}  ${move.source}->${move.target}  buckets ${formatBuckets(move.buckets)}  ${thousands(move.rowsCopied)} rows`);
  }
  for (const id of report.undone) lines.push(`  undone (source keeps the buckets)  ${id}`);
  return `${lines.join('\n')}\n`;
}

export function formatVerify(clusterId: string, report: VerifyReport): string {
  const lines = [`cluster ${clusterId}, bucket map version ${report.mapVersion}: ${plural(report.tablesChecked, 'registered table')} checked`];
  const sharded = Object.keys(report.rowCounts).sort();
  if (sharded.length > 0) {
    const shardIds = [...new Set(sharded.flatMap((table) => Object.keys(report.rowCounts[table]!)))].sort(byShardId);
    const rows = sharded.map((table) => {
      const counts = report.rowCounts[table]!;
      const total = Object.values(counts).reduce((sum, n) => sum + n, 0);
      return [table, ...shardIds.map((id) => thousands(counts[id] ?? 0)), thousands(total)];
    });
    lines.push('', 'sharded tables, rows per shard:', indent(formatTable(['table', ...shardIds, 'total'], rows)));
  }
  lines.push('');
  if (report.misplaced.length === 0) {
    lines.push('misplaced rows: none');
  } else {
    const count = report.misplaced.reduce((sum, entry) => sum + entry.rows, 0);
    lines.push(`misplaced rows: ${thousands(count)} (on a shard that does not own their bucket)`);
    lines.push(
      indent(
        formatColumns(
          ['table', 'shard', 'bucket', 'owner', 'rows', 'sample keys'],
          report.misplaced.map((entry) => [entry.table, entry.shardId, String(entry.bucket), entry.owner, thousands(entry.rows), entry.sampleKeys.join(', ')]),
          [2, 4],
        ),
      ),
    );
  }
  const referenceTables = report.tablesChecked - sharded.length;
  if (report.divergent.length === 0) {
    lines.push(`reference tables: ${referenceTables === 0 ? 'none registered' : `${referenceTables} identical on every shard`}`);
  } else {
    lines.push(`reference tables: ${report.divergent.length} of ${referenceTables} differ between shards`);
    for (const table of report.divergent) {
      lines.push(`  ${table.table}`);
      lines.push(indent(formatColumns(['shard', 'rows', 'digest'], table.shards.map((shard) => [shard.shardId, thousands(shard.rows), shard.digest]), [1]), 4));
    }
  }
  if (report.openMoves > 0) {
    lines.push(
      `open moves: ${report.openMoves} (a rebalancer stopped midway; their rows may be on two shards): run pg-shard-router rebalance --resume`,
    );
  }
  for (const shard of report.unreachable) lines.push(`removed shard ${shard.shardId} could not be checked: ${shard.error}`);
  lines.push('', report.ok ? 'OK' : 'NOT OK: misplaced or divergent rows (exit code 2)');
  return `${lines.join('\n')}\n`;
}

/** A table whose columns are left-aligned except the `right` ones (numbers). */
function formatColumns(header: readonly string[], rows: readonly (readonly string[])[], right: readonly number[]): string {
  const all = [header, ...rows];
  const widths = header.map((_, col) => Math.max(...all.map((row) => (row[col] ?? '').length)));
  const line = (row: readonly string[]) =>
    row
      .map((cell, col) => (right.includes(col) ? cell.padStart(widths[col]!) : cell.padEnd(widths[col]!)))
      .join('  ')
      .trimEnd();
  return all.map(line).join('\n');
}

function indent(text: string, by = 2): string {
  const pad = ' '.repeat(by);
  return text
    .split('\n')
    .map((line) => pad + line)
    .join('\n');
}

// ---------------------------------------------------------------------------------------------
// The progress line

/**
 * Draws RebalanceProgress on a stream. On a terminal one line is redrawn in place (`\r`, cut to
 * the terminal's width) at most every `redrawMillis` and on every move's end; elsewhere (a log
 * file, CI) a line is written per finished move and otherwise at most every `logMillis`, only
 * when something changed. A timer keeps the elapsed time, rate and ETA fresh between events.
 */
export class ProgressPrinter {
  readonly #stream: ProgressStream;
  readonly #now: () => number;
  readonly #tty: boolean;
  readonly #interval: number;
  #latest: RebalanceProgress | undefined;
  #receivedAt = 0;
  #lastDrawn = -Infinity;
  #changed = false;
  #drewLine = false;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(stream: ProgressStream, options: { now?: () => number; redrawMillis?: number; logMillis?: number } = {}) {
    this.#stream = stream;
    this.#now = options.now ?? Date.now;
    this.#tty = stream.isTTY === true;
    this.#interval = this.#tty ? (options.redrawMillis ?? 200) : (options.logMillis ?? 1_000);
  }

  update(progress: RebalanceProgress): void {
    const previous = this.#latest;
    this.#latest = progress;
    this.#receivedAt = this.#now();
    this.#changed = true;
    this.#timer ??= setInterval(() => this.#tick(), this.#interval);
    this.#timer.unref?.();
    const moveEnded = progress.current.step === 'done' && previous?.current.step !== 'done';
    if (moveEnded || this.#receivedAt - this.#lastDrawn >= this.#interval) this.#draw();
  }

  /** Stops the timer; on a terminal draws the last state and ends the line. */
  finish(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#latest && (this.#tty || this.#changed)) this.#draw();
    if (this.#tty && this.#drewLine) this.#stream.write('\n');
    this.#drewLine = false;
  }

  #tick(): void {
    // A terminal line is redrawn for the clock; a log line only when there is news.
    if (this.#tty || this.#changed) this.#draw();
  }

  #draw(): void {
    const progress = this.#latest;
    if (!progress) return;
    const now = this.#now();
    const line = formatProgress(progress, progress.elapsedMillis + (now - this.#receivedAt));
    this.#lastDrawn = now;
    this.#changed = false;
    if (this.#tty) {
      const width = this.#stream.columns && this.#stream.columns > 1 ? this.#stream.columns - 1 : line.length;
      this.#stream.write(`\r${line.slice(0, width)}\x1b[K`);
      this.#drewLine = true;
    } else {
      this.#stream.write(`${line}\n`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Commands

interface ClusterArgs {
  readonly shards?: string | undefined;
  readonly 'catalog-schema': string;
}

async function connectCluster<T>(values: ClusterArgs, env: NodeJS.ProcessEnv, work: (router: ShardRouter, cluster: DiscoveredCluster) => Promise<T>): Promise<T> {
  const catalogSchema = values['catalog-schema'];
  const cluster = await discoverCluster(shardUrlsFrom(values.shards, env), catalogSchema);
  return withRouter(cluster, catalogSchema, (router) => work(router, cluster));
}

function usageError(usage: string, problem: string): ShardRouterError {
  return new ShardRouterError('INVALID_ARGUMENT', `${problem}\nusage: pg-shard-router ${usage}`);
}

function expectPositionals(positionals: readonly string[], names: readonly string[], usage: string): void {
  if (positionals.length < names.length) throw usageError(usage, `missing ${names.slice(positionals.length).map((name) => `<${name}>`).join(' ')}`);
  if (positionals.length > names.length) throw usageError(usage, `unexpected argument "${positionals[names.length]}"`);
}

function countsOf(router: ShardRouter): Map<string, number> {
  const counts = new Map<string, number>(router.shardIds.map((id) => [id, 0]));
  for (const [id, n] of router.bucketMap.bucketsPerShard()) counts.set(id, n);
  return counts;
}

/**
 * Prints the plan (a dry run of `call`), then, unless `dryRun`, runs `call` for real with the
 * progress line and prints the summary. Returns the report that was printed last.
 */
async function planAndRun(
  router: ShardRouter,
  rebalancerOf: (onProgress: (progress: RebalanceProgress) => void) => Rebalancer,
  call: (rebalancer: Rebalancer, dryRun: boolean) => Promise<RebalanceReport>,
  options: { dryRun: boolean; json: boolean; title: string; io: RebalanceCliIo; extra?: Record<string, unknown> },
): Promise<RebalanceReport> {
  const { io } = options;
  const printer = new ProgressPrinter(io.progress);
  const rebalancer = rebalancerOf((progress) => printer.update(progress));
  await router.refreshMap();
  const before = countsOf(router);
  const planned = await call(rebalancer, true);
  if (options.dryRun || planned.plan.length === 0) {
    // Nothing to move: the dry run's report is the result (with dryRun as asked).
    if (options.json) io.write(`${JSON.stringify({ clusterId: router.clusterId, ...options.extra, ...planned, dryRun: options.dryRun }, null, 2)}\n`);
    else io.write(formatPlan(planned, before, `${options.title}${options.dryRun ? ' (dry run: nothing changes)' : ''}`));
    return planned;
  }
  if (!options.json) io.write(formatPlan(planned, before, options.title));
  const started = Date.now();
  let report: RebalanceReport;
  try {
    report = await call(rebalancer, false);
  } finally {
    printer.finish();
  }
  if (options.json) io.write(`${JSON.stringify({ clusterId: router.clusterId, ...options.extra, ...report }, null, 2)}\n`);
  else io.write(`\n${formatRunSummary(report, Date.now() - started)}`);
  return report;
}

function rebalancerFactory(router: ShardRouter, bucketsPerMove: number | undefined) {
  return (onProgress: (progress: RebalanceProgress) => void) => router.rebalancer({ onProgress, ...(bucketsPerMove === undefined ? {} : { bucketsPerMove }) });
}

const REBALANCE_USAGE = 'rebalance [--by count|size] [--dry-run] [--resume [--undo]] [--buckets-per-move N]';

export async function rebalanceCommand(args: string[], env: NodeJS.ProcessEnv, io: RebalanceCliIo): Promise<number> {
  const { values } = parseFlags({
    args,
    options: {
      ...CLUSTER_FLAGS,
      ...DRY_RUN_FLAG,
      by: { type: 'string', default: 'count' },
      resume: { type: 'boolean', default: false },
      undo: { type: 'boolean', default: false },
      'buckets-per-move': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  const by = values.by;
  if (by !== 'count' && by !== 'size') throw usageError(REBALANCE_USAGE, `--by must be "count" or "size", got "${by}"`);
  const bucketsPerMoveText = values['buckets-per-move'];
  const bucketsPerMove = bucketsPerMoveText === undefined ? undefined : positiveInteger('--buckets-per-move', bucketsPerMoveText);
  const dryRun = values['dry-run'];
  if (values.undo && !values.resume) throw usageError(REBALANCE_USAGE, '--undo goes with --resume');
  if (values.undo && dryRun) throw usageError(REBALANCE_USAGE, '--undo cannot be a dry run');

  return connectCluster(values, env, async (router) => {
    const factory = rebalancerFactory(router, bucketsPerMove);
    let resumed: ResumeReport | undefined;
    if (values.resume && !dryRun) {
      // Open moves first (finish the switched ones; copy again, or with --undo abandon, the rest).
      const printer = new ProgressPrinter(io.progress);
      try {
        resumed = await factory((progress) => printer.update(progress)).resume({ undo: values.undo });
      } finally {
        printer.finish();
      }
      if (values.undo) {
        if (values.json) io.write(`${JSON.stringify({ clusterId: router.clusterId, resumed }, null, 2)}\n`);
        else io.write(formatResume(resumed));
        return 0;
      }
      if (!values.json) io.write(`${formatResume(resumed)}\n`);
    }
    if (values.resume && dryRun && !values.json) io.write('--resume: open moves are not resumed in a dry run; the plan is as of now\n');
    const title = `rebalance plan (by ${by}${bucketsPerMove === undefined ? '' : `, ${bucketsPerMove} buckets per move`})`;
    await planAndRun(router, factory, (rebalancer, dry) => rebalancer.rebalance({ by, dryRun: dry }), {
      dryRun,
      json: values.json,
      title,
      io,
      ...(resumed ? { extra: { resumed } } : {}),
    });
    return 0;
  });
}

const MOVE_BUCKET_USAGE = 'move-bucket <bucket> <to-shard> [--dry-run]';

export async function moveBucketCommand(args: string[], env: NodeJS.ProcessEnv, io: RebalanceCliIo): Promise<number> {
  const { values, positionals } = parseFlags({ args, options: { ...CLUSTER_FLAGS, ...DRY_RUN_FLAG }, strict: true, allowPositionals: true });
  expectPositionals(positionals, ['bucket', 'to-shard'], MOVE_BUCKET_USAGE);
  const bucket = nonNegativeInteger('<bucket>', positionals[0]!);
  const toShard = positionals[1]!;
  return connectCluster(values, env, async (router) => {
    const report = await planAndRun(router, rebalancerFactory(router, undefined), (rebalancer, dryRun) => rebalancer.moveBucket(bucket, toShard, { dryRun }), {
      dryRun: values['dry-run'],
      json: values.json,
      title: `move bucket ${bucket} to ${toShard}`,
      io,
    });
    if (report.plan.length === 0 && !values.json) io.write(`bucket ${bucket} already belongs to ${toShard}\n`);
    return 0;
  });
}

const REMOVE_SHARD_USAGE = 'remove-shard <id> [--dry-run]';

export async function removeShardCommand(args: string[], env: NodeJS.ProcessEnv, io: RebalanceCliIo): Promise<number> {
  const { values, positionals } = parseFlags({ args, options: { ...CLUSTER_FLAGS, ...DRY_RUN_FLAG }, strict: true, allowPositionals: true });
  expectPositionals(positionals, ['id'], REMOVE_SHARD_USAGE);
  const shardId = positionals[0]!;
  const dryRun = values['dry-run'];
  return connectCluster(values, env, async (router) => {
    const factory = rebalancerFactory(router, undefined);
    const printer = new ProgressPrinter(io.progress);
    const rebalancer = factory((progress) => printer.update(progress));
    await router.refreshMap();
    const before = countsOf(router);
    const planned = await rebalancer.removeShard(shardId, { dryRun: true });
    const title = `remove shard ${shardId}: move its buckets to the others`;
    if (dryRun) {
      if (values.json) io.write(`${JSON.stringify({ clusterId: router.clusterId, shardId, ...planned }, null, 2)}\n`);
      else io.write(formatPlan(planned, before, `${title} (dry run: nothing changes)`));
      return 0;
    }
    // Unlike the others, the call must run even with nothing to move: it marks the shard removed.
    if (!values.json) io.write(formatPlan(planned, before, title));
    const started = Date.now();
    let report: RebalanceReport;
    try {
      report = await rebalancer.removeShard(shardId);
    } finally {
      printer.finish();
    }
    if (values.json) {
      io.write(`${JSON.stringify({ clusterId: router.clusterId, shardId, removed: true, ...report }, null, 2)}\n`);
    } else {
      io.write(`\n${formatRunSummary(report, Date.now() - started)}`);
      io.write(`shard ${shardId} is removed: routers no longer use it; its data stays on the server (drop it yourself), and leave its URL out of --shards\n`);
    }
    return 0;
  });
}

const ADD_SHARD_USAGE = 'add-shard <id> <postgres-url> [--dry-run]';

export async function addShardCommand(args: string[], env: NodeJS.ProcessEnv, io: RebalanceCliIo): Promise<number> {
  const { values, positionals } = parseFlags({ args, options: { ...CLUSTER_FLAGS, ...DRY_RUN_FLAG }, strict: true, allowPositionals: true });
  expectPositionals(positionals, ['id', 'postgres-url'], ADD_SHARD_USAGE);
  const [id, connectionString] = positionals as [string, string];
  const displayUrl = redactConnectionString(connectionString);
  const dryRun = values['dry-run'];
  return connectCluster(values, env, async (router) => {
    const report = await router.rebalancer().addShard({ id, connectionString }, { dryRun });
    if (values.json) {
      io.write(`${JSON.stringify({ clusterId: router.clusterId, url: displayUrl, ...report }, null, 2)}\n`);
      return 0;
    }
    if (dryRun) {
      io.write(
        `add shard ${id} (${displayUrl}) (dry run: nothing changes): reachable, not part of another cluster, and every registered table exists there with the same columns (sharded ones empty)\n`,
      );
      const reference = router.tables.filter((table) => table.kind === 'reference').map((table) => table.table);
      io.write(reference.length === 0 ? 'no reference tables to copy\n' : `reference tables it would get a copy of: ${reference.join(', ')}\n`);
      return 0;
    }
    io.write(`added shard ${id} (${displayUrl}); bucket map version ${report.mapVersion}\n`);
    const copied = Object.entries(report.referenceRows);
    io.write(copied.length === 0 ? 'no reference tables to copy\n' : `reference tables copied: ${copied.map(([table, rows]) => `${table} (${plural(rows, 'row')})`).join(', ')}\n`);
    io.write(`it owns no buckets yet: add its URL to --shards / PG_SHARD_URLS and run pg-shard-router rebalance\n`);
    return 0;
  });
}

export async function verifyCommand(args: string[], env: NodeJS.ProcessEnv, io: RebalanceCliIo): Promise<number> {
  const { values } = parseFlags({ args, options: CLUSTER_FLAGS, strict: true, allowPositionals: false });
  return connectCluster(values, env, async (router) => {
    const report = await router.rebalancer().verify();
    if (values.json) {
      const rowCounts = Object.fromEntries(
        Object.entries(report.rowCounts).map(([table, counts]) => [table, Object.fromEntries(Object.entries(counts).sort(([a], [b]) => byShardId(a, b)))]),
      );
      io.write(`${JSON.stringify({ clusterId: router.clusterId, ...report, rowCounts }, null, 2)}\n`);
    }
    else io.write(formatVerify(router.clusterId, report));
    return report.ok ? 0 : EXIT_VERIFY_FAILED;
  });
}
