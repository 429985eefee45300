import type { RebalanceProgress, RebalanceReport, ResumeReport, VerifyReport } from '../index.js';
import { byShardId } from './discover.js';
import { formatAge, formatColumns, formatTable, indent, plural } from './format.js';

/**
 * What the rebalance commands print (pure, unit-tested in test/unit/cli-progress.test.ts): the
 * plan, the run summary, resume and verify reports, and the progress line on stderr.
 */

/** Where the progress line goes (process.stderr): a redrawn line on a terminal, else a log line now and then. */
export interface ProgressStream {
  write(text: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

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
        report.plan.map((move, index) => [
          String(index + 1),
          move.source,
          move.target,
          String(move.buckets.length),
          formatBuckets(move.buckets),
        ]),
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
  const longest = moves.reduce<(typeof moves)[number] | undefined>(
    (best, move) => (best === undefined || move.pauseMillis > best.pauseMillis ? move : best),
    undefined,
  );
  if (longest) {
    lines.push(
      `longest write pause: ${formatAge(longest.pauseMillis)} (move ${longest.moveId}, ${longest.source}->${longest.target}, buckets ${formatBuckets(longest.buckets)})`,
    );
  }
  const ids = Object.keys(report.bucketsPerShard).sort(byShardId);
  lines.push(
    'buckets per shard:',
    indent(
      formatTable(
        ['shard', 'buckets'],
        ids.map((id) => [id, String(report.bucketsPerShard[id])]),
      ),
    ),
  );
  return `${lines.join('\n')}\n`;
}

export function formatResume(report: ResumeReport): string {
  const total = report.finished.length + report.restarted.length + report.undone.length;
  if (total === 0) return 'resume: no open moves\n';
  const lines = [`resume: ${plural(total, 'open move')}`];
  for (const id of report.finished) lines.push(`  finished (was switched)  ${id}`);
  for (const move of report.restarted) {
    lines.push(
      `  copied again and switched  ${move.moveId}  ${move.source}->${move.target}  buckets ${formatBuckets(move.buckets)}  ${thousands(move.rowsCopied)} rows`,
    );
  }
  for (const id of report.undone) lines.push(`  undone (source keeps the buckets)  ${id}`);
  return `${lines.join('\n')}\n`;
}

export function formatVerify(clusterId: string, report: VerifyReport): string {
  const lines = [
    `cluster ${clusterId}, bucket map version ${report.mapVersion}: ${plural(report.tablesChecked, 'registered table')} checked`,
  ];
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
          report.misplaced.map((entry) => [
            entry.table,
            entry.shardId,
            String(entry.bucket),
            entry.owner,
            thousands(entry.rows),
            entry.sampleKeys.join(', '),
          ]),
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
      lines.push(
        indent(
          formatColumns(
            ['shard', 'rows', 'digest'],
            table.shards.map((shard) => [shard.shardId, thousands(shard.rows), shard.digest]),
            [1],
          ),
          4,
        ),
      );
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
