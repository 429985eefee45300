import { ShardRouterError } from '../errors.js';
import type { MoveInfo, MoveObserver, MoveResult, PoolObserver, StatementRouting, StreamObserver, TxnProtocol, TxnStep } from './hooks.js';
import { loggableError, logTo } from './logger.js';
import type { Logger, LogLevel } from './logger.js';
import { MetricsStore, ROUTES } from './metrics-store.js';
import { shardTarget } from './shard-target.js';
import { ATTR } from './tracing.js';
import type { SpanLike, StatementDetail, Tracing } from './tracing.js';

/**
 * A router's one instrumentation object: metrics (always counted, in plain numbers), spans
 * (when `@opentelemetry/api` is installed) and the logger (when configured). The router builds
 * it at connect and hands the hooks of hooks.ts to its pools and engines. With nothing plugged
 * in, a statement costs two clock reads and a histogram write (bench section `observe`).
 */

export const ROUTE_SINGLE = ROUTES.indexOf('single');
const ROUTE_BROADCAST = ROUTES.indexOf('broadcast');
const ROUTE_1PC = ROUTES.indexOf('transaction_1pc');
const ROUTE_2PC = ROUTES.indexOf('transaction_2pc');

/** What a recovery pass reports, as far as metrics and logs need it (twopc/recovery.ts's RecoveryReport). */
export interface RecoveryOutcome {
  readonly committed: readonly { readonly gid: string; readonly shardId: string }[];
  readonly rolledBack: readonly { readonly gid: string; readonly shardId: string }[];
  readonly inDoubt: readonly { readonly gid: string; readonly shardId: string; readonly reason: string }[];
  readonly shards: Readonly<Record<string, { readonly prepared: number; readonly committed: number; readonly rolledBack: number }>>;
}

export class Observer implements MoveObserver {
  readonly metrics = new MetricsStore();
  readonly #tracing: Tracing | undefined;
  readonly #logger: Logger | undefined;

  constructor(logger: Logger | undefined, tracing: Tracing | undefined) {
    this.#logger = logger;
    this.#tracing = tracing;
  }

  /**
   * Spans, when they go somewhere: undefined without `@opentelemetry/api`, and while neither
   * the config nor the global API names a tracer provider. Callers build span attributes only
   * behind it (`observer.tracing?.statement(...)`), so that case costs one call.
   */
  get tracing(): Tracing | undefined {
    return this.#tracing?.live() ? this.#tracing : undefined;
  }

  log(level: LogLevel, event: string, fields: Record<string, unknown>, msg: string): void {
    logTo(this.#logger, level, event, fields, msg);
  }

  /** The observer of a new pool: acquire waits, and shards going down and up. */
  pool(shardId: string, connectionString: string): PoolObserver {
    this.#tracing?.addShard(shardTarget(shardId, connectionString));
    const waits = this.metrics.waits(shardId);
    return {
      acquired: (seconds) => waits.observe(seconds),
      connected: () => {
        if (this.metrics.setUp(shardId, true)) this.log('info', 'shard.up', { shardId }, `shard ${shardId} is reachable again`);
      },
      connectFailed: (error, noLiveConnection) => {
        const fields = { shardId, err: loggableError(error) };
        if (noLiveConnection && this.metrics.setUp(shardId, false))
          this.log('error', 'shard.down', fields, `shard ${shardId} is unreachable`);
        else this.log(noLiveConnection ? 'debug' : 'warn', 'pool.connect_failed', fields, `shard ${shardId}: a connection attempt failed`);
      },
      connectionError: (error) =>
        this.log('warn', 'pool.connection_error', { shardId, err: loggableError(error) }, `shard ${shardId}: a pooled connection failed`),
    };
  }

  /** Records one single-shard statement (the hot path: no allocation). */
  single(ok: boolean, seconds: number, error?: unknown): void {
    this.metrics.statement(ROUTE_SINGLE, ok, seconds);
    if (!ok) this.metrics.error(ROUTE_SINGLE, errorCode(error));
  }

  /** A probe for one transaction or broadcast: its span, its protocol and its metrics. */
  operation(kind: 'transaction' | 'broadcast', sql?: string): OperationProbe {
    return new OperationProbe(this, kind, sql);
  }

  staleMapRetry(round: number, mapVersion: number, error: unknown): void {
    this.metrics.staleMapRetries++;
    const shardId = (error as { shardId?: unknown }).shardId;
    this.log('info', 'map.stale_retry', { round, mapVersion, shardId }, 'a shard refused a stale bucket map; refreshing and sending again');
  }

  mapChanged(from: number, to: number): void {
    this.log('info', 'map.changed', { from, to }, `bucket map version ${from} -> ${to}`);
  }

  leftPrepared(gid: string): void {
    this.metrics.twoPhase.leftPrepared++;
    this.log('warn', 'twopc.left_prepared', { gid }, `transaction ${gid} is decided but still prepared somewhere; recovery will finish it`);
  }

  recovered(report: RecoveryOutcome): void {
    const twoPhase = this.metrics.twoPhase;
    twoPhase.recoveryPasses++;
    twoPhase.recoveredCommitted += report.committed.length;
    twoPhase.recoveredRolledBack += report.rolledBack.length;
    twoPhase.inDoubt = report.inDoubt.length;
    for (const [shardId, shard] of Object.entries(report.shards))
      twoPhase.preparedByShard[shardId] = Math.max(0, shard.prepared - shard.committed - shard.rolledBack);
    for (const { gid, shardId } of report.committed) this.log('info', 'recovery.committed', { gid, shardId }, `recovery committed ${gid}`);
    for (const { gid, shardId } of report.rolledBack)
      this.log('info', 'recovery.rolled_back', { gid, shardId }, `recovery rolled back ${gid}`);
    for (const { gid, shardId, reason } of report.inDoubt)
      this.log('warn', 'recovery.in_doubt', { gid, shardId, reason }, `recovery could not settle ${gid}`);
  }

  recoveryFailed(error: unknown): void {
    this.metrics.twoPhase.recoveryFailures++;
    this.log('error', 'recovery.failed', { err: loggableError(error) }, 'a recovery pass failed');
  }

  moveStarted(move: MoveInfo): void {
    this.log('info', 'move.started', moveFields(move), `moving ${move.buckets.length} bucket(s) ${move.source} -> ${move.target}`);
  }

  moveFinished(move: MoveResult): void {
    const moves = this.metrics.moves;
    moves.completed++;
    moves.bucketsMoved += move.buckets.length;
    moves.rowsCopied += move.rowsCopied;
    moves.bytesCopied += move.bytesCopied;
    const { rowsCopied, pauseMillis, mapVersion } = move;
    this.log(
      'info',
      'move.finished',
      { ...moveFields(move), rowsCopied, pauseMillis, mapVersion },
      `moved ${move.buckets.length} bucket(s)`,
    );
  }

  moveFailed(move: MoveInfo, error: unknown): void {
    this.metrics.moves.failed++;
    this.log('error', 'move.failed', { ...moveFields(move), err: loggableError(error) }, `the move ${move.moveId} failed`);
  }
}

/**
 * One transaction or broadcast: its span (CLIENT for a transaction, INTERNAL for a broadcast,
 * with CLIENT children per shard statement and per 2PC step), and its duration by route.
 */
export class OperationProbe implements StreamObserver {
  readonly #observer: Observer;
  readonly #kind: 'transaction' | 'broadcast';
  readonly #started = performance.now();
  readonly #span: SpanLike | undefined;
  #protocol: TxnProtocol | undefined;
  #gid: string | undefined;

