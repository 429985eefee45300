import { deparse } from './sql-parser.js';

/**
 * Broadcast plans: plain data, made once per SQL text by the planner and cached. A plan is the
 * statement sent to every shard plus the merge steps that turn the shards' partial results into
 * what one server would have returned. `formatPlan` prints it for `router.explain`.
 */

/** What the planner needs to know about the shards' functions. */
export interface PlannerCatalog {
  /** Whether a function name (unqualified, lower case) is an aggregate or window function on the shards. */
  isAggregate(name: string): boolean;
  /** Whether a table (schema as written, or undefined) is a registered reference table: a full copy on every shard. */
  isReferenceTable?(schema: string | undefined, name: string): boolean;
  /**
   * For a registered sharded table, the condition that makes a shard read only the buckets it
   * owns in the map version the broadcast routes by, given as parameter `$versionParam` (see
   * movesGuardCondition); undefined for any other table.
   */
  movesGuard?(schema: string | undefined, name: string, versionParam: number, qualifier?: string): string | undefined;
  /** A registered sharded table's shard key column (join push-down); undefined for any other table. */
  shardKey?(schema: string | undefined, name: string): string | undefined;
}

/** A shard result column: a visible output position, or the n-th helper column the rewrite appended. */
export type ColumnRef = { readonly kind: 'visible'; readonly position: number } | { readonly kind: 'hidden'; readonly index: number };

/** How the merge combines one shard result column across shards (aggregate plans). */
export type ColumnRole =
  /** Part of the group's identity (a GROUP BY expression). */
  | { readonly kind: 'key' }
  /** Determined by the group (e.g. upper(g) with GROUP BY g): the same on every shard, taken from the first. */
  | { readonly kind: 'value' }
  | { readonly kind: 'count' }
  | { readonly kind: 'sum' }
  /** `collation`: an explicit COLLATE on the argument (quoted), which decides the text order. */
  | { readonly kind: 'min' | 'max'; readonly collation?: string }
  | { readonly kind: 'bool_and' }
  | { readonly kind: 'bool_or' }
  /** avg(x) = sum(x) in this column / count(x) in the hidden column `count`. */
  | { readonly kind: 'avg'; readonly count: ColumnRef }
  /** The hidden count(x) of an avg: consumed by the avg, never output. */
  | { readonly kind: 'avg_count' };

export type ComparisonOperator = '=' | '<>' | '<' | '<=' | '>' | '>=';

/** A HAVING condition, evaluated on merged groups with SQL's three-valued logic. */
export type Condition =
  | { readonly kind: 'and' | 'or'; readonly args: readonly Condition[] }
  | { readonly kind: 'not'; readonly arg: Condition }
  | { readonly kind: 'compare'; readonly op: ComparisonOperator; readonly left: Operand; readonly right: Operand }
  | { readonly kind: 'between'; readonly negated: boolean; readonly arg: Operand; readonly low: Operand; readonly high: Operand }
  | { readonly kind: 'is_null'; readonly negated: boolean; readonly arg: Operand }
  /** A boolean-valued operand used as a condition (e.g. bool_and(x) or a boolean group key). */
  | { readonly kind: 'truth'; readonly arg: Operand };

/** A value in a HAVING condition: a merged column (aggregate or group-determined expression the shards computed), or a literal. */
export type Operand =
  | { readonly kind: 'column'; readonly column: ColumnRef }
  | { readonly kind: 'literal'; readonly text: string | null; readonly type: 'number' | 'string' | 'boolean' | 'null' }
  /** A $n parameter (0-based index), compared as the other side's type. */
  | { readonly kind: 'param'; readonly index: number };

/** LIMIT/OFFSET: a constant or a $n parameter resolved per execution. */
export type Count = { readonly kind: 'constant'; readonly value: number } | { readonly kind: 'param'; readonly index: number };

