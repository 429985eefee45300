/**
 * Per-key delivery order as docs/outbox.md (O4) promises it, checked from a log of handler calls
 * in call order. Per key the calls form runs of consecutive seqs (n+1 only after n). A run ends
 * when its holder gives the key back or dies; the next one starts right after the last durable
 * acknowledgement, which is never before the start of the run before it. So: a call never skips
 * ahead of the highest seq handled + 1, and a call that does not continue the previous one
 * (a redelivery) never goes back further than the first seq of the run it interrupts.
 *
 * Runs are read from the log by their seqs, not by process: two runs that follow each other
 * without a gap read as one, which only makes the allowed rewind larger, never a false alarm.
 */
export function orderViolations(calls: readonly { readonly key: string; readonly seq: number }[]): string[] {
  const state = new Map<string, { last: number; highest: number; runStart: number }>();
  const violations: string[] = [];
  for (const { key, seq } of calls) {
    const at = state.get(key) ?? { last: 0, highest: 0, runStart: 1 };
    if (seq > at.highest + 1) violations.push(`${key}: seq ${seq} before ${at.highest + 1}`);
    else if (seq !== at.last + 1) {
      if (seq < at.runStart) violations.push(`${key}: seq ${seq} redelivered from before its run's start ${at.runStart}`);
      at.runStart = seq;
    }
    at.last = seq;
    at.highest = Math.max(at.highest, seq);
    state.set(key, at);
  }
  return violations;
}