  constructor(observer: Observer, kind: 'transaction' | 'broadcast', sql: string | undefined) {
    this.#observer = observer;
    this.#kind = kind;
    this.#span = observer.tracing?.operation(kind === 'broadcast' ? 'BROADCAST' : 'TRANSACTION', sql);
  }

  /** Runs the operation under its span and records how it ended. */
  async run<T>(work: () => Promise<T>): Promise<T> {
    const tracing = this.#observer.tracing;
    try {
      const value = await (tracing && this.#span ? tracing.within(this.#span, work) : work());
      this.#finish(true, undefined);
      return value;
    } catch (error) {
      this.#finish(false, error);
      throw error;
    }
  }

  protocol(protocol: TxnProtocol): void {
    this.#protocol = protocol;
    this.#span?.setAttribute(ATTR.txnProtocol, protocol);
  }

  gid(gid: string): void {
    this.#gid = gid;
    this.#span?.setAttribute(ATTR.gid, gid);
  }

  step<T>(step: TxnStep, shardId: string, work: () => Promise<T>): Promise<T> {
    return this.#child(shardId, { operation: step, step: STEP_NAMES[step], gid: this.#gid }, undefined, work);
  }

  shard<T extends { readonly command: string }>(shardId: string, sql: string, work: () => Promise<T>): Promise<T> {
    return this.#child(shardId, NO_DETAIL, sql, work);
  }

  /**
   * A transaction callback's statement: a CLIENT span under the transaction's, with the key's
   * bucket and the map version. A broadcast write's statements already have theirs (shard()).
   */
  statement<T extends { readonly command: string }>(
    shardId: string,
    sql: string,
    routed: StatementRouting,
    work: () => Promise<T>,
  ): Promise<T> {
    if (this.#kind === 'broadcast') return work();
    return this.#child(shardId, { bucket: routed.bucket, mapVersion: routed.mapVersion }, sql, work);
  }

  /** `detail.operation` set: a 2PC step, named by it; else the span takes the server's command tag. */
  async #child<T>(shardId: string, detail: StatementDetail, sql: string | undefined, work: () => Promise<T>): Promise<T> {
    const tracing = this.#observer.tracing;
    if (!tracing || !this.#span) return work();
    const span = tracing.statement(shardId, sql, detail, this.#span);
    try {
      const result = await work();
      tracing.succeeded(span, shardId, detail.operation ?? (result as { command?: string } | undefined)?.command);
      return result;
    } catch (error) {
      tracing.failed(span, error);
      throw error;
    }
  }

  #finish(ok: boolean, error: unknown): void {
    const route = this.#kind === 'broadcast' ? ROUTE_BROADCAST : this.#protocol === '2pc' ? ROUTE_2PC : ROUTE_1PC;
    const metrics = this.#observer.metrics;
    metrics.statement(route, ok, (performance.now() - this.#started) / 1000);
    if (!ok) metrics.error(route, errorCode(error));
    const tracing = this.#observer.tracing;
    if (!tracing || !this.#span) return;
    if (ok) this.#span.end();
    else tracing.failed(this.#span, error);
  }
}

const NO_DETAIL = Object.freeze({});

/** `pg_shard_router.txn_step` of each step span: COMMIT on the decision shard is the commit point. */
const STEP_NAMES: Readonly<Record<TxnStep, string>> = {
  'PREPARE TRANSACTION': 'prepare',
  COMMIT: 'decision',
  'COMMIT PREPARED': 'commit_prepared',
  'ROLLBACK PREPARED': 'rollback_prepared',
};

/** The ShardRouterError code of a failure, `OTHER` for anything else (what the callback threw). */
function errorCode(error: unknown): string {
  return error instanceof ShardRouterError ? error.code : 'OTHER';
}

function moveFields(move: MoveInfo): Record<string, unknown> {
  return { moveId: move.moveId, buckets: move.buckets.length, source: move.source, target: move.target };
}
