import { ShardRouterError } from '../errors.js';
import type { SagaContext } from './context.js';
import { sagaTestHooks } from './context.js';
import type { SagaDefinition, SagaStepContext, StepResults } from './definition.js';
import { renewSql, writeSql } from './log.js';
import type { SagaRecord, SagaState, StepLog } from './log.js';
import { SagaError, jsonText, leaseLost, outcomeOf, storedError } from './outcome.js';
import type { SagaCompleted } from './outcome.js';

/**
 * Runs one saga from where its log row says, as the holder of the lease at `record.epoch`
 * (docs/sagas.md). Forward: each step's start is logged before it runs (together with the
 * previous step's result); a step failing after its retries turns the saga to compensating,
 * or parks it if a pivot is done. Backward: the done steps' compensations in reverse, each
 * retried with backoff until `maxCompensationAttempts`, then parked. Every write is refused
 * once another runner took the lease; this runner then stops with SAGA_LEASE_LOST.
 */

const MAX_BACKOFF_MS = 30_000;

/** A parked saga taken back (retry, requeue) to `state`: a fresh budget for the failed step or compensation. */
export function freshBudgets(steps: StepLog[], state: SagaState): void {
  for (const step of steps) {
    step.compensationFailures = 0;
    if (state === 'running' && step.state === 'failed') {
      step.state = 'pending';
      step.failures = 0;
    }
  }
}
const WRITE_ATTEMPTS = 5;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function isTransient(error: unknown): boolean {
  if (!(error instanceof ShardRouterError)) return false;
  return error.retryable || ['CONNECTION_LOST', 'SHARD_UNAVAILABLE'].includes(error.code);
}

export class SagaRunner {
  readonly #context: SagaContext;
  readonly #definition: SagaDefinition;
  readonly #record: SagaRecord;
  readonly #input: unknown;
  #lost = false;
  /**
   * Until when (performance.now()) this runner's lease is surely valid: the send time of the
   * last statement that set it, plus the lease, less a tenth for safety. After it the runner
   * starts no step and no database call: the lease may have expired and been taken over.
   */
  #validUntil: number;
  #writes = 0;
  /** The insert already logged the first step's start. */
  #skipNextWrite: boolean;
  #cause: unknown;

  constructor(context: SagaContext, definition: SagaDefinition, record: SagaRecord, input: unknown, fresh: boolean, leaseSentAt: number) {
    this.#context = context;
    this.#validUntil = leaseSentAt + context.leaseMillis * 0.9;
    this.#definition = definition;
    this.#record = record;
    this.#input = input;
    this.#skipNextWrite = fresh;
  }

