import { ShardRouterError } from '../errors.js';
import { ShardRouter } from '../router/shard-router.js';
import type { RouterStatus } from '../router/shard-router.js';
import type { RecoveryReport } from '../twopc/recovery.js';
import { nonNegativeInteger, parseFlags, shardUrlsFrom } from './args.js';
import { CLI_APPLICATION_NAME, discoverCluster } from './discover.js';
import type { DiscoveredCluster } from './discover.js';
import { formatAge, formatServerVersion, formatTable, plural } from './format.js';

/** `pg-shard-router status` and `pg-shard-router recover`: a router over URLs, for operators. */

/** The router config's default catalog schema. */
const DEFAULT_CATALOG_SCHEMA = 'shard_router';
/** Exit code of `recover` when something is left unsettled. */
export const EXIT_IN_DOUBT = 2;

const CLUSTER_FLAGS = {
  shards: { type: 'string' },
  'catalog-schema': { type: 'string', default: DEFAULT_CATALOG_SCHEMA },
  json: { type: 'boolean', default: false },
} as const;

type Write = (text: string) => void;

/** Connects a router with background recovery off: the CLI decides what runs, and when. */
export async function withRouter<T>(
  cluster: DiscoveredCluster,
  catalogSchema: string,
  work: (router: ShardRouter) => Promise<T>,
): Promise<T> {
  const router = await ShardRouter.connect({
    shards: cluster.shards.map((shard) => ({ id: shard.id, connectionString: shard.connectionString })),
    catalogSchema,
    applicationName: CLI_APPLICATION_NAME,
    pool: { max: 4 },
    recovery: { intervalMillis: 0, atConnect: false },
  });
  try {
    return await work(router);
  } finally {
    await router.close();
  }
}

export async function statusCommand(args: string[], env: NodeJS.ProcessEnv, write: Write): Promise<number> {
  const { values } = parseFlags({ args, options: CLUSTER_FLAGS, strict: true, allowPositionals: false });
  const catalogSchema = values['catalog-schema'];
  const cluster = await discoverCluster(shardUrlsFrom(values.shards, env), catalogSchema);
  if (cluster.unfinished.length > 0) {
    // A router's connect would finish these catalogs, and status promises to change nothing.
    throw new ShardRouterError(
      'INVALID_ARGUMENT',
      `the catalog of shard(s) ${cluster.unfinished.join(', ')} of cluster ${cluster.clusterId} is unfinished (an interrupted ` +
        'creation, or a version without the 2PC decision table); status changes nothing, so it stops here. ' +
        'Connecting any router (or running pg-shard-router recover) finishes it',
    );
  }
  const status = await withRouter(cluster, catalogSchema, (router) => router.status());
  const urlOf = new Map(cluster.shards.map((shard) => [shard.id, shard.displayUrl]));

  if (values.json) {
    const shards = status.shards.map((shard) => ({ ...shard, url: urlOf.get(shard.shardId) }));
    write(
      `${JSON.stringify({ clusterId: status.clusterId, bucketMapVersion: status.bucketMapVersion, catalogSchema, shards }, null, 2)}\n`,
    );
    return 0;
  }
  write(formatStatus(status, catalogSchema, urlOf));
  return 0;
}

function formatStatus(status: RouterStatus, catalogSchema: string, urlOf: ReadonlyMap<string, string>): string {
  const lines = [
    `cluster ${status.clusterId}, bucket map version ${status.bucketMapVersion}, catalog schema ${catalogSchema}, ${plural(status.shards.length, 'shard')}`,
  ];
  let ours = 0;
  for (const shard of status.shards) {
    lines.push('', `${shard.shardId}  ${urlOf.get(shard.shardId) ?? ''}`);
    lines.push(shard.state === 'removed' ? '    REMOVED from the cluster' : `    active, ${plural(shard.buckets, 'bucket')}`);
    lines.push(shard.reachable ? '    reachable' : `    UNREACHABLE: ${shard.error ?? 'unknown error'}`);
    const twoPc = shard.maxPreparedTransactions > 0 ? '' : ' (cross-shard transactions impossible: it must be > 0)';
    lines.push(
      `    PostgreSQL ${formatServerVersion(shard.serverVersion)}, max_prepared_transactions ${shard.maxPreparedTransactions}${twoPc}`,
    );
    const pool = shard.pool;
    lines.push(
      `    pool (this command's): ${pool.size} open, ${pool.available} idle, ${pool.borrowed} borrowed, ${pool.pending} waiting, max ${pool.max}`,
    );
    if (!shard.reachable) continue;
    const prepared = shard.preparedTransactions;
    const mine = prepared.filter((p) => p.ours).length;
    ours += mine;
    if (prepared.length === 0) {
      lines.push('    prepared transactions: none');
      continue;
    }
    lines.push(`    prepared transactions: ${prepared.length} (${mine} of this cluster), oldest first:`);
    for (const p of prepared) {
      lines.push(`      ${formatAge(p.ageMillis).padStart(8)}  ${p.ours ? 'this cluster' : 'other       '}  ${p.gid}  (owner ${p.owner})`);
    }
  }
  lines.push('');
  lines.push(
    ours === 0
      ? 'no prepared transactions of this cluster'
      : `${plural(ours, 'prepared transaction')} of this cluster: pg-shard-router recover settles those older than the grace age`,
  );
  return `${lines.join('\n')}\n`;
}

