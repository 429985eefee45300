/**
 * The bits of a cluster-wide id (a positive signed 64-bit integer), most significant first:
 *
 * | bits | field | range |
 * | --- | --- | --- |
 * | 41 | milliseconds since {@link ID_EPOCH_MS} (2025-01-01T00:00:00Z) | until 2094-09-07 |
 * | 10 | the shard's id slot, assigned once per shard for the cluster's lifetime | 1,024 slots |
 * | 12 | a per-shard sequence within the millisecond | 4,096 ids per ms per shard |
 *
 * A shard keeps one counter, `ms * 4096 + sequence` (a PostgreSQL sequence, so it survives
 * restarts and never goes down); the id is that counter with the slot spliced in between the
 * two parts. Two shards never share a slot, and one shard never issues the same counter twice,
 * so no two ids are equal. More than 4,096 ids in one millisecond borrow the next millisecond's
 * numbers (the counter runs ahead of the clock, ids stay unique and increasing).
 */

/** 2025-01-01T00:00:00Z: ids count milliseconds from here. */
export const ID_EPOCH_MS = 1_735_689_600_000;
export const ID_TIME_BITS = 41;
export const ID_SLOT_BITS = 10;
export const ID_SEQUENCE_BITS = 12;
/** How many shards (slots) a cluster can ever have had, removed ones included. */
export const MAX_ID_SLOTS = 2 ** ID_SLOT_BITS;
/** Ids one shard issues per millisecond before borrowing from the next one. */
export const IDS_PER_MS_PER_SHARD = 2 ** ID_SEQUENCE_BITS;
/** The first instant whose milliseconds no longer fit: 2094-09-07T15:47:35.552Z. */
export const ID_BITS_RUN_OUT_AT = new Date(ID_EPOCH_MS + 2 ** ID_TIME_BITS);
/**
 * How far a shard's counter may run ahead of its clock (a clock set back, or bursts beyond
 * 4,096 ids/ms) before next_id() refuses with ID_CLOCK_BEHIND instead of issuing more.
 */
export const MAX_ID_CLOCK_LEAD_MS = 10_000;

/** The parts of an id, for logs and tests. */
export interface DecodedId {
  /** When it was issued (the shard's clock, or later when its counter ran ahead). */
  readonly issuedAt: Date;
  readonly slot: number;
  readonly sequence: number;
}

/** Splits an id into its time, slot and sequence. */
export function decodeId(id: bigint | string | number): DecodedId {
  const value = BigInt(id);
  const sequence = Number(value & BigInt(IDS_PER_MS_PER_SHARD - 1));
  const slot = Number((value >> BigInt(ID_SEQUENCE_BITS)) & BigInt(MAX_ID_SLOTS - 1));
  const ms = Number(value >> BigInt(ID_SEQUENCE_BITS + ID_SLOT_BITS));
  return { issuedAt: new Date(ID_EPOCH_MS + ms), slot, sequence };
}

/** The id of a shard counter value (ms * 4096 + sequence) issued by `slot`. */
export function idFromCounter(counter: bigint, slot: number): bigint {
  const sequenceMask = BigInt(IDS_PER_MS_PER_SHARD - 1);
  const ms = counter >> BigInt(ID_SEQUENCE_BITS);
  return (ms << BigInt(ID_SEQUENCE_BITS + ID_SLOT_BITS)) | (BigInt(slot) << BigInt(ID_SEQUENCE_BITS)) | (counter & sequenceMask);
}
