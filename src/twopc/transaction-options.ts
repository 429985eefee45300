import type { TransactionConfig } from '../config.js';
import { MAX_TRANSACTION_TIMEOUT_MS } from '../config.js';
import { ShardRouterError } from '../errors.js';

export const ISOLATION_LEVELS = ['read committed', 'repeatable read', 'serializable'] as const;
export type IsolationLevel = (typeof ISOLATION_LEVELS)[number];

/** Options of one `router.transaction` call; the defaults come from the config's `transactions`. */
export interface TransactionOptions {
  /** PostgreSQL isolation level on every participant (default 'read committed'). Each shard isolates on its own: see README. */
  readonly isolation?: IsolationLevel;
  /** Bound on the whole transaction, enforced by the router and by every participant server. */
  readonly timeoutMillis?: number;
  /** lock_timeout on every participant: how a lock cycle that spans shards ends (LOCK_TIMEOUT). */
  readonly lockTimeoutMillis?: number;
  /** READ ONLY on every participant; a read-only transaction never needs two-phase commit. */
  readonly readOnly?: boolean;
}

export interface ResolvedTransactionOptions {
  readonly isolation: IsolationLevel;
  readonly timeoutMillis: number;
  readonly lockTimeoutMillis: number;
  readonly readOnly: boolean;
}

const OPTION_NAMES = new Set(['isolation', 'timeoutMillis', 'lockTimeoutMillis', 'readOnly']);

function bad(message: string): ShardRouterError {
  return new ShardRouterError('INVALID_ARGUMENT', `transaction options: ${message}`);
}

function millis(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > MAX_TRANSACTION_TIMEOUT_MS) {
    throw bad(`${name} must be an integer from 1 to ${MAX_TRANSACTION_TIMEOUT_MS}`);
  }
  return value;
}

export function resolveTransactionOptions(options: unknown, defaults: Readonly<TransactionConfig>): ResolvedTransactionOptions {
  if (options === undefined) {
    return {
      isolation: 'read committed',
      timeoutMillis: defaults.timeoutMillis,
      lockTimeoutMillis: defaults.lockTimeoutMillis,
      readOnly: false,
    };
  }
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw bad('must be an object');
  const given = options as Record<string, unknown>;
  const unknown = Object.keys(given).filter((name) => !OPTION_NAMES.has(name));
  if (unknown.length > 0) throw bad(`unknown option(s) ${unknown.join(', ')}`);
  const isolation = given.isolation ?? 'read committed';
  if (!(ISOLATION_LEVELS as readonly unknown[]).includes(isolation)) throw bad(`isolation must be one of ${ISOLATION_LEVELS.join(', ')}`);
  if (given.readOnly !== undefined && typeof given.readOnly !== 'boolean') throw bad('readOnly must be a boolean');
  return {
    isolation: isolation as IsolationLevel,
    timeoutMillis: millis('timeoutMillis', given.timeoutMillis, defaults.timeoutMillis),
    lockTimeoutMillis: millis('lockTimeoutMillis', given.lockTimeoutMillis, defaults.lockTimeoutMillis),
    readOnly: given.readOnly ?? false,
  };
}

/**
 * Extra time the servers give a transaction beyond its client-side deadline, so the commit
 * protocol that starts just before the deadline can finish; the server-side bound is
 * timeoutMillis + this.
 */
export const SERVER_SLACK_MS = 5_000;

/**
 * The statements that open a participant's transaction with its bounds, sent in the same
 * round trip as its first statement (PipelinedQuery): statement_timeout and lock_timeout;
 * transaction_timeout (PostgreSQL 17+) or, before 17, idle_in_transaction_session_timeout, so a
 * frozen or vanished coordinator cannot hold locks past the bound. set_config(..., true) is SET
 * LOCAL; one SELECT is cheaper for the server than one SET command per setting. It also returns
 * the transaction's start on the server's clock (`started`, epoch seconds), which bounds how
 * late a coordinator may settle its own decision. Every value is an integer computed here.
 */
export function beginStatements(options: ResolvedTransactionOptions, remainingMillis: number, serverVersion: number): [string, string] {
  const remaining = Math.max(1, Math.trunc(remainingMillis));
  const serverBound = remaining + SERVER_SLACK_MS;
  const lifetime = serverVersion >= 170000 ? 'transaction_timeout' : 'idle_in_transaction_session_timeout';
  return [
    `BEGIN ISOLATION LEVEL ${options.isolation.toUpperCase()}${options.readOnly ? ' READ ONLY' : ''}`,
    `SELECT set_config('statement_timeout', '${remaining}', true), set_config('lock_timeout', '${Math.min(options.lockTimeoutMillis, remaining)}', true), ` +
      `set_config('${lifetime}', '${serverBound}', true), extract(epoch FROM now())::text AS started`,
  ];
}