export interface SortKey {
  readonly column: ColumnRef;
  readonly descending: boolean;
  readonly nullsFirst: boolean;
  /** An explicit COLLATE clause's name, quoted for SQL (e.g. `"en-x-icu"`), if the ORDER BY item had one. */
  readonly collation: string | undefined;
  /** The ORDER BY item as written (for explain). */
  readonly text: string;
}

interface PlanBase {
  readonly sql: string;
}

/** A SELECT over sharded data: every shard runs `shardSql`, the router merges. */
export interface SelectPlan extends PlanBase {
  readonly kind: 'select';
  readonly shardSql: string;
  /**
   * The number of the parameter that carries the map version the broadcast routes by, when the
   * shard query reads a registered sharded table: the query then reads only the buckets the
   * shard owns in that version, and fails with STALE_BUCKET_MAP if the shard is at another.
   */
  readonly mapVersionParam: number | undefined;
  /** Helper columns appended to the shard query (never output), in order, as SQL text. */
  readonly hidden: readonly string[];
  /** Present for aggregate queries (GROUP BY or aggregates): one role per visible target, then per hidden column. */
  readonly aggregate:
    | {
        readonly visibleRoles: readonly ColumnRole[];
        readonly hiddenRoles: readonly ColumnRole[];
        /** True without GROUP BY: exactly one output group, even over no rows. */
        readonly ungrouped: boolean;
      }
    | undefined;
  readonly having: Condition | undefined;
  readonly distinct: boolean;
  readonly sort: readonly SortKey[];
  readonly limit: Count | undefined;
  readonly offset: Count | undefined;
  /** How to learn the collations of the text the merge orders (see collation-probe.ts); none when nothing could be text. */
  readonly collationProbe?: CollationProbe;
  /**
   * A join every shard answers whole for its own rows (see join-pushdown.ts): its sharded tables
   * (`qualifier.key`, each guarded against moves) and reference tables, for explain.
   */
  readonly pushedJoin?: {
    readonly sharded: readonly string[];
    readonly references: readonly string[];
    /**
     * The equated shard key columns. Pushing down is exact only if equal keys have equal text
     * (the bucket hashes `key::text`): the broadcaster checks their types once on a shard and
     * otherwise runs `fallback` (the coordinator step).
     */
    readonly keys: readonly { readonly schema: string | undefined; readonly table: string; readonly column: string }[];
    readonly fallback?: BroadcastPlan;
  };
  /**
   * The plan to use if the shards report an undefined column (42703): `GROUP BY name` read as
   * the select-list alias rather than a table column (see the planner).
   */
  readonly ifColumnMissing?: SelectPlan;
}

/**
 * A statement the shards answer with one row: the collation (quoted name) of each expression
 * the merge orders; `sort[i]` and each role's `slot` index that row.
 */
export interface CollationProbe {
  /** The query's FROM item and the expressions whose collation matters, as parse-tree nodes. */
  readonly from: Record<string, unknown>;
  readonly expressions: readonly Record<string, unknown>[];
  readonly sort: readonly (number | undefined)[];
  /** min/max columns: `v<position>` or `h<index>`, and their slot in the probe's row. */
  readonly roles: readonly { readonly column: string; readonly slot: number }[];
}

/** A statement that reads no sharded table (no FROM): one shard answers it. */
export interface SingleShardPlan extends PlanBase {
  readonly kind: 'single';
}

/** Anything other than SELECT (DDL, UPDATE, DELETE, ...): every shard runs it inside one two-phase commit. */
export interface WritePlan extends PlanBase {
  readonly kind: 'write';
  /** The statement's kind as PostgreSQL's parser names it (UpdateStmt, CreateStmt, ...). */
  readonly statement: string;
}

/** A WHERE conjunct the shards can apply to one input table, with the unqualified names it reads. */
export interface CoordinatorFilter {
  readonly node: Record<string, unknown>;
  /** Pushed only if every one is a column of the table (else it names an outer query's column). */
  readonly unqualified: readonly string[];
}

