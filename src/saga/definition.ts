import { ShardRouterError } from '../errors.js';
import type { ShardKey } from '../placement/hash.js';
import type { QueryResultRow } from '../pool/session.js';
import type { IdempotentExecuteResult } from '../idempotency/idempotency-keys.js';
import type { Transaction } from '../twopc/coordinator.js';
import type { TransactionOptions } from '../twopc/transaction-options.js';

/** What a step function gets: database calls that take effect once, and its identity. */
export interface SagaStepContext {
  readonly sagaId: string;
  readonly sagaKey: string;
  /** The step's name. */
  readonly step: string;
  readonly kind: 'run' | 'compensate';
  /** 1 for the first attempt of this run/compensate, counted across processes. */
  readonly attempt: number;
  /**
   * The lease's epoch: it grows at every takeover of the saga. Outside systems that accept a
   * fencing token can refuse a stale runner's calls with it.
   */
  readonly fencingToken: number;
  /** `saga:<sagaId>:<step>:<run|compensate>`: pass it to outside services that deduplicate by key. */
  readonly idempotencyKey: string;
  /** `router.transaction` with an idempotency key of this step: takes effect once, however often the step re-runs. */
  transaction<T>(keys: readonly ShardKey[], work: (tx: Transaction) => Promise<T>, options?: TransactionOptions): Promise<T>;
  /** `router.execute` with an idempotency key of this step. */
  execute<R extends QueryResultRow = QueryResultRow>(
    key: ShardKey,
    sql: string,
    params?: readonly unknown[],
  ): Promise<IdempotentExecuteResult<R>>;
}

/** The results of the steps done so far, by step name. */
export type StepResults = Readonly<Record<string, unknown>>;

export interface SagaStepDefinition<Input> {
  /** Unique within the saga: 1-60 characters, letters, digits, `-`, `_`, `.`. */
  readonly name: string;
  /** Does the step's work; what it returns (JSON) is stored and given to later steps and to `compensate`. */
  readonly run: (step: SagaStepContext, input: Input, previous: StepResults) => Promise<unknown>;
  /** Undoes `run`. Without it the step is a pivot: once it is done, the saga only goes forward. */
  readonly compensate?: (step: SagaStepContext, input: Input, result: unknown) => Promise<void>;
  /** Attempts of `run` before the step counts as failed (default 1) and the wait between them. */
  readonly retry?: { readonly attempts?: number; readonly backoffMillis?: number };
}

export interface SagaOptions {
  /** Failed attempts of one compensation before the saga is parked (default: config sagas.maxCompensationAttempts). */
  readonly maxCompensationAttempts?: number;
  /** First wait between compensation attempts, doubled each time up to 30 s (default: config sagas.compensationBackoffMillis). */
  readonly compensationBackoffMillis?: number;
}

/** A checked definition. */
export interface SagaDefinition {
  readonly name: string;
  readonly steps: readonly CheckedStep[];
  readonly maxCompensationAttempts: number;
  readonly compensationBackoffMillis: number;
}

export interface CheckedStep {
  readonly name: string;
  readonly run: (step: SagaStepContext, input: unknown, previous: StepResults) => Promise<unknown>;
  readonly compensate: ((step: SagaStepContext, input: unknown, result: unknown) => Promise<void>) | undefined;
  readonly attempts: number;
  readonly backoffMillis: number;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const NAME = /^[A-Za-z0-9_.-]{1,60}$/;
const MAX_STEPS = 100;

function invalid(message: string): ShardRouterError {
  return new ShardRouterError('INVALID_ARGUMENT', message);
}

function checkInt(value: unknown, what: string, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
    throw invalid(`${what} must be an integer from ${min} to ${max}`);
  return value;
}

/** Checks a definition completely before anything is registered or written. */
export function checkDefinition(
  name: unknown,
  steps: unknown,
  options: SagaOptions | undefined,
  defaults: { maxCompensationAttempts: number; compensationBackoffMillis: number },
): SagaDefinition {
  if (typeof name !== 'string' || !NAME.test(name)) throw invalid('a saga name must be 1-60 characters of A-Z a-z 0-9 _ . -');
  if (!Array.isArray(steps) || steps.length === 0 || steps.length > MAX_STEPS)
    throw invalid(`saga ${name}: steps must be an array of 1 to ${MAX_STEPS} steps`);
  if (options !== undefined && (options === null || typeof options !== 'object')) throw invalid('saga options must be an object');
  const seen = new Set<string>();
  const checked = steps.map((step: unknown, index): CheckedStep => {
    if (step === null || typeof step !== 'object') throw invalid(`saga ${name}: step ${index} must be an object`);
    const s = step as SagaStepDefinition<unknown>;
    if (typeof s.name !== 'string' || !NAME.test(s.name))
      throw invalid(`saga ${name}: step ${index} needs a name of 1-60 characters of A-Z a-z 0-9 _ . -`);
    if (seen.has(s.name)) throw invalid(`saga ${name}: duplicate step name "${s.name}"`);
    seen.add(s.name);
    if (typeof s.run !== 'function') throw invalid(`saga ${name}: step ${s.name} needs a run function`);
    if (s.compensate !== undefined && typeof s.compensate !== 'function')
      throw invalid(`saga ${name}: step ${s.name}: compensate must be a function`);
    if (s.retry !== undefined && (s.retry === null || typeof s.retry !== 'object'))
      throw invalid(`saga ${name}: step ${s.name}: retry must be an object`);
    return {
      name: s.name,
      run: s.run,
      compensate: s.compensate,
      attempts: checkInt(s.retry?.attempts, `saga ${name}: step ${s.name}: retry.attempts`, 1, 1000, 1),
      backoffMillis: checkInt(s.retry?.backoffMillis, `saga ${name}: step ${s.name}: retry.backoffMillis`, 0, 3_600_000, 100),
    };
  });
  return {
    name,
    steps: checked,
    maxCompensationAttempts: checkInt(
      options?.maxCompensationAttempts,
      'maxCompensationAttempts',
      1,
      1_000_000,
      defaults.maxCompensationAttempts,
    ),
    compensationBackoffMillis: checkInt(
      options?.compensationBackoffMillis,
      'compensationBackoffMillis',
      0,
      3_600_000,
      defaults.compensationBackoffMillis,
    ),
  };
}

/** A saga id: 1-100 characters without NUL, well-formed (it goes into idempotency keys). */
export function checkSagaId(id: unknown): string {
  if (typeof id !== 'string' || id.length < 1 || id.length > 100 || id.includes('\u0000') || LONE_SURROGATE.test(id))
    throw invalid('sagaId must be a string of 1 to 100 characters (no NUL, well-formed Unicode)');
  return id;
}