export async function recoverCommand(args: string[], env: NodeJS.ProcessEnv, write: Write): Promise<number> {
  const { values } = parseFlags({
    args,
    options: { ...CLUSTER_FLAGS, 'grace-ms': { type: 'string' } },
    strict: true,
    allowPositionals: false,
  });
  const catalogSchema = values['catalog-schema'];
  const graceText = values['grace-ms'];
  const graceMillis = graceText === undefined ? undefined : nonNegativeInteger('--grace-ms', graceText);
  const cluster = await discoverCluster(shardUrlsFrom(values.shards, env), catalogSchema);
  const report = await withRouter(cluster, catalogSchema, (router) => router.recover(graceMillis === undefined ? {} : { graceMillis }));
  const unlisted = Object.entries(report.shards).filter(([, shard]) => shard.error !== undefined);
  const code = report.inDoubt.length > 0 || unlisted.length > 0 ? EXIT_IN_DOUBT : 0;

  if (values.json) {
    write(`${JSON.stringify({ clusterId: cluster.clusterId, graceMillis: graceMillis ?? null, ...report }, null, 2)}\n`);
    return code;
  }
  write(formatReport(cluster, report, graceMillis));
  return code;
}

function formatReport(cluster: DiscoveredCluster, report: RecoveryReport, graceMillis: number | undefined): string {
  const grace = graceMillis === undefined ? 'default grace age' : `grace age ${graceMillis} ms`;
  const lines = [
    `cluster ${cluster.clusterId}: one recovery pass over ${plural(cluster.shards.length, 'shard')} in ${report.durationMillis} ms (${grace})`,
    '',
  ];
  const rows = cluster.shards.map(({ id }) => {
    const shard = report.shards[id];
    if (!shard) return [id, '-', '-', '-', '-', '-'];
    if (shard.error !== undefined) return [id, 'error', '-', '-', '-', '-'];
    return [id, String(shard.prepared), String(shard.committed), String(shard.rolledBack), String(shard.inDoubt), String(shard.tooYoung)];
  });
  lines.push(formatTable(['shard', 'prepared', 'committed', 'rolled back', 'in doubt', 'too young'], rows), '');
  lines.push(
    `committed ${report.committed.length}, rolled back ${report.rolledBack.length}, in doubt ${report.inDoubt.length}; ` +
      `${plural(report.decisionsCollected, 'old decision row')} collected`,
  );
  for (const settled of [...report.committed, ...report.rolledBack]) {
    lines.push(`  ${settled.outcome === 'commit' ? 'committed  ' : 'rolled back'}  ${settled.shardId}  ${settled.gid}`);
  }
  const tooYoung = Object.values(report.shards).reduce((sum, shard) => sum + shard.tooYoung, 0);
  if (tooYoung > 0) {
    lines.push(
      `${plural(tooYoung, 'prepared transaction')} younger than the grace age left to their coordinator (run again later, or lower --grace-ms)`,
    );
  }
  if (report.inDoubt.length > 0) {
    lines.push('', 'still in doubt (not settled; run again once the reason is dealt with):');
    for (const doubt of report.inDoubt) lines.push(`  ${doubt.shardId}  ${doubt.gid}`, `      ${doubt.reason}`);
  }
  for (const [shardId, shard] of Object.entries(report.shards)) {
    if (shard.error !== undefined)
      lines.push('', `shard ${shardId} could not be examined, so it may still hold prepared transactions: ${shard.error}`);
  }
  return `${lines.join('\n')}\n`;
}
