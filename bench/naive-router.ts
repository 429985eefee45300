import pg from 'pg';

/**
 * The textbook naive router, as a baseline: one `pg.Client` per shard, `Number(key) % N`
 * routing, and a broadcast that asks the shards one after another and concatenates their rows.
 *
 * A pg.Client runs one query at a time (the rest wait in its queue), so all callers of one shard
 * share a single connection's round trips: that, not the modulo, is what the comparison with the
 * router's pools shows. `key % N` also means adding a shard moves almost every key, and the
 * concatenated broadcast is only right for queries whose per-shard rows are the final answer
 * (no ORDER BY, LIMIT or aggregates across shards).
 */
export class NaiveRouter {
  readonly #clients: readonly pg.Client[];
  /** Per shard, the last query handed to its client: the next one starts after it settles. */
  readonly #tails: Promise<unknown>[];

  private constructor(clients: readonly pg.Client[]) {
    this.#clients = clients;
    this.#tails = clients.map(() => Promise.resolve());
  }

  static async connect(connectionStrings: readonly string[]): Promise<NaiveRouter> {
    const clients = connectionStrings.map((connectionString) => new pg.Client({ connectionString, application_name: 'naive router' }));
    for (const client of clients) client.on('error', () => undefined);
    try {
      await Promise.all(clients.map((client) => client.connect()));
    } catch (error) {
      await Promise.all(clients.map((client) => client.end().catch(() => undefined)));
      throw error;
    }
    return new NaiveRouter(clients);
  }

  get shardCount(): number {
    return this.#clients.length;
  }

  /** The index of the shard that owns `key`. */
  shardOf(key: number | bigint | string): number {
    return Number(key) % this.#clients.length;
  }

  query<R extends pg.QueryResultRow>(key: number | bigint | string, sql: string, params?: readonly unknown[]): Promise<pg.QueryResult<R>> {
    return this.#queryOn<R>(this.shardOf(key), sql, params);
  }

  /** Every shard in turn, rows concatenated in shard order. */
  async broadcast<R extends pg.QueryResultRow>(sql: string, params?: readonly unknown[]): Promise<R[]> {
    const rows: R[] = [];
    for (let shard = 0; shard < this.#clients.length; shard++) {
      const result = await this.#queryOn<R>(shard, sql, params);
      for (const row of result.rows) rows.push(row);
    }
    return rows;
  }

  /**
   * One query at a time per connection, in arrival order. pg.Client would queue them itself, but
   * that is deprecated (pg 9 will refuse a query while one runs), so the queue is explicit here.
   */
  #queryOn<R extends pg.QueryResultRow>(shard: number, sql: string, params: readonly unknown[] | undefined): Promise<pg.QueryResult<R>> {
    const client = this.#clients[shard]!;
    const result = this.#tails[shard]!.then(() => client.query<R>(sql, params as unknown[] | undefined));
    this.#tails[shard] = result.catch(() => undefined);
    return result;
  }

  async close(): Promise<void> {
    await Promise.all(this.#clients.map((client) => client.end().catch(() => undefined)));
  }
}
