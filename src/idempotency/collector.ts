import type { Queryable } from '../pool/session.js';
import { collectSql } from './records.js';

/**
 * Garbage collection of expired idempotency records: on every shard, DELETE statements of at
 * most `batchSize` rows each (expired rows only, locked ones skipped), repeated while a batch
 * comes back full, at most MAX_BATCHES per shard per pass. Safe at any time: an expired record
 * already counts as absent for lookups and claims (records.ts), so deleting it changes no
 * answer. A pass that fails on one shard (down, or refused by a fence during a move) leaves the
 * rest of that shard's records to the next pass.
 */

const MAX_BATCHES = 100;

/** What the collector needs: the shards of the moment, each with a way to run a statement. */
export interface CollectorContext {
  readonly catalogSchema: string;
  shards(): readonly { readonly shardId: string; readonly queryable: Queryable }[];
}

export interface CollectionReport {
  /** Records deleted, by shard id. */
  readonly deleted: Readonly<Record<string, number>>;
  /** Why a shard's collection stopped early, by shard id. */
  readonly errors: Readonly<Record<string, string>>;
}

/** One pass over every shard. */
export async function collectExpiredRecords(context: CollectorContext, batchSize: number): Promise<CollectionReport> {
  const deleted: Record<string, number> = {};
  const errors: Record<string, string> = {};
  const sql = collectSql(context.catalogSchema);
  await Promise.all(
    context.shards().map(async ({ shardId, queryable }) => {
      deleted[shardId] = 0;
      try {
        for (let batch = 0; batch < MAX_BATCHES; batch++) {
          const { rowCount } = await queryable.query(sql, [batchSize]);
          deleted[shardId] += rowCount ?? 0;
          if ((rowCount ?? 0) < batchSize) break;
        }
      } catch (error) {
        errors[shardId] = error instanceof Error ? error.message : String(error);
      }
    }),
  );
  return { deleted, errors };
}

/** Runs a pass every `intervalMillis` (0: never), one at a time; the timer does not keep the process alive. */
export class RecordCollector {
  readonly #timer: NodeJS.Timeout | undefined;
  #running: Promise<unknown> | undefined;
  #closed = false;
  /** The newest finished pass. */
  last: CollectionReport | undefined;

  constructor(context: CollectorContext, settings: { readonly gcIntervalMillis: number; readonly gcBatchSize: number }) {
    if (settings.gcIntervalMillis > 0) {
      this.#timer = setInterval(() => {
        if (this.#running || this.#closed) return;
        this.#running = collectExpiredRecords(context, settings.gcBatchSize)
          .then(
            (report) => {
              this.last = report;
            },
            () => undefined, // per-shard failures are in the report; anything else waits for the next pass
          )
          .finally(() => {
            this.#running = undefined;
          });
      }, settings.gcIntervalMillis);
      this.#timer.unref();
    }
  }

  /** Stops the timer and waits for a pass under way. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    await this.#running;
  }
}
