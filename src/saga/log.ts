import type { CatalogExtension } from '../catalog/catalog.js';
import { libraryTablesExtension } from '../rebalance/library-tables.js';
import { q } from '../sql.js';

/**
 * The saga log (docs/sagas.md): one row per saga on the owner of its saga key, in a table
 * registered as sharded by `saga_key`, so a bucket move carries it and the write fence guards
 * it. Every write of a runner is conditioned on its epoch (the fencing token of its lease):
 * after a takeover, the previous runner's writes change nothing.
 */

export const SAGA_LOG_TABLE = 'saga_log';
const KEY_COLUMN = 'saga_key';

export function sagaLogTable(schema: string): string {
  return `${q(schema)}.${SAGA_LOG_TABLE}`;
}

export type SagaState = 'running' | 'compensating' | 'completed' | 'compensated' | 'parked' | 'resolved';
export type StepState = 'pending' | 'done' | 'failed' | 'compensating' | 'compensated';
export const ACTIVE_STATES: readonly SagaState[] = ['running', 'compensating'];

/** What a failure is remembered as. */
export interface StoredError {
  readonly code?: string | undefined;
  readonly message: string;
}

/** One step's entry in the log. */
export interface StepLog {
  readonly name: string;
  state: StepState;
  /** Attempts of `run` started (written before each). */
  runs: number;
  /** Attempts of `run` that failed. */
  failures: number;
  /** Attempts of `compensate` started. */
  compensations: number;
  /** Attempts of `compensate` that failed since the last retry. */
  compensationFailures: number;
  result?: unknown;
  error?: StoredError | undefined;
}

