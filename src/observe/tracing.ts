import type { TracerProviderLike } from '../config.js';
import { sqlStateIn } from './logger.js';
import type { ShardTarget } from './shard-target.js';

/**
 * OpenTelemetry spans, from the optional peer `@opentelemetry/api`, loaded at connect with a
 * dynamic import: without the package there is no tracing and nothing to pay. Only the few API
 * members used here are typed (structurally), so no public type depends on the package.
 * Attributes follow the database semantic conventions (docs/operations.md, "Spans"); parameter
 * values are never recorded, nor error messages (PostgreSQL's can quote a value).
 */

type AttributeValue = string | number | boolean;
type Attributes = Record<string, AttributeValue | undefined>;

export interface SpanLike {
  setAttribute(key: string, value: AttributeValue): unknown;
  setStatus(status: { code: number; message?: string }): unknown;
  updateName(name: string): unknown;
  isRecording(): boolean;
  end(): void;
}

interface TracerLike {
  startSpan(name: string, options: { kind: number; attributes: Attributes }, context?: unknown): SpanLike;
}

/** The API's global provider: a proxy that has a delegate once an SDK registered itself. */
interface GlobalTracerProvider extends TracerProviderLike {
  getDelegateTracer?(name: string): unknown;
}

interface OpenTelemetryApi {
  trace: {
    getTracerProvider(): GlobalTracerProvider;
    setSpan(context: unknown, span: SpanLike): unknown;
  };
  context: { active(): unknown; with<T>(context: unknown, fn: () => T): T };
}

/** What a statement span may carry besides the shard's server and the SQL. */
export interface StatementDetail {
  readonly bucket?: number | undefined;
  readonly mapVersion?: number | undefined;
  /** For a 2PC step: its statement (PREPARE TRANSACTION, ...); else the command tag, set when it ends. */
  readonly operation?: string | undefined;
  readonly step?: string | undefined;
  readonly gid?: string | undefined;
}

const SPAN_KIND_INTERNAL = 0;
const SPAN_KIND_CLIENT = 2;
const STATUS_ERROR = 2;
const TRACER_NAME = 'pg-shard-router';

/** The namespaced attributes of this library. */
export const ATTR = {
  shard: 'pg_shard_router.shard',
  bucket: 'pg_shard_router.bucket',
  mapVersion: 'pg_shard_router.map_version',
  txnProtocol: 'pg_shard_router.txn_protocol',
  gid: 'pg_shard_router.gid',
  txnStep: 'pg_shard_router.txn_step',
} as const;

/**
 * Loads `@opentelemetry/api` if it is installed; undefined otherwise (tracing off).
 * `provider`: the config's tracerProvider, else the global one (a no-op until an SDK registers).
 */
export async function loadTracing(provider: TracerProviderLike | undefined): Promise<Tracing | undefined> {
  let api: OpenTelemetryApi;
  try {
    api = (await import('@opentelemetry/api')) as unknown as OpenTelemetryApi;
  } catch {
    return undefined;
  }
  if (provider) return new Tracing(api, () => provider.getTracer(TRACER_NAME) as TracerLike);
  const global = api.trace.getTracerProvider();
  // The global proxy hands out its delegate's tracer once an SDK registered; until then there
  // is no tracer, so a statement builds no attributes and starts no no-op span.
  if (typeof global.getDelegateTracer !== 'function') return new Tracing(api, () => global.getTracer(TRACER_NAME) as TracerLike);
  return new Tracing(api, () => global.getDelegateTracer!(TRACER_NAME) as TracerLike | undefined);
}

export class Tracing {
  readonly #api: OpenTelemetryApi;
  readonly #lookup: () => TracerLike | undefined;
  #tracer: TracerLike | undefined;
  /** Per shard: where its statements go (host, port, database), read once from its connection string. */
  readonly #targets = new Map<string, ShardTarget>();

  constructor(api: OpenTelemetryApi, lookup: () => TracerLike | undefined) {
    this.#api = api;
    this.#lookup = lookup;
    this.#tracer = lookup();
  }

