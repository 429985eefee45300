import { quoteIdent } from '../../sql.js';

/**
 * Small helpers over libpg_query's JSON parse tree, where every node is `{ Kind: body }`.
 * Protobuf-style defaults apply: a zero integer is `{ ival: {} }`, an empty string `{ sval: {} }`.
 */

/** A parse-tree node: one key, the node kind, holding its fields. */
export type AstNode = Record<string, unknown>;
/** The fields of a node. */
export type AstBody = Record<string, unknown>;

export function nodeKind(node: unknown): string | undefined {
  if (node === null || typeof node !== 'object' || Array.isArray(node)) return undefined;
  return Object.keys(node)[0];
}

export function nodeBody(node: unknown): AstBody {
  const kind = nodeKind(node);
  return kind === undefined ? {} : ((node as AstNode)[kind] as AstBody);
}

/** The body if the node is of `kind`, else undefined. */
export function asKind(node: unknown, kind: string): AstBody | undefined {
  return nodeKind(node) === kind ? nodeBody(node) : undefined;
}

export function nodeList(value: unknown): AstNode[] {
  return Array.isArray(value) ? (value as AstNode[]) : [];
}

/** The text of a String node ('' for the protobuf default). */
export function stringValue(node: unknown): string | undefined {
  const body = asKind(node, 'String');
  return body ? ((body.sval as string | undefined) ?? '') : undefined;
}

/** A name list such as funcname or ColumnRef.fields as strings (A_Star as '*'). */
export function names(list: unknown): string[] {
  return nodeList(list).map((node) => stringValue(node) ?? (nodeKind(node) === 'A_Star' ? '*' : '?'));
}

/** The node with every `location` dropped: equal keys mean the same expression as PostgreSQL parsed it. */
export function structuralKey(node: unknown): string {
  return JSON.stringify(node, (key, value: unknown) => (key === 'location' ? undefined : value));
}

/** Depth-first walk over every node below (and including) `root`; `visit` returns false to skip a subtree. */
// biome-ignore lint/suspicious/noConfusingVoidType: visitors that return nothing are the common case.
export function walk(root: unknown, visit: (kind: string, body: AstBody) => boolean | void): void {
  if (Array.isArray(root)) {
    for (const item of root) walk(item, visit);
    return;
  }
  if (root === null || typeof root !== 'object') return;
  const kind = nodeKind(root);
  if (kind === undefined) return;
  const body = (root as AstNode)[kind];
  if (body === null || typeof body !== 'object') return;
  // Node kinds start with an upper-case letter; other keys (e.g. a lower-case field holding a
  // nested struct) are walked through as plain objects.
  if (/^[A-Z]/.test(kind)) {
    if (visit(kind, body as AstBody) === false) return;
  }
  for (const value of Object.values(body as AstBody)) {
    if (value !== null && typeof value === 'object') {
      if (Array.isArray(value)) walk(value, visit);
      else if (nodeKind(value) !== undefined && /^[A-Z]/.test(nodeKind(value)!)) walk(value, visit);
      else for (const inner of Object.values(value as AstBody)) walk(inner, visit);
    }
  }
}

/** The value of an integer constant node, if it is one. */
export function integerConstant(node: unknown): number | undefined {
  const constant = asKind(node, 'A_Const');
  if (!constant || !('ival' in constant)) return undefined;
  return ((constant.ival as { ival?: number }).ival ?? 0) as number;
}

/** Whether the node is the constant NULL. */
export function isNullConstant(node: unknown): boolean {
  return asKind(node, 'A_Const')?.isnull === true;
}

/** A name list (e.g. a COLLATE clause's collname) as a quoted SQL name: `"pg_catalog"."C"`. */
export function quotedName(list: unknown): string {
  return names(list).map(quoteIdent).join('.');
}
