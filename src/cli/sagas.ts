import { ShardRouterError } from '../errors.js';
import type { SagaState } from '../saga/log.js';
import type { SagaSummary } from '../saga/sagas.js';
import { parseFlags, shardUrlsFrom } from './args.js';
import { discoverCluster } from './discover.js';
import { formatAge, formatTable } from './format.js';
import { withRouter } from './inspect.js';

/**
 * `pg-shard-router sagas [--parked] [--state S] [--name N]`, `saga retry <id>` and
 * `saga resolve <id> [--note text]` (docs/sagas.md). The CLI defines no sagas, so `retry`
 * hands the parked saga back (fresh budgets, lease expired): the application's routers that
 * define its name continue it at their next resumption pass.
 */

type Write = (text: string) => void;

const FLAGS = {
  shards: { type: 'string' },
  'catalog-schema': { type: 'string', default: 'shard_router' },
  json: { type: 'boolean', default: false },
} as const;

const STATES: readonly SagaState[] = ['running', 'compensating', 'completed', 'compensated', 'parked', 'resolved'];

async function connectFor<T>(
  values: { shards?: string | undefined; 'catalog-schema': string },
  env: NodeJS.ProcessEnv,
  work: Parameters<typeof withRouter<T>>[2],
) {
  const cluster = await discoverCluster(shardUrlsFrom(values.shards, env), values['catalog-schema']);
  return withRouter(cluster, values['catalog-schema'], work);
}

function describeSteps(saga: SagaSummary): string {
  return saga.steps.map((step) => `${step.name}=${step.state}`).join(' ');
}

export async function sagasCommand(args: string[], env: NodeJS.ProcessEnv, write: Write): Promise<number> {
  const { values } = parseFlags({
    args,
    options: { ...FLAGS, parked: { type: 'boolean', default: false }, state: { type: 'string' }, name: { type: 'string' } },
    strict: true,
    allowPositionals: false,
  });
  const state = values.parked ? 'parked' : values.state;
  if (state !== undefined && !STATES.includes(state as SagaState))
    throw new ShardRouterError('INVALID_ARGUMENT', `--state must be one of ${STATES.join(', ')}`);
  const filter = { ...(state ? { state: state as SagaState } : {}), ...(values.name ? { name: values.name } : {}) };
  const sagas = await connectFor(values, env, (router) => router.sagas.list(filter));
  if (values.json) {
    write(`${JSON.stringify(sagas, null, 2)}\n`);
    return 0;
  }
  const now = Date.now();
  write(
    formatTable(
      ['saga id', 'name', 'key', 'state', 'updated', 'steps', 'error'],
      sagas.map((saga) => [
        saga.sagaId,
        saga.name,
        saga.sagaKey,
        saga.state,
        `${formatAge(now - saga.updatedAt.getTime())} ago`,
        describeSteps(saga),
        saga.error?.message ?? '',
      ]),
    ),
  );
  write(`${sagas.length} saga(s)\n`);
  return 0;
}

export async function sagaCommand(args: string[], env: NodeJS.ProcessEnv, write: Write): Promise<number> {
  const { values, positionals } = parseFlags({
    args,
    options: { ...FLAGS, note: { type: 'string' } },
    strict: true,
    allowPositionals: true,
  });
  const [action, sagaId, ...extra] = positionals;
  if ((action !== 'retry' && action !== 'resolve') || sagaId === undefined || extra.length > 0)
    throw new ShardRouterError('INVALID_ARGUMENT', 'usage: pg-shard-router saga retry <id> | saga resolve <id> [--note text]');
  const saga = await connectFor(values, env, (router) =>
    action === 'retry'
      ? router.sagas.requeue(sagaId)
      : router.sagas.resolve(sagaId, values.note === undefined ? {} : { note: values.note }),
  );
  if (values.json) write(`${JSON.stringify(saga, null, 2)}\n`);
  else if (action === 'retry')
    write(`saga ${sagaId} handed back (${saga.state}): a router that defines "${saga.name}" continues it at its next resumption pass\n`);
  else write(`saga ${sagaId} resolved${saga.note ? `: ${saga.note}` : ''}\n`);
  return 0;
}
