import { z } from 'zod';
import { ShardRouterError } from './errors.js';

/** Shard ids end up in catalog rows and transaction ids, so they are kept to a safe alphabet. */
const SHARD_ID = /^[A-Za-z0-9_-]{1,63}$/;
/** A lower-case, unquoted-safe PostgreSQL identifier (at most 63 bytes, PostgreSQL's limit). */
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

export const DEFAULT_BUCKET_COUNT = 1024;
export const MAX_BUCKET_COUNT = 65536;
const MAX_TIMER_MS = 2_147_483_647;

/** True for a postgres:// or postgresql:// URL with a host. */
export function isPostgresUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === 'postgres:' || url.protocol === 'postgresql:') && url.hostname !== '';
  } catch {
    return false;
  }
}

/** PEM text (a string or a Buffer); a list of them for several CA certificates. */
const pem = z.union([z.string().min(1), z.instanceof(Buffer)]);

/**
 * TLS options passed to pg (and from there to Node's tls.connect). `true`: TLS with Node's
 * default verification against the system CAs; `false`: no TLS.
 */
const sslSchema = z.union([
  z.boolean(),
  z.strictObject({
    ca: z.union([pem, z.array(pem).min(1)]).optional(),
    cert: pem.optional(),
    key: pem.optional(),
    /** Refuse a server whose certificate does not verify (default true). */
    rejectUnauthorized: z.boolean().optional(),
    /** The name the server certificate must carry (SNI), when it differs from the URL's host. */
    servername: z.string().min(1).optional(),
  }),
]);

const shardSchema = z.strictObject({
  id: z.string().regex(SHARD_ID, 'must be 1-63 characters of A-Z, a-z, 0-9, _ or -'),
  // The message never echoes the value: a connection string may carry a password.
  connectionString: z.string().refine(isPostgresUrl, 'must be a postgres:// or postgresql:// URL with a host'),
  /** TLS for this shard (replaces the config's `ssl`). */
  ssl: sslSchema.optional(),
});

const poolSchema = z
  .strictObject({
    max: z.int().min(1).max(1000).default(10),
    min: z.int().min(0).max(1000).default(0),
    // setTimeout's limit: a longer delay would fire after 1 ms.
    acquireTimeoutMillis: z.int().min(1).max(MAX_TIMER_MS).default(5000),
    idleTimeoutMillis: z.int().min(1).max(MAX_TIMER_MS).default(30_000),
    connectTimeoutMillis: z.int().min(1).max(MAX_TIMER_MS).default(5000),
  })
  .refine((pool) => pool.min <= pool.max, { message: 'min must not exceed max', path: ['min'] });

/** The longest a transaction may be configured to run; see docs/twopc.md (decision-record retention). */
export const MAX_TRANSACTION_TIMEOUT_MS = 3_600_000;

const transactionSchema = z.strictObject({
  /** Default bound on a transaction's lifetime (callback + commit), enforced on the servers too. */
  timeoutMillis: z.int().min(1).max(MAX_TRANSACTION_TIMEOUT_MS).default(30_000),
  /** Default lock_timeout inside transactions: how a lock cycle across shards ends. */
  lockTimeoutMillis: z.int().min(1).max(MAX_TRANSACTION_TIMEOUT_MS).default(5_000),
});

const recoverySchema = z.strictObject({
  /** How often a router settles in-doubt prepared transactions in the background; 0 = never. */
  intervalMillis: z.int().min(0).max(MAX_TIMER_MS).default(30_000),
  /** Prepared transactions younger than this are left to their (probably live) coordinator. */
  graceMillis: z.int().min(0).max(MAX_TRANSACTION_TIMEOUT_MS).default(10_000),
  /** Run one recovery pass in the background right after connect. */
  atConnect: z.boolean().default(true),
});

const broadcastSchema = z.strictObject({
  /** Default bound on one broadcast: the shard queries still running then are cancelled. */
  timeoutMillis: z.int().min(1).max(MAX_TRANSACTION_TIMEOUT_MS).default(30_000),
  /** The shard that runs a coordinator step's outer query (default: the member with the fewest busy connections). */
  coordinatorShard: z.string().min(1).optional(),
  /** Most rows a coordinator step pulls from the shards, all tables together; more is RESULT_TOO_LARGE. */
  maxIntermediateRows: z.int().min(1).max(1_000_000_000).default(1_000_000),
  /** Most bytes (of the rows' text forms) a coordinator step pulls from the shards; more is RESULT_TOO_LARGE. */
  maxIntermediateBytes: z
    .int()
    .min(1)
    .max(Number.MAX_SAFE_INTEGER)
    .default(256 * 1024 * 1024),
});

