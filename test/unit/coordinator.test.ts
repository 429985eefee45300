import type { QueryResult } from 'pg';
import { describe, expect, it } from 'vitest';
import type { ShardSession } from '../../src/pool/session.js';
import { ShardRouterError } from '../../src/index.js';
import { runTransaction } from '../../src/twopc/coordinator.js';
import type { CoordinatorContext } from '../../src/twopc/coordinator.js';
import { resolveTransactionOptions } from '../../src/twopc/transaction-options.js';

/**
 * Protocol order against a recording fake of the shard I/O seam (ShardSession): what is sent
 * to which shard, in which order. Real-server behaviour is covered by the integration tests.
 */

const CLUSTER = '0b9a2f56-3d1e-4c1a-9c55-7f2b8e0d4a11';

type Reply = Partial<QueryResult> | Error;
/** Decides the fake server's reply to one statement; undefined = a plain success. */
type Script = (shardId: string, sql: string, session: number) => Reply | undefined;

function lost(shardId: string): ShardRouterError {
  return new ShardRouterError('CONNECTION_LOST', `shard ${shardId}: connection lost`, { shardId });
}

class Recorder {
  readonly trace: string[] = [];
  /**
   * Round trips on the critical path, on a logical clock: a message leaves at the time its
   * sender had reached and is answered one unit later, so messages sent in parallel share a
   * unit and each message that waited for an answer adds one.
   */
  clock = 0;
  #sessions = 0;
  constructor(readonly script: Script = () => undefined) {}

  context(): CoordinatorContext {
    return {
      clusterId: CLUSTER,
      catalogSchema: 'shard_router',
      shardFor: (key) => String(key).split(':')[0]!,
      acquire: async (shardId) => this.session(shardId),
      serverVersion: () => 170000,
      onUnfinished: (gid) => this.trace.push(`unfinished ${gid.slice(0, 4)}`),
    };
  }

  session(shardId: string): ShardSession {
    const id = ++this.#sessions;
    let broken = false;
    const trace = this.trace;
    const script = this.script;
    const recorder = this;
    return {
      shardId,
      get broken() {
        return broken;
      },
      backendPid: id,
      async queryPipelined(_preamble: readonly string[], sql: string) {
        // One round trip: recorded as the transaction's BEGIN followed by its first statement.
        trace.push(`${shardId}#${id} BEGIN`);
        const result = (await this.query(sql)) as QueryResult;
        return [
          { command: 'BEGIN', rows: [] },
          { command: 'SELECT', rows: [{ started: String(Date.now() / 1000) }] },
          result,
        ] as QueryResult[];
      },
      async queryRaw(sql: string) {
        const result = (await this.query(sql)) as QueryResult;
        return {
          fields: result.fields,
          rows: result.rows.map((row) => Object.values(row)),
          rowCount: result.rowCount,
          command: result.command,
          shardId,
        };
      },
      async query(sql: string) {
        const verb = sql.startsWith('BEGIN')
          ? 'BEGIN'
          : sql.endsWith('; COMMIT')
            ? 'INSERT decision; COMMIT'
            : sql.replace(/'psr:[^']+'/, '<gid>').replace(/ INTO "shard_router".twopc_decisions.*/s, ' decision');
        trace.push(`${shardId}#${id} ${verb}`);
        const sentAt = recorder.clock;
        await new Promise((resolve) => setImmediate(resolve));
        recorder.clock = Math.max(recorder.clock, sentAt + 1);
        const reply = script(shardId, sql, id);
        if (reply instanceof Error) {
          if (reply instanceof ShardRouterError && reply.code === 'CONNECTION_LOST') broken = true;
          throw reply;
        }
        const command = sql.startsWith('PREPARE') ? 'PREPARE' : (sql.split(' ')[0] ?? '').replace(';', '');
        const result = (fields: Partial<QueryResult>) =>
          ({ command, rowCount: 1, rows: [], fields: [], oid: 0, ...fields, ...reply }) as QueryResult;
        // Multi-statement simple queries answer with one result per statement.
        if (sql.endsWith('; COMMIT')) return [result({ command: 'INSERT' }), result({ command: 'COMMIT', ...reply })];
        return result({ rows: sql.startsWith('SELECT outcome') ? [{ outcome: 'commit' }] : [] });
      },
      release() {
        trace.push(`${shardId}#${id} release`);
      },
    } as ShardSession;
  }
}

const options = resolveTransactionOptions(undefined, { timeoutMillis: 30_000, lockTimeoutMillis: 5_000 });

function transfer(recorder: Recorder, keys: string[]) {
  return runTransaction(
    recorder.context(),
    [...new Set(keys.map((key) => key.split(':')[0]!))].sort(),
    keys[0]!.split(':')[0]!,
    options,
    async (tx) => {
      for (const key of keys) await tx.execute(key, 'UPDATE t SET n = n + 1 WHERE k = $1', [key]);
      return 'ok';
    },
  );
}

