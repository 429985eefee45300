import { statementCancelledError } from '../errors.js';
import type { ShardRouterError } from '../errors.js';

/**
 * One AbortSignal for one broadcast (or stream) that combines its deadline and the caller's
 * signal, each with its typed reason: the shard queries, cursors and the coordinator step listen
 * to this one signal, and anything that fails after it aborted reports the reason instead.
 */
export interface AbortScope {
  /** Aborts when the deadline passes (`timeoutError()`) or the caller's signal aborts (STATEMENT_CANCELLED). */
  readonly signal: AbortSignal;
  /** The scope's own controller: a failing shard aborts it too, to stop the others at once (see scatter). */
  readonly controller: AbortController;
  /** What to throw for `error`: the scope's typed reason once it aborted, else `error` itself. */
  failure(error: unknown): unknown;
  /** Stops the timer and the listener on the caller's signal (call once the work is over). */
  dispose(): void;
}

export interface AbortScopeOptions {
  /** Undefined: no deadline. */
  readonly timeoutMillis?: number | undefined;
  readonly signal?: AbortSignal | undefined;
  /** The deadline's reason, built when it passes (so it can name what was running then). */
  readonly timeoutError: () => ShardRouterError;
}

export function abortScope({ timeoutMillis, signal, timeoutError }: AbortScopeOptions): AbortScope {
  const controller = new AbortController();
  const timer = timeoutMillis === undefined ? undefined : setTimeout(() => controller.abort(timeoutError()), timeoutMillis);
  const onCallerAbort = () => controller.abort(statementCancelledError(signal!.reason));
  if (signal?.aborted) onCallerAbort();
  else signal?.addEventListener('abort', onCallerAbort, { once: true });
  return {
    signal: controller.signal,
    controller,
    failure: (error) => (controller.signal.aborted ? controller.signal.reason : error),
    dispose() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onCallerAbort);
    },
  };
}
