/**
 * Where a publish's cost goes (not a bench section; run by hand):
 *   npx tsx bench/profile-publish.ts [transfersPerRound=3000] [rounds=5]
 * (VARIANTS=onePhase,onePhasePublish,onePhaseHandwritten,... picks variants; onePhaseHandwritten
 * writes the event with tx.execute into a plain table, as an application would by hand)
 * The bench's publish workload (bench/sections/outbox.ts: debit + credit, 16 in flight, 1PC on
 * one shard and 2PC over two, with and without one tx.publish), interleaved rounds, and per
 * variant: transfers/s, this process's CPU per transfer, and the CPU of the local shards' server
 * processes per transfer (from /proc, every descendant of this process, by kind: backends, WAL
 * writer, ...). `PROFILE=file` writes a CPU profile of the client per variant.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { withProfileCluster } from './profile-cluster.js';
import { closedLoop, interleavedRounds } from './workload.js';

const perRound = Number(process.argv[2] ?? 3_000);
const rounds = Number(process.argv[3] ?? 5);
const schema = 'prof';
// Experimental variants: a suffix sets environment switches for that variant's rounds only
// (e.g. onePhasePublish+PUB_NO_NOTIFY); VARIANTS=a,b,... picks them.
const VARIANTS = (process.env.VARIANTS ?? 'onePhase,onePhasePublish,twoPhase,twoPhasePublish').split(',');
type Variant = string;
const TICK_MICROS = 1e6 / 100; // USER_HZ

/** CPU (µs) of every descendant process of this one, by kind (the text after 'postgres: ' in its title, or 'postmaster'). */
function serverCpu(): Map<string, number> {
  const parent = new Map<number, number>();
  const stat = new Map<number, string[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const text = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(name), Number(fields[1]));
      stat.set(Number(name), fields);
    } catch {
      // Gone meanwhile.
    }
  }
  const mine = (pid: number): boolean => {
    for (let p = parent.get(pid); p !== undefined && p > 1; p = parent.get(p)) if (p === process.pid) return true;
    return false;
  };
  const byKind = new Map<string, number>();
  for (const [pid, fields] of stat) {
    if (!mine(pid)) continue;
    let kind = 'postmaster';
    try {
      const title = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (title.startsWith('postgres: ')) kind = /\d+\.\d+\.\d+\.\d+\(/.test(title) ? 'backends' : title.slice(10).trim().split(' ')[0]!;
    } catch {
      continue;
    }
    // utime, stime, cutime, cstime (fields 14-17 of stat, 12-15 after the command).
    const ticks = Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
    byKind.set(kind, (byKind.get(kind) ?? 0) + ticks * TICK_MICROS);
  }
  return byKind;
}

function minus(after: Map<string, number>, before: Map<string, number>): Map<string, number> {
  return new Map([...after].map(([kind, micros]) => [kind, micros - (before.get(kind) ?? 0)]));
}

const profiler = new Session();

