import type { BroadcastObserver } from '../observe/hooks.js';
import type { ShardPool } from '../pool/shard-pool.js';
import type { RawQueryResult, ShardSession } from '../pool/session.js';
import { ShardRouterError } from '../errors.js';
import { quoteIdent } from '../sql.js';
import { partialLayout, splitRows } from './coordinator-partial.js';
import type { PartialLayout } from './coordinator-partial.js';
import { paramsOf, renumberParams } from './plan/plan-coordinator.js';
import type { CoordinatorInput, CoordinatorJoin, CoordinatorPlan } from './plan/plan.js';
import { JOIN_ALIAS } from './plan/plan-pushed-join.js';
import { deparse } from './plan/sql-parser.js';
import { keyCheckQuery } from './join-keys.js';
import { requireCoverage } from './routing.js';
import type { BroadcastRouting } from './routing.js';
import { scatter } from './scatter.js';
import type { ShardFailure } from './types.js';

/**
 * Runs a coordinator plan's inner part: every shard's rows of each input table, then, on one
 * coordinator shard, a transaction holding them in temporary tables, in which the caller runs
 * the outer query (a statement or a cursor). `finish` rolls it back, so the temporary tables go
 * in every case: an error, a timeout (the connection is then cancelled and destroyed, which
 * drops them too) or success.
 */

export interface CoordinatorSettings {
  /** The shard that runs the outer query; default: the member with the fewest busy connections. */
  readonly shardId?: string | undefined;
  readonly maxRows: number;
  readonly maxBytes: number;
}

export const DEFAULT_COORDINATOR: CoordinatorSettings = { maxRows: 1_000_000, maxBytes: 256 * 1024 * 1024 };

/** A column of an input table (or of its partial aggregates), as the coordinator re-creates it. */
export interface Column {
  readonly name: string;
  /** format_type of the column: the server's own spelling, safe to use in SQL. */
  readonly type: string;
  /** The column's own collation (quoted), when not its type's default. */
  readonly collation: string | null;
  /** Part of the table's primary key (GROUP BY on it makes the other columns functionally dependent). */
  readonly pk: boolean;
}

export interface CoordinatorRun {
  readonly routing: BroadcastRouting;
  /** Told each shard query (the router's spans). */
  readonly observer: BroadcastObserver;
  readonly pool: (shardId: string) => ShardPool;
  readonly settings: CoordinatorSettings;
  readonly controller: AbortController;
  readonly partial: boolean;
  /** Each input's columns by plan (read once on the coordinator, then cached by the broadcaster). */
  readonly shapes: WeakMap<CoordinatorPlan, Promise<Column[][]>>;
}

/** A filled coordinator: the session inside its transaction, the shards that failed (partial mode), the outer query to run. */
export interface FilledCoordinator {
  readonly session: ShardSession;
  readonly failures: ShardFailure[];
  readonly outerSql: string;
  readonly outerCursorSql: string;
}

const INSERT_CHUNK_ROWS = 50_000;

/** Reads every shard's rows of each input and fills the temporary tables on the coordinator. */
export async function fillCoordinator(plan: CoordinatorPlan, params: readonly unknown[], run: CoordinatorRun): Promise<FilledCoordinator> {
  requireCoverage(run.routing);
  const session = await run.pool(coordinatorShard(run)).acquire(run.routing.mapVersion);
  const onAbort = () => void session.cancel?.().catch(() => undefined);
  run.controller.signal.addEventListener('abort', onAbort, { once: true });
  let released = false;
  try {
    const shapes = await shapesOf(plan, session, run.shapes);
    if (shapes.length < plan.inputs.length && plan.joinFallback) {
      // The pushed-down join's keys do not hash equal values alike: each table pulled up instead.
      session.release();
      released = true;
      return await fillCoordinator(plan.joinFallback, params, run);
    }
    const layout = partialLayout(plan, shapes[0] ?? []);
    const columns = layout ? [[...layout.columns]] : plan.inputs.map((input, i) => readColumns(input, shapes[i]!));
    const pulled = await pullInputs(plan, columns, params, run, layout);
    if (layout?.split) pulled.rows[0] = splitRows(pulled.rows[0]!, layout.split.pairWidth);
    for (const [i, input] of plan.inputs.entries()) {
      await fillInput(session, input, layout ? [] : shapes[i]!, columns[i]!, pulled.rows[i]!, plan.grouped, i === 0);
    }
    if (plan.inputs.length === 0) await session.query('BEGIN');
    const outer = layout ?? plan;
    return { session, failures: pulled.failures, outerSql: outer.outerSql, outerCursorSql: outer.outerCursorSql };
  } catch (error) {
    if (released) throw error;
    await finishCoordinator(session);
    throw run.controller.signal.aborted ? run.controller.signal.reason : error;
  } finally {
    run.controller.signal.removeEventListener('abort', onAbort);
  }
}

