import type { Socket } from 'node:net';
import type pg from 'pg';
import type { CopyOut } from './session.js';

/**
 * COPY over pg's own protocol handling (pg-copy-streams is not a dependency): submittable query
 * objects, the way pg-copy-streams drives pg.Client. `CopyOutStream` reads a `COPY ... TO
 * STDOUT`, `copyIn` feeds a `COPY ... FROM STDIN` from one; the bytes pass through untouched.
 *
 * Backpressure: the source's socket is paused while more than HIGH_WATER_BYTES wait for the
 * reader (the server then blocks on its send buffer), and the target is fed the next batch
 * only once its socket has drained.
 */

/** CopyData of the source is gathered into batches of about this size: one CopyData message each for the target. */
const BATCH_BYTES = 256 * 1024;
const HIGH_WATER_BYTES = 4 * BATCH_BYTES;

/** The parts of pg's Connection a COPY drives. */
interface CopyConnection {
  readonly stream: Socket;
  query(text: string): void;
  sendCopyFromChunk(chunk: Buffer): void;
  endCopyFrom(): void;
  sendCopyFail(message: string): void;
}

/** The rows of a COPY's command tag ('COPY 123'). */
function copiedRows(message: { text?: string }): number {
  const rows = Number(/^COPY (\d+)$/.exec(message.text ?? '')?.[1]);
  return Number.isSafeInteger(rows) ? rows : 0;
}

/** What the reader of a CopyOutStream is waiting for. */
interface Waiter {
  resolve(batch: Buffer | null): void;
  reject(error: unknown): void;
}

/** A `COPY ... TO STDOUT` running on `client`, read a batch at a time (see CopyOut). */
export class CopyOutStream implements CopyOut {
  #socket: Socket | undefined;
  readonly #ready: Buffer[] = [];
  #readyBytes = 0;
  /** The batch being filled: CopyData chunks are copied in (pg reuses its read buffer). */
  #batch: Buffer = Buffer.alloc(0);
  #used = 0;
  #state: 'running' | 'done' | 'failed' | 'aborted' = 'running';
  #error: unknown;
  #rows = 0;
  #waiter: Waiter | undefined;
  #wakeQueued = false;
  #paused = false;

  constructor(client: pg.Client, sql: string) {
    const submittable = {
      submit: (connection: CopyConnection) => {
        this.#socket = connection.stream;
        connection.query(sql);
      },
      handleCopyData: (message: { chunk: Buffer }) => this.#take(message.chunk),
      handleCommandComplete: (message: { text?: string }) => {
        this.#rows = copiedRows(message);
      },
      handleReadyForQuery: () => this.#settle('done'),
      handleError: (error: unknown) => this.#settle('failed', error),
      handleCopyInResponse: (connection: CopyConnection) => connection.sendCopyFail('expected COPY TO STDOUT'),
      handleRowDescription: () => this.#settle('failed', new Error('expected COPY TO STDOUT, got rows')),
      handleDataRow: () => undefined,
      handleEmptyQuery: () => undefined,
      handlePortalSuspended: () => undefined,
    };
    client.query(submittable as unknown as pg.QueryConfig);
  }

  get rows(): number {
    return this.#rows;
  }