/** An aggregate a shard can compute partially for a coordinator step (see plan-partial.ts). */
export interface PartialAggregate {
  /** The call's structural key: where it appears in the outer query, it is replaced by the combination. */
  readonly key: string;
  readonly kind: 'count' | 'sum' | 'min' | 'max' | 'avg';
  /** The column it aggregates; undefined for count(*). */
  readonly column: string | undefined;
  /** The call as written (FILTER included): the shard query computes it (avg as sum and count). */
  readonly call: Record<string, unknown>;
}

/** Partial aggregation of a coordinator step over one table: group by `keys` and `distinct`, partial `aggregates`. */
export interface PartialSpec {
  readonly keys: readonly string[];
  /** Arguments of DISTINCT aggregates (not already keys): shards send distinct group/value pairs. */
  readonly distinct: readonly string[];
  readonly aggregates: readonly PartialAggregate[];
  /** Every DISTINCT aggregate ignores NULL inputs (count, sum, string_agg, ...; not array_agg): see coordinator-partial.ts. */
  readonly nullIgnoringDistinct: boolean;
}

/** One occurrence of a sharded table in a coordinator plan: what every shard sends of it. */
/** A join each shard runs whole (plan-pushed-join.ts): its rows fill one temporary table. */
export interface CoordinatorJoin {
  /** The statement's FROM items (the join), as written. */
  readonly from: readonly Record<string, unknown>[];
  /** The statement's whole WHERE, run on the shards. */
  readonly where: Record<string, unknown> | undefined;
  /** The columns the outer query reads: `name` is the temporary table's column, `value` the join's ColumnRef. */
  readonly targets: readonly { readonly name: string; readonly value: Record<string, unknown> }[];
  /** The moves guard of each sharded table of the join (on its qualified key), the map version as $1. */
  readonly guards: readonly Record<string, unknown>[];
  /** The sharded tables joined (for explain). */
  readonly tables: readonly string[];
  /** Their shard key columns: pushing down is exact only if these hash equal values alike (join-keys.ts). */
  readonly keys: readonly { readonly schema: string | undefined; readonly table: string; readonly column: string }[];
}

export interface CoordinatorInput {
  /** Set when the input is a pushed-down join rather than one table (then relation, names, filters and guard are unused). */
  readonly join?: CoordinatorJoin;
  readonly schema: string | undefined;
  readonly table: string;
  /** The temporary table (in pg_temp, on the coordinator) that holds the shards' rows. */
  readonly tempTable: string;
  /** The table as the statement names it (RangeVar body, alias included): the inner query's FROM. */
  readonly relation: Record<string, unknown>;
  /** Candidate column names (those that are the table's columns are read); undefined: every column. */
  readonly names: readonly string[] | undefined;
  readonly filters: readonly CoordinatorFilter[];
  /** The moves guard of a registered sharded table, with the map version as $1 (renumbered per query). */
  readonly guard: Record<string, unknown> | undefined;
}

/**
 * A SELECT the merge steps cannot answer: each shard sends the rows of every sharded table the
 * statement reads (needed columns, own filters), a coordinator shard holds them in temporary
 * tables and runs the statement itself over them (see plan-coordinator.ts).
 */
export interface CoordinatorPlan extends PlanBase {
  readonly kind: 'coordinator';
  readonly inputs: readonly CoordinatorInput[];
  /** The statement with its sharded tables swapped for the temporary ones; takes the caller's parameters. */
  readonly outerSql: string;
  /**
   * When the statement is a grouped query over one table with partial-able aggregates and its
   * whole WHERE runs on the shards: the spec, and the outer statement's tree to rewrite with the
   * combinations once the column types are known.
   */
  readonly partial?: { readonly spec: PartialSpec; readonly outer: Record<string, unknown> };
  /** Some SELECT of the statement has GROUP BY (temporary tables then get the primary key, see coordinator-step.ts). */
  readonly grouped: boolean;
  /** `DECLARE ... NO SCROLL CURSOR FOR` the outer query (broadcastStream). */
  readonly outerCursorSql: string;
  /** With a pushed-down join: the per-table pull-up, run instead when the join's keys do not hash equal values alike. */
  readonly joinFallback?: CoordinatorPlan;
}

