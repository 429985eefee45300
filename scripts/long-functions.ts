/**
 * Lists functions, methods and arrow functions in the given folders longer than a limit (lines
 * from the first to the last line of the declaration), longest first. The house keeps them under
 * about 60 lines (docs/architecture.md), except an exhaustive switch interpreter.
 *
 *   npx tsx scripts/long-functions.ts [--max 60] [src bench ...]
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

const args = process.argv.slice(2);
const maxAt = args.indexOf('--max');
const max = maxAt >= 0 ? Number(args.splice(maxAt, 2)[1]) : 60;
const roots = args.length > 0 ? args : ['src'];

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) return files(full);
    return name.endsWith('.ts') ? [full] : [];
  });
}

const found: { where: string; lines: number }[] = [];
for (const file of roots.flatMap(files)) {
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  const visit = (node: ts.Node) => {
    if (ts.isFunctionLike(node) && 'body' in node && node.body) {
      const start = source.getLineAndCharacterOfPosition(node.getStart()).line;
      const end = source.getLineAndCharacterOfPosition(node.getEnd()).line;
      const lines = end - start + 1;
      if (lines > max) {
        const name = (node as ts.FunctionLikeDeclaration).name?.getText(source) ?? '(anonymous)';
        found.push({ where: `${file}:${start + 1} ${name}`, lines });
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
}
found.sort((a, b) => b.lines - a.lines);
for (const entry of found) console.log(`${String(entry.lines).padStart(4)}  ${entry.where}`);
process.exitCode = found.length > 0 ? 1 : 0;