  read(): Promise<Buffer | null> {
    const batch = this.#next();
    if (batch !== undefined) return Promise.resolve(batch);
    if (this.#state === 'failed') return Promise.reject(this.#error);
    if (this.#state !== 'running') return Promise.resolve(null);
    if (this.#waiter) return Promise.reject(new Error('CopyOutStream.read called while a read is pending'));
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  abort(): void {
    if (this.#state !== 'running') return;
    this.#settle('aborted');
    // A COPY TO STDOUT cannot be stopped but by closing the connection (a cancel would race with the rows).
    this.#socket?.destroy();
    this.#ready.length = 0;
    this.#readyBytes = 0;
  }

  /** The oldest batch, or the one being filled; undefined when nothing is there. */
  #next(): Buffer | undefined {
    let batch = this.#ready.shift();
    if (batch) this.#readyBytes -= batch.length;
    else if (this.#used > 0) {
      // Handed out as it is; the rest of the buffer goes on filling.
      batch = this.#batch.subarray(0, this.#used);
      this.#batch = this.#batch.subarray(this.#used);
      this.#used = 0;
    }
    if (this.#paused && this.#readyBytes < HIGH_WATER_BYTES / 2) {
      this.#paused = false;
      this.#socket?.resume();
    }
    return batch;
  }

  #take(chunk: Buffer): void {
    if (this.#state !== 'running') return;
    if (this.#used + chunk.length > this.#batch.length) {
      if (this.#used > 0) {
        this.#ready.push(this.#batch.subarray(0, this.#used));
        this.#readyBytes += this.#used;
      }
      this.#batch = Buffer.allocUnsafe(Math.max(BATCH_BYTES, chunk.length));
      this.#used = 0;
    }
    chunk.copy(this.#batch, this.#used);
    this.#used += chunk.length;
    if (this.#readyBytes > HIGH_WATER_BYTES && !this.#paused) {
      this.#paused = true;
      this.#socket?.pause();
    }
    // A waiting reader gets everything this socket read brought, after pg parsed all of it.
    if (this.#waiter && !this.#wakeQueued) {
      this.#wakeQueued = true;
      queueMicrotask(() => {
        this.#wakeQueued = false;
        this.#wake();
      });
    }
  }

  #settle(state: 'done' | 'failed' | 'aborted', error?: unknown): void {
    if (this.#state !== 'running') return;
    this.#state = state;
    this.#error = error;
    if (this.#paused) this.#socket?.resume();
    this.#wake();
  }

  #wake(): void {
    const waiter = this.#waiter;
    if (!waiter) return;
    const batch = this.#next();
    if (batch !== undefined) {
      this.#waiter = undefined;
      waiter.resolve(batch);
    } else if (this.#state !== 'running') {
      this.#waiter = undefined;
      if (this.#state === 'failed') waiter.reject(this.#error);
      else waiter.resolve(null);
    }
  }
}

/** The source of a copyIn failed (its own error is the cause): the target's connection is fine. */
export class CopySourceError extends Error {
  constructor(cause: unknown) {
    super('the COPY source failed', { cause });
  }
}

/**
 * Runs `sql` (a `COPY ... FROM STDIN`) on `client`, fed from `from`; resolves with the rows the
 * server reports. If `from` fails, the COPY is failed (CopyFail) and the call rejects with a
 * CopySourceError; if the target fails, `from` is aborted and the call rejects with the
 * target's error.
 */
export function copyIn(client: pg.Client, sql: string, from: CopyOut): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    let rows = 0;
    let settled = false;
    let sourceError: CopySourceError | undefined;
    const fail = (error: unknown) => {
      if (settled) return;
      settled = true;
      from.abort();
      reject(sourceError ?? error);
    };
    const pump = async (connection: CopyConnection) => {
      try {
        for (;;) {
          const batch = await from.read();
          if (settled) return;
          if (batch === null) return connection.endCopyFrom();
          connection.sendCopyFromChunk(batch);
          if (connection.stream.writableNeedDrain) await drained(connection.stream);
        }
      } catch (error) {
        if (settled) return;
        sourceError = new CopySourceError(error);
        // The server answers with an error, which settles the call with sourceError.
        connection.sendCopyFail('the COPY source failed');
      }
    };
    const submittable = {
      submit: (connection: CopyConnection) => connection.query(sql),
      handleCopyInResponse: (connection: CopyConnection) => void pump(connection),
      handleCommandComplete: (message: { text?: string }) => {
        rows = copiedRows(message);
      },
      handleReadyForQuery: () => {
        if (settled) return;
        settled = true;
        resolve(rows);
      },
      handleError: fail,
      handleCopyData: () => undefined,
      handleRowDescription: () => undefined,
      handleDataRow: () => undefined,
      handleEmptyQuery: () => undefined,
      handlePortalSuspended: () => undefined,
    };
    client.query(submittable as unknown as pg.QueryConfig);
  });
}

/** Resolves once `socket` drained its write buffer, or closed (the COPY then fails by itself). */
function drained(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}
