import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runTypeScript, uniqueName } from './cluster.js';

const root = path.resolve(import.meta.dirname, '../..');

/** The package's entry points and the source files a README example's imports stand for. */
const ENTRY_POINTS: readonly [string, string][] = [
  ['pg-shard-router/local', '../src/local.js'],
  ['pg-shard-router/prometheus', '../src/prometheus.js'],
  ['pg-shard-router/kysely', '../src/kysely.js'],
  ['pg-shard-router', '../src/index.js'],
];

/** The fenced ts block that follows `<!-- readme-example: NAME ... -->` in README.md. */
export function readmeExample(name: string): string {
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
  const match = new RegExp(`<!-- readme-example: ${name}\\b[^>]*-->\\s*\`\`\`ts\\n([\\s\\S]*?)\`\`\``).exec(readme);
  if (!match) throw new Error(`README.md has no example named ${name}`);
  return match[1]!;
}

/**
 * Runs a README example as written, with PG_SHARD_URLS set to `urls`; resolves to its stdout.
 * The only edit: the package's import paths resolve to this checkout's source, and the example's
 * own files (`localImports`: a path as written -> a path from the repository root) to theirs.
 */
export async function runReadmeExample(
  name: string,
  urls: readonly string[],
  localImports: Readonly<Record<string, string>> = {},
): Promise<string> {
  let source = readmeExample(name);
  for (const [entry, file] of ENTRY_POINTS) source = source.replaceAll(`from '${entry}'`, `from '${file}'`);
  // The example runs from .tmp/, one folder below the root.
  for (const [written, file] of Object.entries(localImports)) source = source.replaceAll(`from '${written}'`, `from '../${file}'`);
  mkdirSync(path.join(root, '.tmp'), { recursive: true });
  const file = path.join(root, '.tmp', `${uniqueName('readme')}.ts`);
  writeFileSync(file, source);
  try {
    return (await runTypeScript(file, { PG_SHARD_URLS: urls.join(',') })).stdout;
  } finally {
    rmSync(file, { force: true });
  }
}
