import pg from 'pg';
import type { DedicatedConnection, QueryResultRow } from './session.js';

/** How to open a connection outside any pool. */
export interface DedicatedOptions {
  readonly applicationName: string;
  readonly connectTimeoutMillis: number;
  /** Session settings sent in the startup packet (names and values are ours: no escaping needed). */
  readonly settings?: Readonly<Record<string, string>>;
}

/** @internal A connected pg.Client outside any pool; a connect failure is thrown as pg's error. */
export async function openClient(connectionString: string, options: DedicatedOptions): Promise<pg.Client> {
  const settings = Object.entries(options.settings ?? {}).map(([name, value]) => `-c ${name}=${value}`).join(' ');
  const client = new pg.Client({
    connectionString,
    connectionTimeoutMillis: options.connectTimeoutMillis,
    application_name: options.applicationName.slice(0, 63),
    keepAlive: true,
    ...(settings ? { options: settings } : {}),
  });
  // A socket error while idle must not crash the process; the pending query rejects anyway.
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (error) {
    await client.end().catch(() => undefined);
    throw error;
  }
  return client;
}

/** @internal The DedicatedConnection face of a client. */
export function dedicated(client: pg.Client): DedicatedConnection {
  return {
    query: <R extends QueryResultRow>(sql: string, params?: readonly unknown[]) => client.query<R>(sql, params as unknown[] | undefined),
    end: () => client.end().catch(() => undefined),
  };
}

/**
 * A connection to any server by URL, outside any pool (for the CLI's discovery of a cluster
 * from URLs alone). The caller ends it.
 */
export async function connectDedicated(connectionString: string, options: DedicatedOptions): Promise<DedicatedConnection> {
  return dedicated(await openClient(connectionString, options));
}