async function main(): Promise<void> {
  profiler.connect();
  await profiler.post('Profiler.enable');
  await withProfileCluster(schema, async (router) => {
    const byShard = new Map<string, string[]>(router.shardIds.map((id) => [id, []]));
    for (let n = 0; [...byShard.values()].some((list) => list.length < 1024); n++)
      byShard.get(router.shardFor(`acct-${n}`))!.push(`acct-${n}`);
    const lists = [...byShard.values()];
    const one: [string, string][] = [];
    const two: [string, string][] = [];
    for (let i = 0; i < 256; i++) {
      const a = lists[i % lists.length]!;
      const b = lists[(i + 1) % lists.length]!;
      const slot = 4 * Math.floor(i / lists.length);
      one.push([a[slot]!, a[slot + 1]!]);
      two.push([a[slot + 2]!, b[slot + 3]!]);
    }
    for (const shardId of router.shardIds) {
      await router.executeOn(shardId, 'CREATE TABLE public.accounts (id text PRIMARY KEY, balance bigint NOT NULL)');
      // What an application writes by hand without tx.publish: one more statement, no per-key order.
      await router.executeOn(
        shardId,
        'CREATE TABLE public.handwritten_outbox (id bigserial PRIMARY KEY, key text NOT NULL, topic text NOT NULL, payload jsonb NOT NULL)',
      );
    }
    for (const key of new Set([...one, ...two].flat()))
      await router.execute(key, 'INSERT INTO public.accounts VALUES ($1, 1000000)', [key]);
    const debit = 'UPDATE public.accounts SET balance = balance - 1 WHERE id = $1';
    const credit = 'UPDATE public.accounts SET balance = balance + 1 WHERE id = $1';
    const handwritten = 'INSERT INTO public.handwritten_outbox (key, topic, payload) VALUES ($1, $2, $3::jsonb)';
    const transfer = (list: [string, string][], publish: boolean | 'handwritten') => async (index: number) => {
      const [from, to] = list[index % list.length]!;
      await router.transaction([from, to], async (tx) => {
        await tx.execute(from, debit, [from]);
        await tx.execute(to, credit, [to]);
        if (publish === 'handwritten')
          await tx.execute(from, handwritten, [from, 'bench.transfer', JSON.stringify({ from, to, amount: 1 })]);
        else if (publish) await tx.publish(from, 'bench.transfer', { from, to, amount: 1 });
      });
      return true;
    };
    const base: Record<string, (index: number) => Promise<boolean>> = {
      onePhase: transfer(one, false),
      onePhasePublish: transfer(one, true),
      onePhaseHandwritten: transfer(one, 'handwritten'),
      twoPhase: transfer(two, false),
      twoPhasePublish: transfer(two, true),
    };
    const op = (variant: Variant) => base[variant.split('+')[0]!]!;
    const switches = (variant: Variant) => variant.split('+').slice(1);
    const totals = new Map<Variant, { tps: number[]; client: number[]; server: Map<string, number>[] }>();
    await interleavedRounds(VARIANTS, { rounds, warmupRounds: 1 }, async (variant) => {
      const before = serverCpu();
      if (process.env.PROFILE) await profiler.post('Profiler.start');
      for (const key of switches(variant)) process.env[key] = '1';
      const result = await closedLoop(perRound, 16, op(variant));
      for (const key of switches(variant)) delete process.env[key];
      if (process.env.PROFILE) {
        const { profile } = await profiler.post('Profiler.stop');
        writeFileSync(`${process.env.PROFILE}.${variant}.cpuprofile`, JSON.stringify(profile));
      }
      const server = minus(serverCpu(), before);
      const entry = totals.get(variant) ?? { tps: [], client: [], server: [] };
      entry.tps.push(result.opsPerSecond);
      entry.client.push(result.cpuMicrosPerOp);
      entry.server.push(new Map([...server].map(([kind, micros]) => [kind, micros / perRound])));
      totals.set(variant, entry);
      return result.opsPerSecond;
    });
    const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
    for (const variant of VARIANTS) {
      const { tps, client, server } = totals.get(variant)!;
      // The warm-up round is the first entry.
      const measured = { tps: tps.slice(1), client: client.slice(1), server: server.slice(1) };
      const kinds = new Set(measured.server.flatMap((m) => [...m.keys()]));
      const serverParts = [...kinds]
        .map((kind) => [kind, median(measured.server.map((m) => m.get(kind) ?? 0))] as const)
        .filter(([, micros]) => micros >= 1)
        .map(([kind, micros]) => `${kind} ${micros.toFixed(0)}`);
      const serverTotal = median(measured.server.map((m) => [...m.values()].reduce((a, b) => a + b, 0)));
      console.log(
        `${variant.padEnd(16)} ${median(measured.tps).toFixed(0).padStart(5)}/s (${measured.tps.map((v) => v.toFixed(0)).join(' ')}) ` +
          `client ${median(measured.client).toFixed(0)} µs/op, server ${serverTotal.toFixed(0)} µs/op (${serverParts.join(', ')})`,
      );
    }
    const pairs = VARIANTS.filter((v) => v.includes('Publish') || v.includes('Handwritten')).map(
      (v) => [v, v.startsWith('one') ? 'onePhase' : 'twoPhase'] as const,
    );
    for (const [publish, plain] of pairs.filter(([, p]) => totals.has(p))) {
      const ratios = totals
        .get(publish)!
        .tps.slice(1)
        .map((value, index) => value / totals.get(plain)!.tps[index + 1]!);
      console.log(`${publish} / ${plain}: median ${median(ratios).toFixed(3)} (${ratios.map((r) => r.toFixed(3)).join(' ')})`);
    }
  });
}

await main();