const querySchema = z.strictObject({
  /** router.query refuses (KEY_REQUIRED) statements that would run on every shard, unless a call says otherwise. */
  requireKey: z.boolean().default(false),
  /** The shard that holds tables not in the table registry; unset: router.query refuses them. */
  unregisteredTablesShard: z.string().min(1).optional(),
});

const mapRefreshSchema = z.strictObject({
  /** How often a router checks a shard for a newer bucket map, besides NOTIFY; 0 = never. */
  intervalMillis: z.int().min(0).max(MAX_TIMER_MS).default(5_000),
  /** LISTEN on one shard for map changes (one extra connection per router). */
  listen: z.boolean().default(true),
});

/**
 * Where the router logs: any object with pino's four methods, `(obj, msg)` (pino, bunyan-style
 * adapters, a console wrapper). docs/operations.md lists the events. Default: silent.
 */
export interface Logger {
  debug(obj: Record<string, unknown>, msg: string): void;
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
  error(obj: Record<string, unknown>, msg: string): void;
}

/** An OpenTelemetry TracerProvider (only getTracer is used); without one, the global provider. */
export interface TracerProviderLike {
  getTracer(name: string, version?: string): unknown;
}

function hasMethods(value: unknown, names: readonly string[]): boolean {
  return (
    value !== null && typeof value === 'object' && names.every((name) => typeof (value as Record<string, unknown>)[name] === 'function')
  );
}
/** Idempotency records: how long a retry with the same key is recognised (docs/idempotency.md). */
const idempotencySchema = z.strictObject({
  /** How long a record is kept after its call committed: retries within it replay, later ones run anew. 1 s to 365 days. */
  ttlMillis: z
    .int()
    .min(1_000)
    .max(365 * 86_400_000)
    .default(86_400_000),
  /** How often a router deletes expired records on every shard; 0 = never. */
  gcIntervalMillis: z.int().min(0).max(MAX_TIMER_MS).default(60_000),
  /** Records deleted per statement (a pass repeats while batches come back full, up to 100 batches). */
  gcBatchSize: z.int().min(1).max(100_000).default(1_000),
});

const outboxSchema = z.strictObject({
  /** Events every consumer group acknowledged are deleted once they are older than this (consumers purge as they run). */
  retentionMillis: z.int().min(0).max(MAX_TIMER_MS).default(3_600_000),
});

/** Sagas (docs/sagas.md). */
const sagasSchema = z.strictObject({
  /** How long a runner's claim on a saga lasts without renewal (renewed every third); an orphan is resumed after it. */
  leaseMillis: z.int().min(100).max(MAX_TIMER_MS).default(30_000),
  /** How often a router looks for orphaned sagas of the names it defines (and once at each defineSaga); 0 = only on resumeSagas(). */
  resumeIntervalMillis: z.int().min(0).max(MAX_TIMER_MS).default(10_000),
  /** Failed attempts of one compensation before the saga is parked. */
  maxCompensationAttempts: z.int().min(1).max(1_000_000).default(5),
  /** First wait between compensation attempts (doubled each time, at most 30 s). */
  compensationBackoffMillis: z.int().min(0).max(3_600_000).default(1_000),
});

