import { redactConnectionString } from '../config.js';
import { ShardRouterError } from '../errors.js';
import type { Rebalancer, RebalanceProgress, RebalanceReport, ResumeReport, ShardRouter } from '../index.js';
import { nonNegativeInteger, parseFlags, positiveInteger, shardUrlsFrom } from './args.js';
import { byShardId, discoverCluster } from './discover.js';
import type { DiscoveredCluster } from './discover.js';
import { plural } from './format.js';
import { withRouter } from './inspect.js';
import { ProgressPrinter, formatPlan, formatResume, formatRunSummary, formatVerify } from './rebalance-format.js';
import type { ProgressStream } from './rebalance-format.js';

/**
 * `pg-shard-router rebalance | move-bucket | add-shard | remove-shard | verify`: the rebalancer
 * (docs/rebalance.md) for operators, over the shards' URLs. Every command that changes something
 * first prints its plan (a dry run of the same call), then runs it with a progress line on stderr.
 */

const DEFAULT_CATALOG_SCHEMA = 'shard_router';
/** Exit code of `verify` when rows are misplaced or reference tables differ. */
export const EXIT_VERIFY_FAILED = 2;

const CLUSTER_FLAGS = {
  shards: { type: 'string' },
  'catalog-schema': { type: 'string', default: DEFAULT_CATALOG_SCHEMA },
  json: { type: 'boolean', default: false },
} as const;

const DRY_RUN_FLAG = { 'dry-run': { type: 'boolean', default: false } } as const;

type Write = (text: string) => void;

export interface RebalanceCliIo {
  /** Results (stdout). */
  readonly write: Write;
  /** The progress line (stderr). */
  readonly progress: ProgressStream;
}

interface ClusterArgs {
  readonly shards?: string | undefined;
  readonly 'catalog-schema': string;
}

async function connectCluster<T>(
  values: ClusterArgs,
  env: NodeJS.ProcessEnv,
  work: (router: ShardRouter, cluster: DiscoveredCluster) => Promise<T>,
): Promise<T> {
  const catalogSchema = values['catalog-schema'];
  const cluster = await discoverCluster(shardUrlsFrom(values.shards, env), catalogSchema);
  return withRouter(cluster, catalogSchema, (router) => work(router, cluster));
}

function usageError(usage: string, problem: string): ShardRouterError {
  return new ShardRouterError('INVALID_ARGUMENT', `${problem}\nusage: pg-shard-router ${usage}`);
}

function expectPositionals(positionals: readonly string[], names: readonly string[], usage: string): void {
  if (positionals.length < names.length)
    throw usageError(
      usage,
      `missing ${names
        .slice(positionals.length)
        .map((name) => `<${name}>`)
        .join(' ')}`,
    );
  if (positionals.length > names.length) throw usageError(usage, `unexpected argument "${positionals[names.length]}"`);
}

function countsOf(router: ShardRouter): Map<string, number> {
  const counts = new Map<string, number>(router.shardIds.map((id) => [id, 0]));
  for (const [id, n] of router.bucketMap.bucketsPerShard()) counts.set(id, n);
  return counts;
}

/**
 * Prints the plan (a dry run of `call`), then, unless `dryRun`, runs `call` for real with the
 * progress line and prints the summary. Returns the report that was printed last.
 */
async function planAndRun(
  router: ShardRouter,
  rebalancerOf: (onProgress: (progress: RebalanceProgress) => void) => Rebalancer,
  call: (rebalancer: Rebalancer, dryRun: boolean) => Promise<RebalanceReport>,
  options: { dryRun: boolean; json: boolean; title: string; io: RebalanceCliIo; extra?: Record<string, unknown> },
): Promise<RebalanceReport> {
  const { io } = options;
  const printer = new ProgressPrinter(io.progress);
  const rebalancer = rebalancerOf((progress) => printer.update(progress));
  await router.refreshMap();
  const before = countsOf(router);
  const planned = await call(rebalancer, true);
  if (options.dryRun || planned.plan.length === 0) {
    // Nothing to move: the dry run's report is the result (with dryRun as asked).
    if (options.json)
      io.write(`${JSON.stringify({ clusterId: router.clusterId, ...options.extra, ...planned, dryRun: options.dryRun }, null, 2)}\n`);
    else io.write(formatPlan(planned, before, `${options.title}${options.dryRun ? ' (dry run: nothing changes)' : ''}`));
    return planned;
  }
  if (!options.json) io.write(formatPlan(planned, before, options.title));
  const started = Date.now();
  let report: RebalanceReport;
  try {
    report = await call(rebalancer, false);
  } finally {
    printer.finish();
  }
  if (options.json) io.write(`${JSON.stringify({ clusterId: router.clusterId, ...options.extra, ...report }, null, 2)}\n`);
  else io.write(`\n${formatRunSummary(report, Date.now() - started)}`);
  return report;
}