  async run<Output>(): Promise<SagaCompleted<Output>> {
    const renewal = this.#keepLease();
    try {
      if (this.#record.state === 'running') await this.#forward();
      if (this.#record.state === 'compensating') await this.#compensate();
      return outcomeOf<Output>(this.#record, this.#cause);
    } finally {
      clearInterval(renewal);
    }
  }

  async #forward(): Promise<void> {
    const record = this.#record;
    for (let index = 0; index < record.steps.length; index++) {
      if (record.steps[index]!.state === 'done') continue;
      const failure = await this.#runStep(index);
      if (failure === undefined) continue;
      this.#cause = failure;
      const log = record.steps[index]!;
      log.state = 'failed';
      record.error = log.error;
      // A done step without compensation is a pivot: the saga cannot go back past it.
      const pivotDone = record.steps.some((step, j) => j < index && step.state === 'done' && !this.#definition.steps[j]!.compensate);
      if (pivotDone) return this.#park('running');
      record.state = 'compensating';
      return;
    }
    record.state = 'completed';
    record.output = record.steps[record.steps.length - 1]!.result;
    await this.#write();
  }

  /** Runs step `index` until it succeeds (undefined) or its attempts are spent (its last error). */
  async #runStep(index: number): Promise<unknown> {
    const step = this.#definition.steps[index]!;
    const log = this.#record.steps[index]!;
    for (;;) {
      log.runs++;
      await this.#write();
      try {
        await this.#checkLease();
        const result = await step.run(this.#stepContext(index, 'run', log.runs), this.#input, this.#previous(index));
        jsonText(result, `saga ${this.#definition.name}: the result of step ${step.name}`);
        log.state = 'done';
        log.result = result;
        log.error = undefined;
        return undefined;
      } catch (error) {
        if (this.#lost) throw leaseLost(this.#record.sagaId);
        log.failures++;
        log.error = storedError(error);
        const badResult = error instanceof ShardRouterError && error.code === 'INVALID_ARGUMENT' && error.message.includes('saga log');
        if (badResult || log.failures >= step.attempts) return error;
        await sleep(step.backoffMillis);
      }
    }
  }

  async #compensate(): Promise<void> {
    const record = this.#record;
    for (let index = record.steps.length - 1; index >= 0; index--) {
      const log = record.steps[index]!;
      if (log.state !== 'done' && log.state !== 'compensating') continue;
      const ok = await this.#compensateStep(index);
      if (!ok) return;
    }
    record.state = 'compensated';
    await this.#write();
  }

  /** Compensates step `index` until it succeeds (true) or the saga is parked (false). */
  async #compensateStep(index: number): Promise<boolean> {
    const compensate = this.#definition.steps[index]!.compensate;
    const log = this.#record.steps[index]!;
    if (!compensate) {
      await this.#park('compensating');
      return false;
    }
    for (;;) {
      log.state = 'compensating';
      log.compensations++;
      await this.#write();
      try {
        await this.#checkLease();
        await compensate(this.#stepContext(index, 'compensate', log.compensations), this.#input, log.result);
        log.state = 'compensated';
        return true;
      } catch (error) {
        if (this.#lost) throw leaseLost(this.#record.sagaId);
        log.compensationFailures++;
        log.error = storedError(error);
        if (log.compensationFailures >= this.#definition.maxCompensationAttempts) {
          this.#cause = error;
          this.#record.error = log.error;
          await this.#park('compensating');
          return false;
        }
        const backoff = this.#definition.compensationBackoffMillis * 2 ** (log.compensationFailures - 1);
        await sleep(Math.min(backoff, MAX_BACKOFF_MS));
      }
    }
  }

  async #park(from: SagaState): Promise<void> {
    this.#record.state = 'parked';
    this.#record.parkedFrom = from;
    await this.#write();
  }

  #previous(index: number): StepResults {
    const results: Record<string, unknown> = {};
    for (const step of this.#record.steps.slice(0, index)) results[step.name] = step.result;
    return results;
  }

  #stepContext(index: number, kind: 'run' | 'compensate', attempt: number): SagaStepContext {
    const { sagaId, sagaKey, epoch } = this.#record;
    const name = this.#definition.steps[index]!.name;
    const base = `saga:${sagaId}:${name}:${kind}`;
    let calls = 0;
    // The n-th call of this step function: the same key in every attempt and every runner.
    const nextKey = async () => {
      await this.#checkLease();
      calls++;
      return `${base}:${calls}`;
    };
    return {
      sagaId,
      sagaKey,
      step: name,
      kind,
      attempt,
      fencingToken: epoch,
      idempotencyKey: base,
      transaction: async (keys, work, options) => this.#context.transaction(keys, work, { ...options, idempotencyKey: await nextKey() }),
      execute: async (key, sql, params) => this.#context.idempotentExecute(key, sql, params, await nextKey()),
    };
  }

  /**
   * Goes on only while the lease is surely held: once it may have expired by this process's
   * clock (a slow shard, a paused bucket during a move), an epoch-checked renewal first; it
   * succeeds only if nobody took the saga over meanwhile.
   */
  async #checkLease(): Promise<void> {
    if (!this.#lost && performance.now() > this.#validUntil) {
      const { sagaKey, sagaId, epoch } = this.#record;
      const sentAt = performance.now();
      const { rows } = await this.#context.execute(sagaKey, renewSql(this.#context.catalogSchema), [
        sagaKey,
        sagaId,
        epoch,
        this.#context.leaseMillis,
      ]);
      if (rows.length === 0) this.#lost = true;
      else this.#validUntil = sentAt + this.#context.leaseMillis * 0.9;
    }
    if (this.#lost) throw leaseLost(this.#record.sagaId);
  }

  /** One log write at this runner's epoch, re-sent on transient failures (it sets the same values). */
  async #write(): Promise<void> {
    if (this.#skipNextWrite) {
      this.#skipNextWrite = false;
      return;
    }
    const record = this.#record;
    const n = ++this.#writes;
    sagaTestHooks.logWrite?.({ sagaId: record.sagaId, phase: 'before', n, state: record.state });
    if (this.#lost) throw leaseLost(record.sagaId);
    const params = [
      record.sagaKey,
      record.sagaId,
      record.epoch,
      record.state,
      JSON.stringify(record.steps),
      record.output === undefined ? null : JSON.stringify({ value: record.output }),
      record.error === undefined ? null : JSON.stringify(record.error),
      record.state === 'parked' ? (record.parkedFrom ?? null) : null,
      this.#context.leaseMillis,
    ];
    for (let attempt = 1; ; attempt++) {
      try {
        const sentAt = performance.now();
        const { rows } = await this.#context.execute(record.sagaKey, writeSql(this.#context.catalogSchema), params);
        if (rows.length === 0) {
          this.#lost = true;
          throw leaseLost(record.sagaId);
        }
        this.#validUntil = sentAt + this.#context.leaseMillis * 0.9;
        break;
      } catch (error) {
        if (error instanceof SagaError || attempt >= WRITE_ATTEMPTS || !isTransient(error)) throw error;
        await sleep(100 * attempt);
      }
    }
    sagaTestHooks.logWrite?.({ sagaId: record.sagaId, phase: 'after', n, state: record.state });
  }

  /** Renews the lease every third of it; a renewal that finds another epoch marks this runner lost. */
  #keepLease(): NodeJS.Timeout {
    const { sagaKey, sagaId, epoch } = this.#record;
    let renewing = false;
    const timer = setInterval(
      () => {
        if (renewing || this.#lost) return;
        renewing = true;
        const sentAt = performance.now();
        this.#context
          .execute(sagaKey, renewSql(this.#context.catalogSchema), [sagaKey, sagaId, epoch, this.#context.leaseMillis])
          .then(({ rows }) => {
            if (rows.length > 0) this.#validUntil = Math.max(this.#validUntil, sentAt + this.#context.leaseMillis * 0.9);
            else if (this.#record.state === 'running' || this.#record.state === 'compensating') this.#lost = true;
          })
          .catch(() => undefined)
          .finally(() => {
            renewing = false;
          });
      },
      Math.max(10, Math.floor(this.#context.leaseMillis / 3)),
    );
    timer.unref();
    return timer;
  }
}
