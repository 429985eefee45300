import { asKind, names, nodeBody, nodeList } from './ast.js';
import type { AstNode } from './ast.js';
import type { ColumnRef, ComparisonOperator, Condition, Operand } from './plan.js';
import { deparse } from './sql-parser.js';
import { unsupported } from './unsupported.js';

/** HAVING as a Condition the merge evaluates on merged groups. */

const COMPARISON_OPERATORS = new Set<string>(['=', '<>', '!=', '<', '<=', '>', '>=']);

/**
 * The HAVING clause as a Condition: literals and $n parameters as themselves, every other
 * operand as the shard column `column` gives it (an aggregate or a group-determined expression).
 */
export function havingCondition(node: AstNode, column: (node: AstNode) => ColumnRef): Condition {
  return toCondition(node, (operand) => literalOperand(operand) ?? paramOperand(operand) ?? { kind: 'column', column: column(operand) });
}

function toCondition(node: AstNode, operand: (node: AstNode) => Operand): Condition {
  const bool = asKind(node, 'BoolExpr');
  if (bool) {
    const args = nodeList(bool.args).map((arg) => toCondition(arg, operand));
    if (bool.boolop === 'NOT_EXPR') return { kind: 'not', arg: args[0]! };
    return { kind: bool.boolop === 'OR_EXPR' ? 'or' : 'and', args };
  }
  const expression = asKind(node, 'A_Expr');
  if (expression) {
    const kind = expression.kind as string;
    const operator = names(expression.name).join('.');
    if (kind === 'AEXPR_OP' && COMPARISON_OPERATORS.has(operator)) {
      const op = (operator === '!=' ? '<>' : operator) as ComparisonOperator;
      return { kind: 'compare', op, left: operand(expression.lexpr as AstNode), right: operand(expression.rexpr as AstNode) };
    }
    if (kind === 'AEXPR_BETWEEN' || kind === 'AEXPR_NOT_BETWEEN') {
      const [low, high] = nodeList(nodeBody(expression.rexpr).items);
      return {
        kind: 'between',
        negated: kind === 'AEXPR_NOT_BETWEEN',
        arg: operand(expression.lexpr as AstNode),
        low: operand(low!),
        high: operand(high!),
      };
    }
  }
  const nullTest = asKind(node, 'NullTest');
  if (nullTest) return { kind: 'is_null', negated: nullTest.nulltesttype === 'IS_NOT_NULL', arg: operand(nullTest.arg as AstNode) };
  const value = operand(node);
  if (value.kind === 'literal' && value.type !== 'boolean' && value.type !== 'null') {
    throw unsupported('HAVING condition', deparse(node));
  }
  return { kind: 'truth', arg: value };
}

function literalOperand(node: AstNode): Operand | undefined {
  const constant = asKind(node, 'A_Const');
  if (!constant) return undefined;
  if (constant.isnull === true) return { kind: 'literal', text: null, type: 'null' };
  if ('ival' in constant) return { kind: 'literal', text: String((constant.ival as { ival?: number }).ival ?? 0), type: 'number' };
  if ('fval' in constant) return { kind: 'literal', text: (constant.fval as { fval?: string }).fval ?? '0', type: 'number' };
  if ('boolval' in constant)
    return { kind: 'literal', text: (constant.boolval as { boolval?: boolean }).boolval ? 't' : 'f', type: 'boolean' };
  if ('sval' in constant) return { kind: 'literal', text: (constant.sval as { sval?: string }).sval ?? '', type: 'string' };
  return undefined;
}

function paramOperand(node: AstNode): Operand | undefined {
  const param = asKind(node, 'ParamRef');
  return param ? { kind: 'param', index: ((param.number as number | undefined) ?? 1) - 1 } : undefined;
}