const configSchema = z
  .strictObject({
    shards: z.array(shardSchema).min(1, 'at least one shard is required'),
    /** Used only when the cluster is first created; afterwards it must match (or be omitted). */
    bucketCount: z.int().min(1).max(MAX_BUCKET_COUNT).optional(),
    pool: poolSchema.default(() => poolSchema.parse({})),
    transactions: transactionSchema.default(() => transactionSchema.parse({})),
    recovery: recoverySchema.default(() => recoverySchema.parse({})),
    broadcast: broadcastSchema.default(() => broadcastSchema.parse({})),
    mapRefresh: mapRefreshSchema.default(() => mapRefreshSchema.parse({})),
    /** TLS for every shard (a shard's own `ssl` replaces it). Default: what the URL says (sslmode=...), else none. */
    ssl: sslSchema.optional(),
    /**
     * Bound on one statement of `execute`, `poolFor`/`poolOn` and `broadcast` reads: the pool's
     * connections carry it as statement_timeout, and the router cancels a statement the server
     * has not ended shortly after. Default: none.
     */
    statementTimeoutMillis: z.int().min(1).max(MAX_TIMER_MS).optional(),
    outbox: outboxSchema.default(() => outboxSchema.parse({})),
    idempotency: idempotencySchema.default(() => idempotencySchema.parse({})),
    query: querySchema.default(() => querySchema.parse({})),
    sagas: sagasSchema.default(() => sagasSchema.parse({})),
    /** PostgreSQL's application_name for the router's connections (visible in pg_stat_activity). */
    applicationName: z
      .string()
      .min(1)
      .max(63)
      .regex(/^[\x20-\x7e]+$/, 'must be printable ASCII')
      .default('pg-shard-router'),
    catalogSchema: z
      .string()
      .regex(SCHEMA_NAME, 'must be a lower-case identifier: a-z, 0-9, _ (not starting with a digit), at most 63')
      .refine((name) => !name.startsWith('pg_'), 'must not start with pg_ (reserved by PostgreSQL)')
      .default('shard_router'),
    logger: z
      .custom<Logger>((value) => hasMethods(value, ['debug', 'info', 'warn', 'error']), 'must have debug, info, warn and error methods')
      .optional(),
    tracerProvider: z.custom<TracerProviderLike>((value) => hasMethods(value, ['getTracer']), 'must have a getTracer method').optional(),
  })
  .superRefine((config, ctx) => {
    const seenIds = new Set<string>();
    const seenUrls = new Set<string>();
    config.shards.forEach((shard, index) => {
      if (seenIds.has(shard.id)) {
        ctx.addIssue({ code: 'custom', path: ['shards', index, 'id'], message: `duplicate shard id "${shard.id}"` });
      }
      seenIds.add(shard.id);
      if (seenUrls.has(shard.connectionString)) {
        ctx.addIssue({ code: 'custom', path: ['shards', index, 'connectionString'], message: 'duplicate connection string' });
      }
      seenUrls.add(shard.connectionString);
      if ((shard.ssl ?? config.ssl) !== undefined && hasSslParameters(shard.connectionString)) {
        ctx.addIssue({
          code: 'custom',
          path: ['shards', index, 'ssl'],
          message: 'TLS is set both in the URL (sslmode, sslrootcert, ...) and in the ssl option: use one (pg lets the URL win)',
        });
      }
    });
    const coordinator = config.broadcast.coordinatorShard;
    if (coordinator !== undefined && !seenIds.has(coordinator)) {
      ctx.addIssue({ code: 'custom', path: ['broadcast', 'coordinatorShard'], message: `no shard "${coordinator}" in shards` });
    }
  });

/** What `ShardRouter.connect` accepts. */
export type ShardRouterConfig = z.input<typeof configSchema>;

export type PoolConfig = z.output<typeof poolSchema>;
export type TransactionConfig = z.output<typeof transactionSchema>;
export type RecoveryConfig = z.output<typeof recoverySchema>;
export type BroadcastConfig = z.output<typeof broadcastSchema>;
export type MapRefreshConfig = z.output<typeof mapRefreshSchema>;
/** The `ssl` option: `true`, `false` or pg's TLS options (ca, cert, key, rejectUnauthorized, servername). */
export type SslConfig = z.output<typeof sslSchema>;

/** URL parameters through which pg reads TLS settings from a connection string. */
const URL_SSL_PARAMETERS = ['ssl', 'sslmode', 'sslcert', 'sslkey', 'sslrootcert'];

function hasSslParameters(connectionString: string): boolean {
  const { searchParams } = new URL(connectionString);
  return URL_SSL_PARAMETERS.some((name) => searchParams.has(name));
}
export type OutboxConfig = z.output<typeof outboxSchema>;
export type IdempotencyConfig = z.output<typeof idempotencySchema>;
export type QueryConfig = z.output<typeof querySchema>;
export type SagasConfig = z.output<typeof sagasSchema>;

/** A validated shard: the connection string is non-enumerable so it never shows up in logs. */
export interface ResolvedShardConfig {
  readonly id: string;
  /** The connection string with its password replaced by `***`, safe to print. */
  readonly displayUrl: string;
  readonly connectionString: string;
  /** TLS options for pg (non-enumerable and frozen: its key never shows in logs or inspect output). */
  readonly ssl?: SslConfig | undefined;
}

export interface ResolvedConfig {
  readonly shards: readonly ResolvedShardConfig[];
  readonly bucketCount: number | undefined;
  readonly pool: Readonly<PoolConfig>;
  readonly transactions: Readonly<TransactionConfig>;
  readonly recovery: Readonly<RecoveryConfig>;
  readonly broadcast: Readonly<BroadcastConfig>;
  readonly mapRefresh: Readonly<MapRefreshConfig>;
  readonly outbox: Readonly<OutboxConfig>;
  readonly idempotency: Readonly<IdempotencyConfig>;
  readonly query: Readonly<QueryConfig>;
  readonly sagas: Readonly<SagasConfig>;
  readonly catalogSchema: string;
  readonly applicationName: string;
  readonly logger: Logger | undefined;
  readonly tracerProvider: TracerProviderLike | undefined;
  /** statement_timeout of the pools' connections and the router's bound on a statement; undefined: none. */
  readonly statementTimeoutMillis: number | undefined;
  /** The config's all-shards `ssl` (non-enumerable), for shards that join later. */
  readonly ssl?: SslConfig | undefined;
}

