import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  formatBuckets,
  formatPlan,
  formatProgress,
  formatRunSummary,
  formatVerify,
  ProgressPrinter,
} from '../../src/cli/rebalance-format.js';
import type { MoveProgress, MoveReport, RebalanceProgress, RebalanceReport } from '../../src/index.js';

/** The CLI's rebalance progress line and reports: pure formatting, no servers. */

function progress(overrides: Partial<Omit<RebalanceProgress, 'current'>> = {}, current: Partial<MoveProgress> = {}): RebalanceProgress {
  return {
    move: 2,
    moves: 4,
    bucketsDone: 16,
    bucketsTotal: 64,
    rowsCopied: 120_000,
    bytesCopied: 14_200_000,
    elapsedMillis: 5_000,
    current: {
      moveId: 'm1',
      buckets: [16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31],
      source: 's0',
      target: 's4',
      step: 'copying',
      rowsCopied: 20_000,
      bytesCopied: 2_000_000,
      resumed: false,
      ...current,
    },
    ...overrides,
  };
}

function moveReport(overrides: Partial<MoveReport> = {}): MoveReport {
  return {
    moveId: 'ma',
    buckets: [0, 1, 2],
    source: 's0',
    target: 's1',
    rowsCopied: 1_000,
    bytesCopied: 500_000,
    pauseMillis: 12,
    copyMillis: 100,
    mapVersion: 2,
    ...overrides,
  };
}

