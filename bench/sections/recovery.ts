import pg from 'pg';
import { ShardRouter } from '../../src/index.js';
import { startLocalCluster } from '../../src/local.js';
import { checkBacklog, finishDirectly, leaveBacklog, planBacklog } from '../prepared-backlog.js';
import type { BacklogCheck, BacklogOptions } from '../prepared-backlog.js';
import { atMost, check, size } from '../section.js';
import type { Section } from '../section.js';
import { nowNs, secondsSince } from '../stats.js';

/** The aim: one recover() over the backlog at most 2x the plain COMMIT/ROLLBACK PREPAREDs. */
export const RECOVERY_RATIO_TARGET = 2;
/** Connections per shard for the baseline: the same as recovery's finishing connections (recovery.ts). */
const CONNECTIONS_PER_SHARD = 4;
const SHARDS = 2;

export interface RecoveryBenchResult {
  readonly prepared: number;
  readonly recoverSeconds: number;
  readonly directSeconds: number;
  readonly ratio: number;
  readonly decisionsCollected: number;
  readonly afterRecover: BacklogCheck;
  readonly afterDirect: BacklogCheck;
  readonly inDoubt: number;
}

/**
 * Recovery at scale: a crash left `count` prepared transactions (built directly: our naming,
 * decision rows for 2/3 of them), one recover() settles them all. Baseline: the same backlog
 * built again and finished by plain COMMIT/ROLLBACK PREPARED sent directly over the same number
 * of connections per shard. Its own two local servers, because the shared bench servers allow 64
 * prepared transactions each.
 */
async function runRecoveryBench(count: number, log: (line: string) => void): Promise<RecoveryBenchResult> {
  const cluster = await startLocalCluster({ shards: SHARDS, maxPreparedTransactions: Math.ceil(count / SHARDS) + 50 });
  try {
    const urls = [...cluster.connectionStrings];
    const router = await ShardRouter.connect({ shards: cluster.shardConfigs(), recovery: { intervalMillis: 0, atConnect: false } });
    try {
      for (const url of urls) {
        const client = new pg.Client({ connectionString: url });
        await client.connect();
        await client.query('CREATE TABLE backlog (gid text PRIMARY KEY)').finally(() => client.end());
      }
      const options: BacklogOptions = {
        urls,
        clusterId: router.clusterId,
        catalog: 'shard_router',
        table: 'backlog',
        count,
        connectionsPerShard: CONNECTIONS_PER_SHARD,
      };
      const first = planBacklog(options);
      await leaveBacklog(options, first);
      log(`${count} prepared transactions left; recover() ...`);
      let start = nowNs();
      const report = await router.recover({ graceMillis: 0 });
      const recoverSeconds = secondsSince(start);
      const afterRecover = await checkBacklog(options, first);

      const second = planBacklog(options);
      await leaveBacklog(options, second);
      log(`${count} prepared transactions left again; plain COMMIT/ROLLBACK PREPARED ...`);
      start = nowNs();
      await finishDirectly(options, second);
      const directSeconds = secondsSince(start);
      const afterDirect = await checkBacklog(options, second);
      return {
        prepared: count,
        recoverSeconds,
        directSeconds,
        ratio: recoverSeconds / directSeconds,
        decisionsCollected: report.decisionsCollected,
        afterRecover,
        afterDirect,
        inDoubt: report.inDoubt.length,
      };
    } finally {
      await router.close();
    }
  } finally {
    await cluster.stop();
  }
}

export const recoverySection: Section<RecoveryBenchResult> = {
  name: 'recovery',
  title: 'Recovery at scale: one recover() over thousands of prepared transactions vs plain COMMIT/ROLLBACK PREPARED',
  async run(ctx) {
    const count = size(ctx, 10_000, 2_000);
    const r = await runRecoveryBench(count, ctx.log);
    const commits = Math.ceil(count / 3);
    return {
      setup:
        `${count} prepared transactions over ${SHARDS} local servers (1/3 with a commit row, 1/3 an abort row, 1/3 no decision), ` +
        `settled by one router.recover() vs the same number of COMMIT/ROLLBACK PREPARED sent directly over ${CONNECTIONS_PER_SHARD} connections per server`,
      figures: [
        {
          label: `recover() of ${count} prepared transactions`,
          value: r.recoverSeconds * 1e3,
          unit: 'ms',
          baseline: { label: 'plain COMMIT/ROLLBACK PREPARED', value: r.directSeconds * 1e3 },
          ratio: r.ratio,
          note: 'one run each',
          target: atMost('ratio', r.ratio, RECOVERY_RATIO_TARGET, 'x'),
        },
      ],
      guard: [
        check('every transaction settled to its decision', r.afterRecover.wrongOutcomes === 0 && r.inDoubt === 0, `${r.inDoubt} in doubt`),
        check('nothing left prepared', r.afterRecover.preparedLeft === 0 && r.afterDirect.preparedLeft === 0, 'after both'),
        check(
          'commit rows collected in the same pass',
          r.afterRecover.commitRowsLeft === 0 && r.decisionsCollected >= commits,
          `${r.decisionsCollected} collected, ${r.afterRecover.commitRowsLeft} left`,
        ),
      ],
      details: r,
    };
  },
  format(outcome) {
    const d = outcome.details;
    return `recover() ${d.recoverSeconds.toFixed(2)} s vs plain ${d.directSeconds.toFixed(2)} s for ${d.prepared}: ratio ${d.ratio.toFixed(2)} (target <= ${RECOVERY_RATIO_TARGET}); ${d.decisionsCollected} decision rows collected`;
  },
};
