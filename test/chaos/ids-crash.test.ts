import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ShardRouter } from '../../src/index.js';
import { connectFreshRouter, dropSchemas, shardConfigs, shardUrls, uniqueName, withServer } from '../support/cluster.js';
import { spawnTypeScript, waitForBackendsGone } from './support.js';

/**
 * next_id() and router.nextId across crashes (docs/ids.md): a process drawing ids (blocks
 * reserved by router.nextId, and INSERTs relying on the DEFAULT through router.query) is killed
 * with SIGKILL mid-stream; a second one resumes drawing and has its backends on a shard
 * terminated three times meanwhile. No id is ever handed out twice, and every acknowledged
 * INSERT's row is there with its id. (A server restart and a clock set back: ids.test.ts.)
 */

const T = uniqueName('idk');
const catalog = uniqueName('cat');
const application = uniqueName('idk-app');
let router: ShardRouter;

beforeAll(async () => {
  router = await connectFreshRouter({ catalogSchema: catalog, recovery: { intervalMillis: 0, atConnect: false } });
  for (const shardId of router.shardIds) {
    await router.executeOn(shardId, `CREATE TABLE ${T} (id bigint PRIMARY KEY DEFAULT "${catalog}".next_id(), user_id text NOT NULL)`);
  }
  await router.registerShardedTable(T, 'user_id');
});

afterAll(async () => {
  await router.broadcast(`DROP TABLE IF EXISTS ${T}`).catch(() => undefined);
  await router.close();
  await dropSchemas(catalog);
});

interface Drawn {
  readonly ids: string[];
  readonly inserted: string[];
  readonly errors: string[];
  readonly exit: { code: number | null; signal: NodeJS.Signals | null; stderr: string };
}

/** Runs a child; `during(child, printed)` is called on every printed line (it may kill the child or terminate backends). */
function draw(total: number, during: (child: ChildProcess, printed: number) => void): Promise<Drawn> {
  const child = spawnTypeScript('test/chaos/ids-child.ts', {
    SHARDS: JSON.stringify(shardConfigs()),
    CATALOG: catalog,
    APPLICATION: application,
    TABLE: T,
    IDS_TOTAL: String(total),
  });
  child.stdin?.end();
  const drawn = { ids: [] as string[], inserted: [] as string[], errors: [] as string[] };
  let stderr = '';
  let pending = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    const lines = (pending + chunk).split('\n');
    pending = lines.pop()!;
    for (const line of lines) {
      const [word, value, how] = line.split(' ');
      if (word === 'id') {
        drawn.ids.push(value!);
        if (how === 'insert') drawn.inserted.push(value!);
      } else drawn.errors.push(line);
      during(child, drawn.ids.length);
    }
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ ...drawn, exit: { code, signal, stderr } }));
  });
}

/** Terminates this test's backends on one shard (the child's pooled connections, mid-statement or idle). */
function terminateBackends(url: string): Promise<unknown> {
  return withServer(url, (client) =>
    client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [application]),
  );
}

describe('ids across a SIGKILL and terminated backends', () => {
  it('never hands out an id twice', async () => {
    const killed = await draw(1_000_000, (child, printed) => {
      if (printed === 400) child.kill('SIGKILL');
    });
    expect(killed.exit.signal, killed.exit.stderr.slice(-2000)).toBe('SIGKILL');
    expect(killed.ids.length).toBeGreaterThanOrEqual(400);
    await waitForBackendsGone(shardUrls(), application);

    let terminations = 0;
    const url = shardUrls()[1]!;
    const cut = await draw(1_200, (_child, printed) => {
      if (printed % 300 === 0 && terminations < 3) {
        terminations++;
        void terminateBackends(url);
      }
    });
    expect(cut.exit.code, cut.exit.stderr.slice(-2000)).toBe(0);
    expect(terminations).toBe(3);

    const all = [...killed.ids, ...cut.ids];
    expect(new Set(all).size).toBe(all.length);
    // Every acknowledged INSERT is there, under the id it returned.
    const stored = await router.broadcast<{ id: string }>(`SELECT id::text AS id FROM ${T}`);
    const ids = new Set(stored.rows.map((row) => row.id));
    const acknowledged = [...killed.inserted, ...cut.inserted];
    expect(acknowledged.filter((id) => !ids.has(id))).toEqual([]);
    // The router's own ids and the DEFAULT's never meet either.
    const fromRouter = new Set(all.filter((id) => !acknowledged.includes(id)));
    expect(stored.rows.filter((row) => fromRouter.has(row.id))).toEqual([]);
  }, 120_000);
});
