/**
 * Where a shard's statements go, for span attributes: host, port and database, read once from
 * its connection string (never the user or password).
 */
export interface ShardTarget {
  readonly shardId: string;
  /** `server.address`: the host name, IP or socket directory. */
  readonly address: string | undefined;
  readonly port: number;
  /** `db.namespace`: the database the connection string names (the schema is not known without a round trip). */
  readonly namespace: string | undefined;
}

const DEFAULT_PORT = 5432;

export function shardTarget(shardId: string, connectionString: string): ShardTarget {
  try {
    const url = new URL(connectionString);
    // libpq's `?host=/socket/dir` wins over the URL's host, as it does for pg.
    const host = url.searchParams.get('host') ?? decodeURIComponent(url.hostname);
    const port = Number(url.searchParams.get('port') ?? url.port) || DEFAULT_PORT;
    const database = decodeURIComponent(url.pathname.replace(/^\//, '')) || url.searchParams.get('dbname') || undefined;
    // pg's default database is the user name, which is not recorded: leave the namespace unset then.
    return { shardId, address: host.replace(/^\[(.*)\]$/, '$1') || undefined, port, namespace: database };
  } catch {
    return { shardId, address: undefined, port: DEFAULT_PORT, namespace: undefined };
  }
}
