import type { SagaContext } from './context.js';
import { COUNTED_STATES, countsSql } from './log.js';
import type { CountedState } from './log.js';

/** How many sagas of one shard's log are in one state (see COUNTED_STATES). */
export interface SagaStateCount {
  readonly shardId: string;
  readonly state: CountedState;
  readonly count: number;
}

/**
 * `router.sagas.counts()`: per member shard, the sagas running, compensating and parked in the
 * buckets it owns (a moved bucket's old copy is not counted). One query per shard, reading only
 * the active and parked rows; every shard and state is listed, zeros included.
 */
export async function sagaCounts(context: SagaContext): Promise<SagaStateCount[]> {
  const shards = await context.readOwned<{ state: CountedState; n: number }>(
    (guard) => countsSql(context.catalogSchema, guard),
    'saga_key',
    [],
  );
  return shards.flatMap(({ shardId, rows }) =>
    COUNTED_STATES.map((state) => ({
      shardId,
      state,
      count: rows.filter((row) => row.state === state).reduce((sum, row) => sum + row.n, 0),
    })),
  );
}
