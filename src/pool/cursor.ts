import type { FieldDef } from 'pg';
import Cursor from 'pg-cursor';
import type pg from 'pg';
import { RAW_TEXT } from './raw-text.js';
import type { RawRow } from './raw-text.js';
import type { ShardPool } from './shard-pool.js';
import type { RowCursor } from './session.js';

/** One shard's cursor over the shard query, read in batches of raw text rows. */
export class ShardCursor implements RowCursor {
  #fields: FieldDef[] | undefined;
  /** The batch open() read to learn the fields, handed out by the first next(). */
  #first: RawRow[] | undefined;
  readonly #pool: ShardPool;
  readonly #sql: string;
  readonly #params: readonly unknown[];
  readonly #batchSize: number;
  readonly #signal: AbortSignal;
  #client: pg.Client | undefined;
  #cursor: Cursor<RawRow> | undefined;
  #done = false;
  #failed = false;

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
    const first = this.#first;
    if (first) {
      this.#first = undefined;
      return first;
    }
    return this.#read();
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
    const cursor = this.#cursor;
    const client = this.#client!;
    const rows = await new Promise<RawRow[]>((resolve, reject) => {
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
    if (rows.length === 0) await this.close();
    return rows;
  }

  /** Closes the cursor and returns (or, after a failure or cancel, retires) the connection. Idempotent. */
  async close(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
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
