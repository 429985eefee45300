import type { QueryResult } from 'pg';
import { describe, expect, it } from 'vitest';
import type { ShardSession } from '../../src/pool/session.js';
import { ShardRouterError } from '../../src/index.js';
import { withPublish } from '../../src/outbox/publish.js';
import type { PipelinedStatement } from '../../src/pool/session.js';
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
      async queryPipelined(preamble: readonly PipelinedStatement[], sql: string) {
        // One round trip: recorded as the transaction's BEGIN (if it opens one), the statements
        // it carries, then the last one, which alone advances the clock. A statement the script
        // fails skips the rest, as the server does up to the Sync.
        const texts = preamble.map((statement) => (typeof statement === 'string' ? statement : statement.text));
        const opening = texts[0]?.startsWith('BEGIN') === true;
        const results: Partial<QueryResult>[] = opening
          ? [
              { command: 'BEGIN', rows: [] },
              { command: 'SELECT', rows: [{ started: String(Date.now() / 1000) }] },
            ]
          : [];
        if (opening) trace.push(`${shardId}#${id} BEGIN`);
        for (const text of texts.slice(opening ? 2 : 0)) {
          trace.push(`${shardId}#${id} ${label(text)}`);
          const reply = script(shardId, text, id);
          if (reply instanceof Error) {
            await new Promise((resolve) => setImmediate(resolve));
            recorder.clock++;
            throw reply;
          }
          results.push({ command: text.split(' ')[0] ?? '', rows: [] });
        }
        return [...results, (await this.query(sql)) as QueryResult] as QueryResult[];
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
        trace.push(`${shardId}#${id} ${label(sql)}`);
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

/** How a statement shows in the trace. */
function label(sql: string): string {
  if (sql.startsWith('BEGIN')) return 'BEGIN';
  if (sql.endsWith('; COMMIT')) return 'INSERT decision; COMMIT';
  if (sql.includes('.outbox_events')) return 'publish';
  return sql.replace(/'psr:[^']+'/, '<gid>').replace(/ INTO "shard_router".twopc_decisions.*/s, ' decision');
}

const options = resolveTransactionOptions(undefined, { timeoutMillis: 30_000, lockTimeoutMillis: 5_000 });

/** The benchmark's transfer: one statement per key; `publishOn` keys then publish one event each (tx.publish, deferred). */
function transfer(recorder: Recorder, keys: string[], publishOn: string[] = []) {
  return runTransaction(
    recorder.context(),
    [...new Set([...keys, ...publishOn].map((key) => key.split(':')[0]!))].sort(),
    (keys[0] ?? publishOn[0])!.split(':')[0]!,
    options,
    async (core, deferred) => {
      const tx = withPublish(core, deferred, 'shard_router', new Set());
      for (const key of keys) await tx.execute(key, 'UPDATE t SET n = n + 1 WHERE k = $1', [key]);
      for (const key of publishOn) await tx.publish(key, 'bench.transfer', { key });
      return 'ok';
    },
  );
}

/** A server error as pg reports it, wrapped as the pool does. */
function refused(shardId: string): ShardRouterError {
  const cause = Object.assign(new Error('new row violates check constraint'), {
    code: '23514',
    severity: 'ERROR',
    constraint: 'payload_small',
  });
  return new ShardRouterError('QUERY_FAILED', `shard ${shardId}: ${cause.message}`, { shardId, cause });
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

describe('deferred publish (tx.publish rides with the next message)', () => {
  it('costs no round trip: a transfer that publishes takes as many as one that does not, 1PC and 2PC', async () => {
    // The benchmark's shape: both statements, then one event on the first key (D in 2PC).
    const twoShards = new Recorder();
    await transfer(twoShards, ['s0:a', 's1:b'], ['s0:a']);
    expect(twoShards.clock).toBe(5);
    expect(twoShards.trace).toEqual(expect.arrayContaining(['s0#1 publish', 's0#1 INSERT decision', 's0#1 COMMIT']));
    // On a voter, it rides with PREPARE.
    const onVoter = new Recorder();
    await transfer(onVoter, ['s0:a', 's1:b'], ['s1:b']);
    expect(onVoter.clock).toBe(5);
    const voter = onVoter.trace.filter((line) => line.startsWith('s1#2'));
    expect(voter.slice(voter.indexOf('s1#2 publish'), voter.indexOf('s1#2 publish') + 2)).toEqual([
      's1#2 publish',
      's1#2 PREPARE TRANSACTION <gid>',
    ]);
    const oneShard = new Recorder();
    await transfer(oneShard, ['s3:a', 's3:b'], ['s3:a']);
    expect(oneShard.clock).toBe(3);
    expect(oneShard.trace).toEqual([
      's3#1 BEGIN',
      's3#1 UPDATE t SET n = n + 1 WHERE k = $1',
      's3#1 UPDATE t SET n = n + 1 WHERE k = $1',
      's3#1 publish',
      's3#1 COMMIT',
      's3#1 release',
    ]);
    // A transaction that only publishes: BEGIN, the event and COMMIT in one round trip.
    const publishOnly = new Recorder();
    await transfer(publishOnly, [], ['s3:a']);
    expect(publishOnly.clock).toBe(1);
    expect(publishOnly.trace).toEqual(['s3#1 BEGIN', 's3#1 publish', 's3#1 COMMIT', 's3#1 release']);
  });

  it('is sent before the next statement on its shard, in the same round trip', async () => {
    const recorder = new Recorder();
    await runTransaction(recorder.context(), ['s3'], 's3', options, async (core, deferred) => {
      const tx = withPublish(core, deferred, 'shard_router', new Set());
      await tx.execute('s3:a', 'UPDATE t SET n = n + 1 WHERE k = $1', ['s3:a']);
      await tx.publish('s3:a', 'x', {});
      await tx.execute('s3:a', 'SELECT count(*) FROM outbox_events', []);
    });
    expect(recorder.trace).toEqual([
      's3#1 BEGIN',
      's3#1 UPDATE t SET n = n + 1 WHERE k = $1',
      's3#1 publish',
      's3#1 SELECT count(*) FROM outbox_events',
      's3#1 COMMIT',
      's3#1 release',
    ]);
    expect(recorder.clock).toBe(3);
  });

  it('a publish the server refuses at COMMIT: COMMIT skipped, ROLLBACK, TRANSACTION_ABORTED with the refusal as cause', async () => {
    const recorder = new Recorder((shardId, sql) => (sql.includes('.outbox_events') ? refused(shardId) : undefined));
    const error = await transfer(recorder, ['s3:a', 's3:b'], ['s3:a']).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'TRANSACTION_ABORTED', shardId: 's3' });
    expect((error as ShardRouterError).cause).toMatchObject({ code: 'QUERY_FAILED' });
    expect(recorder.trace.slice(-3)).toEqual(['s3#1 publish', 's3#1 ROLLBACK', 's3#1 release']);
  });

  it("a publish refused in PREPARE's or the decision's message is a no vote: nothing commits, prepared voters roll back", async () => {
    for (const on of ['s1:b', 's0:a']) {
      const recorder = new Recorder((shardId, sql) => (sql.includes('.outbox_events') ? refused(shardId) : undefined));
      const error = await transfer(recorder, ['s0:a', 's1:b', 's2:c'], [on]).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'TRANSACTION_ABORTED', shardId: on.split(':')[0] });
      const t = recorder.trace;
      expect(t.some((line) => line.includes('COMMIT PREPARED') || line.endsWith(' COMMIT'))).toBe(false);
      expect(t).toContain(`${on.split(':')[0]}#${on === 's0:a' ? 1 : 2} ROLLBACK`);
      // Every PREPARE that happened is rolled back.
      const prepared = t.filter((line) => line.includes('PREPARE TRANSACTION')).map((line) => line.split(' ')[0]);
      const rolledBack = t.filter((line) => line.includes('ROLLBACK PREPARED')).map((line) => line.split(' ')[0]);
      expect(rolledBack.sort()).toEqual(prepared.sort());
    }
  });
});
