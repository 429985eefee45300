import { createInterface } from 'node:readline';
import { once } from 'node:events';
import type { ChildProcess } from 'node:child_process';
import { sweep } from '../support/sweep.js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import { startLocalCluster } from '../../src/local.js';
import type { LocalCluster } from '../../src/local.js';
import { preparedOn, recoverUntilSettled, spawnTypeScript, waitForBackendsGone } from './support.js';

/**
 * A bank under chaos, on a 4-shard cluster of its own (so a shard can be restarted): worker
 * processes move money between accounts on different shards while workers are SIGKILLed (by
 * themselves inside the protocol, and by this process), participants' backends are terminated
 * and one shard is restarted. Afterwards, with nothing left prepared, the books must balance and
 * every transfer must be on both shards or on neither, consistent with what its worker reported.
 *
 * The run is bounded by work done (outcomes reported), not by time; the kills and the restart
 * are scheduled at fractions of that work, so each run has them whatever the machine's speed.
 * Workers keep background recovery on (grace 500 ms, see bank-worker.ts), so recovery also runs
 * concurrently with live coordinators; the final settling is by a fresh router of this process.
 */

const SHARDS = 4;
const ACCOUNTS_PER_SHARD = 50;
const INITIAL_BALANCE = 1000;
const WORKERS = 2;
const LOOPS_PER_WORKER = 8;
// npm test stops earlier; every fault (kills, terminations, the restart) still happens (PSR_FULL_SWEEP=1: 1,500).
const TARGET_OUTCOMES = sweep(1_500, 700);
/** Parent kills at these fractions of the target; the shard restart at RESTART_AT. */
const PARENT_KILLS_AT = [0.15, 0.35, 0.6, 0.8];
const RESTART_AT = 0.45;
const RESTARTED_SERVER = 1;
const RESTART_DOWN_MS = 2_500;
/** How many transfers the workers hold at the restarted shard's commit point before it stops. */
const HELD_BEFORE_STOP = 3;
/** Every other worker kills itself somewhere in this range of fault callbacks (6 per transfer). */
const SELF_KILL_RANGE: readonly [number, number] = [60, 900];
const TERMINATE_PROBABILITY = 0.02;
/** A bound on the whole run in case the servers stall: the assertions hold either way. */
const RUN_CAP_MS = 40_000;

const data = 'bank';
const catalog = 'bank_catalog';
let cluster: LocalCluster;
let urls: string[];
const accounts: string[] = [];

beforeAll(async () => {
  cluster = await startLocalCluster({ shards: SHARDS, maxPreparedTransactions: 64, maxConnections: 100 });
  urls = [...cluster.connectionStrings];
  const router = await ShardRouter.connect({
    shards: cluster.shardConfigs(),
    catalogSchema: catalog,
    recovery: { intervalMillis: 0, atConnect: false },
  });
  try {
    const perShard = new Map<string, string[]>(router.shardIds.map((shardId) => [shardId, []]));
    for (let n = 0; [...perShard.values()].some((list) => list.length < ACCOUNTS_PER_SHARD); n++) {
      const list = perShard.get(router.shardFor(`acct-${n}`))!;
      if (list.length < ACCOUNTS_PER_SHARD) list.push(`acct-${n}`);
    }
    for (const [shardId, list] of perShard) {
      await router.executeOn(shardId, `CREATE SCHEMA ${data}`);
      await router.executeOn(shardId, `CREATE TABLE ${data}.accounts (id text PRIMARY KEY, balance bigint NOT NULL)`);
      await router.executeOn(
        shardId,
        `CREATE TABLE ${data}.legs (transfer_id text NOT NULL, account text NOT NULL, delta bigint NOT NULL)`,
      );
      await router.executeOn(shardId, `INSERT INTO ${data}.accounts (id, balance) SELECT unnest($1::text[]), $2`, [list, INITIAL_BALANCE]);
      accounts.push(...list);
    }
  } finally {
    await router.close();
  }
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
}, 120_000);

interface Transfer {
  readonly worker: string;
  readonly from: string;
  readonly to: string;
  readonly amount: number;
  verdict?: 'ack' | 'fail' | 'doubt';
  failCode?: string;
  decisionSent?: boolean;
  decided?: boolean;
  heldAtCommitPoint?: boolean;
}

/** Everything the workers reported, plus the faults the parent injected. */
class Ledger {
  readonly transfers = new Map<string, Transfer>();
  readonly faults = new Map<string, number>();
  outcomes = 0;

