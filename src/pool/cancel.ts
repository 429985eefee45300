import pg from 'pg';
import type { SslConfig } from '../config.js';
import { pgSslOption } from './tls.js';

/**
 * Stopping a statement that runs on a borrowed connection: the server is asked to cancel it,
 * and the connection is retired (never reused), so a cancel that arrives late can never hit a
 * later statement.
 */

/** How long a cancelled statement may take to stop before its socket is closed. */
const RETIRE_GRACE_MS = 2_000;

/** Where a canceller connects: the pool's server, under the pool's application name. */
export interface CancelTarget {
  readonly connectionString: string;
  readonly applicationName: string;
  readonly ssl?: SslConfig | undefined;
}

/**
 * Asks the server to cancel what `client` is running (pg_cancel_backend on a short-lived
 * connection), or with 'terminate' to end its session (pg_terminate_backend). Never throws.
 */
export async function cancel(client: pg.Client, target: CancelTarget, how: 'cancel' | 'terminate' = 'cancel'): Promise<void> {
  const pid = (client as unknown as { processID?: number | null }).processID;
  if (!pid) return;
  const canceller = new pg.Client({
    connectionString: target.connectionString,
    application_name: target.applicationName,
    connectionTimeoutMillis: 5_000,
    ...pgSslOption(target.ssl),
  });
  canceller.on('error', () => undefined);
  try {
    await canceller.connect();
    await canceller.query(how === 'cancel' ? 'SELECT pg_cancel_backend($1)' : 'SELECT pg_terminate_backend($1)', [pid]);
  } catch {
    // Best effort: the connection is discarded either way, which ends the statement at the latest when it next writes.
  } finally {
    await canceller.end().catch(() => undefined);
  }
}

/**
 * Waits until the cancelled statement `running` is over, closing the client's socket if it
 * has not stopped within the grace period. Never throws.
 */
export async function awaitRetired(client: pg.Client, running: Promise<unknown>): Promise<void> {
  const settled = await Promise.race([
    running.then(
      () => true,
      () => true,
    ),
    new Promise<false>((resolve) => setTimeout(() => resolve(false), RETIRE_GRACE_MS).unref()),
  ]);
  if (!settled) (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
  await running.catch(() => undefined);
}
