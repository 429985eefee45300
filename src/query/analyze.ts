import { asKind, nodeList, walk } from '../broadcast/plan/ast.js';
import type { AstBody } from '../broadcast/plan/ast.js';
import { deparse, parseStatement } from '../broadcast/plan/sql-parser.js';
import { ShardRouterError } from '../errors.js';
import type { Analysis, RoutedGroup, StatementKind } from './analysis.js';
import { valueSource } from './key-values.js';
import type { KeySource, KeyType } from './key-values.js';
import { unsupportedQuery } from './refusals.js';
import { groupsOf, selectFacts, writeFacts } from './levels.js';
import { refuseNestedQueries, targetName } from './scope.js';
import type { RegistryLookup, TableRef } from './scope.js';

/** What analysis needs to know about the cluster. */
export interface AnalysisCatalog {
  readonly lookup: RegistryLookup;
  /** The key type of a registered sharded table's key column (known before analysis). */
  keyType(table: string): KeyType | undefined;
  /** The shard unregistered tables live on, if the config names one. */
  readonly unregisteredShard: string | undefined;
}

const STATEMENTS: Record<string, StatementKind> = {
  SelectStmt: 'select',
  InsertStmt: 'insert',
  UpdateStmt: 'update',
  DeleteStmt: 'delete',
};

/**
 * Analyzes one statement for router.query.
 * @throws ShardRouterError INVALID_SQL, UNSUPPORTED (naming the construct and what to do), INVALID_ARGUMENT
 */
export function analyze(sql: string, catalog: AnalysisCatalog): Analysis {
  const parsed = parseStatement(sql);
  const statement = STATEMENTS[parsed.kind];
  if (!statement) {
    throw unsupportedQuery(
      `a ${parsed.kind.replace(/Stmt$/, '')} statement`,
      'router.query routes SELECT, INSERT, UPDATE and DELETE; run DDL and other statements with broadcast or executeOn',
    );
  }
  const body = parsed.body;
  const describe = (node: unknown) => deparse(node as AstBody);
  // A SELECT's subqueries and CTEs are levels of their own (levels.ts); a write's are refused.
  if (statement !== 'select') refuseNestedQueries(body);
  else if (body.intoClause !== undefined) throw unsupportedQuery('SELECT ... INTO', 'it creates a table; create it with broadcast');
  if (statement === 'insert') refuseInsertSelect(body);
  const items = [body.relation, ...nodeList(body.fromClause), ...nodeList(body.usingClause)].filter((item) => item !== undefined);
  const facts =
    statement === 'select' ? selectFacts(body, catalog.lookup, describe) : writeFacts(items, body.whereClause, catalog.lookup, describe);
  const tables = facts.tables;
  const unregistered = tables.filter((table) => !table.registered);
  if (unregistered.length > 0) return unregisteredRoute(sql, statement, tables, unregistered, catalog);
  if (!tables.some((table) => table.registered?.kind === 'sharded')) return { kind: 'reference', statement, sql, tables };
  if (statement === 'insert') return analyzeInsert(sql, parsed.body, tables[0]!, catalog);
  if (statement === 'update') refuseKeyChange(body, tables[0]!);
  const groups: RoutedGroup[] = groupsOf(facts).map((group) => {
    const types = new Set(group.tables.map((table) => catalog.keyType(table.registered!.table)));
    // Tables equated by key but with key columns of different types: not routable as one.
    return { ...group, keyType: types.size === 1 ? [...types][0] : undefined };
  });
  const only = groups.length === 1 ? groups[0]! : undefined;
  const source = only?.pin?.sources.length === 1 ? only.pin.sources[0]! : undefined;
  const point = source?.kind === 'param' && only!.keyType ? { index: source.index, keyType: only!.keyType } : undefined;
  return { kind: 'keyed', statement, sql, tables, groups, point };
}

function unregisteredRoute(
  sql: string,
  statement: StatementKind,
  tables: readonly TableRef[],
  unregistered: readonly TableRef[],
  catalog: AnalysisCatalog,
): Analysis {
  if (catalog.unregisteredShard !== undefined && tables.every((table) => table.registered?.kind !== 'sharded')) {
    return { kind: 'unregistered', statement, sql, shardId: catalog.unregisteredShard };
  }
  const first = unregistered[0]!.written;
  throw unsupportedQuery(
    `table ${first}, which is not in the table registry`,
    `register it with router.registerShardedTable('${first}', '<key column>') or router.registerReferenceTable('${first}'), ` +
      'or set query.unregisteredTablesShard in the config to the shard that holds unregistered tables',
  );
}

