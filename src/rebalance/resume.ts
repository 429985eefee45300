import type { DedicatedConnection } from '../pool/session.js';
import type { RebalanceRun } from './context.js';
import { finishSwitched, runMove, undoCopying } from './move.js';
import { readOpenMovesEverywhere, releaseMoveLease, takeMoveLease } from './move-record.js';
import type { StoredMove } from './move-record.js';
import { ROLE_SETTING } from './schema.js';
import { rebalanceHooks } from './test-hooks.js';
import type { MoveStep } from './test-hooks.js';
import type { MoveProgress, MoveReport, ResumeReport } from './types.js';

/**
 * Finishing what a dead rebalancer left open: switched moves are drained and cleaned up; moves
 * still copying are copied again from the start or, with `undo`, abandoned (the source still
 * owns their buckets).
 */

interface ResumeOutcome {
  readonly finished: string[];
  readonly restarted: MoveReport[];
  readonly undone: string[];
}

/** Settles in-doubt map switches first, then finishes, restarts or undoes every open move. */
export async function resumeOpenMoves(run: RebalanceRun, undo: boolean): Promise<ResumeReport> {
  const { context } = run;
  // A map switch interrupted between PREPARE and COMMIT PREPARED is settled first, so the
  // move rows say what really happened.
  await context.recover();
  await context.refresh();
  const outcome: ResumeOutcome = { finished: [], restarted: [], undone: [] };
  const open = await readOpenMovesEverywhere(context);
  const started = Date.now();
  for (const [index, move] of open.entries()) {
    const progress = (current: MoveProgress) =>
      run.onProgress?.({
        move: index + 1,
        moves: open.length,
        bucketsDone: 0,
        bucketsTotal: move.buckets.length,
        rowsCopied: current.rowsCopied,
        bytesCopied: current.bytesCopied,
        elapsedMillis: Date.now() - started,
        current,
      });
    await resumeMove(run, move, undo, progress, outcome);
  }
  return outcome;
}

/** Finishes, undoes or restarts one open move, holding its lease. */
async function resumeMove(
  run: RebalanceRun,
  move: StoredMove,
  undo: boolean,
  progress: (current: MoveProgress) => void,
  outcome: ResumeOutcome,
): Promise<void> {
  const client = await run.context.pool(move.source).openDedicated({ [ROLE_SETTING]: 'rebalancer' });
  try {
    await takeMoveLease(client, move.moveId);
    if (move.state === 'switched') {
      await finishResumed(run, client, move, progress);
      outcome.finished.push(move.moveId);
    } else if (undo) {
      await undoCopying(run.context, client, move);
      progress(resumedProgress(move, 'done'));
      outcome.undone.push(move.moveId);
    } else {
      await releaseMoveLease(client, move.moveId);
      const request = { buckets: move.buckets, source: move.source, target: move.target, resume: move };
      outcome.restarted.push(await runMove(run.context, request, { ...run.moveOptions, onProgress: progress }));
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Drains and cleans up a move a dead rebalancer left switched, reporting each step. */
async function finishResumed(
  run: RebalanceRun,
  client: DedicatedConnection,
  move: StoredMove,
  progress: (current: MoveProgress) => void,
): Promise<void> {
  progress(resumedProgress(move, 'switched'));
  const onStep = async (step: MoveStep) => {
    progress(resumedProgress(move, step));
    await rebalanceHooks.step?.(step, move.moveId);
  };
  await finishSwitched(run.context, client, move, undefined, { ...run.moveOptions, onStep });
  progress(resumedProgress(move, 'done'));
}

/** Progress of a resumed move that copies nothing (its rows are already where they go). */
function resumedProgress(move: StoredMove, step: MoveProgress['step']): MoveProgress {
  return {
    moveId: move.moveId,
    buckets: move.buckets,
    source: move.source,
    target: move.target,
    step,
    rowsCopied: 0,
    bytesCopied: 0,
    resumed: true,
  };
}