  /**
   * Whether spans go anywhere: false while the global provider has no SDK behind it. Once a
   * tracer is found it is kept, as the API's own proxy tracer keeps its delegate.
   */
  live(): boolean {
    if (this.#tracer !== undefined) return true;
    this.#tracer = this.#lookup();
    return this.#tracer !== undefined;
  }

  /** Remembers a shard's server (call once per pool). */
  addShard(target: ShardTarget): void {
    this.#targets.set(target.shardId, target);
  }

  /**
   * The CLIENT span of `execute`: one statement routed by a key's bucket, under the active
   * context. No detail object, so a sampled-out span costs the SDK's startSpan and little more.
   */
  keyed(shardId: string, sql: string, bucket: number, mapVersion: number): SpanLike {
    const span = this.#start(shardId, sql, undefined, undefined);
    if (span.isRecording()) {
      span.setAttribute(ATTR.shard, shardId);
      span.setAttribute(ATTR.bucket, bucket);
      span.setAttribute(ATTR.mapVersion, mapVersion);
    }
    return span;
  }

  /** A CLIENT span for one statement on one shard, a child of `parent` or else of the active context. */
  statement(shardId: string, sql: string | undefined, detail: StatementDetail, parent?: SpanLike): SpanLike {
    const span = this.#start(shardId, sql, detail.operation, parent);
    if (span.isRecording()) {
      span.setAttribute(ATTR.shard, shardId);
      if (detail.bucket !== undefined) span.setAttribute(ATTR.bucket, detail.bucket);
      if (detail.mapVersion !== undefined) span.setAttribute(ATTR.mapVersion, detail.mapVersion);
      if (detail.step !== undefined) span.setAttribute(ATTR.txnStep, detail.step);
      if (detail.gid !== undefined) span.setAttribute(ATTR.gid, detail.gid);
    }
    return span;
  }

  /**
   * Starts a statement span, named by the shard's database until the server's command tag is
   * known. Only the attributes the conventions call sampling-relevant go in the options (a
   * sampler sees them); the SDK copies those twice before the span keeps them, so our own are
   * set afterwards, and only on a recording span (measured: bench section `observe`). One
   * object literal of fixed shape: spreading a shared object into it costs the SDK more.
   */
  #start(shardId: string, sql: string | undefined, operation: string | undefined, parent: SpanLike | undefined): SpanLike {
    const target = this.#targets.get(shardId);
    const attributes: Attributes = {
      'db.system.name': 'postgresql',
      'db.namespace': target?.namespace,
      'server.address': target?.address,
      'server.port': target?.port,
      'db.query.text': sql,
      'db.operation.name': operation,
    };
    return this.#tracer!.startSpan(target?.namespace ?? 'postgresql', { kind: SPAN_KIND_CLIENT, attributes }, this.#context(parent));
  }

  /**
   * A span over several shards (a broadcast, INTERNAL, or a transaction, CLIENT), under the
   * active context. Its children are passed it explicitly, so no context manager is needed.
   */
  operation(name: 'BROADCAST' | 'TRANSACTION', sql: string | undefined): SpanLike {
    const kind = name === 'BROADCAST' ? SPAN_KIND_INTERNAL : SPAN_KIND_CLIENT;
    const attributes: Attributes = { 'db.system.name': 'postgresql', 'db.operation.name': name, 'db.query.text': sql };
    return this.#tracer!.startSpan(name, { kind, attributes });
  }

  /** Runs `work` with `span` as the active span (so spans the caller's code starts nest under it, given a context manager). */
  within<T>(span: SpanLike, work: () => T): T {
    return this.#api.context.with(this.#api.trace.setSpan(this.#api.context.active(), span), work);
  }

  /** Ends a statement span that succeeded; `command` is the server's command tag (SELECT, INSERT, ...). */
  succeeded(span: SpanLike, shardId: string, command: string | undefined): void {
    if (command && span.isRecording()) {
      span.setAttribute('db.operation.name', command);
      const namespace = this.#targets.get(shardId)?.namespace;
      span.updateName(namespace === undefined ? command : `${command} ${namespace}`);
    }
    span.end();
  }

  /** Ends a span that failed: error.type and the SQLSTATE, never the message. */
  failed(span: SpanLike, error: unknown): void {
    if (span.isRecording()) {
      const sqlState = sqlStateIn(error);
      const type = errorType(error, sqlState);
      span.setAttribute('error.type', type);
      if (sqlState !== undefined) span.setAttribute('db.response.status_code', sqlState);
      span.setStatus({ code: STATUS_ERROR, message: type });
    }
    span.end();
  }

  #context(parent: SpanLike | undefined): unknown {
    const active = this.#api.context.active();
    return parent ? this.#api.trace.setSpan(active, parent) : active;
  }
}

/**
 * error.type: the SQLSTATE when PostgreSQL answered with an error (the convention's first
 * choice), else the ShardRouterError code (POOL_TIMEOUT, SHARD_UNAVAILABLE, ...), else the
 * error's class name.
 */
export function errorType(error: unknown, sqlState = sqlStateIn(error)): string {
  if (sqlState !== undefined) return sqlState;
  const code = (error as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string') return code;
  return error instanceof Error ? error.name : '_OTHER';
}