function rebalancerFactory(router: ShardRouter, bucketsPerMove: number | undefined) {
  return (onProgress: (progress: RebalanceProgress) => void) =>
    router.rebalancer({ onProgress, ...(bucketsPerMove === undefined ? {} : { bucketsPerMove }) });
}

const REBALANCE_USAGE = 'rebalance [--by count|size] [--dry-run] [--resume [--undo]] [--buckets-per-move N]';

export async function rebalanceCommand(args: string[], env: NodeJS.ProcessEnv, io: RebalanceCliIo): Promise<number> {
  const { values } = parseFlags({
    args,
    options: {
      ...CLUSTER_FLAGS,
      ...DRY_RUN_FLAG,
      by: { type: 'string', default: 'count' },
      resume: { type: 'boolean', default: false },
      undo: { type: 'boolean', default: false },
      'buckets-per-move': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  const by = values.by;
  if (by !== 'count' && by !== 'size') throw usageError(REBALANCE_USAGE, `--by must be "count" or "size", got "${by}"`);
  const bucketsPerMoveText = values['buckets-per-move'];
  const bucketsPerMove = bucketsPerMoveText === undefined ? undefined : positiveInteger('--buckets-per-move', bucketsPerMoveText);
  const dryRun = values['dry-run'];
  if (values.undo && !values.resume) throw usageError(REBALANCE_USAGE, '--undo goes with --resume');
  if (values.undo && dryRun) throw usageError(REBALANCE_USAGE, '--undo cannot be a dry run');

  return connectCluster(values, env, async (router) => {
    const factory = rebalancerFactory(router, bucketsPerMove);
    let resumed: ResumeReport | undefined;
    if (values.resume && !dryRun) {
      // Open moves first (finish the switched ones; copy again, or with --undo abandon, the rest).
      const printer = new ProgressPrinter(io.progress);
      try {
        resumed = await factory((progress) => printer.update(progress)).resume({ undo: values.undo });
      } finally {
        printer.finish();
      }
      if (values.undo) {
        if (values.json) io.write(`${JSON.stringify({ clusterId: router.clusterId, resumed }, null, 2)}\n`);
        else io.write(formatResume(resumed));
        return 0;
      }
      if (!values.json) io.write(`${formatResume(resumed)}\n`);
    }
    if (values.resume && dryRun && !values.json) io.write('--resume: open moves are not resumed in a dry run; the plan is as of now\n');
    const title = `rebalance plan (by ${by}${bucketsPerMove === undefined ? '' : `, ${bucketsPerMove} buckets per move`})`;
    await planAndRun(router, factory, (rebalancer, dry) => rebalancer.rebalance({ by, dryRun: dry }), {
      dryRun,
      json: values.json,
      title,
      io,
      ...(resumed ? { extra: { resumed } } : {}),
    });
    return 0;
  });
}

const MOVE_BUCKET_USAGE = 'move-bucket <bucket> <to-shard> [--dry-run]';

export async function moveBucketCommand(args: string[], env: NodeJS.ProcessEnv, io: RebalanceCliIo): Promise<number> {
  const { values, positionals } = parseFlags({
    args,
    options: { ...CLUSTER_FLAGS, ...DRY_RUN_FLAG },
    strict: true,
    allowPositionals: true,
  });
  expectPositionals(positionals, ['bucket', 'to-shard'], MOVE_BUCKET_USAGE);
  const bucket = nonNegativeInteger('<bucket>', positionals[0]!);
  const toShard = positionals[1]!;
  return connectCluster(values, env, async (router) => {
    const report = await planAndRun(
      router,
      rebalancerFactory(router, undefined),
      (rebalancer, dryRun) => rebalancer.moveBucket(bucket, toShard, { dryRun }),
      {
        dryRun: values['dry-run'],
        json: values.json,
        title: `move bucket ${bucket} to ${toShard}`,
        io,
      },
    );
    if (report.plan.length === 0 && !values.json) io.write(`bucket ${bucket} already belongs to ${toShard}\n`);
    return 0;
  });
}

const REMOVE_SHARD_USAGE = 'remove-shard <id> [--dry-run]';

export async function removeShardCommand(args: string[], env: NodeJS.ProcessEnv, io: RebalanceCliIo): Promise<number> {
  const { values, positionals } = parseFlags({
    args,
    options: { ...CLUSTER_FLAGS, ...DRY_RUN_FLAG },
    strict: true,
    allowPositionals: true,
  });
  expectPositionals(positionals, ['id'], REMOVE_SHARD_USAGE);
  const shardId = positionals[0]!;
  const dryRun = values['dry-run'];
  return connectCluster(values, env, async (router) => {
    const factory = rebalancerFactory(router, undefined);
    const printer = new ProgressPrinter(io.progress);
    const rebalancer = factory((progress) => printer.update(progress));
    await router.refreshMap();
    const before = countsOf(router);
    const planned = await rebalancer.removeShard(shardId, { dryRun: true });
    const title = `remove shard ${shardId}: move its buckets to the others`;
    if (dryRun) {
      if (values.json) io.write(`${JSON.stringify({ clusterId: router.clusterId, shardId, ...planned }, null, 2)}\n`);
      else io.write(formatPlan(planned, before, `${title} (dry run: nothing changes)`));
      return 0;
    }
    // Unlike the others, the call must run even with nothing to move: it marks the shard removed.
    if (!values.json) io.write(formatPlan(planned, before, title));
    const started = Date.now();
    let report: RebalanceReport;
    try {
      report = await rebalancer.removeShard(shardId);
    } finally {
      printer.finish();
    }
    if (values.json) {
      io.write(`${JSON.stringify({ clusterId: router.clusterId, shardId, removed: true, ...report }, null, 2)}\n`);
    } else {
      io.write(`\n${formatRunSummary(report, Date.now() - started)}`);
      io.write(
        `shard ${shardId} is removed: routers no longer use it; its data stays on the server (drop it yourself), and leave its URL out of --shards\n`,
      );
    }
    return 0;
  });
}

const ADD_SHARD_USAGE = 'add-shard <id> <postgres-url> [--dry-run]';

export async function addShardCommand(args: string[], env: NodeJS.ProcessEnv, io: RebalanceCliIo): Promise<number> {
  const { values, positionals } = parseFlags({
    args,
    options: { ...CLUSTER_FLAGS, ...DRY_RUN_FLAG },
    strict: true,
    allowPositionals: true,
  });
  expectPositionals(positionals, ['id', 'postgres-url'], ADD_SHARD_USAGE);
  const [id, connectionString] = positionals as [string, string];
  const displayUrl = redactConnectionString(connectionString);
  const dryRun = values['dry-run'];
  return connectCluster(values, env, async (router) => {
    const report = await router.rebalancer().addShard({ id, connectionString }, { dryRun });
    if (values.json) {
      io.write(`${JSON.stringify({ clusterId: router.clusterId, url: displayUrl, ...report }, null, 2)}\n`);
      return 0;
    }
    if (dryRun) {
      io.write(
        `add shard ${id} (${displayUrl}) (dry run: nothing changes): reachable, not part of another cluster, and every registered table exists there with the same columns (sharded ones empty)\n`,
      );
      const reference = router.tables.filter((table) => table.kind === 'reference').map((table) => table.table);
      io.write(
        reference.length === 0 ? 'no reference tables to copy\n' : `reference tables it would get a copy of: ${reference.join(', ')}\n`,
      );
      return 0;
    }
    io.write(`added shard ${id} (${displayUrl}); bucket map version ${report.mapVersion}\n`);
    const copied = Object.entries(report.referenceRows);
    io.write(
      copied.length === 0
        ? 'no reference tables to copy\n'
        : `reference tables copied: ${copied.map(([table, rows]) => `${table} (${plural(rows, 'row')})`).join(', ')}\n`,
    );
    io.write(`it owns no buckets yet: add its URL to --shards / PG_SHARD_URLS and run pg-shard-router rebalance\n`);
    return 0;
  });
}

export async function verifyCommand(args: string[], env: NodeJS.ProcessEnv, io: RebalanceCliIo): Promise<number> {
  const { values } = parseFlags({ args, options: CLUSTER_FLAGS, strict: true, allowPositionals: false });
  return connectCluster(values, env, async (router) => {
    const report = await router.rebalancer().verify();
    if (values.json) {
      const rowCounts = Object.fromEntries(
        Object.entries(report.rowCounts).map(([table, counts]) => [
          table,
          Object.fromEntries(Object.entries(counts).sort(([a], [b]) => byShardId(a, b))),
        ]),
      );
      io.write(`${JSON.stringify({ clusterId: router.clusterId, ...report, rowCounts }, null, 2)}\n`);
    } else io.write(formatVerify(router.clusterId, report));
    return report.ok ? 0 : EXIT_VERIFY_FAILED;
  });
}