  count(fault: string): void {
    this.faults.set(fault, (this.faults.get(fault) ?? 0) + 1);
  }

  faultsOf(kind: string): number {
    return [...this.faults].filter(([fault]) => fault === kind || fault.startsWith(`${kind} `)).reduce((sum, [, n]) => sum + n, 0);
  }

  /** Applies one worker line; throws on a line that breaks the protocol of bank-worker.ts. */
  apply(worker: string, line: string): void {
    const [event, id = '', ...rest] = line.split(' ');
    if (event === 'ready') return;
    if (event === 'start') {
      const [from, to, amount] = rest;
      if (this.transfers.has(id)) throw new Error(`transfer id ${id} started twice`);
      this.transfers.set(id, { worker, from: from!, to: to!, amount: Number(amount) });
      return;
    }
    const transfer = this.transfers.get(id);
    if (!transfer) throw new Error(`worker ${worker}: "${line}" for a transfer never started`);
    switch (event) {
      case 'decision':
        transfer.decisionSent = true;
        return;
      case 'committed':
        transfer.decided = true;
        return;
      case 'held':
        transfer.heldAtCommitPoint = true;
        this.count('held-at-commit-point');
        return;
      case 'terminate':
      case 'selfkill':
        this.count(`${event} ${rest[0]}`);
        return;
      case 'ack':
      case 'fail':
      case 'doubt':
        if (transfer.verdict) throw new Error(`transfer ${id} settled twice`);
        transfer.verdict = event;
        if (event === 'fail') transfer.failCode = rest[0]!;
        this.outcomes++;
        return;
      default:
        throw new Error(`worker ${worker}: unknown line "${line}"`);
    }
  }
}

interface Worker {
  readonly label: string;
  readonly child: ChildProcess;
  /** Resolves once the process ended and every line it wrote was applied. */
  readonly ended: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

function startWorker(label: string, selfKillAt: number, ledger: Ledger, onLine: () => void): Worker {
  const child = spawnTypeScript('test/chaos/bank-worker.ts', {
    BANK_SHARD_URLS: urls.join(','),
    BANK_CATALOG: catalog,
    BANK_DATA: data,
    BANK_WORKER: label,
    BANK_ACCOUNTS: JSON.stringify(accounts),
    BANK_LOOPS: String(LOOPS_PER_WORKER),
    BANK_TERMINATE_PROBABILITY: String(TERMINATE_PROBABILITY),
    BANK_SELF_KILL_AT: String(selfKillAt),
  });
  // Commands to a worker that just died must not crash the test.
  child.stdin!.on('error', () => undefined);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const lines = createInterface({ input: child.stdout! });
  lines.on('line', (line) => {
    ledger.apply(label, line);
    onLine();
  });
  const ended = Promise.all([once(child, 'close'), once(lines, 'close')]).then(([[code, signal]]) => ({
    code: code as number | null,
    signal: signal as NodeJS.Signals | null,
    stderr,
  }));
  return { label, child, ended };
}

const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis));

/**
 * Restarts one shard while coordinators stand at its commit point: the workers hold transfers
 * decided on it right before their COMMIT, the shard stops (their open transactions die with
 * it), then they are released: the COMMIT meets a dead connection, the coordinator cannot ask
 * the stopped shard what happened, and the answer is IN_DOUBT (or, if it is back in time, abort).
 */
async function restartCatchingCommits(ledger: Ledger, commitPoint: { hold(): void; release(): void }): Promise<void> {
  const server = cluster.servers[RESTARTED_SERVER]!;
  commitPoint.hold();
  // Bounded: of 16 transfers in flight, a quarter are decided on this shard; they arrive within milliseconds.
  for (let waited = 0; ledger.faultsOf('held-at-commit-point') < HELD_BEFORE_STOP && waited < 10_000; waited += 20) await sleep(20);
  await server.stop();
  commitPoint.release();
  // Down long enough that coordinators which lost it at the commit point give up (IN_DOUBT).
  await sleep(RESTART_DOWN_MS);
  await server.start();
}

const randomBetween = ([low, high]: readonly [number, number]) => low + Math.floor(Math.random() * (high - low + 1));

