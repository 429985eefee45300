import { describe, expect, it } from 'vitest';
import { arrivalOrder, mergeSorted, mergeSortedBatches } from '../../src/broadcast/merge/k-way-merge.js';
import { seededRandom } from '../support/random.js';

type Item = { value: number; source: number; seq: number };
const byValue = (a: Item, b: Item) => a.value - b.value;

function sortedSources(next: () => number, count: number): Item[][] {
  return Array.from({ length: count }, (_, source) =>
    Array.from({ length: Math.floor(next() * 60) }, () => Math.floor(next() * 20))
      .sort((a, b) => a - b)
      .map((value, seq) => ({ value, source, seq })),
  );
}

/** What a stable merge must give: all items by value, ties by source then position. */
function expected(sources: Item[][]): Item[] {
  return sources.flat().sort((a, b) => a.value - b.value || a.source - b.source || a.seq - b.seq);
}

describe('mergeSorted', () => {
  it('equals a stable sort of the union, for 200 random inputs (ties, empty sources)', () => {
    const next = seededRandom(7);
    for (let round = 0; round < 200; round++) {
      const sources = sortedSources(next, 1 + Math.floor(next() * 6));
      expect(mergeSorted(sources, byValue)).toEqual(expected(sources));
    }
  });

  it('stops after the limit', () => {
    expect(
      mergeSorted(
        [
          [1, 4],
          [2, 3],
        ],
        (a, b) => a - b,
        3,
      ),
    ).toEqual([1, 2, 3]);
  });
});

describe('mergeSortedBatches', () => {
  it('equals the in-memory merge whatever the batch sizes, holding one batch per source', async () => {
    const next = seededRandom(11);
    for (let round = 0; round < 100; round++) {
      const sources = sortedSources(next, 1 + Math.floor(next() * 5));
      const batchSize = 1 + Math.floor(next() * 7);
      const inFlight = sources.map(() => 0);
      const batchSources = sources.map((items, i) => {
        let position = 0;
        return {
          next: async () => {
            const batch = items.slice(position, position + batchSize);
            position += batch.length;
            inFlight[i] = batch.length;
            return batch;
          },
        };
      });
      const out: Item[] = [];
      for await (const batch of mergeSortedBatches(batchSources, byValue)) {
        expect(inFlight.every((size) => size <= batchSize)).toBe(true);
        out.push(...batch);
      }
      expect(out).toEqual(expected(sources));
    }
  });
});

describe('arrivalOrder', () => {
  it('yields every batch of every source once, a ready source before a blocked one, asking again only after a batch was taken', async () => {
    const asked = [0, 0, 0];
    const taken = [0, 0, 0];
    // Source 0 answers only once source 1 was read to its end: a merge that waited on it first would never finish.
    let open!: () => void;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const sources = [0, 1, 2].map((i) => {
      let left = 3;
      return {
        next: async () => {
          // Never more than one batch asked for ahead of what the caller took.
          expect(asked[i]! - taken[i]!).toBeLessThanOrEqual(1);
          asked[i]!++;
          if (i === 0) await gate;
          return left-- > 0 ? [`${i}:${2 - left}`] : [];
        },
      };
    });
    const seen: string[] = [];
    for await (const batch of arrivalOrder(sources)) {
      const source = Number(batch[0]!.split(':')[0]);
      taken[source]!++;
      seen.push(...batch);
      if (batch[0] === '1:2') open();
    }
    expect([...seen].sort()).toEqual(['0:0', '0:1', '0:2', '1:0', '1:1', '1:2', '2:0', '2:1', '2:2']);
    expect(seen.indexOf('1:2')).toBeLessThan(seen.indexOf('0:0'));
  });

  it("rejects with a source's failure", async () => {
    const failing = { next: async () => Promise.reject(new Error('shard down')) };
    const slow = { next: () => new Promise<string[]>((resolve) => setTimeout(() => resolve([]), 20)) };
    await expect(
      (async () => {
        for await (const _ of arrivalOrder([slow, failing])) {
          // nothing arrives before the failure
        }
      })(),
    ).rejects.toThrow('shard down');
  });
});
