import type pg from 'pg';

/**
 * COPY over pg's own protocol handling, for the bench's bare-copy baseline (pg-copy-streams is
 * not a dependency): a submittable query object, as pg-copy-streams does it. `copyPipe` streams
 * `COPY (...) TO STDOUT` on one server into `COPY ... FROM STDIN` on another, each CopyData
 * chunk forwarded as it arrives. Resolves with the bytes piped and the rows the target took.
 */

interface CopyConnection {
  query(text: string): void;
  sendCopyFromChunk(chunk: Buffer): void;
  endCopyFrom(): void;
  sendCopyFail(message: string): void;
}

/** A simple-protocol statement whose messages go to the given handlers; settles at ReadyForQuery or on error. */
function submit(
  client: pg.Client,
  sql: string,
  handlers: { copyData?(chunk: Buffer): void; copyIn?(connection: CopyConnection): void; done?(tag: string): void },
) {
  return new Promise<void>((resolve, reject) => {
    const query = {
      submit: (connection: CopyConnection) => connection.query(sql),
      handleCopyData: (message: { chunk: Buffer }) => handlers.copyData?.(message.chunk),
      handleCopyInResponse: (connection: CopyConnection) =>
        handlers.copyIn ? handlers.copyIn(connection) : connection.sendCopyFail('unexpected COPY FROM'),
      handleRowDescription: () => undefined,
      handleDataRow: () => undefined,
      handleCommandComplete: (message: { text?: string }) => handlers.done?.(message.text ?? ''),
      handleEmptyQuery: () => undefined,
      handleReadyForQuery: () => resolve(),
      handleError: (error: Error) => reject(error),
    };
    client.query(query as unknown as pg.QueryConfig);
  });
}

export async function copyPipe(
  from: pg.Client,
  copyOutSql: string,
  to: pg.Client,
  copyInSql: string,
): Promise<{ bytes: number; rows: number }> {
  let target: CopyConnection | undefined;
  const pending: Buffer[] = [];
  let outDone = false;
  let outFailed = false;
  let bytes = 0;
  let rows = 0;
  const copyIn = submit(to, copyInSql, {
    done(tag) {
      rows = Number(/^COPY (\d+)$/.exec(tag)?.[1] ?? 0);
    },
    copyIn(connection) {
      target = connection;
      if (outFailed) return connection.sendCopyFail('the source COPY failed');
      for (const chunk of pending.splice(0)) connection.sendCopyFromChunk(chunk);
      if (outDone) connection.endCopyFrom();
    },
  });
  try {
    await submit(from, copyOutSql, {
      copyData(chunk) {
        bytes += chunk.length;
        if (target) target.sendCopyFromChunk(chunk);
        else pending.push(chunk);
      },
    });
  } catch (error) {
    outFailed = true;
    target?.sendCopyFail('the source COPY failed');
    await copyIn.catch(() => undefined);
    throw error;
  }
  outDone = true;
  target?.endCopyFrom();
  await copyIn;
  return { bytes, rows };
}
