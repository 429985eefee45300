import { describe, expect, it } from 'vitest';
import { abortScope } from '../../src/broadcast/abort-scope.js';
import { ShardRouterError } from '../../src/index.js';

/** abortScope: one signal from a deadline and the caller's signal, each with its typed reason, cleaned up by dispose(). */

const timeoutError = () => new ShardRouterError('BROADCAST_TIMEOUT', 'too slow');

describe('abortScope', () => {
  it('aborts with the deadline reason when the time passes', async () => {
    const scope = abortScope({ timeoutMillis: 5, timeoutError });
    await new Promise((resolve) => scope.signal.addEventListener('abort', resolve, { once: true }));
    expect((scope.signal.reason as ShardRouterError).code).toBe('BROADCAST_TIMEOUT');
    expect(scope.failure(new Error('socket closed'))).toBe(scope.signal.reason);
    scope.dispose();
  });

  it("aborts with STATEMENT_CANCELLED (the caller's reason as cause) when the caller's signal aborts, at once if it already did", () => {
    const caller = new AbortController();
    const scope = abortScope({ signal: caller.signal, timeoutError });
    const original = new Error('going away');
    expect(scope.failure(original)).toBe(original);
    caller.abort(original);
    const reason = scope.signal.reason as ShardRouterError;
    expect(reason.code).toBe('STATEMENT_CANCELLED');
    expect(reason.retryable).toBe(true);
    expect(reason.cause).toBe(original);
    scope.dispose();
    expect(abortScope({ signal: AbortSignal.abort(), timeoutError }).signal.aborted).toBe(true);
  });

  it('after dispose neither the deadline nor the caller aborts it', async () => {
    const caller = new AbortController();
    const scope = abortScope({ timeoutMillis: 5, signal: caller.signal, timeoutError });
    scope.dispose();
    caller.abort();
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(scope.signal.aborted).toBe(false);
  });
});