describe('formatProgress', () => {
  it('shows bar, buckets done/total, the running move, rows, MB, MB/s and ETA', () => {
    expect(formatProgress(progress())).toBe(
      '[#####...............]  16/64 buckets  move 2/4 s0->s4 copying  120,000 rows  14.2 MB  2.8 MB/s  ETA 15.0 s',
    );
  });

  it('computes rate and ETA from the elapsed time it is given (drawn later than the event)', () => {
    const line = formatProgress(progress(), 10_000);
    expect(line).toContain('1.4 MB/s');
    // 16 buckets in 10 s: the 48 left take 30 s.
    expect(line).toContain('ETA 30.0 s');
  });

  it('has no ETA before the first move finishes, and no rate at time zero', () => {
    const line = formatProgress(progress({ bucketsDone: 0, rowsCopied: 0, bytesCopied: 0, elapsedMillis: 0, move: 1 }));
    expect(line).toBe('[....................]  0/64 buckets  move 1/4 s0->s4 copying  0 rows  0.0 MB  0.0 MB/s  ETA --');
  });

  it('counts the running move once it reports done, and ends full with ETA 0', () => {
    const last = progress({ move: 4, bucketsDone: 48, elapsedMillis: 60_000 }, { step: 'done' });
    expect(formatProgress(last)).toMatch(/^\[#{20}\] {2}64\/64 buckets {2}move 4\/4 s0->s4 done .* ETA 0 s$/);
  });

  it('formats long ETAs in minutes and hours', () => {
    expect(formatProgress(progress({ bucketsDone: 1, elapsedMillis: 10_000 }))).toContain('ETA 10m 30s');
    expect(formatProgress(progress({ bucketsDone: 1, bucketsTotal: 1_000, elapsedMillis: 10_000 }))).toContain('ETA 2h 46m');
  });
});

describe('ProgressPrinter', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  function stream(isTTY: boolean, columns?: number) {
    const writes: string[] = [];
    return { writes, isTTY, ...(columns === undefined ? {} : { columns }), write: (text: string) => writes.push(text) };
  }

  it('on a terminal redraws one line with \\r, cut to the width, and ends it with a newline', () => {
    vi.useFakeTimers();
    const out = stream(true, 40);
    const printer = new ProgressPrinter(out, { now: () => Date.now(), redrawMillis: 200 });
    printer.update(progress());
    printer.update(progress({ rowsCopied: 130_000 })); // within 200 ms: not drawn
    expect(out.writes).toHaveLength(1);
    vi.advanceTimersByTime(200); // the timer redraws (fresh clock)
    expect(out.writes).toHaveLength(2);
    printer.finish();
    expect(out.writes.at(-1)).toBe('\n');
    for (const write of out.writes.slice(0, -1)) {
      expect(write.startsWith('\r')).toBe(true);
      expect(write.endsWith('\x1b[K')).toBe(true);
      expect(write.length).toBe(1 + 39 + 3);
      expect(write).not.toContain('\n');
    }
    // Stopped: no more redraws.
    vi.advanceTimersByTime(5_000);
    expect(out.writes.at(-1)).toBe('\n');
  });

  it('elsewhere writes whole lines: at most one a second while something changes, and one per finished move', () => {
    vi.useFakeTimers();
    const out = stream(false);
    const printer = new ProgressPrinter(out, { now: () => Date.now(), logMillis: 1_000 });
    printer.update(progress());
    for (let i = 0; i < 10; i++) printer.update(progress({ rowsCopied: 120_000 + i }));
    expect(out.writes).toHaveLength(1);
    printer.update(progress({}, { step: 'done' }));
    expect(out.writes).toHaveLength(2);
    expect(out.writes[1]).toContain('32/64 buckets');
    vi.advanceTimersByTime(3_000); // nothing new: silent
    expect(out.writes).toHaveLength(2);
    printer.update(progress({ move: 3, bucketsDone: 32 }, { step: 'copying' }));
    expect(out.writes).toHaveLength(3);
    printer.update(progress({ move: 3, bucketsDone: 32, rowsCopied: 200_000 }));
    vi.advanceTimersByTime(1_000);
    expect(out.writes).toHaveLength(4);
    expect(out.writes.every((line) => line.endsWith('\n') && !line.includes('\r'))).toBe(true);
    printer.finish();
    expect(out.writes).toHaveLength(4);
  });

  it('writes nothing when no progress came (an empty plan)', () => {
    const out = stream(true, 80);
    const printer = new ProgressPrinter(out);
    printer.finish();
    expect(out.writes).toEqual([]);
  });
});

describe('plan and summary', () => {
  const report: RebalanceReport = {
    dryRun: false,
    plan: [
      { buckets: [0, 1, 2], source: 's0', target: 's1' },
      { buckets: [7], source: 's0', target: 's2' },
    ],
    moves: [
      moveReport(),
      moveReport({ moveId: 'mb', buckets: [7], target: 's2', rowsCopied: 250, bytesCopied: 1_500_000, pauseMillis: 1_250, mapVersion: 3 }),
    ],
    mapVersion: 3,
    bucketsPerShard: { s0: 4, s1: 3, s2: 1, s10: 0 },
  };

  it('compresses bucket lists into ranges', () => {
    expect(formatBuckets([9, 0, 1, 2, 3, 7, 10])).toBe('0-3, 7, 9-10');
    expect(formatBuckets([])).toBe('');
  });

  it('prints the plan with buckets per shard now and after', () => {
    const text = formatPlan(
      report,
      new Map([
        ['s0', 8],
        ['s1', 0],
        ['s2', 0],
        ['s10', 0],
      ]),
      'rebalance plan',
    );
    expect(text).toContain('rebalance plan: 2 moves, 4 buckets');
    expect(text).toMatch(/^ +1 {2}s0 +s1 +3 {2}0-2$/m);
    expect(text).toMatch(/^ +2 {2}s0 +s2 +1 {2}7$/m);
    // s10 after s2.
    expect(text).toMatch(/s2 +0 +1\n {2}s10 +0 +0\n$/);
    expect(formatPlan({ ...report, plan: [] }, new Map([['s0', 8]]), 'p')).toMatch(/^p: nothing to move\n/);
  });

  it('sums moves, rows and MB and names the longest write pause', () => {
    const text = formatRunSummary(report, 4_200);
    expect(text).toContain('done: 2 moves, 4 buckets, 1,250 rows, 2.0 MB copied in 4.2 s; bucket map version 3');
    expect(text).toContain('longest write pause: 1.3 s (move mb, s0->s2, buckets 7)');
    expect(text).toMatch(/^ {2}s1 +3$/m);
  });

  it('verify lists misplaced rows and divergent reference tables', () => {
    const text = formatVerify('c1', {
      mapVersion: 5,
      tablesChecked: 3,
      rowCounts: { accounts: { s0: 10, s1: 12 } },
      misplaced: [{ table: 'accounts', shardId: 's1', bucket: 3, owner: 's0', rows: 2, sampleKeys: ['k1', 'k2'] }],
      divergent: [
        {
          table: 'countries',
          shards: [
            { shardId: 's0', rows: 2, digest: 'aa' },
            { shardId: 's1', rows: 1, digest: 'bb' },
          ],
        },
      ],
      openMoves: 1,
      unreachable: [],
      ok: false,
    });
    expect(text).toMatch(/^ {2}accounts +10 +12 +22$/m);
    expect(text).toMatch(/^ {2}accounts +s1 +3 +s0 +2 +k1, k2$/m);
    expect(text).toContain('reference tables: 1 of 2 differ between shards');
    expect(text).toMatch(/^ {4}s1 +1 +bb$/m);
    expect(text).toContain('open moves: 1');
    expect(text).toContain('NOT OK');
  });
});