it('keeps the books balanced and every transfer all-or-nothing through worker kills, terminated backends and a shard restart', async () => {
  const ledger = new Ledger();
  const live = new Set<Worker>();
  const unexpectedExits: string[] = [];
  let started = 0;
  let stopping = false;
  let restart: Promise<void> | undefined;
  let restarting = false;
  /** Sent to every worker, also to one started while transfers are being held. */
  let holdCommand: string | undefined;
  let lineError: unknown;
  let finish: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const killsDue = [...PARENT_KILLS_AT];

  const onLine = () => {
    const progress = ledger.outcomes / TARGET_OUTCOMES;
    // Not while the shard is down: the transfers held at its commit point should live to report.
    if (killsDue.length > 0 && progress >= killsDue[0]! && !restarting) {
      // A victim with transfers in flight, so the kill leaves some mid-protocol.
      const victim = [...live].find((worker) => [...ledger.transfers.values()].some((t) => t.worker === worker.label && !t.verdict));
      if (victim) {
        killsDue.shift();
        ledger.count('parent-kill');
        victim.child.kill('SIGKILL');
      }
    }
    if (!restart && progress >= RESTART_AT) startRestart();
    if (progress >= 1) finish();
  };

  const startRestart = () => {
    ledger.count('shard-restart');
    restarting = true;
    restart = restartCatchingCommits(ledger, {
      hold: () => {
        holdCommand = `hold s${RESTARTED_SERVER}`;
        for (const worker of live) worker.child.stdin!.write(`${holdCommand}\n`);
      },
      release: () => {
        holdCommand = undefined;
        for (const worker of live) worker.child.stdin!.write('release\n');
      },
    }).finally(() => (restarting = false));
    restart.catch(() => undefined); // awaited (and rethrown) after the run
  };

  const spawnWorker = () => {
    const label = `w${started++}`;
    // Every other worker dies by its own hand, at a random step of a random transfer.
    const selfKillAt = started % 2 === 0 ? randomBetween(SELF_KILL_RANGE) : 0;
    const worker = startWorker(label, selfKillAt, ledger, () => {
      try {
        onLine();
      } catch (error) {
        lineError ??= error;
      }
    });
    live.add(worker);
    if (holdCommand) worker.child.stdin!.write(`${holdCommand}\n`);
    void worker.ended.then(({ code, signal, stderr }) => {
      live.delete(worker);
      if (signal !== 'SIGKILL' && code !== 0) unexpectedExits.push(`${label}: code ${code} signal ${signal}\n${stderr}`);
      if (!stopping) spawnWorker();
    });
  };

  try {
    for (let n = 0; n < WORKERS; n++) spawnWorker();
    const cap = setTimeout(finish, RUN_CAP_MS);
    await finished;
    clearTimeout(cap);
    // A slow machine can hit the cap first: the restart still happens, under the same load.
    if (!restart) startRestart();
    await restart;
    stopping = true;
    // One worker dies at the end instead of finishing, so the final recovery has work too.
    const [lastVictim, ...draining] = [...live];
    ledger.count('parent-kill');
    lastVictim?.child.kill('SIGKILL');
    for (const worker of draining) worker.child.stdin!.end();
    await Promise.all([...draining, ...(lastVictim ? [lastVictim] : [])].map((worker) => worker.ended));
  } finally {
    // Only after a failure is anyone still running.
    stopping = true;
    for (const worker of live) worker.child.kill('SIGKILL');
  }
  expect(lineError).toBeUndefined();
  expect(unexpectedExits).toEqual([]);

  // Settle what the dead workers left, once their backends are gone (see waitForBackendsGone).
  await waitForBackendsGone(urls, 'bank-worker-%');
  const router = await ShardRouter.connect({
    shards: cluster.shardConfigs(),
    catalogSchema: catalog,
    recovery: { intervalMillis: 0, atConnect: false },
  });
  try {
    const leftByCrashes = (await preparedOn(urls, '')).length;
    await recoverUntilSettled(router, urls);
    // The servers are this test's alone: nothing at all may stay prepared.
    expect(await preparedOn(urls, '')).toEqual([]);

    const legs = new Map<string, { shard: string; account: string; delta: number }[]>();
    const balances = new Map<string, number>();
    for (const shardId of router.shardIds) {
      const found = await router.executeOn<{ transfer_id: string; account: string; delta: string }>(
        shardId,
        `SELECT transfer_id, account, delta FROM ${data}.legs`,
      );
      for (const row of found.rows)
        legs.set(row.transfer_id, [
          ...(legs.get(row.transfer_id) ?? []),
          { shard: shardId, account: row.account, delta: Number(row.delta) },
        ]);
      const onShard = await router.executeOn<{ id: string; balance: string }>(shardId, `SELECT id, balance FROM ${data}.accounts`);
      for (const row of onShard.rows) balances.set(row.id, Number(row.balance));
    }

    // Money is neither created nor destroyed, and each balance is exactly its legs.
    expect(balances.size).toBe(accounts.length);
    expect([...balances.values()].reduce((sum, balance) => sum + balance, 0)).toBe(INITIAL_BALANCE * accounts.length);
    const moved = new Map<string, number>();
    for (const rows of legs.values()) for (const leg of rows) moved.set(leg.account, (moved.get(leg.account) ?? 0) + leg.delta);
    for (const [account, balance] of balances) expect(balance, account).toBe(INITIAL_BALANCE + (moved.get(account) ?? 0));

    // Every leg belongs to a started transfer, which has exactly its two legs: never one.
    for (const [id, rows] of legs) {
      const transfer = ledger.transfers.get(id);
      expect(transfer, `legs of a transfer no worker started: ${id}`).toBeDefined();
      const sorted = [...rows].sort((a, b) => a.delta - b.delta);
      expect(sorted, id).toEqual([
        { shard: router.shardFor(transfer!.from), account: transfer!.from, delta: -transfer!.amount },
        { shard: router.shardFor(transfer!.to), account: transfer!.to, delta: transfer!.amount },
      ]);
    }

    // What each worker reported agrees with what the shards hold.
    const unresolved: string[] = [];
    for (const [id, transfer] of ledger.transfers) {
      const committed = legs.has(id);
      if (transfer.verdict === 'ack') expect(committed, `acknowledged ${id}`).toBe(true);
      if (transfer.verdict === 'fail') expect(committed, `failed (${transfer.failCode}) ${id}`).toBe(false);
      // D's COMMIT succeeded: decided, whatever happened to the worker afterwards.
      if (transfer.decided) expect(committed, `decided ${id}`).toBe(true);
      // D never got COMMIT: nothing can have committed.
      if (!transfer.decisionSent) expect(committed, `never sent to the decision ${id}`).toBe(false);
      // Its COMMIT was sent only after its decision shard had stopped: it cannot have committed.
      if (transfer.heldAtCommitPoint) {
        expect(committed, `held at the commit point ${id}`).toBe(false);
        expect(transfer.verdict, `held at the commit point ${id}`).not.toBe('ack');
      }
      if (!transfer.verdict) unresolved.push(id);
    }

    const all = [...ledger.transfers.values()];
    const verdicts = (verdict: string) => all.filter((transfer) => transfer.verdict === verdict).length;
    const failCodes = new Map<string, number>();
    for (const { failCode } of all) if (failCode) failCodes.set(failCode, (failCodes.get(failCode) ?? 0) + 1);
    const heldEndings = all
      .filter((transfer) => transfer.heldAtCommitPoint)
      .map((transfer) => transfer.failCode ?? transfer.verdict ?? 'cut off');
    // One line for the record: what this run went through.
    console.log(
      `bank: ${all.length} transfers started, ${verdicts('ack')} acked, ${verdicts('fail')} failed ${JSON.stringify(Object.fromEntries(failCodes))}, ` +
        `${verdicts('doubt')} in doubt, ${unresolved.length} cut off by kills (${unresolved.filter((id) => legs.has(id)).length} of them committed); ` +
        `held at the commit point: ${JSON.stringify(heldEndings)}; ${started} workers; faults ${JSON.stringify(Object.fromEntries(ledger.faults))}; ` +
        `${leftByCrashes} prepared halves left for the final recovery`,
    );

    // The run really went through the faults it is about, so it cannot pass vacuously.
    expect(ledger.faultsOf('parent-kill')).toBeGreaterThanOrEqual(1);
    expect(ledger.faultsOf('shard-restart')).toBe(1);
    expect(ledger.faultsOf('held-at-commit-point')).toBeGreaterThanOrEqual(1);
    expect(ledger.faultsOf('terminate')).toBeGreaterThanOrEqual(1);
    expect(verdicts('ack')).toBeGreaterThanOrEqual(1);
    expect(verdicts('fail')).toBeGreaterThanOrEqual(1);
    expect(unresolved.length).toBeGreaterThanOrEqual(1);
  } finally {
    await router.close();
  }
}, 120_000);