/** Rolls the coordinator's transaction back (dropping its temporary tables) and returns the connection. */
export async function finishCoordinator(session: ShardSession): Promise<void> {
  try {
    if (!session.broken) await session.query('ROLLBACK');
  } catch {
    // A connection that cannot roll back is destroyed on release, and its temporary tables with it.
  } finally {
    session.release();
  }
}

/** The configured coordinator if it is a member of the routing map, else the member with the fewest busy connections. */
function coordinatorShard(run: CoordinatorRun): string {
  const members = run.routing.shardIds;
  const configured = run.settings.shardId;
  if (configured !== undefined && members.includes(configured)) return configured;
  let best = members[0]!;
  let busiest = Infinity;
  for (const shardId of members) {
    const stats = run.pool(shardId).stats();
    const busy = stats.borrowed + stats.pending;
    if (busy < busiest) {
      best = shardId;
      busiest = busy;
    }
  }
  return best;
}

function shapesOf(plan: CoordinatorPlan, session: ShardSession, cache: CoordinatorRun['shapes']): Promise<Column[][]> {
  let shapes = cache.get(plan);
  if (!shapes) {
    shapes = (async () => {
      const found: Column[][] = [];
      for (const input of plan.inputs) {
        if (input.join && !(await joinKeysExact(session, input.join))) return [];
        found.push(await (input.join ? joinColumns(session, input.join) : tableColumns(session, input)));
      }
      return found;
    })();
    cache.set(plan, shapes);
    shapes.catch(() => cache.delete(plan));
  }
  return shapes;
}