/** Only INSERT ... VALUES: the rows of an INSERT ... SELECT come from wherever the SELECT reads. */
function refuseInsertSelect(insert: AstBody): void {
  const select = asKind(insert.selectStmt, 'SelectStmt');
  if (insert.selectStmt !== undefined && (!select || nodeList(select.valuesLists).length === 0)) {
    throw unsupportedQuery('INSERT ... SELECT', 'the selected rows may live on other shards; read them, then insert them with VALUES');
  }
  walk([insert.selectStmt, insert.onConflictClause], (kind) => {
    if (kind === 'SubLink') throw unsupportedQuery('a subquery in an INSERT', 'pass the values as parameters');
    return undefined;
  });
}

function refuseKeyChange(update: AstBody, table: TableRef): void {
  const key = table.registered!.shardKey;
  if (nodeList(update.targetList).some((target) => targetName(target) === key)) {
    throw unsupportedQuery(
      `an UPDATE of the shard key ${table.written}.${key}`,
      "a row's shard key decides its shard; delete the row and insert it with the new key in one router.transaction([oldKey, newKey], ...)",
    );
  }
}

/** INSERT ... VALUES into a sharded table: each row's key source. */
function analyzeInsert(sql: string, insert: AstBody, table: TableRef, catalog: AnalysisCatalog): Analysis {
  const registered = table.registered!;
  const select = asKind(insert.selectStmt, 'SelectStmt');
  const rows = nodeList(select?.valuesLists);
  if (!select || rows.length === 0) throw unsupportedQuery(`INSERT ... DEFAULT VALUES into ${table.written}`, 'give the shard key a value');
  const keyType = catalog.keyType(registered.table);
  if (!keyType)
    throw unsupportedQuery(
      `an INSERT into ${table.written}`,
      `its key column ${registered.shardKey} has a type the router does not route by (text, varchar, integers, uuid); use execute(key, ...)`,
    );
  const columns = nodeList(insert.cols).map(targetName);
  const position = columns.indexOf(registered.shardKey!);
  if (columns.length === 0)
    throw unsupportedQuery(
      `an INSERT into ${table.written} without a column list`,
      'name the columns, so the router can find the shard key',
    );
  const conflict = (insert.onConflictClause ?? {}) as AstBody;
  if (
    conflict.action === 'ONCONFLICT_UPDATE' &&
    nodeList(conflict.targetList).some((target) => targetName(target) === registered.shardKey)
  ) {
    throw unsupportedQuery(
      `ON CONFLICT DO UPDATE of the shard key ${table.written}.${registered.shardKey}`,
      'a row cannot change shards; leave the key out of SET',
    );
  }
  const keys: KeySource[] = rows.map((row, index) => {
    const item = position === -1 ? undefined : nodeList(asKind(row, 'List')?.items)[position];
    const source = item === undefined ? undefined : valueSource(item);
    if (position === -1 || asKind(item, 'SetToDefault'))
      throw new ShardRouterError(
        'INVALID_ARGUMENT',
        `row ${index + 1} of the INSERT into ${table.written} gives no value for the shard key ${registered.shardKey}`,
      );
    if (!source)
      throw unsupportedQuery(
        `the shard-key expression of row ${index + 1} of the INSERT into ${table.written}`,
        'pass the key as a parameter ($n) or a constant',
      );
    if (source.kind === 'constant' && source.value === null)
      throw new ShardRouterError(
        'INVALID_ARGUMENT',
        `row ${index + 1} of the INSERT into ${table.written} has a NULL shard key ${registered.shardKey}`,
      );
    return source;
  });
  const returning = nodeList((insert.returningClause as AstBody | undefined)?.exprs ?? insert.returningList).length > 0;
  return {
    kind: 'insert',
    statement: 'insert',
    sql,
    table,
    rows: { keys, keyType, returning, onConflict: insert.onConflictClause !== undefined },
    tree: { InsertStmt: insert },
  };
}