/** A saga's row, parsed. */
export interface SagaRecord {
  readonly sagaKey: string;
  readonly sagaId: string;
  readonly name: string;
  state: SagaState;
  readonly inputText: string;
  steps: StepLog[];
  output?: unknown;
  error?: StoredError | undefined;
  /** The state to go back to on `retry` of a parked saga. */
  parkedFrom?: SagaState | undefined;
  epoch: number;
  readonly leaseOwner: string | null;
  readonly leaseExpiresAt: Date | null;
  readonly note: string | null;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

function logDdl(schema: string): string[] {
  const table = sagaLogTable(schema);
  return [
    `CREATE TABLE IF NOT EXISTS ${table} (
       ${KEY_COLUMN} text NOT NULL,
       saga_id text NOT NULL,
       name text NOT NULL,
       state text NOT NULL CHECK (state IN ('running','compensating','completed','compensated','parked','resolved')),
       input text NOT NULL,
       steps text NOT NULL,
       output text,
       error text,
       parked_from text,
       lease_owner text,
       lease_expires_at timestamptz,
       epoch integer NOT NULL,
       note text,
       created_at timestamptz NOT NULL DEFAULT now(),
       updated_at timestamptz NOT NULL DEFAULT now(),
       PRIMARY KEY (${KEY_COLUMN}, saga_id))`,
    `CREATE INDEX IF NOT EXISTS saga_log_active ON ${table} (lease_expires_at) WHERE state IN ('running', 'compensating')`,
    `CREATE INDEX IF NOT EXISTS saga_log_id ON ${table} (saga_id)`,
    // Parked sagas are few and wait for an operator: their count (sagas.counts()) reads only them.
    `CREATE INDEX IF NOT EXISTS saga_log_parked ON ${table} (updated_at) WHERE state = 'parked'`,
  ];
}

/** Creates the saga log and registers it as a sharded table (saga_key), so moves carry it (rebalance/library-tables.ts). */
export const sagaLogExtension: CatalogExtension = libraryTablesExtension(
  'saga log',
  [{ name: SAGA_LOG_TABLE, kind: 'sharded', keyColumn: KEY_COLUMN }],
  logDdl,
);

const COLUMNS = `${KEY_COLUMN}, saga_id, name, state, input, steps, output, error, parked_from, lease_owner, lease_expires_at, epoch, note, created_at, updated_at`;
const LEASE = 'now() + make_interval(secs => $LEASE::float8 / 1000)';

function lease(param: number): string {
  return LEASE.replace('$LEASE', `$${param}`);
}

/** The raw row. */
export interface SagaRow {
  saga_key: string;
  saga_id: string;
  name: string;
  state: SagaState;
  input: string;
  steps: string;
  output: string | null;
  error: string | null;
  parked_from: SagaState | null;
  lease_owner: string | null;
  lease_expires_at: Date | null;
  epoch: number;
  note: string | null;
  created_at: Date;
  updated_at: Date;
}

export function parseRow(row: SagaRow): SagaRecord {
  return {
    sagaKey: row.saga_key,
    sagaId: row.saga_id,
    name: row.name,
    state: row.state,
    inputText: row.input,
    steps: JSON.parse(row.steps) as StepLog[],
    output: row.output === null ? undefined : (JSON.parse(row.output) as { value?: unknown }).value,
    error: row.error === null ? undefined : (JSON.parse(row.error) as StoredError),
    parkedFrom: row.parked_from ?? undefined,
    epoch: row.epoch,
    leaseOwner: row.lease_owner,
    leaseExpiresAt: row.lease_expires_at,
    note: row.note,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/** A new saga, its lease taken by the inserting runner at epoch 1; no row if the id is taken. $1 key, $2 id, $3 name, $4 input, $5 steps, $6 owner, $7 lease ms. */
export function insertSql(schema: string): string {
  return `INSERT INTO ${sagaLogTable(schema)} (${KEY_COLUMN}, saga_id, name, state, input, steps, lease_owner, lease_expires_at, epoch)
          VALUES ($1, $2, $3, 'running', $4, $5, $6, ${lease(7)}, 1)
          ON CONFLICT (${KEY_COLUMN}, saga_id) DO NOTHING RETURNING ${COLUMNS}`;
}

export function readSql(schema: string): string {
  return `SELECT ${COLUMNS} FROM ${sagaLogTable(schema)} WHERE ${KEY_COLUMN} = $1 AND saga_id = $2`;
}

export function findByIdSql(schema: string): string {
  return `SELECT ${COLUMNS} FROM ${sagaLogTable(schema)} WHERE saga_id = $1`;
}

/** Takes over an active saga whose lease expired: the epoch grows, so the old runner's writes are refused. $1 key, $2 id, $3 owner, $4 lease ms. */
export function takeOverSql(schema: string): string {
  return `UPDATE ${sagaLogTable(schema)} SET epoch = epoch + 1, lease_owner = $3, lease_expires_at = ${lease(4)}, updated_at = now()
           WHERE ${KEY_COLUMN} = $1 AND saga_id = $2 AND state IN ('running', 'compensating') AND lease_expires_at < now()
          RETURNING ${COLUMNS}`;
}

/** Takes a parked saga back to the state it was parked from, with a lease. $1 key, $2 id, $3 owner, $4 lease ms. */
export function retrySql(schema: string): string {
  return `UPDATE ${sagaLogTable(schema)} SET epoch = epoch + 1, state = parked_from, parked_from = NULL, lease_owner = $3,
                 lease_expires_at = ${lease(4)}, updated_at = now()
           WHERE ${KEY_COLUMN} = $1 AND saga_id = $2 AND state = 'parked'
          RETURNING ${COLUMNS}`;
}

/**
 * Hands a parked saga back to the routers that define it: the state it was parked from, fresh
 * budgets ($4 steps), an already expired lease (the next resumption pass takes it), at the epoch
 * read ($3). $1 key, $2 id.
 */
export function requeueSql(schema: string): string {
  return `UPDATE ${sagaLogTable(schema)} SET epoch = epoch + 1, state = parked_from, parked_from = NULL, steps = $4, lease_owner = NULL,
                 lease_expires_at = now() - interval '1 millisecond', updated_at = now()
           WHERE ${KEY_COLUMN} = $1 AND saga_id = $2 AND epoch = $3 AND state = 'parked'
          RETURNING ${COLUMNS}`;
}

/** An operator's word: a parked saga is handled. The epoch grows (no runner may write after). */
export function resolveSql(schema: string): string {
  return `UPDATE ${sagaLogTable(schema)} SET epoch = epoch + 1, state = 'resolved', note = $3, lease_owner = NULL,
                 lease_expires_at = NULL, updated_at = now()
           WHERE ${KEY_COLUMN} = $1 AND saga_id = $2 AND state = 'parked'
          RETURNING ${COLUMNS}`;
}

/**
 * A runner's log write, only at its epoch. Active states renew the lease; others release it.
 * $1 key, $2 id, $3 epoch, $4 state, $5 steps, $6 output, $7 error, $8 parked_from, $9 lease ms.
 */
export function writeSql(schema: string): string {
  return `UPDATE ${sagaLogTable(schema)}
             SET state = $4, steps = $5, output = $6, error = $7, parked_from = $8, updated_at = now(),
                 lease_expires_at = CASE WHEN $4 IN ('running', 'compensating') THEN ${lease(9)} END,
                 lease_owner = CASE WHEN $4 IN ('running', 'compensating') THEN lease_owner END
           WHERE ${KEY_COLUMN} = $1 AND saga_id = $2 AND epoch = $3
          RETURNING 1 AS written`;
}

/** Renews the lease at the runner's epoch. $1 key, $2 id, $3 epoch, $4 lease ms. */
export function renewSql(schema: string): string {
  return `UPDATE ${sagaLogTable(schema)} SET lease_expires_at = ${lease(4)}
           WHERE ${KEY_COLUMN} = $1 AND saga_id = $2 AND epoch = $3 AND state IN ('running', 'compensating')
          RETURNING 1 AS renewed`;
}

/** Active sagas of the given names whose lease expired, on one shard. $1 names, $2 limit. */
export function orphansSql(schema: string): string {
  return `SELECT ${KEY_COLUMN}, saga_id FROM ${sagaLogTable(schema)}
           WHERE state IN ('running', 'compensating') AND lease_expires_at < now() AND name = ANY ($1::text[])
           ORDER BY lease_expires_at LIMIT $2`;
}

/** Sagas by state and name (either may be NULL: any), newest first, on one shard. */
export function listSql(schema: string): string {
  return `SELECT ${COLUMNS} FROM ${sagaLogTable(schema)}
           WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR name = $2)
           ORDER BY updated_at DESC LIMIT $3`;
}

/**
 * The states `sagas.counts()` reports: the ones that still need work or a person. The terminal
 * states are history that stays in the log, so counting them would read all of it.
 */
export const COUNTED_STATES = ['running', 'compensating', 'parked'] as const satisfies readonly SagaState[];
export type CountedState = (typeof COUNTED_STATES)[number];

/**
 * Sagas per counted state on one shard, limited by `guard` to the buckets it owns: reads only
 * the active and the parked rows, through their partial indexes.
 */
export function countsSql(schema: string, guard: string): string {
  const table = sagaLogTable(schema);
  return `SELECT state, count(*)::int AS n FROM ${table} WHERE state IN ('running', 'compensating') AND ${guard} GROUP BY state
          UNION ALL
          SELECT 'parked', count(*)::int FROM ${table} WHERE state = 'parked' AND ${guard}`;
}
