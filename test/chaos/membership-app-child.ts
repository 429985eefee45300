import { ShardRouter } from '../../src/index.js';
import { requiredEnv } from './child-env.js';
import { describeError, startMembershipWriters } from './membership-writers.js';

/**
 * Child of rebalance-membership.test.ts: an application router that is not the rebalancer, in a
 * process of its own, and stale on purpose: no LISTEN and a one-minute poll, so it learns a new
 * map (an added shard, moved buckets, a removed shard) only when a shard's fence refuses one of
 * its writes. It writes until its stdin ends, then closes and exits 0.
 *
 * Env: CHAOS_SHARD_URLS (comma-separated, shards s0.. : the original shards only), CHAOS_CATALOG,
 * CHAOS_APPLICATION, CHAOS_TABLES (JSON MembershipTables), CHAOS_KEYS and CHAOS_CODES
 * (comma-separated, written by this process only), CHAOS_SEED.
 *
 * Stdout, one line per event, written synchronously (a pipe: synchronous on Linux), in the order
 * the writes were acknowledged:
 *   ready                                 once connected
 *   ack <key> <balance after | -1>        an acknowledged sharded write (-1: deleted)
 *   pending <key> <before> <after>        a sharded write of unknown outcome (key no longer written)
 *   ref <code> <v after> <rowCount>       an acknowledged reference write
 *   refpending <code> <before> <after>    a reference write of unknown outcome (code no longer written)
 *   fail <message>                        a write failed for real (that writer loop stopped)
 *   done <acknowledged> <reference acknowledged> <retried>   after a clean stop
 */

const say = (line: string) => process.stdout.write(`${line}\n`);
const list = (name: string) =>
  requiredEnv(name)
    .split(',')
    .filter((item) => item !== '');

const router = await ShardRouter.connect({
  shards: requiredEnv('CHAOS_SHARD_URLS')
    .split(',')
    .map((connectionString, i) => ({ id: `s${i}`, connectionString })),
  catalogSchema: requiredEnv('CHAOS_CATALOG'),
  applicationName: requiredEnv('CHAOS_APPLICATION'),
  // Stale: learns new maps only from a fence refusing its writes.
  mapRefresh: { listen: false, intervalMillis: 60_000 },
  // The parent's resume settles what the rebalancer's crash left; nothing is settled from here.
  recovery: { intervalMillis: 0, atConnect: false },
});

const writers = startMembershipWriters(
  router,
  JSON.parse(requiredEnv('CHAOS_TABLES')),
  {
    keys: list('CHAOS_KEYS'),
    codes: list('CHAOS_CODES'),
    shardedLoops: 3,
    referenceLoops: 2,
    seed: Number(requiredEnv('CHAOS_SEED')),
    pauseMillis: 10,
  },
  {
    ack: (key, after) => say(`ack ${key} ${after}`),
    pending: (key, before, after) => say(`pending ${key} ${before} ${after}`),
    ref: (code, v, rowCount) => say(`ref ${code} ${v} ${rowCount}`),
    refPending: (code, before, after) => say(`refpending ${code} ${before} ${after}`),
    failure: (error) => say(`fail ${describeError(error).replace(/\s+/g, ' ')}`),
  },
);
say('ready');

process.stdin.on('data', () => undefined);
process.stdin.on('end', () => {
  void (async () => {
    await writers.stop();
    await router.close();
    const { acknowledged, referenceAcknowledged, retried } = writers.counts;
    say(`done ${acknowledged} ${referenceAcknowledged} ${retried}`);
    process.exit(0);
  })().catch((error: unknown) => {
    say(`fail at stop: ${describeError(error).replace(/\s+/g, ' ')}`);
    process.exit(1);
  });
});