describe('two-phase commit protocol order (recording fake)', () => {
  it('PREPAREs every voter before D commits together with its decision row; COMMIT PREPARED only after', async () => {
    const recorder = new Recorder();
    expect(await transfer(recorder, ['s1:a', 's0:b', 's2:c'])).toBe('ok');
    const t = recorder.trace;
    // Connections are taken in shard-id order, whatever the key order (session numbers count
    // acquisitions); each shard's transaction opens lazily with its first statement.
    expect(t).toEqual(expect.arrayContaining(['s0#1 BEGIN', 's1#2 BEGIN', 's2#3 BEGIN']));
    expect(t[0]).toBe('s1#2 BEGIN');
    const at = (line: string) => {
      const index = t.indexOf(line);
      expect(index, line).toBeGreaterThanOrEqual(0);
      return index;
    };
    // The first key's shard (s1) decides.
    const commit = at('s1#2 INSERT decision; COMMIT');
    for (const line of ['s0#1 PREPARE TRANSACTION <gid>', 's2#3 PREPARE TRANSACTION <gid>']) expect(at(line)).toBeLessThan(commit);
    for (const line of ['s0#1 COMMIT PREPARED <gid>', 's2#3 COMMIT PREPARED <gid>']) expect(at(line)).toBeGreaterThan(commit);
    expect(t.filter((line) => line.includes('PREPARE TRANSACTION'))).toHaveLength(2);
    expect(t.filter((line) => line.endsWith('release'))).toHaveLength(3);
  });

  it('a no vote (PREPARE answered ROLLBACK) rolls D back without COMMIT and undoes only the PREPAREs that happened', async () => {
    const recorder = new Recorder((shardId, sql) => (shardId === 's2' && sql.startsWith('PREPARE') ? { command: 'ROLLBACK' } : undefined));
    const error = await transfer(recorder, ['s0:a', 's1:b', 's2:c']).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'TRANSACTION_ABORTED', shardId: 's2' });
    const t = recorder.trace;
    expect(t).not.toContain('s0#1 INSERT decision; COMMIT');
    expect(t).toContain('s0#1 ROLLBACK');
    expect(t).toContain('s1#2 ROLLBACK PREPARED <gid>');
    expect(t.some((line) => line.startsWith('s2') && line.includes('ROLLBACK PREPARED'))).toBe(false);
    expect(t.some((line) => line.includes('COMMIT PREPARED'))).toBe(false);
  });

  it("a lost answer to D's COMMIT is settled on a fresh connection (insert abort unless decided, then read) before anything else", async () => {
    const recorder = new Recorder((shardId, sql, session) =>
      shardId === 's0' && session === 1 && sql.endsWith('; COMMIT') ? lost('s0') : undefined,
    );
    expect(await transfer(recorder, ['s0:a', 's1:b'])).toBe('ok');
    const t = recorder.trace.filter((line) => !line.endsWith('release'));
    const settle = t.slice(t.indexOf('s0#1 INSERT decision; COMMIT') + 1);
    expect(settle).toEqual([
      's0#3 BEGIN',
      expect.stringMatching(/^s0#3 INSERT decision/),
      's0#3 COMMIT',
      expect.stringMatching(/^s0#3 SELECT outcome/),
      's1#2 COMMIT PREPARED <gid>',
    ]);
  });

  it('raises IN_DOUBT with the gid, never a guess, when D cannot be reached after a lost COMMIT', async () => {
    const recorder = new Recorder((shardId, sql, session) =>
      shardId === 's0' && (session > 1 || sql.endsWith('; COMMIT')) ? lost('s0') : undefined,
    );
    const error = await transfer(recorder, ['s0:a', 's1:b']).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'IN_DOUBT', shardId: 's0' });
    expect((error as ShardRouterError).gid).toMatch(new RegExp(`^psr:${CLUSTER}:s0:`));
    // Neither COMMIT PREPARED nor ROLLBACK PREPARED: the participant stays prepared for recovery.
    expect(recorder.trace.some((line) => line.includes('PREPARED <gid>') && !line.includes('PREPARE TRANSACTION'))).toBe(false);
    expect(recorder.trace).toContain('unfinished psr:');
  });

  it('round trips on the critical path: statements + 3 for two-phase commit (PREPARE, decision, COMMIT PREPARED), + 1 for one shard', async () => {
    // docs/twopc.md "Round trips and WAL flushes": the 2-shard transfer of the benchmark.
    const twoShards = new Recorder();
    await transfer(twoShards, ['s0:a', 's1:b']);
    expect(twoShards.clock).toBe(5);
    // Voters vote and finish in parallel: a third shard adds only its own statement.
    const threeShards = new Recorder();
    await transfer(threeShards, ['s0:a', 's1:b', 's2:c']);
    expect(threeShards.clock).toBe(6);
    const oneShard = new Recorder();
    await transfer(oneShard, ['s3:a', 's3:b']);
    expect(oneShard.clock).toBe(3);
  });

  it('a one-shard transaction is BEGIN, statements, COMMIT on one connection', async () => {
    const recorder = new Recorder();
    await transfer(recorder, ['s3:a', 's3:b']);
    expect(recorder.trace).toEqual([
      's3#1 BEGIN',
      's3#1 UPDATE t SET n = n + 1 WHERE k = $1',
      's3#1 UPDATE t SET n = n + 1 WHERE k = $1',
      's3#1 COMMIT',
      's3#1 release',
    ]);
  });
});
