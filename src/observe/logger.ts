import type { Logger } from '../config.js';

export type { Logger } from '../config.js';

/**
 * The logger a router writes to (the config's `logger`): any object with pino's four methods,
 * `(obj, msg)`. Default silent. What the router logs is listed in docs/operations.md ("Log
 * events"); every entry carries an `event` name in `obj`. Never a password, never a
 * statement's parameter values.
 */

export type LogLevel = keyof Logger;

/**
 * Writes one entry; a logger that throws is ignored, so logging can never break a statement,
 * a recovery pass or a move.
 */
export function logTo(logger: Logger | undefined, level: LogLevel, event: string, fields: Record<string, unknown>, msg: string): void {
  if (!logger) return;
  try {
    logger[level]({ event, ...fields }, msg);
  } catch {
    // A broken logger is the application's problem; the router keeps working.
  }
}

/**
 * An error as it may be logged: name, code and SQLSTATE, and the message only when no server
 * error is involved. PostgreSQL's messages about a statement can quote a value it was sent
 * (`invalid input syntax for type integer: "..."`), so they are left out; connection and
 * router errors (refused connection, pool timeout) carry no values and keep theirs.
 */
export function loggableError(error: unknown): Record<string, unknown> {
  if (!(error instanceof Error)) return { name: typeof error };
  const { code } = error as { code?: unknown };
  const sqlState = sqlStateIn(error);
  return {
    name: error.name,
    ...(typeof code === 'string' ? { code } : {}),
    ...(sqlState === undefined ? { message: error.message } : { sqlState }),
  };
}

/** The SQLSTATE of a server error in `error` or its causes (a few levels deep). */
export function sqlStateIn(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    const { sqlState, code, severity } = current as { sqlState?: unknown; code?: unknown; severity?: unknown };
    if (typeof sqlState === 'string' && sqlState !== '') return sqlState;
    if (typeof code === 'string' && typeof severity === 'string') return code;
    current = current.cause;
  }
  return undefined;
}
