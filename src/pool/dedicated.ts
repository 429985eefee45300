import pg from 'pg';
import type { SslConfig } from '../config.js';
import { CopyOutStream } from './copy-stream.js';
import { pgSslOption } from './tls.js';
import type { DedicatedConnection, Listener, QueryResultRow } from './session.js';

/** How to open a connection outside any pool. */
export interface DedicatedOptions {
  readonly applicationName: string;
  readonly connectTimeoutMillis: number;
  /** Session settings sent in the startup packet (names and values are ours: no escaping needed). */
  readonly settings?: Readonly<Record<string, string>>;
  /** TLS options (the config's `ssl`); none: what the URL says. */
  readonly ssl?: SslConfig | undefined;
}

/**
 * Session settings as the startup packet's `options` (`-c name=value ...`), so they cost no
 * round trip. Names and values are ours: no spaces or backslashes to escape.
 */
export function startupOptions(settings: Readonly<Record<string, string>>): { options?: string } {
  const options = Object.entries(settings)
    .map(([name, value]) => `-c ${name}=${value}`)
    .join(' ');
  return options ? { options } : {};
}

/** @internal A connected pg.Client outside any pool; a connect failure is thrown as pg's error. */
export async function openClient(connectionString: string, options: DedicatedOptions): Promise<pg.Client> {
  const client = new pg.Client({
    connectionString,
    connectionTimeoutMillis: options.connectTimeoutMillis,
    application_name: options.applicationName.slice(0, 63),
    keepAlive: true,
    ...startupOptions(options.settings ?? {}),
    ...pgSslOption(options.ssl),
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
    copyOut: (sql) => new CopyOutStream(client, sql),
    onLost: (listener) => {
      let called = false;
      const lost = (cause?: unknown) => {
        if (called) return;
        called = true;
        listener(cause ?? new Error('the connection ended'));
      };
      client.on('error', lost);
      client.on('end', lost);
      return () => {
        client.off('error', lost);
        client.off('end', lost);
      };
    },
  };
}

/**
 * A connection to any server by URL, outside any pool (for the CLI's discovery of a cluster
 * from URLs alone). The caller ends it.
 */
export async function connectDedicated(connectionString: string, options: DedicatedOptions): Promise<DedicatedConnection> {
  return dedicated(await openClient(connectionString, options));
}

/**
 * LISTENs on `channel` over the dedicated `client` (which it then owns): `onNotification` gets
 * each payload, `onLost` is called once if the connection breaks (not after close()). A
 * failed LISTEN ends the connection and throws `translate(error)`.
 */
export async function listenOn(
  client: pg.Client,
  channel: string,
  onNotification: (payload: string) => void,
  onLost: () => void,
  translate: (error: unknown) => unknown,
): Promise<Listener> {
  let closed = false;
  const lost = () => {
    if (closed) return;
    closed = true;
    void client.end().catch(() => undefined);
    onLost();
  };
  client.on('error', lost);
  client.on('end', lost);
  client.on('notification', (message) => onNotification(message.payload ?? ''));
  try {
    await client.query(`LISTEN ${channel}`);
  } catch (error) {
    lost();
    throw translate(error);
  }
  return {
    close: async () => {
      closed = true;
      await client.end().catch(() => undefined);
    },
  };
}
