import { randomUUID } from 'node:crypto';
import { ShardRouterError } from '../errors.js';
import type { ShardKey } from '../placement/hash.js';
import type { SagaContext } from './context.js';
import { sagaTestHooks } from './context.js';
import { sagaCounts } from './counts.js';
import type { SagaStateCount } from './counts.js';
import { checkDefinition, checkSagaId } from './definition.js';
import type { SagaDefinition, SagaOptions, SagaStepDefinition } from './definition.js';
import {
  ACTIVE_STATES,
  findByIdSql,
  insertSql,
  listSql,
  orphansSql,
  parseRow,
  readSql,
  requeueSql,
  resolveSql,
  retrySql,
  takeOverSql,
} from './log.js';
import type { SagaRecord, SagaRow, SagaState, StepLog } from './log.js';
import { jsonText, leaseLost, outcomeOf, parseJsonText } from './outcome.js';
import type { SagaCompleted } from './outcome.js';
import { SagaRunner, freshBudgets } from './runner.js';

/**
 * The saga engine of one router (docs/sagas.md): the registered definitions, `run`, the
 * resumption of orphaned sagas (expired lease, a definition of that name registered here) at
 * definition time and every `resumeIntervalMillis`, and the operator's list / retry / resolve.
 */

export interface SagaSettings {
  readonly leaseMillis: number;
  readonly resumeIntervalMillis: number;
  readonly maxCompensationAttempts: number;
  readonly compensationBackoffMillis: number;
}

/** A saga as `list` shows it. */
export type SagaSummary = Omit<SagaRecord, 'inputText' | 'parkedFrom'> & { readonly input: unknown };

export interface SagaResumeReport {
  /** Each saga this pass took over, with how it ended here (or why it stopped). */
  readonly resumed: readonly {
    readonly sagaId: string;
    readonly name: string;
    readonly outcome: SagaState | 'error';
    readonly error?: string;
  }[];
  /** Shards whose log could not be read, with the reason. */
  readonly errors: Readonly<Record<string, string>>;
}

const STATES: readonly SagaState[] = ['running', 'compensating', 'completed', 'compensated', 'parked', 'resolved'];
const ORPHANS_PER_PASS = 100;

/** A defined saga: `run` starts (or, with a known sagaId, joins) one instance. */
export class Saga<Input, Output> {
  readonly #engine: SagaEngine;
  readonly #definition: SagaDefinition;

  constructor(engine: SagaEngine, definition: SagaDefinition) {
    this.#engine = engine;
    this.#definition = definition;
  }

  get name(): string {
    return this.#definition.name;
  }

  /**
   * Runs the saga on the log of `sagaKey`'s shard. Resolves `{ status: 'completed', result }`
   * (the last step's result); rejects SAGA_COMPENSATED or SAGA_PARKED. With the `sagaId` of an
   * existing saga: its outcome if it ended, its continuation if its lease expired, else
   * SAGA_LEASE_LOST (it runs elsewhere).
   */
  run(sagaKey: ShardKey, input: Input, options?: { readonly sagaId?: string }): Promise<SagaCompleted<Output>> {
    return this.#engine.start<Output>(this.#definition, sagaKey, input, options);
  }
}

export class SagaEngine {
  readonly #context: SagaContext;
  readonly #settings: SagaSettings;
  readonly #definitions = new Map<string, SagaDefinition>();
  /** Sagas this engine runs now: a resumption pass leaves them alone. */
  readonly #active = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #pass: Promise<SagaResumeReport> | undefined;
  #closed = false;

  constructor(context: SagaContext, settings: SagaSettings) {
    this.#context = context;
    this.#settings = settings;
  }

