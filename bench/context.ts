import pg from 'pg';
import { ShardRouter } from '../src/index.js';
import type { SectionContext, ShardSpec } from './section.js';

/**
 * The run-wide side of {@link SectionContext}: admin connections to every shard, and one
 * section scope at a time that owns its routers and its data schema.
 */
export class BenchRun {
  readonly #shards: readonly ShardSpec[];
  readonly #schemaPrefix: string;
  readonly #quick: boolean;
  readonly #admins = new Map<number, Promise<pg.Client>>();

  constructor(shards: readonly ShardSpec[], schemaPrefix: string, quick: boolean) {
    this.#shards = shards;
    this.#schemaPrefix = schemaPrefix;
    this.#quick = quick;
  }

  /** Runs `work` with a fresh section context; its routers are closed and its schema dropped afterwards, even on failure. */
  async withSection<T>(name: string, log: (line: string) => void, work: (ctx: SectionContext) => Promise<T>): Promise<T> {
    const schema = `${this.#schemaPrefix}_${name}`;
    const routers: ShardRouter[] = [];
    const ctx: SectionContext = {
      quick: this.#quick,
      shards: this.#shards,
      schema,
      router: async (count, options = {}) => {
        if (!Number.isInteger(count) || count < 1 || count > this.#shards.length) {
          throw new Error(`a router over ${count} shards was asked for, but the run has ${this.#shards.length}`);
        }
        const router = await ShardRouter.connect({
          shards: this.#shards.slice(0, count).map((s) => ({ id: s.id, connectionString: s.connectionString })),
          // One cluster per shard count: a catalog names its shards, so 2 shards and 4 shards are two clusters.
          catalogSchema: ctx.catalogSchema(count),
          pool: { max: options.poolMax ?? 10 },
          recovery: { intervalMillis: 0, atConnect: false },
          applicationName: `pg-shard-router bench ${name}`,
          ...(options.tracerProvider ? { tracerProvider: options.tracerProvider } : {}),
        });
        routers.push(router);
        return router;
      },
      catalogSchema: (count) => `${this.#schemaPrefix}_catalog_${count}`,
      admin: (index, sql, params) => this.admin(index, sql, params),
      log,
    };
    try {
      for (let i = 0; i < this.#shards.length; i++) await this.admin(i, `CREATE SCHEMA ${schema}`);
      return await work(ctx);
    } finally {
      for (const router of routers) await router.close().catch((error: unknown) => log(`warning: router.close failed: ${String(error)}`));
      for (let i = 0; i < this.#shards.length; i++) {
        await this.admin(i, `DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch((error: unknown) =>
          log(`warning: dropping ${schema} on shard ${i} failed: ${String(error)}`),
        );
      }
    }
  }

  async admin<R extends Record<string, unknown>>(index: number, sql: string, params?: readonly unknown[]): Promise<R[]> {
    const shard = this.#shards[index];
    if (shard === undefined) throw new Error(`no shard ${index}`);
    let client = this.#admins.get(index);
    if (client === undefined) {
      client = (async () => {
        const c = new pg.Client({ connectionString: shard.connectionString, application_name: 'pg-shard-router bench admin' });
        c.on('error', () => undefined);
        await c.connect();
        return c;
      })();
      this.#admins.set(index, client);
    }
    const result = await (await client).query<R>(sql, params as unknown[] | undefined);
    return result.rows;
  }

  async close(): Promise<void> {
    for (const client of this.#admins.values()) await (await client.catch(() => undefined))?.end().catch(() => undefined);
    this.#admins.clear();
  }
}
