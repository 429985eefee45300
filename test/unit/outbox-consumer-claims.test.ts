import { expect, it } from 'vitest';
import type { OutboxContext } from '../../src/outbox/context.js';
import { OutboxConsumer } from '../../src/outbox/consumer.js';
import { resolveConsumeOptions } from '../../src/outbox/options.js';

/**
 * The consumer's claims against a recording fake of one shard (the SQL itself is tested against
 * real shards in test/integration/outbox*.test.ts): which candidate search each claim used
 * (docs/outbox.md O3: the events search, the key walk while the previous claim was full with at
 * least 16 keys), where each walk started, how many keys it asked for, and that keys claimed
 * beyond the free handler slots wait without exceeding `concurrency`.
 */

interface Claim {
  readonly search: 'walk' | 'events';
  readonly wanted: number;
  readonly after: string | undefined;
  readonly got: number;
  /** The last key it leased (the statement's `reached`), '' for none. */
  readonly reached: string;
}

const KEYS = Array.from({ length: 100 }, (_, n) => `k${String(n).padStart(3, '0')}`);

function fakeShard() {
  const pending = new Set(KEYS);
  const leased = new Set<string>();
  const claims: Claim[] = [];
  const settled: string[] = [];
  const query = async (sql: string, params: readonly unknown[] = []) => {
    await new Promise((resolve) => setImmediate(resolve));
    if (sql.includes('SELECT topics FROM')) return { rows: [{ topics: ['t'] }], rowCount: 1 };
    if (sql.includes('WITH candidates')) {
      const search = sql.includes('outbox_keys k') ? 'walk' : 'events';
      const wanted = params[1] as number;
      const after = search === 'walk' ? (params[5] as string) : undefined;
      const free = KEYS.filter((key) => pending.has(key) && !leased.has(key));
      const from = after === undefined ? 0 : free.findIndex((key) => key > after);
      const taken = (from < 0 ? free : [...free.slice(from), ...free.slice(0, from)]).slice(0, wanted);
      for (const key of taken) leased.add(key);
      claims.push({ search, wanted, after, got: taken.length, reached: taken.at(-1) ?? '' });
      const rows = taken.map((key) => ({
        reached: taken.at(-1),
        key,
        token: `token-${key}`,
        attempt: 1,
        seq: '1',
        id: `id-${key}`,
        topic: 't',
        payload: {},
        headers: {},
        published_ms: Date.now(),
      }));
      return { rows, rowCount: rows.length };
    }
    if (sql.includes('acked_seq = greatest')) {
      const keys = params[1] as string[];
      const acked = params[3] as number[];
      keys.forEach((key, index) => {
        leased.delete(key);
        if (acked[index]! >= 1) pending.delete(key);
        settled.push(key);
      });
      return { rows: keys.map((key) => ({ key })), rowCount: keys.length };
    }
    if (sql.includes('lease_until = now()')) return { rows: (params[1] as string[]).map((key) => ({ key })), rowCount: 0 };
    return { rows: [], rowCount: 0 };
  };
  const pool = { query, listen: async () => ({ close: async () => undefined }) };
  const context = {
    catalogSchema: 'cat',
    bucketCount: 1024,
    channel: 'psr_outbox_test',
    retentionMillis: 3_600_000,
    routing: () => ({ version: 1, members: ['s0'], ownerOf: () => 's0' }),
    pool: () => pool,
    retryingStaleMap: <T>(attempt: () => Promise<T>) => attempt(),
  } as unknown as OutboxContext;
  return { context, claims, settled, pending };
}

it('claims search the events, walk the keys from where the last walk stopped while full, and go back to the events when short', async () => {
  const shard = fakeShard();
  let active = 0;
  let maxActive = 0;
  const handled: string[] = [];
  const options = resolveConsumeOptions({
    group: 'g',
    topics: ['t'],
    concurrency: 16,
    batchSize: 100,
    pollIntervalMillis: 20,
    handler: async (event: { key: string }) => {
      maxActive = Math.max(maxActive, ++active);
      await new Promise((resolve) => setTimeout(resolve, 1));
      handled.push(event.key);
      active--;
    },
  });
  const consumer = new OutboxConsumer(shard.context, options, () => undefined);
  await consumer.ready;
  // Until every key is done and a claim after that came back short (the poll claims every 20 ms).
  const caughtUp = () => shard.pending.size === 0 && shard.claims.at(-1)?.search === 'events';
  while (!caughtUp()) await new Promise((resolve) => setTimeout(resolve, 5));
  await consumer.stop();

  expect([...handled].sort()).toEqual(KEYS);
  // Keys beyond the free slots waited: never more than `concurrency` handlers at once.
  expect(maxActive).toBeLessThanOrEqual(16);
  const { claims } = shard;
  // The first claim is the events search, for the free slots plus `concurrency` (16 + 16).
  expect(claims[0]).toMatchObject({ search: 'events', wanted: 32, after: undefined, got: 32 });
  let walked = 0;
  let lastWalkReached = '';
  for (let n = 1; n < claims.length; n++) {
    const previous = claims[n - 1]!;
    const claim = claims[n]!;
    const backlog = previous.got === previous.wanted && previous.wanted >= 16;
    expect(claim.search, `claim ${n}`).toBe(backlog ? 'walk' : 'events');
    if (claim.search === 'walk') {
      walked++;
      // A walk starts just after the key the shard's previous walk reached ('' before any walk).
      expect(claim.after, `claim ${n}`).toBe(lastWalkReached);
      lastWalkReached = claim.reached;
    }
  }
  expect(walked).toBeGreaterThan(0);
  // The walk that came back short sent the shard back to the events search.
  expect(claims.some((claim, n) => claim.search === 'walk' && claim.got < claim.wanted && claims[n + 1]?.search === 'events')).toBe(true);
});
