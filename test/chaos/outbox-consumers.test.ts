import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { ShardRouter } from '../../src/index.js';
import { connectFreshRouter, dropSchemas, shardConfigs, uniqueName } from '../support/cluster.js';
import { orderViolations } from '../support/outbox-order.js';
import { seededRandom } from '../support/random.js';
import { spawnTypeScript } from './support.js';

/**
 * Three consumer processes of one group, SIGKILLed at random while they handle events (and
 * replaced), while this process publishes. Checked against the committed events (the publishes
 * whose transaction resolved): every one handled at least once, no key's events ever handled
 * out of order (from the call log every handler call appends to; a redelivery may repeat the
 * run it interrupted, docs/outbox.md O4), and the idempotent sink holds
 * exactly one row per event. The run is bounded by work (every event in the sink), with a cap.
 */

const CONSUMERS = 3;
const KEYS = 30;
/** Publishing goes on in rounds (one event per key each, paced) until both minimums are met. */
const MIN_ROUNDS = 6;
const MAX_ROUNDS = 40;
const MIN_KILLS = 5;
const PUBLISH_PAUSE_MS = 15;
/**
 * Kills are scheduled by work, not time (starting a process can take half a minute on a loaded
 * machine): after every 8-24 handler calls, when at least two are up, a random one of them is killed
 * (mid-handling as a rule: the handlers sleep) and a new one started.
 */
const CALLS_BETWEEN_KILLS: readonly [number, number] = [8, 24];
const RUN_CAP_MS = 200_000;

const catalog = uniqueName('cat');
const data = uniqueName('sink');
const topic = 'chaos.event';
let router: ShardRouter;
let dir: string;

beforeAll(async () => {
  router = await connectFreshRouter({ catalogSchema: catalog, recovery: { intervalMillis: 0, atConnect: false } });
  for (const shardId of router.shardIds) {
    await router.executeOn(shardId, `CREATE SCHEMA ${data}`);
    await router.executeOn(shardId, `CREATE TABLE ${data}.sink (event_id uuid PRIMARY KEY, key text NOT NULL, seq bigint NOT NULL)`);
  }
  await router.registerShardedTable(`${data}.sink`, 'key');
  dir = mkdtempSync(join(tmpdir(), 'outbox-chaos-'));
}, 120_000);

afterAll(async () => {
  await router?.close();
  await dropSchemas(catalog, data);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Consumer {
  readonly child: ChildProcess;
  readonly ready: Promise<void>;
  isReady: boolean;
}

const errors: string[] = [];

function startConsumer(env: Record<string, string>): Consumer {
  const child = spawnTypeScript('test/chaos/outbox-consumer-child.ts', env);
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => errors.push(chunk));
  const consumer: Consumer = { child, ready: Promise.resolve(), isReady: false };
  (consumer as { ready: Promise<void> }).ready = new Promise<void>((resolve) => {
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      if (chunk.includes('ready')) {
        consumer.isReady = true;
        resolve();
      }
    });
    child.on('exit', () => resolve());
  });
  return consumer;
}

async function sinkCount(): Promise<number> {
  const { rows } = await router.broadcast<{ n: string }>(`SELECT count(*) AS n FROM ${data}.sink`);
  return Number(rows[0]!.n);
}

it('consumers SIGKILLed while handling: every committed event at least once, per-key order kept, one effect each', async () => {
  const log = join(dir, 'calls.log');
  const env = {
    OUTBOX_SHARD_URLS: shardConfigs()
      .map((shard) => shard.connectionString)
      .join(','),
    OUTBOX_CATALOG: catalog,
    OUTBOX_DATA: data,
    OUTBOX_GROUP: 'chaos',
    OUTBOX_TOPIC: topic,
    OUTBOX_CALL_LOG: log,
  };
  const random = seededRandom(13);
  const consumers = Array.from({ length: CONSUMERS }, () => startConsumer(env));
  await Promise.all(consumers.map((consumer) => consumer.ready));
  // Publish while the consumers run: rounds over the keys, so each key's events are spread out.
  const committed = new Map<string, { key: string; seq: number }>();
  let kills = 0;
  const publishing = (async () => {
    for (let round = 0; round < MAX_ROUNDS && (round < MIN_ROUNDS || kills < MIN_KILLS); round++) {
      for (let k = 0; k < KEYS; k++) {
        const key = `key-${k}`;
        const event = await router.transaction([key], (tx) => tx.publish(key, topic, { round }));
        // A key's publishes commit one after another, so its round-th commit must be its seq (O2).
        committed.set(event.id, { key, seq: round + 1 });
        await new Promise((resolve) => setTimeout(resolve, PUBLISH_PAUSE_MS));
      }
    }
  })();
  let published = false;
  void publishing.then(() => (published = true));
  const callCount = () => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').length - 1 : 0);
  const nextGap = () => CALLS_BETWEEN_KILLS[0] + Math.floor(random() * (CALLS_BETWEEN_KILLS[1] - CALLS_BETWEEN_KILLS[0]));
  let killAt = nextGap();
  const started = Date.now();
  while (Date.now() - started < RUN_CAP_MS) {
    await new Promise((resolve) => setTimeout(resolve, 25));
    if (published && (await sinkCount()) >= committed.size) break;
    if (callCount() < killAt) continue;
    // At least two up, so one keeps handling while the victim's replacement starts.
    const up = consumers.map((consumer, index) => (consumer.isReady ? index : -1)).filter((index) => index >= 0);
    if (up.length < 2) continue;
    const victim = up[Math.floor(random() * up.length)]!;
    consumers[victim]!.child.kill('SIGKILL');
    kills++;
    consumers[victim] = startConsumer(env);
    killAt = callCount() + nextGap();
  }
  await publishing;
  for (const consumer of consumers) consumer.child.kill('SIGKILL');
  expect(kills).toBeGreaterThanOrEqual(MIN_KILLS);
  expect(errors.filter((text) => !/STALE_BUCKET_MAP|ROUTER_CLOSED/.test(text))).toEqual([]);

  // One effect per committed event, and nothing else.
  const sink = await router.broadcast<{ event_id: string; key: string; seq: string }>(`SELECT event_id, key, seq FROM ${data}.sink`);
  expect(sink.rows.length).toBe(committed.size);
  for (const row of sink.rows) expect(committed.get(row.event_id)).toEqual({ key: row.key, seq: Number(row.seq) });

  // The call log: every committed event called at least once, and per key in order, a
  // redelivery after a kill going back at most to the start of the run it interrupted (O4).
  const calls = readFileSync(log, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      const [key, seq, id] = line.split(' ');
      return { key: key!, seq: Number(seq), id: id! };
    });
  expect(new Set(calls.map((call) => call.id))).toEqual(new Set(committed.keys()));
  const violations = orderViolations(calls);
  expect(violations).toEqual([]);
  expect(calls.length).toBeGreaterThanOrEqual(committed.size);
}, 300_000);
