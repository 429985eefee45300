import type { FieldDef } from 'pg';
import Cursor from 'pg-cursor';
import type pg from 'pg';
import { RAW_TEXT } from './raw-text.js';
import type { RawRow } from './raw-text.js';
import type { ShardPool } from './shard-pool.js';
import type { RowCursor } from './session.js';

/**
 * How long close() waits for a batch already on its way before it cancels the statement
 * instead (a consumer that stops early should not wait on a slow FETCH, nor lose the connection
 * to a cancel when the batch is about to arrive).
 */
const CLOSE_GRACE_MS = 200;

/**
 * One shard's cursor over the shard query, read in batches of raw text rows, one batch ahead:
 * when next() hands out a batch the following one is already requested, so the server produces
 * it while the caller works (at most two batches per cursor in memory). A batch shorter than
 * `batchSize` is the last: the connection is returned at once, without one more round trip.
 */
export class ShardCursor implements RowCursor {
  #fields: FieldDef[] | undefined;
  /** The batch open() read to learn the fields, handed out by the first next(). */
  #first: RawRow[] | undefined;
  /** The read started ahead of the caller's next next(). */
  #ahead: Promise<RawRow[]> | undefined;
  /** The FETCH in flight, if any (what close() must wait for or cancel). */
  #reading: Promise<unknown> | undefined;
  readonly #pool: ShardPool;
  readonly #sql: string;
  readonly #params: readonly unknown[];
  readonly #batchSize: number;
  readonly #signal: AbortSignal;
  #client: pg.Client | undefined;
  #cursor: Cursor<RawRow> | undefined;
  #done = false;
  #failed = false;
  #closing: Promise<void> | undefined;

  constructor(pool: ShardPool, sql: string, params: readonly unknown[], batchSize: number, signal: AbortSignal) {
    this.#pool = pool;
    this.#sql = sql;
    this.#params = params;
    this.#batchSize = batchSize;
    this.#signal = signal;
  }

  /** Reads the first batch (kept for next()) and returns the result's fields. */
  async open(): Promise<FieldDef[]> {
    this.#first = await this.#read();
    return this.#fields!;
  }

  async next(): Promise<RawRow[]> {
    let rows = this.#first;
    this.#first = undefined;
    if (!rows) {
      const ahead = this.#ahead;
      this.#ahead = undefined;
      rows = await (ahead ?? this.#read());
    }
    if (rows.length === this.#batchSize && !this.#done) {
      this.#ahead = this.#read();
      // Awaited by the next next(); a caller that stops before then must not see it as unhandled.
      this.#ahead.catch(() => undefined);
    }
    return rows;
  }

  async #read(): Promise<RawRow[]> {
    if (this.#done) return [];
    this.#signal.throwIfAborted();
    if (!this.#cursor) {
      const client = await this.#pool.acquireClient(this.#signal);
      if (this.#done) {
        // close() ran while the connection was on its way (another shard failed meanwhile).
        this.#pool.releaseClient(client);
        return [];
      }
      this.#client = client;
      this.#cursor = this.#client.query(new Cursor<RawRow>(this.#sql, this.#params as unknown[], { rowMode: 'array', types: RAW_TEXT }));
    }
    const fetching = this.#fetch(this.#cursor, this.#client!);
    this.#reading = fetching;
    const rows = await fetching;
    this.#reading = undefined;
    if (rows.length < this.#batchSize) await this.close();
    return rows;
  }

  #fetch(cursor: Cursor<RawRow>, client: pg.Client): Promise<RawRow[]> {
    return new Promise<RawRow[]>((resolve, reject) => {
      const onAbort = () => {
        this.#failed = true;
        reject(this.#signal.reason);
      };
      this.#signal.addEventListener('abort', onAbort, { once: true });
      cursor.read(this.#batchSize, (error, rows, result) => {
        this.#signal.removeEventListener('abort', onAbort);
        if (error) {
          this.#failed = true;
          reject(this.#pool.translateError(client, error));
          return;
        }
        this.#fields ??= (result as unknown as { fields: FieldDef[] }).fields;
        resolve(rows);
      });
    });
  }

  /**
   * Closes the cursor and returns the connection; after a failure or a cancel, or when a batch
   * on its way does not arrive within CLOSE_GRACE_MS, the statement is cancelled on the server
   * and the connection retired. Idempotent: every call waits for the same close.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#done = true;
    const reading = this.#reading;
    if (reading && !this.#failed && !(await settlesWithin(reading, CLOSE_GRACE_MS))) this.#failed = true;
    const client = this.#client;
    const cursor = this.#cursor;
    if (!client || !cursor) return;
    if (this.#failed || this.#signal.aborted) {
      await this.#pool.cancelAndDiscard(client);
      this.#pool.releaseClient(client);
      return;
    }
    await new Promise<void>((resolve) => cursor.close(() => resolve()));
    this.#pool.releaseClient(client);
  }
}

/** Whether `promise` settles (either way) within `ms`. */
function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  const settled = promise.then(
    () => true,
    () => true,
  );
  return Promise.race([settled, late]).finally(() => clearTimeout(timer));
}
