import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { atLeast, check, size } from '../section.js';
import type { Section } from '../section.js';
import { formatTable } from '../stats.js';
import type { Series } from '../stats.js';

/**
 * Routing after mixed keys: the hash section runs in a process that only ever hashed the keys it
 * times, where V8 specialises the hash to them. A service hashes every kind of key. This case
 * runs a fresh child process (bench/hash-mixed-child.ts) that first routes integers, bigints,
 * ASCII, multi-byte and emoji strings and invalid keys (which throw) through router.shardFor
 * and hashKey, then times short ASCII keys against a Math.imul MurmurHash3 written out in the
 * child, in interleaved rounds. A child process, so the pollution is real and not undone.
 */

export const MIXED_RATIO_TARGET = 0.8;

export interface MixedHashPlan {
  readonly keyCount: number;
  readonly mixedKeysPerKind: number;
  readonly rounds: number;
  readonly secondsPerRound: number;
}

export interface MixedHashResult {
  readonly mixedMismatches: number;
  readonly invalidThrew: number;
  readonly asciiIdentical: number;
  readonly asciiChecked: number;
  readonly keysPerSecond: Readonly<Record<'shardFor' | 'hashKey' | 'reference', Series>>;
  /** Medians of the per-round ratios against the reference. */
  readonly ratios: Readonly<Record<'shardFor' | 'hashKey', number>>;
  readonly sink: number;
}

export interface MixedHashDetails extends MixedHashResult {
  readonly plan: MixedHashPlan;
}

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'hash-mixed-child.ts');

function runChild(env: Record<string, string>): Promise<MixedHashResult> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`the mixed-keys child exited with ${code}: ${stderr.trim()}`));
      else resolve(JSON.parse(stdout.trim().split('\n').at(-1)!) as MixedHashResult);
    });
  });
}

export const hashMixedSection: Section<MixedHashDetails> = {
  name: 'hash_mixed',
  title: 'key -> shard on short ASCII keys in a process that has hashed every kind of key, vs a Math.imul MurmurHash3',
  async run(ctx) {
    const plan: MixedHashPlan = {
      keyCount: size(ctx, 1_000_000, 200_000),
      mixedKeysPerKind: size(ctx, 20_000, 5_000),
      rounds: size(ctx, 11, 7),
      secondsPerRound: size(ctx, 0.25, 0.1),
    };
    const count = Math.min(4, ctx.shards.length);
    await ctx.router(count); // creates the catalog the child's router reads
    const shards = ctx.shards.slice(0, count).map((s) => ({ id: s.id, connectionString: s.connectionString }));
    ctx.log(`child process: mixed keys first, then ${plan.rounds} interleaved rounds of ${plan.secondsPerRound} CPU-seconds per variant`);
    const result = await runChild({
      PSR_BENCH_ROUTER: JSON.stringify({ shards, catalogSchema: ctx.catalogSchema(count) }),
      PSR_BENCH_PLAN: JSON.stringify(plan),
    });
    const figure = (label: string, variant: 'shardFor' | 'hashKey') => ({
      label,
      value: result.keysPerSecond[variant].median,
      unit: 'keys/s' as const,
      baseline: { label: 'Math.imul MurmurHash3, same process', value: result.keysPerSecond.reference.median },
      ratio: result.ratios[variant],
      note: `keys per CPU-second, median of ${plan.rounds} interleaved rounds in a child process that first hashed integers, bigints, ASCII, multi-byte, emoji and invalid keys`,
      target: atLeast('ratio', result.ratios[variant], MIXED_RATIO_TARGET, 'x'),
    });
    return {
      setup: `a fresh child process, ${plan.mixedKeysPerKind.toLocaleString('en-US')} keys of each mixed kind hashed 3 times (and invalid keys that threw), then ${plan.keyCount.toLocaleString('en-US')} short ASCII keys ('user-N'), ${plan.rounds} interleaved rounds`,
      figures: [
        figure("router.shardFor after mixed keys, short strings ('user-N')", 'shardFor'),
        figure('hashKey(key) % 1024 after mixed keys', 'hashKey'),
      ],
      guard: [
        check('mixed keys: hashKey === murmurhash.v3(String(key))', result.mixedMismatches === 0, `${result.mixedMismatches} mismatches`),
        check('invalid keys threw', result.invalidThrew > 0, `${result.invalidThrew} throws`),
        check('ASCII keys bit-identical', result.asciiIdentical === result.asciiChecked, `${result.asciiIdentical}/${result.asciiChecked}`),
      ],
      details: { ...result, plan },
    };
  },
  format(outcome) {
    const d = outcome.details;
    const m = (v: number) => (v / 1e6).toFixed(2);
    const row = (name: string, s: Series, ratio: string) => [name, m(s.median), m(s.min), m(s.max), ratio];
    return (
      formatTable(
        ['variant (after mixed keys)', 'M keys/CPU-s', 'min', 'max', 'vs reference'],
        [
          row('router.shardFor(key)', d.keysPerSecond.shardFor, `${d.ratios.shardFor.toFixed(2)}x`),
          row('hashKey(key) % 1024', d.keysPerSecond.hashKey, `${d.ratios.hashKey.toFixed(2)}x`),
          row('Math.imul MurmurHash3 % 1024', d.keysPerSecond.reference, '1.00x'),
        ],
        [0],
      ) + `\n(target: >= ${MIXED_RATIO_TARGET}x of the reference; sink ${d.sink})`
    );
  },
};
