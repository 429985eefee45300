/**
 * Where the relay's time goes (not a bench section; run by hand):
 *   npx tsx bench/profile-relay.ts [events=20000] [rounds=3]
 * The bench's relay workload (4 shards, 4 events per key, concurrency 256, batchSize 100, a fresh
 * group per round) beside the bare SKIP LOCKED queue, with every statement the client sends
 * timed by kind (claim, settle, renew, other), and EXPLAIN ANALYZE of a claim at the start, the
 * middle and the end of a round.
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import pg from 'pg';
import { withProfileCluster } from './profile-cluster.js';
import { nowNs, secondsSince } from './stats.js';
import { closedLoop } from './workload.js';

const events = Number(process.argv[2] ?? 20_000);
const rounds = Number(process.argv[3] ?? 3);
const schema = 'prof';

type Kind = 'claim' | 'settle' | 'renew' | 'purge' | 'idle' | 'bare' | 'other';
const stats = new Map<Kind, { count: number; millis: number; rows: number; max: number }>();
let captured: { text: string; values: unknown[] } | undefined;
const background = new Map<Kind, { text: string; values: unknown[] }>();

function kindOf(text: string): Kind {
  if (text.includes('candidates')) return 'claim';
  if (text.includes('acked_seq = greatest')) return 'settle';
  if (text.includes('lease_until = now()') && text.includes('UPDATE')) return 'renew';
  if (text.includes('DELETE FROM') && text.includes('outbox_events d')) return 'purge';
  if (text.includes('idle AS')) return 'idle';
  if (text.includes('bare_queue')) return 'bare';
  return 'other';
}

// Times every statement by kind (client side: send to result, the round trip and the server's work).
const original = pg.Client.prototype.query;
// biome-ignore lint/suspicious/noExplicitAny: patching pg's overloaded query
(pg.Client.prototype as any).query = function (this: pg.Client, config: any, values?: any, callback?: any) {
  const text: string = typeof config === 'string' ? config : (config?.text ?? '');
  const kind = kindOf(text);
  if (kind === 'claim' && !captured) captured = { text, values };
  if ((kind === 'purge' || kind === 'idle') && !background.has(kind)) background.set(kind, { text, values });
  const start = performance.now();
  // biome-ignore lint/suspicious/noExplicitAny: as above
  const result: any = (original as any).call(this, config, values, callback);
  if (result && typeof result.then === 'function') {
    result.then(
      (r: pg.QueryResult) => {
        const ms = performance.now() - start;
        const s = stats.get(kind) ?? { count: 0, millis: 0, rows: 0, max: 0 };
        s.count++;
        s.millis += ms;
        s.rows += r?.rowCount ?? r?.rows?.length ?? 0;
        s.max = Math.max(s.max, ms);
        stats.set(kind, s);
      },
      () => undefined,
    );
  }
  return result;
};

function report(label: string, seconds: number): void {
  const parts = [...stats].map(
    ([kind, s]) =>
      `${kind} ${s.count}x avg ${(s.millis / s.count).toFixed(1)} max ${s.max.toFixed(0)} ms, ${(s.rows / s.count).toFixed(0)} rows`,
  );
  console.log(`${label}: ${(events / seconds).toFixed(0)}/s in ${seconds.toFixed(2)} s | ${parts.join(' | ')}`);
  stats.clear();
}

async function explainClaim(admin: pg.Client, label: string, fresh = false): Promise<void> {
  if (!captured) return;
  await admin.query('BEGIN');
  try {
    const values = [...captured.values];
    if (fresh) {
      await admin.query(`DELETE FROM "${schema}_catalog".outbox_offsets WHERE group_name = $1`, [values[0]]);
      values[1] = 64;
    }
    const { rows } = await admin.query(`EXPLAIN (ANALYZE, BUFFERS, TIMING) ${captured.text}`, values);
    console.log(`--- EXPLAIN ANALYZE claim (${label})\n${rows.map((r) => r['QUERY PLAN']).join('\n')}`);
  } finally {
    await admin.query('ROLLBACK');
  }
}

const profiler = new Session();

async function main(): Promise<void> {
  profiler.connect();
  await profiler.post('Profiler.enable');
  await profiler.post('Profiler.setSamplingInterval', { interval: 200 });
  await withProfileCluster(schema, async (router, cluster) => {
    const admin = new pg.Client({ connectionString: cluster.connectionStrings[0] });
    await admin.connect();
    const topic = 'bench.relay';
    const first = router.shardIds[0]!;
    await router.executeOn(first, 'CREATE TABLE public.bare_queue (id bigserial PRIMARY KEY, payload jsonb NOT NULL)');
    await closedLoop(events / 4, 16, async (index) => {
      const key = `relay-${index}`;
      await router.transaction([key], async (tx) => {
        for (let n = 0; n < 4; n++) await tx.publish(key, topic, { n });
      });
      return true;
    });
    stats.clear();
    if (process.env.KEEP) {
      // Leaves the shards up for experiments by hand (stopped by killing this process).
      console.log(`shards up: ${cluster.connectionStrings.join(' ')}`);
      await new Promise(() => undefined);
    }
    for (let round = 0; round < rounds; round++) {
      let handled = 0;
      let resolveDone: () => void = () => undefined;
      const done = new Promise<void>((resolve) => {
        resolveDone = resolve;
      });
      const consumer = router.consume({
        group: `relay-${round}`,
        topics: [topic],
        concurrency: 256,
        batchSize: 100,
        pollIntervalMillis: 50,
        handler: () => {
          if (++handled === events) resolveDone();
        },
      });
      await consumer.ready;
      stats.clear();
      captured = undefined;
      // PROFILE=file: a CPU profile of the outbox rounds only (the client's side).
      if (process.env.PROFILE) await profiler.post('Profiler.start');
      const cpu = process.cpuUsage();
      const start = nowNs();
      await done;
      const seconds = secondsSince(start);
      const used = process.cpuUsage(cpu);
      if (process.env.PROFILE) {
        const { profile } = await profiler.post('Profiler.stop');
        writeFileSync(`${process.env.PROFILE}.${round}.cpuprofile`, JSON.stringify(profile));
      }
      report(`outbox round ${round} (client cpu ${((used.user + used.system) / 1e3).toFixed(0)} ms)`, seconds);
      await consumer.stop();
      if (round === rounds - 1) {
        await explainClaim(admin, 'after the round, nothing left');
        await explainClaim(admin, 'after the round, nothing left, warm session');
      }

      await router.executeOn(
        first,
        `INSERT INTO public.bare_queue (payload) SELECT jsonb_build_object('n', n) FROM generate_series(1, $1) n`,
        [events],
      );
      stats.clear();
      const bareStart = nowNs();
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          for (;;) {
            const { rowCount } = await router.executeOn(
              first,
              'DELETE FROM public.bare_queue WHERE id IN (SELECT id FROM public.bare_queue ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING id, payload',
            );
            if (!rowCount) return;
          }
        }),
      );
      report(`bare round ${round}`, secondsSince(bareStart));
    }
    // The first claim of a round (a fresh group, everything pending): the last round's group with its offsets deleted, rolled back.
    await explainClaim(admin, 'first claim of a round, 64 keys', true);
    await explainClaim(admin, 'first claim of a round, 64 keys, warm session', true);
    for (const [kind, statement] of background) {
      await admin.query('BEGIN');
      const { rows } = await admin.query(`EXPLAIN (ANALYZE, BUFFERS) ${statement.text}`, statement.values);
      console.log(`--- EXPLAIN ANALYZE ${kind}\n${rows.map((r) => r['QUERY PLAN']).join('\n')}`);
      await admin.query('ROLLBACK');
    }
    await admin.end();
  });
}

await main();
