import { ShardRouterError } from '../errors.js';
import type { Queryable, ShardSession } from '../pool/session.js';
import { q } from '../sql.js';
import { MAX_ID_SLOTS } from './layout.js';
import { slotFunctionsDdl } from './schema.js';

/**
 * Id slots: each shard gets one for the cluster's lifetime, never reused (a removed shard keeps
 * its own). Every shard holds every shard's row, so a slot given twice would break UNIQUE(slot)
 * on any shard where both rows land: assignments either agree or fail.
 *
 * Slots are given at connect (under the catalog lock, to every configured shard that lacks
 * one: a new cluster, or one created before ids existed) and by addShard (inside its
 * two-phase commit over every shard, so the new shard, its row everywhere and its functions
 * commit together).
 */

type SlotRows = Map<string, number>;

async function readSlots(session: Queryable, schema: string): Promise<SlotRows> {
  const { rows } = await session.query<{ shard_id: string; slot: number }>(`SELECT shard_id, slot FROM ${q(schema)}.id_slots`);
  return new Map(rows.map((row) => [row.shard_id, row.slot]));
}

/** Every shard's slots as the given shards hold them together; disagreement is an error, never resolved by guessing. */
function union(all: readonly SlotRows[]): SlotRows {
  const merged: SlotRows = new Map();
  const owners = new Map<number, string>();
  for (const rows of all) {
    for (const [shardId, slot] of rows) {
      const known = merged.get(shardId);
      const owner = owners.get(slot);
      if ((known !== undefined && known !== slot) || (owner !== undefined && owner !== shardId)) {
        throw new ShardRouterError(
          'SHARD_IDENTITY_MISMATCH',
          `the shards disagree on id slots (shard ${shardId} slot ${slot} vs ${known ?? owner}): ids could repeat, so the router refuses`,
          { shardId },
        );
      }
      merged.set(shardId, slot);
      owners.set(slot, shardId);
    }
  }
  return merged;
}

function nextFree(slots: SlotRows): number {
  const next = slots.size === 0 ? 0 : Math.max(...slots.values()) + 1;
  if (next >= MAX_ID_SLOTS) {
    throw new ShardRouterError(
      'INVALID_ARGUMENT',
      `the cluster has used all ${MAX_ID_SLOTS} id slots (one per shard ever added, removed shards included): no more shards can join`,
    );
  }
  return next;
}

async function insertSlots(session: Queryable, schema: string, slots: SlotRows): Promise<void> {
  await session.query(
    `INSERT INTO ${q(schema)}.id_slots (shard_id, slot) SELECT * FROM unnest($1::text[], $2::int[]) ON CONFLICT (shard_id) DO NOTHING`,
    [[...slots.keys()], [...slots.values()]],
  );
}

/** Creates next_id() & co with `slot` baked in, unless they already carry it. */
async function bakeSlot(session: Queryable, schema: string, slot: number): Promise<void> {
  const { rows } = await session.query<{ slot: number | null }>(`SELECT ${q(schema)}.id_slot() AS slot`);
  if (rows[0]?.slot === slot) return;
  for (const statement of slotFunctionsDdl(schema, slot)) await session.query(statement);
}

/** At connect: gives every configured shard without a slot the next free one, on every configured shard. */
export async function assignSlots(sessions: readonly ShardSession[], schema: string): Promise<void> {
  const held = await Promise.all(sessions.map((session) => readSlots(session, schema)));
  const slots = union(held);
  const missing = sessions.map((session) => session.shardId).filter((shardId) => !slots.has(shardId));
  for (const shardId of missing.sort()) slots.set(shardId, nextFree(slots));
  // Rows first on every shard (where any is missing), functions after: a shard issues ids only
  // with a slot every configured shard already records.
  for (const [index, session] of sessions.entries()) {
    if (held[index]!.size !== slots.size) await insertSlots(session, schema, slots);
  }
  for (const session of sessions) await bakeSlot(session, schema, slots.get(session.shardId)!);
}

/** The participants of a transaction over shards, as addShard's two-phase commit offers them. */
export interface SlotParticipants {
  on(shardId: string): Queryable;
}

/**
 * Inside addShard's two-phase commit: the new shard's slot (the next free one over the existing
 * shards' rows) recorded on every shard, the whole table copied to the new shard, and its
 * functions created with that slot. Returns the slot.
 */
export async function assignSlotIn(tx: SlotParticipants, schema: string, existing: readonly string[], newShardId: string): Promise<number> {
  const slots = union(await Promise.all(existing.map((shardId) => readSlots(tx.on(shardId), schema))));
  const slot = slots.get(newShardId) ?? nextFree(slots);
  slots.set(newShardId, slot);
  for (const shardId of [...existing, newShardId]) await insertSlots(tx.on(shardId), schema, slots);
  await bakeSlot(tx.on(newShardId), schema, slot);
  return slot;
}
