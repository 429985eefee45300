import { rmSync } from 'node:fs';
import path from 'node:path';
import { buildSync } from 'esbuild';

const root = path.resolve(import.meta.dirname, '../..');
/** One folder per test process: parallel workers never write the same file. */
const outDir = path.join(root, '.tmp', `programs-${process.pid}`);
const built = new Map<string, string>();

/**
 * A TypeScript program of this repository (`file`: from the root, or absolute) bundled with the
 * source it imports into one ES module; packages stay external (resolved from the repository's
 * node_modules, as under tsx). Built once per test process, then reused by every child.
 *
 * Why: `node --import tsx` resolves and loads each of the ~100 source modules through tsx's
 * loader thread; a child started from the bundle runs the same code in a third of the CPU time
 * (measured ~0.9 s against ~2.6 s per start), and the chaos tests start about a hundred children.
 * No source maps (they cost ~0.2 s per start): a child's stack trace points into the bundle,
 * whose `// src/...` comments name each module.
 */
export function compiledProgram(file: string): string {
  const entry = path.resolve(root, file);
  let out = built.get(entry);
  if (out === undefined) {
    out = path.join(outDir, `${built.size}-${path.basename(entry, '.ts')}.mjs`);
    buildSync({
      entryPoints: [entry],
      outfile: out,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      packages: 'external',
      logLevel: 'silent',
    });
    built.set(entry, out);
  }
  return out;
}

process.on('exit', () => rmSync(outDir, { recursive: true, force: true }));