  define<Input, Output>(name: string, steps: readonly SagaStepDefinition<Input>[], options?: SagaOptions): Saga<Input, Output> {
    const definition = checkDefinition(name, steps, options, this.#settings);
    if (this.#definitions.has(definition.name))
      throw new ShardRouterError('INVALID_ARGUMENT', `a saga named ${definition.name} is already defined on this router`);
    this.#definitions.set(definition.name, definition);
    if (this.#settings.resumeIntervalMillis > 0) {
      this.#timer ??= setInterval(() => void this.#backgroundPass(), this.#settings.resumeIntervalMillis);
      this.#timer.unref();
      // Orphans of this name may be waiting since before this process started.
      setImmediate(() => void this.#backgroundPass());
    }
    return new Saga<Input, Output>(this, definition);
  }

  async start<Output>(
    definition: SagaDefinition,
    sagaKey: ShardKey,
    input: unknown,
    options: { readonly sagaId?: string } | undefined,
  ): Promise<SagaCompleted<Output>> {
    this.#context.checkKey(sagaKey);
    if (options !== undefined && (options === null || typeof options !== 'object'))
      throw new ShardRouterError('INVALID_ARGUMENT', 'saga run options must be an object');
    const inputText = jsonText(input, `saga ${definition.name}: the input`);
    const sagaId = options?.sagaId === undefined ? randomUUID() : checkSagaId(options.sagaId);
    const key = String(sagaKey);
    const steps: StepLog[] = definition.steps.map((step, index) => ({
      name: step.name,
      state: 'pending',
      runs: index === 0 ? 1 : 0,
      failures: 0,
      compensations: 0,
      compensationFailures: 0,
    }));
    const sentAt = performance.now();
    const { rows } = await this.#context.execute<SagaRow>(key, insertSql(this.#context.catalogSchema), [
      key,
      sagaId,
      definition.name,
      inputText,
      JSON.stringify(steps),
      this.#context.owner,
      this.#settings.leaseMillis,
    ]);
    if (rows[0]) {
      sagaTestHooks.logWrite?.({ sagaId, phase: 'after', n: 0, state: 'running' });
      const record = parseRow(rows[0]);
      record.steps[0]!.runs = 0; // the runner counts the first start, which the insert logged
      return this.#runOwned<Output>(definition, record, input, true, sentAt);
    }
    return this.#join<Output>(definition, key, sagaId, inputText);
  }

  /** `run` with the id of an existing saga. */
  async #join<Output>(definition: SagaDefinition, key: string, sagaId: string, inputText: string): Promise<SagaCompleted<Output>> {
    const existing = await this.#read(key, sagaId);
    if (!existing || existing.name !== definition.name || existing.inputText !== inputText)
      throw new ShardRouterError('INVALID_ARGUMENT', `sagaId ${sagaId} is taken by another saga (other name or input)`);
    if (!ACTIVE_STATES.includes(existing.state)) return outcomeOf<Output>(existing);
    const sentAt = performance.now();
    const taken = await this.#takeOver(key, sagaId);
    if (!taken) throw leaseLost(sagaId);
    return this.#runOwned<Output>(definition, taken, parseJsonText(taken.inputText), false, sentAt);
  }