/** The table's columns on the coordinator (every shard has the same schema), with types and own collations. */
async function tableColumns(session: ShardSession, input: Pick<CoordinatorInput, 'schema' | 'table'>): Promise<Column[]> {
  const name = input.schema === undefined ? quoteIdent(input.table) : `${quoteIdent(input.schema)}.${quoteIdent(input.table)}`;
  const { rows } = await session.query<Column>(
    `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
            CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
                 THEN quote_ident(n.nspname) || '.' || quote_ident(c.collname) END AS collation,
            EXISTS (SELECT FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary AND a.attnum = ANY (i.indkey)) AS pk
       FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
       LEFT JOIN pg_collation c ON c.oid = a.attcollation LEFT JOIN pg_namespace n ON n.oid = c.collnamespace
      WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
    [name],
  );
  return rows;
}

/**
 * A pushed-down join's columns as PostgreSQL types them (a USING column's common type, each
 * column's collation): a table created from the join WITH NO DATA in a transaction rolled back.
 */
async function joinColumns(session: ShardSession, join: CoordinatorJoin): Promise<Column[]> {
  const shapeTable = '__psr_shape';
  const select = { targetList: joinTargets(join), fromClause: join.from, op: 'SETOP_NONE' };
  const create = deparse({
    CreateTableAsStmt: {
      query: { SelectStmt: select },
      into: { rel: { relname: shapeTable, inh: true, relpersistence: 't' }, onCommit: 'ONCOMMIT_DROP', skipData: true },
      objtype: 'OBJECT_TABLE',
    },
  });
  await session.query('BEGIN');
  try {
    await session.query(create);
    return await tableColumns(session, { schema: 'pg_temp', table: shapeTable });
  } finally {
    await session.query('ROLLBACK');
  }
}

async function joinKeysExact(session: ShardSession, join: CoordinatorJoin): Promise<boolean> {
  const query = keyCheckQuery(join.keys);
  if (!query) return true;
  const { rows } = await session.query<{ exact: boolean | null }>(query.sql, query.params);
  return rows[0]?.exact === true;
}

function joinTargets(join: CoordinatorJoin): Record<string, unknown>[] {
  return join.targets.map((target) => ({ ResTarget: { name: target.name, val: structuredClone(target.value) } }));
}

/** The columns of the table the query may read, in table order. */
function readColumns(input: CoordinatorInput, shape: readonly Column[]): Column[] {
  if (input.names === undefined) return [...shape];
  const wanted = new Set(input.names);
  return shape.filter((column) => wanted.has(column.name));
}

/** Every shard's rows of every input; a shard that fails any input is left out of all (partial mode). */
async function pullInputs(
  plan: CoordinatorPlan,
  columns: readonly Column[][],
  params: readonly unknown[],
  run: CoordinatorRun,
  layout: PartialLayout | undefined,
): Promise<{ rows: (string | null)[][][]; failures: ShardFailure[] }> {
  const { maxRows, maxBytes } = run.settings;
  const queries = plan.inputs.map((input, i) => innerQuery(input, columns[i]!, params, run.routing.mapVersion, maxRows + 1, layout));
  const results = await Promise.all(
    queries.map((query) =>
      scatter(
        run.routing.shardIds,
        (shardId) =>
          run.observer.shard(shardId, query.sql, () => run.pool(shardId).queryRaw(query.sql, query.params, run.controller.signal)),
        run.controller,
        run.partial,
      ),
    ),
  );
  const failures = new Map<string, ShardFailure>();
  for (const result of results)
    for (const failure of result.failures) if (!failures.has(failure.shardId)) failures.set(failure.shardId, failure);
  if (failures.size === run.routing.shardIds.length) throw [...failures.values()][0]!.error;
  let rowCount = 0;
  let bytes = 0;
  const rows = results.map((result) =>
    result.answered
      .filter((answer: RawQueryResult) => !failures.has(answer.shardId))
      .flatMap((answer) => {
        rowCount += answer.rows.length;
        if (rowCount > maxRows) throw tooLarge('maxIntermediateRows', maxRows, 'rows');
        for (const row of answer.rows) for (const value of row) if (value !== null) bytes += Buffer.byteLength(value);
        if (bytes > maxBytes) throw tooLarge('maxIntermediateBytes', maxBytes, 'bytes');
        return answer.rows;
      }),
  );
  return { rows, failures: [...failures.values()] };
}

function tooLarge(limit: 'maxIntermediateRows' | 'maxIntermediateBytes', value: number, unit: string): ShardRouterError {
  return new ShardRouterError(
    'RESULT_TOO_LARGE',
    `the broadcast's coordinator step would pull more than ${value} ${unit} from the shards (broadcast.${limit}); ` +
      `narrow the query (a WHERE on the sharded tables is applied on the shards) or raise broadcast.${limit} in the router config`,
  );
}

/**
 * An input's shard query: its columns (or none: rows without columns still count), its own
 * WHERE conjuncts, the moves guard, at most `limit` rows. Parameters are renumbered to the ones
 * it uses, then the map version.
 */
