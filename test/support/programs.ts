import { existsSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { buildSync } from 'esbuild';

const root = path.resolve(import.meta.dirname, '../..');
const tmp = path.join(root, '.tmp');
/** One folder per test process: parallel workers never write the same file. */
const outDir = path.join(tmp, `programs-${process.pid}`);
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
    if (built.size === 0) removeStaleFolders();
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

/** Folders of test processes that are gone (vitest ends its workers with a signal: no 'exit' event). */
function removeStaleFolders(): void {
  if (!existsSync(tmp)) return;
  for (const name of readdirSync(tmp).filter((entry) => /^programs-\d+$/.test(entry))) {
    const pid = Number(name.slice('programs-'.length));
    if (pid !== process.pid && !isAlive(pid)) rmSync(path.join(tmp, name), { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

process.on('exit', () => rmSync(outDir, { recursive: true, force: true }));