  async #runOwned<Output>(
    definition: SagaDefinition,
    record: SagaRecord,
    input: unknown,
    fresh: boolean,
    leaseSentAt: number,
    retry = false,
  ): Promise<SagaCompleted<Output>> {
    this.#active.add(record.sagaId);
    try {
      if (retry) freshBudgets(record.steps, record.state);
      return await new SagaRunner(this.#context, definition, record, input, fresh, leaseSentAt).run<Output>();
    } finally {
      this.#active.delete(record.sagaId);
    }
  }

  async #read(key: string, sagaId: string): Promise<SagaRecord | undefined> {
    const { rows } = await this.#context.execute<SagaRow>(key, readSql(this.#context.catalogSchema), [key, sagaId]);
    return rows[0] ? parseRow(rows[0]) : undefined;
  }

  async #takeOver(key: string, sagaId: string): Promise<SagaRecord | undefined> {
    const { rows } = await this.#context.execute<SagaRow>(key, takeOverSql(this.#context.catalogSchema), [
      key,
      sagaId,
      this.#context.owner,
      this.#settings.leaseMillis,
    ]);
    return rows[0] ? parseRow(rows[0]) : undefined;
  }

  /** One resumption pass over every shard's log; waits for the sagas it took over to stop. */
  async resume(): Promise<SagaResumeReport> {
    const names = [...this.#definitions.keys()];
    const errors: Record<string, string> = {};
    if (names.length === 0) return { resumed: [], errors };
    const schema = this.#context.catalogSchema;
    const found = await Promise.all(
      this.#context.shardIds().map(async (shardId) => {
        try {
          const { rows } = await this.#context.executeOn<{ saga_key: string; saga_id: string }>(shardId, orphansSql(schema), [
            names,
            ORPHANS_PER_PASS,
          ]);
          return rows;
        } catch (error) {
          errors[shardId] = error instanceof Error ? error.message : String(error);
          return [];
        }
      }),
    );
    const runs = found.flat().map((row) => this.#resumeOne(row.saga_key, row.saga_id));
    const resumed = (await Promise.all(runs)).flatMap((entry) => (entry ? [entry] : []));
    return { resumed, errors };
  }

  async #resumeOne(key: string, sagaId: string): Promise<SagaResumeReport['resumed'][number] | undefined> {
    if (this.#active.has(sagaId)) return undefined;
    let record: SagaRecord | undefined;
    try {
      const sentAt = performance.now();
      record = await this.#takeOver(key, sagaId);
      if (!record) return undefined; // another router took it first, or its runner renewed
      const definition = this.#definitions.get(record.name)!;
      const outcome = await this.#runOwned(definition, record, parseJsonText(record.inputText), false, sentAt).then(
        () => 'completed' as const,
        (error: unknown) => error,
      );
      if (outcome === 'completed') return { sagaId, name: record.name, outcome };
      const code = (outcome as { code?: string }).code;
      const state = code === 'SAGA_COMPENSATED' ? 'compensated' : code === 'SAGA_PARKED' ? 'parked' : 'error';
      return { sagaId, name: record.name, outcome: state, ...(state === 'error' ? { error: String(outcome) } : {}) };
    } catch (error) {
      return { sagaId, name: record?.name ?? '?', outcome: 'error', error: String(error) };
    }
  }

  async #backgroundPass(): Promise<void> {
    if (this.#pass || this.#closed) return;
    this.#pass = this.resume();
    try {
      await this.#pass;
    } catch {
      // The next pass tries again.
    } finally {
      this.#pass = undefined;
    }
  }

  /** Sagas on every shard, newest first, at most `limit` (default 100) per shard. */
  async list(filter: { readonly state?: SagaState; readonly name?: string; readonly limit?: number } = {}): Promise<SagaSummary[]> {
    if (filter === null || typeof filter !== 'object') throw new ShardRouterError('INVALID_ARGUMENT', 'filter must be an object');
    if (filter.state !== undefined && !STATES.includes(filter.state))
      throw new ShardRouterError('INVALID_ARGUMENT', `state must be one of ${STATES.join(', ')}`);
    if (filter.name !== undefined && typeof filter.name !== 'string')
      throw new ShardRouterError('INVALID_ARGUMENT', 'name must be a string');
    const limit = filter.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new ShardRouterError('INVALID_ARGUMENT', 'limit must be 1 to 10000');
    const rows = await this.#everyShard(listSql(this.#context.catalogSchema), [filter.state ?? null, filter.name ?? null, limit]);
    return rows.map(summaryOf).sort((a, b) => b.updatedAt.getTime() - a.updatedAt.getTime());
  }

  /** Sagas running, compensating and parked, per shard: one query per shard (saga/counts.ts). */
  counts(): Promise<SagaStateCount[]> {
    return sagaCounts(this.#context);
  }

  /** The saga with this id, read on its key's owner. */
  async get(sagaId: string): Promise<SagaRecord | undefined> {
    checkSagaId(sagaId);
    const rows = await this.#everyShard(findByIdSql(this.#context.catalogSchema), [sagaId]);
    return rows[0] ? this.#read(rows[0].saga_key, sagaId) : undefined;
  }

  /** Rows from every shard, only those on the current owner of their key (a moved bucket's old copy is left out). */
  async #everyShard(sql: string, params: unknown[]): Promise<SagaRow[]> {
    const lists = await Promise.all(
      this.#context.shardIds().map(async (shardId) => {
        const { rows } = await this.#context.executeOn<SagaRow>(shardId, sql, params);
        return rows.filter((row) => this.#context.ownerOf(row.saga_key) === shardId);
      }),
    );
    return lists.flat();
  }

  /** Takes a parked saga back from where it stopped, with a fresh attempt budget, and runs it here. */
  async retry<Output = unknown>(sagaId: string): Promise<SagaCompleted<Output>> {
    const record = await this.#parked(sagaId);
    const definition = this.#definitions.get(record.name);
    if (!definition)
      throw new ShardRouterError('INVALID_ARGUMENT', `saga ${sagaId} is a "${record.name}" saga, which is not defined on this router`);
    const sentAt = performance.now();
    const { rows } = await this.#context.execute<SagaRow>(record.sagaKey, retrySql(this.#context.catalogSchema), [
      record.sagaKey,
      sagaId,
      this.#context.owner,
      this.#settings.leaseMillis,
    ]);
    if (!rows[0]) throw new ShardRouterError('INVALID_ARGUMENT', `saga ${sagaId} is no longer parked`);
    const taken = parseRow(rows[0]);
    return this.#runOwned<Output>(definition, taken, parseJsonText(taken.inputText), false, sentAt, true);
  }

  /**
   * Hands a parked saga back to whichever router defines its name (the CLI's `saga retry`,
   * which has no definitions): fresh budgets, an expired lease; the next resumption pass of a
   * router that defines it continues it from where it stopped.
   */
  async requeue(sagaId: string): Promise<SagaSummary> {
    const record = await this.#parked(sagaId);
    const state = record.parkedFrom ?? 'compensating';
    freshBudgets(record.steps, state);
    const { rows } = await this.#context.execute<SagaRow>(record.sagaKey, requeueSql(this.#context.catalogSchema), [
      record.sagaKey,
      sagaId,
      record.epoch,
      JSON.stringify(record.steps),
    ]);
    if (!rows[0]) throw new ShardRouterError('INVALID_ARGUMENT', `saga ${sagaId} is no longer parked`);
    return summaryOf(rows[0]);
  }

  /** An operator declares a parked saga handled. */
  async resolve(sagaId: string, options: { readonly note?: string } = {}): Promise<SagaSummary> {
    if (options === null || typeof options !== 'object') throw new ShardRouterError('INVALID_ARGUMENT', 'options must be an object');
    if (options.note !== undefined && (typeof options.note !== 'string' || options.note.length > 2000))
      throw new ShardRouterError('INVALID_ARGUMENT', 'note must be a string of at most 2000 characters');
    const record = await this.#parked(sagaId);
    const { rows } = await this.#context.execute<SagaRow>(record.sagaKey, resolveSql(this.#context.catalogSchema), [
      record.sagaKey,
      sagaId,
      options.note ?? null,
    ]);
    if (!rows[0]) throw new ShardRouterError('INVALID_ARGUMENT', `saga ${sagaId} is no longer parked`);
    return summaryOf(rows[0]);
  }

  async #parked(sagaId: string): Promise<SagaRecord> {
    const record = await this.get(sagaId);
    if (!record) throw new ShardRouterError('INVALID_ARGUMENT', `no saga with id ${sagaId}`);
    if (record.state !== 'parked') throw new ShardRouterError('INVALID_ARGUMENT', `saga ${sagaId} is ${record.state}, not parked`);
    return record;
  }

  /** Stops the resumption timer and waits for a pass under way. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    await this.#pass?.catch(() => undefined);
  }
}

function summaryOf(row: SagaRow): SagaSummary {
  const { inputText, parkedFrom: _parkedFrom, ...rest } = parseRow(row);
  return { ...rest, input: parseJsonText(inputText) };
}
