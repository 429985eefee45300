import { ShardRouterError } from '../errors.js';
import type { ShardRouter } from '../index.js';
import { parseFlags, shardUrlsFrom } from './args.js';
import { discoverCluster } from './discover.js';
import { withRouter } from './inspect.js';

/**
 * `pg-shard-router outbox status | parked | retry <id> | skip <id>`: the outbox's consumer groups
 * for operators (docs/outbox.md), over the shards' URLs.
 */

const USAGE = 'outbox status | parked --group <g> | retry <event-id> --group <g> | skip <event-id> --group <g> [--json]';

const FLAGS = {
  shards: { type: 'string' },
  'catalog-schema': { type: 'string', default: 'shard_router' },
  json: { type: 'boolean', default: false },
  group: { type: 'string' },
} as const;

type Write = (text: string) => void;

export async function outboxCommand(args: string[], env: NodeJS.ProcessEnv, write: Write): Promise<number> {
  const { values, positionals } = parseFlags({ args, options: FLAGS, strict: true, allowPositionals: true });
  const [action, id, ...extra] = positionals;
  if (extra.length > 0) throw usage(`unexpected argument "${extra[0]}"`);
  const needsId = action === 'retry' || action === 'skip';
  if (action !== 'status' && action !== 'parked' && !needsId) throw usage(`unknown outbox action "${action ?? ''}"`);
  if (needsId && id === undefined) throw usage('missing <event-id>');
  if (!needsId && id !== undefined) throw usage(`unexpected argument "${id}"`);
  if (action !== 'status' && values.group === undefined) throw usage('--group is required');
  const catalogSchema = values['catalog-schema'];
  const cluster = await discoverCluster(shardUrlsFrom(values.shards, env), catalogSchema);
  return withRouter(cluster, catalogSchema, async (router) => {
    const result = await run(router, action, id, values.group);
    write(values.json ? `${JSON.stringify(result, null, 2)}\n` : text(action, result, values.group));
    return 0;
  });
}

async function run(router: ShardRouter, action: string, id: string | undefined, group: string | undefined): Promise<unknown> {
  switch (action) {
    case 'status': {
      const { groups } = await router.outbox.status();
      return group === undefined ? groups : groups.filter((row) => row.group === group);
    }
    case 'parked':
      return router.outbox.parked({ group: group! });
    case 'retry':
      await router.outbox.retry(id!, { group: group! });
      return { retried: id, group };
    default:
      await router.outbox.skip(id!, { group: group! });
      return { skipped: id, group };
  }
}

function text(action: string, result: unknown, group: string | undefined): string {
  if (action === 'status') {
    const rows = result as Awaited<ReturnType<ShardRouter['outbox']['status']>>['groups'];
    if (rows.length === 0) return 'no consumer groups\n';
    const lines = rows.map((row) => `${row.group}  ${row.shardId}  pending ${row.pending}  lag ${row.lagMillis} ms  parked ${row.parked}`);
    return `${lines.join('\n')}\n`;
  }
  if (action === 'parked') {
    const rows = result as Awaited<ReturnType<ShardRouter['outbox']['parked']>>;
    if (rows.length === 0) return `no parked events in group ${group}\n`;
    return `${rows.map((row) => `${row.id}  ${row.shardId}  key ${row.key} #${row.seq}  ${row.topic}  attempts ${row.attempts}  ${row.lastError ?? ''}`).join('\n')}\n`;
  }
  return action === 'retry' ? `event will be delivered again to group ${group}\n` : `event skipped in group ${group}\n`;
}

function usage(problem: string): ShardRouterError {
  return new ShardRouterError('INVALID_ARGUMENT', `${problem}\nusage: pg-shard-router ${USAGE}`);
}
