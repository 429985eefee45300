import { ShardRouterError } from '../errors.js';
import type { ShardRouterErrorContext } from '../errors.js';
import { transactionResultText } from '../idempotency/shape.js';
import type { SagaRecord, StoredError } from './log.js';

/** A saga's error: a ShardRouterError that also names the saga. */
export class SagaError extends ShardRouterError {
  readonly sagaId: string;

  constructor(
    code: 'SAGA_COMPENSATED' | 'SAGA_PARKED' | 'SAGA_LEASE_LOST',
    sagaId: string,
    message: string,
    context?: ShardRouterErrorContext,
  ) {
    super(code, message, context);
    this.name = 'SagaError';
    this.sagaId = sagaId;
  }
}

/** What `run` resolves to. */
export interface SagaCompleted<Output> {
  readonly status: 'completed';
  readonly sagaId: string;
  readonly result: Output;
}

export function leaseLost(sagaId: string): SagaError {
  return new SagaError('SAGA_LEASE_LOST', sagaId, `saga ${sagaId}: this runner does not hold its lease (another runner runs it now)`, {
    retryable: true,
  });
}

/** An error as the log keeps it: code and message only (no stack, nothing else a cause may carry). */
export function storedError(error: unknown): StoredError {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return { code: typeof code === 'string' ? code : undefined, message: error.message.slice(0, 2000) };
  }
  return { message: String(error).slice(0, 2000) };
}

/** An error rebuilt from the log (a resumed runner did not see the original). */
export function revivedError(stored: StoredError | undefined): Error {
  if (!stored) return new Error('unknown failure');
  const error = new Error(stored.message);
  if (stored.code !== undefined) Object.assign(error, { code: stored.code });
  return error;
}

/** JSON text of a value that survives a JSON round trip, or INVALID_ARGUMENT naming `what`. */
export function jsonText(value: unknown, what: string): string {
  try {
    return transactionResultText(value);
  } catch (error) {
    const why =
      error instanceof Error ? error.message.replace(/^.*\(it is stored and replayed\): /, '').replace(/; nothing was committed$/, '') : '';
    throw new ShardRouterError('INVALID_ARGUMENT', `${what} must survive a JSON round trip (it is stored in the saga log): ${why}`);
  }
}

export function parseJsonText(text: string): unknown {
  return (JSON.parse(text) as { value?: unknown }).value;
}

/** The settled outcome of a finished (or parked) saga, as `run` reports it. */
export function outcomeOf<Output>(record: SagaRecord, cause?: unknown): SagaCompleted<Output> {
  const id = record.sagaId;
  switch (record.state) {
    case 'completed':
      return { status: 'completed', sagaId: id, result: record.output as Output };
    case 'compensated': {
      const failed = record.steps.find((step) => step.state === 'failed');
      throw new SagaError(
        'SAGA_COMPENSATED',
        id,
        `saga ${id} (${record.name}): step ${failed?.name ?? '?'} failed; the completed steps were compensated`,
        { cause: cause ?? revivedError(failed?.error) },
      );
    }
    case 'parked':
    case 'resolved':
      throw new SagaError(
        'SAGA_PARKED',
        id,
        record.state === 'resolved'
          ? `saga ${id} (${record.name}) was parked and resolved by an operator${record.note ? `: ${record.note}` : ''}`
          : `saga ${id} (${record.name}) is parked: ${record.error?.message ?? ''}; see router.sagas.retry / resolve`,
        { cause: cause ?? revivedError(record.error) },
      );
    default:
      throw leaseLost(id);
  }
}
