import { AsyncLocalStorage } from 'node:async_hooks';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { ShardRouter } from '../../src/index.js';
import { testHooks } from '../../src/twopc/test-hooks.js';
import { requiredEnv } from './child-env.js';
import type { FaultPoint } from '../../src/twopc/test-hooks.js';

/**
 * Child of bank.test.ts: runs BANK_LOOPS concurrent loops of cross-shard transfers until its
 * stdin closes, then finishes what is in flight and exits 0. Its fault hook injects the chaos:
 * it terminates the participant's backend now and then (BANK_TERMINATE_PROBABILITY, at the steps
 * right before a protocol statement), and SIGKILLs this very process at the BANK_SELF_KILL_AT-th
 * fault callback (0: never), wherever in the protocol that falls.
 *
 * Stdin commands: `hold <shardId>` makes transfers decided on that shard wait right before their
 * COMMIT; `release` lets them go (the parent stops the shard in between, to catch coordinators
 * at the commit point).
 *
 * Background recovery stays ON with a short grace (500 ms), as in production: the live workers
 * settle what a killed one left behind while they run, which also exercises recovery racing
 * live coordinators. The parent's final check uses its own router with recovery off.
 *
 * Env: BANK_SHARD_URLS (comma-separated, shards s0..), BANK_CATALOG, BANK_DATA, BANK_WORKER
 * (label, unique per process), BANK_ACCOUNTS (JSON string[]), BANK_LOOPS,
 * BANK_TERMINATE_PROBABILITY, BANK_SELF_KILL_AT.
 *
 * Stdout, one line per event, synchronous (a pipe: synchronous on Linux), so lines survive a kill:
 *   ready
 *   start <id> <from> <to> <amount>        before transaction() is called
 *   decision <id>                          D is about to get COMMIT (before it, nothing can commit)
 *   committed <id>                         D's COMMIT succeeded: the transfer is decided
 *   terminate <id> <point>                 the participant's backend is being terminated
 *   held <id>                              waiting at the commit point for 'release'
 *   selfkill <id> <point>                  right before the SIGKILL
 *   ack <id> | fail <id> <code> | doubt <id>
 */

const urls = requiredEnv('BANK_SHARD_URLS').split(',');
const data = requiredEnv('BANK_DATA');
const label = requiredEnv('BANK_WORKER');
const accounts = JSON.parse(requiredEnv('BANK_ACCOUNTS')) as string[];
const loops = Number(requiredEnv('BANK_LOOPS'));
const terminateProbability = Number(requiredEnv('BANK_TERMINATE_PROBABILITY'));
const selfKillAt = Number(requiredEnv('BANK_SELF_KILL_AT'));

/** The steps followed by a statement on the participant: a terminated backend there is a real failure of that statement. */
const TERMINABLE: ReadonlySet<FaultPoint> = new Set(['before-prepare', 'before-decision', 'before-commit-prepared']);

const say = (line: string) => process.stdout.write(`${line}\n`);

/** Connects, retrying while a shard is down (the parent restarts one mid-run). */
async function connect(): Promise<ShardRouter> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await ShardRouter.connect({
        shards: urls.map((connectionString, i) => ({ id: `s${i}`, connectionString })),
        catalogSchema: requiredEnv('BANK_CATALOG'),
        applicationName: `bank-worker-${label}`,
        recovery: { intervalMillis: 1_000, graceMillis: 500, atConnect: true },
      });
    } catch (error) {
      if (attempt >= 150) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

/** pg_terminate_backend on a connection of its own (the router's may be the victim); waits for the backend to exit. */
async function terminate(shardId: string, backendPid: number): Promise<void> {
  const client = new pg.Client({ connectionString: urls[Number(shardId.slice(1))], application_name: 'bank-terminator' });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT pg_terminate_backend($1, 2000)', [backendPid]);
  } finally {
    await client.end().catch(() => undefined);
  }
}

const router = await connect();
const currentTransfer = new AsyncLocalStorage<string>();
let faultCallbacks = 0;
/** While set, transfers whose decision shard it is wait at the commit point until the gate opens. */
let holdDecisionsOn: string | undefined;
let gate = Promise.resolve();
let openGate: () => void = () => undefined;

testHooks.fault = async ({ point, shardId, backendPid, attempt }) => {
  const id = currentTransfer.getStore() ?? '?';
  if (point === 'before-decision') say(`decision ${id}`);
  if (point === 'before-decision' && shardId === holdDecisionsOn) {
    say(`held ${id}`);
    await gate;
  }
  if (point === 'after-decision') say(`committed ${id}`);
  if (++faultCallbacks === selfKillAt) {
    say(`selfkill ${id} ${point}`);
    process.kill(process.pid, 'SIGKILL');
  }
  if (TERMINABLE.has(point) && attempt === 1 && backendPid !== undefined && Math.random() < terminateProbability) {
    say(`terminate ${id} ${point}`);
    // A failed terminate (the shard is restarting) is just one fault less.
    await terminate(shardId, backendPid).catch(() => undefined);
  }
};

const byShard = new Map<string, string[]>();
for (const account of accounts) byShard.set(router.shardFor(account), [...(byShard.get(router.shardFor(account)) ?? []), account]);
const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)]!;

let serial = 0;
async function transferOnce(): Promise<void> {
  const id = `${label}-${process.pid}-${serial++}`;
  const from = pick(accounts);
  const to = pick([...byShard].filter(([shardId]) => shardId !== router.shardFor(from)).flatMap(([, onShard]) => onShard));
  const amount = 1 + Math.floor(Math.random() * 50);
  say(`start ${id} ${from} ${to} ${amount}`);
  try {
    await currentTransfer.run(id, () =>
      router.transaction(
        [from, to],
        async (tx) => {
          for (const [account, delta] of [
            [from, -amount],
            [to, amount],
          ] as const) {
            const updated = await tx.execute(account, `UPDATE ${data}.accounts SET balance = balance + $2 WHERE id = $1`, [account, delta]);
            if (updated.rowCount !== 1) throw new Error(`account ${account} does not exist`);
            await tx.execute(account, `INSERT INTO ${data}.legs (transfer_id, account, delta) VALUES ($1, $2, $3)`, [id, account, delta]);
          }
        },
        // A short lock timeout: rows locked by a killed worker's prepared halves wait for recovery.
        { timeoutMillis: 10_000, lockTimeoutMillis: 1_000 },
      ),
    );
    say(`ack ${id}`);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    say(code === 'IN_DOUBT' ? `doubt ${id}` : `fail ${id} ${typeof code === 'string' ? code : 'NO_CODE'}`);
  }
}

// Commands from the parent on stdin; its end means: finish what is in flight and exit.
let stopping = false;
createInterface({ input: process.stdin })
  .on('line', (line) => {
    const [command, shardId] = line.split(' ');
    if (command === 'hold') {
      holdDecisionsOn = shardId;
      gate = new Promise((resolve) => (openGate = resolve));
    }
    if (command === 'release') {
      holdDecisionsOn = undefined;
      openGate();
    }
  })
  .on('close', () => {
    stopping = true;
    openGate();
  });
say('ready');
await Promise.all(
  Array.from({ length: loops }, async () => {
    while (!stopping) await transferOnce();
  }),
);
await router.close();
process.exit(0);
