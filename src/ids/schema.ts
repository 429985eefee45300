import { ID_CLOCK_SQLSTATE } from '../errors.js';
import { hashKey } from '../placement/hash.js';
import { q } from '../sql.js';
import { ID_EPOCH_MS, ID_SEQUENCE_BITS, ID_SLOT_BITS, IDS_PER_MS_PER_SHARD, MAX_ID_CLOCK_LEAD_MS, MAX_ID_SLOTS } from './layout.js';

/**
 * What ids add to every shard's catalog schema (docs/ids.md has the argument):
 * - `id_slots`: every shard's slot, on every shard; the primary key and UNIQUE(slot) make two
 *   shards with one slot impossible wherever both rows meet (every shard holds every row).
 * - `id_counter`: the shard's counter `ms * 4096 + sequence`, a sequence: it never goes down,
 *   survives restarts, and is not rolled back with the transaction that drew from it.
 * - `id_clock_ms()`: the time source (the server's clock_timestamp in Unix milliseconds); a
 *   function of its own so a test can set a shard's clock back.
 * - `id_take(n)`: the only writer of the counter. Under a session advisory lock it draws the next
 *   counter, moves it up to the clock when the clock is ahead, reserves `n` values, and refuses
 *   (SQLSTATE PSR02) when the counter runs more than MAX_ID_CLOCK_LEAD_MS ahead of the clock.
 *   The lock is held for microseconds, not to the end of the caller's transaction.
 * - `next_id()` / `reserve_ids(n)` / `id_slot()`: created with the shard's slot as a constant
 *   once it has one; before that they raise.
 */

/** Advisory-lock class of the counter ("PSHI"); the object id is derived from the catalog schema. */
const LOCK_CLASS = 0x50534849;
/** The counter must stay below 2^53 (41 bits of ms and 12 of sequence). */
const MAX_COUNTER = 2n ** BigInt(53);

function lockArgs(schema: string): string {
  return `${LOCK_CLASS}, ${hashKey(`pg-shard-router:ids:${schema}`) | 0}`;
}

/** The tables, sequence and slot-independent functions; idempotent. */
export function idsCatalogDdl(schema: string): string[] {
  const s = q(schema);
  const lock = lockArgs(schema);
  return [
    `CREATE TABLE IF NOT EXISTS ${s}.id_slots (
       shard_id text PRIMARY KEY,
       slot integer NOT NULL UNIQUE CHECK (slot >= 0 AND slot < ${MAX_ID_SLOTS}),
       assigned_at timestamptz NOT NULL DEFAULT now())`,
    `CREATE SEQUENCE IF NOT EXISTS ${s}.id_counter AS bigint MINVALUE 0 START 0 NO CYCLE`,
    `CREATE OR REPLACE FUNCTION ${s}.id_clock_ms() RETURNS bigint LANGUAGE sql VOLATILE
       AS $f$ SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint $f$`,
    `CREATE OR REPLACE FUNCTION ${s}.id_take(n integer) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $f$
     DECLARE
       now_counter bigint := (${s}.id_clock_ms() - ${ID_EPOCH_MS}) * ${IDS_PER_MS_PER_SHARD};
       drawn bigint;
       first bigint;
     BEGIN
       BEGIN
         PERFORM pg_advisory_lock(${lock});
         drawn := nextval('${s}.id_counter');
         IF drawn > now_counter + ${MAX_ID_CLOCK_LEAD_MS * IDS_PER_MS_PER_SHARD} THEN
           RAISE EXCEPTION USING ERRCODE = '${ID_CLOCK_SQLSTATE}',
             MESSAGE = format('next_id: the last id issued is %s ms ahead of this server''s clock (set back?); ids resume when the clock catches up',
                              (drawn - now_counter) / ${IDS_PER_MS_PER_SHARD});
         END IF;
         first := greatest(drawn, now_counter);
         IF first + n - 1 >= ${MAX_COUNTER} THEN
           RAISE EXCEPTION 'next_id: the id time bits have run out';
         END IF;
         IF first + n - 1 <> drawn THEN
           PERFORM setval('${s}.id_counter', first + n - 1, true);
         END IF;
         PERFORM pg_advisory_unlock(${lock});
       EXCEPTION WHEN OTHERS OR query_canceled THEN
         PERFORM pg_advisory_unlock(${lock});
         RAISE;
       END;
       RETURN first;
     END $f$`,
  ];
}

/** The slot-dependent functions: the slot is a constant in their bodies (no lookup per id). */
export function slotFunctionsDdl(schema: string, slot: number | null): string[] {
  const s = q(schema);
  if (slot === null) {
    const refuse = `BEGIN RAISE EXCEPTION 'next_id: this shard has no id slot yet (connect a router to the cluster to assign one)'; END`;
    return [
      `CREATE OR REPLACE FUNCTION ${s}.id_slot() RETURNS integer LANGUAGE sql IMMUTABLE AS $f$ SELECT NULL::integer $f$`,
      `CREATE OR REPLACE FUNCTION ${s}.next_id() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $f$ ${refuse} $f$`,
      `CREATE OR REPLACE FUNCTION ${s}.reserve_ids(n integer, OUT first_counter bigint, OUT slot integer) LANGUAGE plpgsql VOLATILE AS $f$ ${refuse} $f$`,
    ];
  }
  if (!Number.isInteger(slot) || slot < 0 || slot >= MAX_ID_SLOTS) throw new Error(`invalid id slot ${slot}`);
  const shift = ID_SEQUENCE_BITS + ID_SLOT_BITS;
  return [
    `CREATE OR REPLACE FUNCTION ${s}.id_slot() RETURNS integer LANGUAGE sql IMMUTABLE AS $f$ SELECT ${slot} $f$`,
    `CREATE OR REPLACE FUNCTION ${s}.next_id() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $f$
     DECLARE counter bigint := ${s}.id_take(1);
     BEGIN
       RETURN ((counter >> ${ID_SEQUENCE_BITS}) << ${shift}) | (${slot}::bigint << ${ID_SEQUENCE_BITS}) | (counter & ${IDS_PER_MS_PER_SHARD - 1});
     END $f$`,
    `CREATE OR REPLACE FUNCTION ${s}.reserve_ids(n integer, OUT first_counter bigint, OUT slot integer) LANGUAGE plpgsql VOLATILE AS $f$
     BEGIN
       IF n < 1 OR n > 1000000 THEN RAISE EXCEPTION 'reserve_ids: n must be from 1 to 1000000'; END IF;
       first_counter := ${s}.id_take(n);
       slot := ${slot};
     END $f$`,
  ];
}
