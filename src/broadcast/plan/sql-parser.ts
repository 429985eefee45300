import { loadModule, parseSync } from 'libpg-query';
import type { Node, ParseResult } from 'libpg-query';
import { deparseSync } from 'pgsql-deparser';
import { ShardRouterError } from '../../errors.js';

/**
 * PostgreSQL's own parser (libpg_query, compiled to WebAssembly) and the matching deparser.
 * The WebAssembly module loads once per process, at ShardRouter.connect, so planning stays
 * synchronous afterwards.
 */
let loading: Promise<void> | undefined;
let loaded = false;

export function loadParser(): Promise<void> {
  loading ??= loadModule().then(() => {
    loaded = true;
  });
  return loading;
}

/** One parsed statement: its node kind (SelectStmt, UpdateStmt, ...) and body. */
export interface ParsedStatement {
  readonly kind: string;
  readonly body: Record<string, unknown>;
}

/**
 * Parses exactly one statement.
 * @throws ShardRouterError INVALID_SQL (with PostgreSQL's message and the cursor position), UNSUPPORTED (several statements)
 */
export function parseStatement(sql: string): ParsedStatement {
  if (!loaded) throw new Error('the SQL parser is not loaded (ShardRouter.connect loads it)');
  let result: ParseResult;
  try {
    result = parseSync(sql);
  } catch (error) {
    const details = (error as { sqlDetails?: { cursorPosition?: number } }).sqlDetails;
    const where = details?.cursorPosition !== undefined ? ` at character ${details.cursorPosition + 1}` : '';
    throw new ShardRouterError(
      'INVALID_SQL',
      `cannot parse the statement${where}: ${error instanceof Error ? error.message : String(error)}`,
      {
        cause: error,
      },
    );
  }
  const statements = result.stmts ?? [];
  if (statements.length !== 1) {
    throw new ShardRouterError(
      statements.length === 0 ? 'INVALID_SQL' : 'UNSUPPORTED',
      statements.length === 0 ? 'the statement is empty' : `broadcast takes one statement, got multiple statements (${statements.length})`,
    );
  }
  const node = statements[0]!.stmt as Record<string, unknown>;
  const kind = Object.keys(node)[0]!;
  return { kind, body: node[kind] as Record<string, unknown> };
}

/** SQL text of a statement or expression node. */
export function deparse(node: Record<string, unknown>): string {
  return deparseSync(node as Node, { pretty: false });
}