function innerQuery(
  input: CoordinatorInput,
  columns: readonly Column[],
  params: readonly unknown[],
  mapVersion: number,
  limit: number,
  layout?: PartialLayout,
): { sql: string; params: unknown[] } {
  // An unqualified name in a conjunct is the table's column only if the table has it (else an outer query's).
  const names = new Set(columns.map((column) => column.name));
  // With partial aggregation every conjunct runs here (partialLayout checked their names against the table).
  const filters = input.filters
    .filter((filter) => layout !== undefined || filter.unqualified.every((name) => names.has(name)))
    .map((filter) => filter.node);
  const used = paramsOf([filters, input.join?.where]);
  const numbering = new Map(used.map((number, i) => [number, i + 1]));
  const conditions = filters.map((node) => renumberParams(node, (number) => numbering.get(number)!));
  const values = used.map((number) => params[number - 1]);
  let relation: Record<string, unknown> = { RangeVar: input.relation };
  if (input.guard) {
    conditions.push(renumberParams(input.guard, () => used.length + 1));
    values.push(mapVersion);
  }
  if (input.join) {
    const join = input.join;
    const own = join.where === undefined ? [] : [renumberParams(join.where, (number) => numbering.get(number)!)];
    const guards = join.guards.map((guard) => renumberParams(guard, () => used.length + 1));
    if (guards.length > 0) values.push(mapVersion);
    const inner: Record<string, unknown> = { targetList: joinTargets(join), fromClause: join.from, op: 'SETOP_NONE' };
    const all = [...own, ...guards];
    if (all.length > 0) inner.whereClause = all.length === 1 ? all[0] : { BoolExpr: { boolop: 'AND_EXPR', args: all } };
    relation = { RangeSubselect: { subquery: { SelectStmt: inner }, alias: { aliasname: JOIN_ALIAS } } };
  }
  const select: Record<string, unknown> = {
    targetList: layout
      ? layout.targets
      : columns.map((column) => ({ ResTarget: { val: { ColumnRef: { fields: [{ String: { sval: column.name } }] } } } })),
    ...(layout && layout.groupBy.length > 0 ? { groupClause: layout.groupBy } : {}),
    fromClause: [relation],
    limitCount: { A_Const: { ival: { ival: limit } } },
    limitOption: 'LIMIT_OPTION_COUNT',
    op: 'SETOP_NONE',
  };
  if (conditions.length === 1) select.whereClause = conditions[0];
  if (conditions.length > 1) select.whereClause = { BoolExpr: { boolop: 'AND_EXPR', args: conditions } };
  return { sql: deparse({ SelectStmt: select }), params: values };
}

/**
 * Creates the input's temporary table from the shards' rows: CREATE TABLE AS over the rows
 * zipped from one JSON array of text per column (`ROWS FROM (json_array_elements_text(...))`),
 * each value cast to the column's type and collation; one round trip, later chunks are INSERTs.
 * JSON, not a text[] parameter: JSON.stringify is native and ~50x faster than node-pg's array
 * literal escaping, which dominated the coordinator step (bench 'coordinator'). `begin` opens
 * the coordinator's transaction in the same round trip.
 */
async function fillInput(
  session: ShardSession,
  input: CoordinatorInput,
  shape: readonly Column[],
  columns: readonly Column[],
  rows: (string | null)[][],
  grouped: boolean,
  begin: boolean,
): Promise<void> {
  const name = quoteIdent(input.tempTable);
  const preamble = begin ? ['BEGIN'] : [];
  // The primary key, when the query groups and reads all of it: PostgreSQL then lets the other
  // columns be selected ungrouped (functional dependency), as on the real table.
  const key = shape.filter((column) => column.pk);
  const withKey = grouped && key.length > 0 && key.every((column) => columns.includes(column));
  if (columns.length === 0) {
    await session.queryPipelined(preamble, `CREATE TEMPORARY TABLE ${name} ON COMMIT DROP AS SELECT FROM generate_series(1, $1::int8)`, [
      rows.length,
    ]);
    return;
  }
  const casts = columns
    .map(
      (column, c) =>
        `u.v${c + 1}::${column.type}${column.collation === null ? '' : ` COLLATE ${column.collation}`} AS ${quoteIdent(column.name)}`,
    )
    .join(', ');
  const arrays = columns.map((_, c) => `json_array_elements_text($${c + 1}::json)`).join(', ');
  const aliases = columns.map((_, c) => `v${c + 1}`).join(', ');
  const source = `SELECT ${casts} FROM ROWS FROM (${arrays}) AS u(${aliases})`;
  const chunk = (start: number) => {
    const part = rows.slice(start, start + INSERT_CHUNK_ROWS);
    return columns.map((_, c) => JSON.stringify(part.map((row) => row[c]!)));
  };
  await session.queryPipelined(preamble, `CREATE TEMPORARY TABLE ${name} ON COMMIT DROP AS ${source}`, chunk(0));
  for (let start = INSERT_CHUNK_ROWS; start < rows.length; start += INSERT_CHUNK_ROWS) {
    await session.query(`INSERT INTO pg_temp.${name} ${source}`, chunk(start));
  }
  if (withKey)
    await session.query(`ALTER TABLE pg_temp.${name} ADD PRIMARY KEY (${key.map((column) => quoteIdent(column.name)).join(', ')})`);
}