export type BroadcastPlan = SelectPlan | SingleShardPlan | WritePlan | CoordinatorPlan;

/** Position of a column in a shard row of `width` columns that ends with `hiddenCount` helper columns. */
export function columnIndex(ref: ColumnRef, width: number, hiddenCount: number): number {
  return ref.kind === 'visible' ? ref.position : width - hiddenCount + ref.index;
}

/** The plan as text: what `router.explain(sql)` prints. */
export function formatPlan(plan: BroadcastPlan): string {
  switch (plan.kind) {
    case 'single':
      return `Single shard (the statement reads no sharded table)\n  Query: ${plan.sql}`;
    case 'write':
      return `Write on every shard, atomic (two-phase commit)\n  Statement: ${plan.statement}\n  Query: ${plan.sql}\n  Result: rowCount summed over the shards`;
    case 'select':
      return formatSelect(plan);
    case 'coordinator':
      return formatCoordinator(plan);
    default: {
      const never: never = plan;
      throw new Error(`unknown plan ${String(never)}`);
    }
  }
}

function formatSelect(plan: SelectPlan): string {
  const lines = ['Broadcast SELECT to every shard', `  Shard query: ${plan.shardSql}`];
  if (plan.pushedJoin) {
    const { sharded, references } = plan.pushedJoin;
    const referenceText = references.length > 0 ? `; reference tables ${references.join(', ')}` : '';
    lines.push(`  Join pushed down whole to each shard: co-located on ${sharded.join(' = ')}${referenceText}`);
    if (plan.pushedJoin.fallback) lines.push("  (the coordinator step instead if the shard keys' types print equal values differently)");
  }
  if (plan.hidden.length > 0) lines.push(`  Helper columns (dropped from the result): ${plan.hidden.join(', ')}`);
  const steps: string[] = [];
  if (plan.aggregate) {
    const roles = [...plan.aggregate.visibleRoles.map((role, i) => `c${i + 1} ${describeRole(role)}`)];
    for (const [i, role] of plan.aggregate.hiddenRoles.entries()) roles.push(`h${i + 1} ${describeRole(role)}`);
    steps.push(`${plan.aggregate.ungrouped ? 'Aggregate (one group)' : 'GROUP BY merge (hash on the key columns)'}: ${roles.join(', ')}`);
  } else if (plan.sort.length > 0) {
    steps.push("Concatenate: k-way merge of the shards' sorted rows");
  } else {
    steps.push("Concatenate the shards' rows");
  }
  if (plan.having) steps.push(`HAVING ${describeCondition(plan.having)}`);
  if (plan.distinct) steps.push('DISTINCT');
  if (plan.sort.length > 0 && plan.aggregate) steps.push(`Sort by ${plan.sort.map((key) => key.text).join(', ')}`);
  if (plan.offset) steps.push(`OFFSET ${describeCount(plan.offset)} (skipped by the router)`);
  if (plan.limit) steps.push(`LIMIT ${describeCount(plan.limit)}`);
  if (plan.hidden.length > 0) steps.push(`Drop ${plan.hidden.length} helper column(s)`);
  lines.push('  Merge:', ...steps.map((step, i) => `    ${i + 1}. ${step}`));
  return lines.join('\n');
}

