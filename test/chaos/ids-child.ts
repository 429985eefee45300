import { ShardRouter } from '../../src/index.js';
import { requiredEnv } from './child-env.js';

/**
 * One id-generating process of the ids crash test: four callers at once draw ids through
 * router.nextId (reserved blocks) and through router.query INSERTs that rely on the
 * `next_id()` DEFAULT, and print each id (`id <n>`) once it has been handed back, until
 * IDS_TOTAL have been printed or the parent kills the process. A failed call (a backend the
 * parent terminated) is printed as `error <code>` and the caller goes on.
 */
const shards = JSON.parse(requiredEnv('SHARDS')) as { id: string; connectionString: string }[];
const table = requiredEnv('TABLE');
const total = Number(requiredEnv('IDS_TOTAL'));

const router = await ShardRouter.connect({
  shards,
  catalogSchema: requiredEnv('CATALOG'),
  applicationName: requiredEnv('APPLICATION'),
  recovery: { intervalMillis: 0, atConnect: false },
});
// Pipes are written synchronously on Linux: a printed id reached the parent before a kill.
const say = (line: string) => process.stdout.write(`${line}\n`);
let drawn = 0;
await Promise.all(
  Array.from({ length: 4 }, async (_, caller) => {
    while (drawn < total) {
      const turn = drawn++;
      try {
        if (turn % 2 === 0) say(`id ${await router.nextId(caller % 2 === 0 ? undefined : `k${turn}`)}`);
        else {
          const { rows } = await router.query<{ id: string }>(`INSERT INTO ${table} (user_id) VALUES ($1) RETURNING id::text`, [
            `k${turn}`,
          ]);
          say(`id ${rows[0]!.id} insert`);
        }
      } catch (error) {
        say(`error ${(error as { code?: string }).code ?? String(error)}`);
      }
    }
  }),
);
await router.close();
