import { q } from '../sql.js';
import type { OutboxContext } from './context.js';

/**
 * Records a group (its topics, and where it starts) on every shard, in one two-phase commit: the
 * groups table is a reference table, so a shard added later gets a copy. A group already on
 * record with the same topics costs one read. Topics are replaced by the latest consume() call;
 * the start point is fixed when the group is first recorded ('latest': this router's clock,
 * compared with the publishing shard's clock).
 */
export async function registerGroup(
  context: OutboxContext,
  group: string,
  topics: readonly string[],
  from: 'earliest' | 'latest',
): Promise<void> {
  const s = q(context.catalogSchema);
  const { members } = context.routing();
  const { rows } = await context
    .pool(members[0]!)
    .query<{ topics: string[] }>(`SELECT topics FROM ${s}.outbox_groups WHERE group_name = $1`, [group], undefined);
  if (rows[0] && sameTopics(rows[0].topics, topics)) return;
  // One value for every copy (a reference table's copies must be equal): the router's clock.
  const now = new Date();
  await context.writeEverywhere(async (tx, shardIds) => {
    for (const shardId of shardIds) {
      await tx.executeOn(
        shardId,
        `INSERT INTO ${s}.outbox_groups (group_name, topics, starts_at, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (group_name) DO UPDATE SET topics = EXCLUDED.topics`,
        [group, topics, from === 'earliest' ? '-infinity' : now, now],
      );
    }
  });
}

function sameTopics(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && [...a].sort().every((topic, index) => topic === [...b].sort()[index]);
}