function formatCoordinator(plan: CoordinatorPlan): string {
  const lines = ['Coordinator step: every shard sends the rows the query reads; one shard runs the query over them'];
  for (const input of plan.inputs) {
    if (input.join) {
      lines.push(...formatJoinInput(input, input.join));
      continue;
    }
    const table = input.schema === undefined ? input.table : `${input.schema}.${input.table}`;
    const columns = input.names === undefined ? 'every column' : `the columns among ${input.names.join(', ') || '(none)'}`;
    lines.push(`  Pulled up: ${table} -> pg_temp.${input.tempTable}: ${columns}`);
    if (input.filters.length > 0) lines.push(`    Shard filter: ${input.filters.map((filter) => deparse(filter.node)).join(' AND ')}`);
    if (input.guard) lines.push('    Moves guard: rows of the buckets the shard owns in the map version (read_guard)');
  }
  if (plan.partial) {
    const { keys, distinct, aggregates } = plan.partial.spec;
    lines.push(
      `  Partial aggregation (when the column types allow): shards group by ${[...keys, ...distinct].join(', ') || '()'} and send ` +
        `${aggregates.map((aggregate) => `${aggregate.kind}(${aggregate.column ?? '*'})`).join(', ') || 'the distinct values'}; the outer query combines them`,
    );
  }
  lines.push(`  Outer query (on the coordinator shard, in a transaction rolled back at the end): ${plan.outerSql}`);
  return lines.join('\n');
}

function formatJoinInput(input: CoordinatorInput, join: CoordinatorJoin): string[] {
  const lines = [
    `  Pushed-down join of ${join.tables.join(', ')} (each shard joins its own rows) -> pg_temp.${input.tempTable}: ${join.targets.map((target) => target.name).join(', ') || '(no columns)'}`,
    `    Shard query: ${deparse({ SelectStmt: { targetList: join.targets.map((target) => ({ ResTarget: { name: target.name, val: target.value } })), fromClause: join.from, ...(join.where ? { whereClause: join.where } : {}), op: 'SETOP_NONE' } })}`,
  ];
  lines.push("    (each table pulled up on its own instead if the shard keys' types print equal values differently)");
  for (const guard of join.guards) lines.push(`    Moves guard (rows of the buckets the shard owns): ${deparse(guard)}`);
  return lines;
}

function describeRole(role: ColumnRole): string {
  switch (role.kind) {
    case 'key':
      return 'group key';
    case 'value':
      return 'from the group';
    case 'count':
      return 'sum of counts';
    case 'sum':
      return 'sum of sums';
    case 'min':
    case 'max':
      return `${role.kind} of ${role.kind}s`;
    case 'bool_and':
      return 'AND of bool_and';
    case 'bool_or':
      return 'OR of bool_or';
    case 'avg':
      return `avg = sum / ${role.count.kind === 'hidden' ? `h${role.count.index + 1}` : `c${role.count.position + 1}`}`;
    case 'avg_count':
      return 'count for avg';
    default: {
      const never: never = role;
      throw new Error(`unknown role ${String(never)}`);
    }
  }
}

function describeCount(count: Count): string {
  return count.kind === 'constant' ? String(count.value) : `$${count.index + 1}`;
}

function describeOperand(operand: Operand): string {
  if (operand.kind === 'param') return `$${operand.index + 1}`;
  if (operand.kind === 'literal') return operand.text === null ? 'NULL' : operand.type === 'string' ? `'${operand.text}'` : operand.text;
  return operand.column.kind === 'hidden' ? `h${operand.column.index + 1}` : `c${operand.column.position + 1}`;
}

function describeCondition(condition: Condition): string {
  switch (condition.kind) {
    case 'and':
    case 'or':
      return `(${condition.args.map(describeCondition).join(` ${condition.kind.toUpperCase()} `)})`;
    case 'not':
      return `NOT ${describeCondition(condition.arg)}`;
    case 'compare':
      return `${describeOperand(condition.left)} ${condition.op} ${describeOperand(condition.right)}`;
    case 'between':
      return `${describeOperand(condition.arg)} ${condition.negated ? 'NOT ' : ''}BETWEEN ${describeOperand(condition.low)} AND ${describeOperand(condition.high)}`;
    case 'is_null':
      return `${describeOperand(condition.arg)} IS ${condition.negated ? 'NOT ' : ''}NULL`;
    case 'truth':
      return describeOperand(condition.arg);
    default: {
      const never: never = condition;
      throw new Error(`unknown condition ${String(never)}`);
    }
  }
}
