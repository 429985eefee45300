import type { DedicatedConnection } from '../pool/session.js';
import type { LockContext } from './context.js';

/** Idle lock connections kept per shard for the next withLock (each held lock has one of its own). */
const MAX_IDLE_PER_SHARD = 8;

/** A connection that carries locks, with the session settings it was last given. */
export class LockConnection {
  readonly shardId: string;
  readonly connection: DedicatedConnection;
  /** Why the connection broke, once it did (it then holds nothing on the server). */
  lost: unknown;
  readonly #settings = new Map<string, string>();

  constructor(shardId: string, connection: DedicatedConnection) {
    this.shardId = shardId;
    this.connection = connection;
    connection.onLost((cause) => {
      this.lost = cause;
    });
  }

  /** Sets the session settings that differ from what the connection has (one round trip, none if all match). */
  async configure(settings: Readonly<Record<string, string>>): Promise<void> {
    const changed = Object.entries(settings).filter(([name, value]) => this.#settings.get(name) !== value);
    if (changed.length === 0) return;
    const calls = changed.map((_, i) => `set_config($${2 * i + 1}, $${2 * i + 2}, false)`).join(', ');
    await this.connection.query(`SELECT ${calls}`, changed.flat());
    for (const [name, value] of changed) this.#settings.set(name, value);
  }
}

/**
 * The lock connections of one router: opened on demand, kept idle for reuse only when they
 * were left holding nothing, ended otherwise (ending a session releases its locks). An idle one
 * that the server ends (its idle_session_timeout is the last lease) is dropped when taken.
 */
export class LockConnections {
  readonly #context: LockContext;
  readonly #idle = new Map<string, LockConnection[]>();
  #closed = false;

  constructor(context: LockContext) {
    this.#context = context;
  }

  async take(shardId: string): Promise<LockConnection> {
    const idle = this.#idle.get(shardId) ?? [];
    for (let connection = idle.pop(); connection; connection = idle.pop()) {
      if (connection.lost === undefined) return connection;
      void connection.connection.end();
    }
    return new LockConnection(shardId, await this.#context.openConnection(shardId));
  }

  /** Keeps a connection that holds no lock for the next withLock (or ends it). */
  give(connection: LockConnection): void {
    const idle = this.#idle.get(connection.shardId) ?? [];
    if (this.#closed || connection.lost !== undefined || idle.length >= MAX_IDLE_PER_SHARD) {
      void connection.connection.end();
      return;
    }
    idle.push(connection);
    this.#idle.set(connection.shardId, idle);
  }

  /** Ends a connection: the server releases whatever it held. */
  discard(connection: LockConnection): Promise<void> {
    return connection.connection.end();
  }

  async close(): Promise<void> {
    this.#closed = true;
    const all = [...this.#idle.values()].flat();
    this.#idle.clear();
    await Promise.all(all.map((connection) => connection.connection.end()));
  }
}