/** Replaces the password of a connection string with `***`. */
export function redactConnectionString(connectionString: string): string {
  try {
    const url = new URL(connectionString);
    if (url.password !== '') url.password = '***';
    for (const name of ['password', 'sslpassword']) {
      if (url.searchParams.has(name)) url.searchParams.set(name, '***');
    }
    return url.toString();
  } catch {
    return '<unparseable connection string>';
  }
}

/** A connection string with its password removed (what the shard registry stores). */
export function urlWithoutPassword(connectionString: string): string {
  const url = new URL(connectionString);
  url.password = '';
  for (const name of ['password', 'sslpassword']) url.searchParams.delete(name);
  return url.toString();
}

/**
 * The connection string for a shard known only from the shard registry (added after this
 * router's config was written): the registered URL with the password of a configured shard
 * that connects as the same user. Without one, pg falls back to PGPASSWORD / ~/.pgpass.
 */
export function connectionStringFor(registeredUrl: string, configured: readonly ResolvedShardConfig[]): string {
  const url = new URL(registeredUrl);
  for (const shard of configured) {
    const known = new URL(shard.connectionString);
    if (decodeURIComponent(known.username) === decodeURIComponent(url.username) && known.password !== '') {
      url.password = known.password;
      break;
    }
  }
  return url.toString();
}

/** A shard config built from a connection string (validated like the config's). */
export function resolveShard(id: string, connectionString: string, ssl?: SslConfig): ResolvedShardConfig {
  const parsed = shardSchema.safeParse({ id, connectionString, ...(ssl === undefined ? {} : { ssl }) });
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; ');
    throw new ShardRouterError('INVALID_ARGUMENT', `invalid shard: ${problems}`);
  }
  const resolved = { id, displayUrl: redactConnectionString(connectionString) };
  Object.defineProperty(resolved, 'connectionString', { value: connectionString, enumerable: false });
  if (ssl !== undefined) Object.defineProperty(resolved, 'ssl', { value: hiddenSsl(ssl), enumerable: false });
  return Object.freeze(resolved as ResolvedShardConfig);
}

/** A frozen copy of TLS options whose `key` is non-enumerable (so neither inspect nor JSON shows it). */
function hiddenSsl(ssl: SslConfig): SslConfig {
  if (typeof ssl === 'boolean') return ssl;
  const { key, ...shown } = ssl;
  const copy = { ...shown };
  if (key !== undefined) Object.defineProperty(copy, 'key', { value: key, enumerable: false });
  return Object.freeze(copy);
}

/** The TLS options of a shard: its own, else the config's all-shards `ssl`. */
export function sslFor(config: ResolvedConfig, shardId: string): SslConfig | undefined {
  return config.shards.find((shard) => shard.id === shardId)?.ssl ?? config.ssl;
}

/** Session settings of the pools' connections (sent in the startup packet). */
export function poolSessionSettings(config: ResolvedConfig): Record<string, string> {
  return config.statementTimeoutMillis === undefined ? {} : { statement_timeout: String(config.statementTimeoutMillis) };
}

/**
 * Validates a config once, at the edge, and freezes it. Every invalid field is listed in the
 * INVALID_CONFIG error; values are never echoed, so secrets cannot leak through it.
 */
export function resolveConfig(input: unknown): ResolvedConfig {
  const parsed = configSchema.safeParse(input);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const path = issue.path.length === 0 ? '(config)' : issue.path.map(String).join('.');
      return `${path}: ${issue.message}`;
    });
    throw new ShardRouterError('INVALID_CONFIG', `invalid pg-shard-router config:\n  - ${problems.join('\n  - ')}`);
  }
  const {
    shards,
    bucketCount,
    pool,
    transactions,
    recovery,
    broadcast,
    mapRefresh,
    outbox,
    idempotency,
    query,
    sagas,
    catalogSchema,
    applicationName,
    logger,
    tracerProvider,
  } = parsed.data;
  const { ssl, statementTimeoutMillis } = parsed.data;
  const resolved = {
    shards: Object.freeze(shards.map((shard) => resolveShard(shard.id, shard.connectionString, shard.ssl ?? ssl))),
    bucketCount,
    pool: Object.freeze({ ...pool }),
    transactions: Object.freeze({ ...transactions }),
    recovery: Object.freeze({ ...recovery }),
    broadcast: Object.freeze({ ...broadcast }),
    mapRefresh: Object.freeze({ ...mapRefresh }),
    outbox: Object.freeze({ ...outbox }),
    idempotency: Object.freeze({ ...idempotency }),
    query: Object.freeze({ ...query }),
    sagas: Object.freeze({ ...sagas }),
    catalogSchema,
    applicationName,
    logger,
    tracerProvider,
    statementTimeoutMillis,
  };
  if (ssl !== undefined) Object.defineProperty(resolved, 'ssl', { value: hiddenSsl(ssl), enumerable: false });
  return Object.freeze(resolved);
}
