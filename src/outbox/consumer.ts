import type { Listener } from '../pool/session.js';
import { claimKeys, renewLeases, settleKeys } from './claims.js';
import type { ClaimedKey, KeyOutcome } from './claims.js';
import type { OutboxContext } from './context.js';
import { registerGroup } from './groups.js';
import { collectIdleKeys } from './idle-keys.js';
import type { ResolvedConsumeOptions } from './options.js';
import { purgeShard } from './retention.js';
import { SettlementWriter, groupBy, outcome, stamped } from './settlements.js';

/** A full claim of at least this many keys means a backlog: the next claim on the shard walks the keys (claims.ts). */
const BACKLOG_KEYS = 16;
/**
 * One consumer of a group in this process (docs/outbox.md). It claims keys on every shard
 * (a lease per key), runs each key's events one after the other in seq order, different keys in
 * parallel up to `concurrency`, and gives each lease back with the progress made (the
 * acknowledgement), retry backoff or parking. Wakes on NOTIFY from each shard, and polls.
 */

const MAX_BACKOFF_MS = 60_000;
const REGISTER_RETRY_MS = 1_000;

/** The run's abort signal, made on first use (already aborted if the run was told to stop before). */
function signalOf(run: KeyRun): AbortSignal {
  if (run.controller === undefined) {
    run.controller = new AbortController();
    if (run.abortedBy !== null) run.controller.abort(run.abortedBy);
  }
  return run.controller.signal;
}

/** Tells a run to stop: no further event starts, and a handler that holds its signal sees it aborted. */
function abortRun(run: KeyRun, reason: Error): void {
  run.abortedBy ??= reason;
  run.controller?.abort(reason);
}

/** A key this consumer holds. */
interface KeyRun {
  readonly shardId: string;
  readonly claimed: ClaimedKey;
  /** Why the run was told to stop (lease lost, consumer stopped), or null. */
  abortedBy: Error | null;
  /** Made only when a handler reads `signal` (see signalOf): most never do, and one costs more than a delivery. */
  controller: AbortController | undefined;
  /** The last seq handled successfully. */
  acked: number;
  /** Deliveries started for the event after `acked`. */
  started: number;
  /** Set once its outcome was handed to the flusher (after a stop timeout, possibly before the run ends). */
  settled: boolean;
  /**
   * When the lease may run out, by this process's monotonic clock, measured from before the
   * claim or renewal was sent (so never later than the server's lease_until). No event starts
   * after it, so a consumer that could not renew in time never runs behind one that took over.
   */
  leaseEndsAt: number;
  /** When its claim was sent (this process's monotonic clock). */
  readonly claimedAt: number;
  done: Promise<void>;
}

export class OutboxConsumer {
  readonly group: string;
  /** Resolves once the group is on record on every shard and claiming has begun. */
  readonly ready: Promise<void>;
  readonly #context: OutboxContext;
  readonly #options: ResolvedConsumeOptions;
  readonly #onStopped: () => void;
  readonly #running = new Map<string, KeyRun>();
  readonly #dirty = new Set<string>();
  readonly #listeners = new Map<string, Listener | 'opening'>();
  /** Runs whose handlers are still going (what `concurrency` bounds), and keys promised to claims in flight. */
  #handling = 0;
  #reserved = 0;
  /** Leased runs waiting for a handler slot, in claim order (at most about `concurrency` of them, see #pump). */
  readonly #waiting: KeyRun[] = [];
  readonly #claiming = new Set<string>();
  /** Claims in flight (stop waits for them, so the runs they begin are waited for too). */
  readonly #claims = new Set<Promise<void>>();
  /** Per shard, the last key its previous claim's scan reached: the next claim's scan starts after it (claims.ts). */
  readonly #after = new Map<string, string>();
  /**
   * Shards whose previous claim found all the keys it wanted, at least BACKLOG_KEYS of them: searched
   * by the key walk until a claim comes back short (claims.ts CandidateSearch).
   */
  readonly #backlogged = new Set<string>();
  /** When each shard's last NOTIFY arrived. */
  readonly #notifiedAt = new Map<string, number>();
  #wakeScheduled = false;
  #stopRequested = false;
  #stopping: Promise<void> | undefined;
  #pollTimer: NodeJS.Timeout | undefined;
  #heartbeatTimer: NodeJS.Timeout | undefined;
  /** When housekeeping last ran; the first pass comes one interval after the start (see #tick). */
  #lastPurge = Date.now();
  readonly #writer: SettlementWriter;

  constructor(context: OutboxContext, options: ResolvedConsumeOptions, onStopped: () => void) {
    this.#context = context;
    this.#options = options;
    this.#onStopped = onStopped;
    this.group = options.group;
    this.#writer = new SettlementWriter(context, options.group, options.leaseMillis, (error) => this.#report(error));
    this.ready = this.#start();
  }

  /** Keys this consumer holds right now: being handled, waiting for a handler slot, or being given back. */
  get activeKeys(): number {
    return this.#running.size;
  }

  /**
   * Stops claiming, waits up to `timeoutMillis` for the running handlers, then gives back every
   * lease with the progress made (handlers still running are told through their `signal`; their
   * later results are ignored and their events delivered again). Idempotent.
   */
  stop(timeoutMillis = 10_000): Promise<void> {
    this.#stopping ??= this.#stop(timeoutMillis);
    return this.#stopping;
  }

  async #start(): Promise<void> {
    const { group, topics, from } = this.#options;
    for (;;) {
      if (this.#stopRequested) return;
      try {
        await registerGroup(this.#context, group, topics, from);
        break;
      } catch (error) {
        this.#report(error);
        await new Promise((resolve) => setTimeout(resolve, REGISTER_RETRY_MS));
      }
    }
    if (this.#stopRequested) return;
    this.#pollTimer = setInterval(() => this.#tick(), this.#options.pollIntervalMillis);
    this.#heartbeatTimer = setInterval(() => void this.#heartbeat(), Math.max(50, Math.floor(this.#options.leaseMillis / 3)));
    this.#tick();
  }

  #tick(): void {
    if (this.#stopRequested) return;
    const { members } = this.#context.routing();
    for (const shardId of members) {
      this.#dirty.add(shardId);
      if (!this.#listeners.has(shardId)) void this.#listen(shardId);
    }
    // Retention and idle-key collection (O7, O8) every 1-10 s, the first pass one interval after the
    // start, not at once: a consumer's first job is the backlog, and these passes read every
    // retained event and key of the shard.
    const retention = this.#context.retentionMillis;
    if (Date.now() - this.#lastPurge >= Math.max(1_000, Math.min(retention, 10_000))) {
      this.#lastPurge = Date.now();
      for (const shardId of members) {
        purgeShard(this.#context, shardId)
          .then(() => collectIdleKeys(this.#context, shardId))
          .catch((error: unknown) => this.#report(error));
      }
    }
    this.#pump();
  }

  async #listen(shardId: string): Promise<void> {
    this.#listeners.set(shardId, 'opening');
    try {
      const listener = await this.#context.pool(shardId).listen(
        this.#context.channel,
        () => {
          this.#notifiedAt.set(shardId, performance.now());
          this.#wake(shardId);
        },
        () => this.#listeners.delete(shardId),
      );
      if (this.#stopRequested) await listener.close();
      else this.#listeners.set(shardId, listener);
    } catch (error) {
      this.#listeners.delete(shardId);
      this.#report(error);
    }
  }

  /**
   * Marks a shard (if given) for a claim and pumps on the next turn of the event loop, so the
   * slots and keys that one batch freed are claimed together, not one small claim each.
   */
  #wake(shardId: string | undefined): void {
    if (this.#stopRequested) return;
    if (shardId !== undefined) this.#dirty.add(shardId);
    if (this.#wakeScheduled) return;
    this.#wakeScheduled = true;
    setImmediate(() => {
      this.#wakeScheduled = false;
      this.#pump();
    });
  }

  /**
   * Starts a claim on every shard marked dirty that has none in flight while a handler slot is
   * free, each for up to `batchSize` keys: the free slots plus `concurrency` more, shared among
   * the shards and reserved until the claim returns. Keys beyond the free slots wait in the
   * process, leased and renewed, for a slot (#begin), so the consumer holds at most
   * 2 x `concurrency` keys; fewer, larger claims cost less per event than one small claim per
   * slot. Each shard's claim begins its keys as soon as it returns (a slow shard does not hold
   * back the others); a shard marked while its claim is in flight is claimed again after.
   */
  #pump(): void {
    if (this.#stopRequested) return;
    const shardIds = [...this.#dirty].filter((shardId) => !this.#claiming.has(shardId));
    const { concurrency, batchSize } = this.#options;
    const free = concurrency - this.#handling - this.#waiting.length - this.#reserved;
    if (free <= 0 || shardIds.length === 0) return;
    const wanted = Math.min(Math.max(1, Math.floor((free + concurrency) / shardIds.length)), batchSize);
    // At most one shard per free slot.
    for (const shardId of shardIds.slice(0, free)) {
      const claim = this.#claimAndBegin(shardId, wanted);
      this.#claims.add(claim);
      void claim.finally(() => this.#claims.delete(claim));
    }
  }

  async #claimAndBegin(shardId: string, wanted: number): Promise<void> {
    this.#dirty.delete(shardId);
    this.#claiming.add(shardId);
    this.#reserved += wanted;
    let claimed: ClaimedKey[] = [];
    const claimedAt = performance.now();
    try {
      claimed = await this.#context.retryingStaleMap(() => this.#claim(shardId, wanted));
    } catch (error) {
      this.#report(error);
    } finally {
      this.#reserved -= wanted;
      this.#claiming.delete(shardId);
    }
    // A full claim may have left more behind: look again.
    if (claimed.length === wanted) this.#dirty.add(shardId);
    for (const key of claimed) this.#begin(shardId, key, claimedAt);
    this.#pump();
  }

  /** One claim statement on a shard; keys started too often without finishing are parked there instead. */
  async #claim(shardId: string, wanted: number): Promise<ClaimedKey[]> {
    const routing = this.#context.routing();
    if (!routing.members.includes(shardId) || this.#stopRequested) return [];
    const { catalogSchema: schema, bucketCount } = this.#context;
    const { group, batchSize, leaseMillis, maxAttempts } = this.#options;
    const session = stamped(this.#context, shardId, routing.version);
    const after = this.#after.get(shardId) ?? '';
    const search = this.#backlogged.has(shardId) ? 'walk' : 'events';
    const params = {
      schema,
      bucketCount,
      version: routing.version,
      group,
      keys: wanted,
      eventsPerKey: batchSize,
      leaseMillis,
      after,
      search,
    } as const;
    const { keys: claimed, reached } = await claimKeys(session, params);
    if (claimed.length === wanted && wanted >= BACKLOG_KEYS) this.#backlogged.add(shardId);
    else this.#backlogged.delete(shardId);
    // Nothing leased: the keys found were taken by others meanwhile; look from the start next time.
    if (search === 'walk') this.#after.set(shardId, reached ?? '');
    const returned: KeyOutcome[] = [];
    const deliver: ClaimedKey[] = [];
    for (const key of claimed) {
      const head = key.events[0];
      if (!head) returned.push(outcome(key, 0, key.attempt - 1, null, null, null, true));
      else if (key.attempt > maxAttempts) {
        const error = `delivery started ${key.attempt - 1} times without finishing (the consumer died or lost its lease)`;
        returned.push(outcome(key, head.seq - 1, key.attempt - 1, head.seq, error, null, true));
      } else deliver.push(key);
    }
    // Outside the claim's transaction, by token like any settlement: if this write is lost, the
    // leases run out and the next claim does the same again.
    if (returned.length > 0) await settleKeys(session, schema, group, returned, leaseMillis);
    return deliver;
  }

  /** Takes a leased key into the process: it starts at once if a handler slot is free, else waits for one (#finish). */
  #begin(shardId: string, claimed: ClaimedKey, claimedAt: number): void {
    const run: KeyRun = {
      leaseEndsAt: claimedAt + this.#options.leaseMillis,
      claimedAt,
      shardId,
      claimed,
      abortedBy: null,
      controller: undefined,
      acked: claimed.events[0]!.seq - 1,
      started: claimed.attempt - 1,
      settled: false,
      done: Promise.resolve(),
    };
    this.#running.set(claimed.key, run);
    if (this.#handling < this.#options.concurrency) this.#launch(run);
    else this.#waiting.push(run);
  }

  /**
   * Starts a run's handlers. A run that waited was renewed by the heartbeat like a running one;
   * if its lease ran out or was lost meanwhile, #handle stops before the first event.
   */
  #launch(run: KeyRun): void {
    this.#handling++;
    run.done = this.#handle(run).then((error) => this.#finish(run, error));
  }

  /**
   * Runs the key's events in order, each after the previous one's handler resolved; stops at the
   * first failure, a lost lease or a stop. The progress is recorded once, when the run gives the
   * lease back (O4): a crash before that redelivers this run's events. A run that follows a
   * delivery that did not finish (claimed with attempt > 1) records each success before the
   * next event instead, so a crash repeats only the event in flight, and a poison event is the
   * one whose attempts are counted.
   */
  async #handle(run: KeyRun): Promise<string | null> {
    const { handler } = this.#options;
    const events = run.claimed.events;
    const careful = run.claimed.attempt > 1;
    for (const [index, event] of events.entries()) {
      if (run.abortedBy !== null || this.#stopRequested) return null;
      // A margin of a tenth of the lease for the time the handler takes to get going.
      if (performance.now() > run.leaseEndsAt - this.#options.leaseMillis / 10) return null;
      if (index > 0 && careful) {
        const sentAt = performance.now();
        if (!(await this.#writer.write(outcome(run.claimed, run.acked, 0, null, null, null, false)))) {
          run.settled = true; // Taken over: nothing of ours to give back.
          return null;
        }
        run.leaseEndsAt = sentAt + this.#options.leaseMillis;
      }
      run.started = index === 0 ? run.claimed.attempt : 1;
      try {
        const handled = handler({
          id: event.id,
          topic: event.topic,
          key: event.key,
          seq: event.seq,
          payload: event.payload,
          headers: event.headers,
          attempt: run.started,
          publishedAt: event.publishedAt,
          shardId: run.shardId,
          get signal() {
            return signalOf(run);
          },
        });
        // A handler that returned without a promise is done: no turn of the microtask queue.
        if (handled !== undefined) await handled;
      } catch (error) {
        return error instanceof Error ? error.message || error.name : String(error);
      }
      run.acked = event.seq;
      run.started = 0;
    }
    return null;
  }

  /**
   * The run's slot is free once its handlers are done: other keys are claimed while its
   * outcome is written. Its shard is claimed again after the write gave the lease back if the
   * key may have events left: the run did not finish its events, its claim may have left some
   * behind (a full `batchSize`), or a NOTIFY came after its claim was sent (an event published
   * meanwhile was skipped by claims while the key was held). Otherwise every event of the key
   * committed before the claim was in it, and a later one's NOTIFY is still to come (or the poll).
   */
  async #finish(run: KeyRun, error: string | null): Promise<void> {
    this.#handling--;
    const next = this.#waiting.shift();
    if (next) this.#launch(next);
    this.#wake(undefined);
    if (!run.settled) await this.#settle(run, error);
    this.#running.delete(run.claimed.key);
    const events = run.claimed.events;
    const maybeMore =
      run.acked < events[events.length - 1]!.seq ||
      events.length >= this.#options.batchSize ||
      (this.#notifiedAt.get(run.shardId) ?? Number.NEGATIVE_INFINITY) >= run.claimedAt;
    if (maybeMore) this.#wake(run.shardId);
  }

  /** Gives a run's lease back with its outcome: progress, or the failed event's backoff or parking. */
  async #settle(run: KeyRun, error: string | null): Promise<void> {
    run.settled = true;
    const failedSeq = error === null ? null : run.acked + 1;
    const { maxAttempts, retryBackoffMillis } = this.#options;
    const park = failedSeq !== null && run.started >= maxAttempts;
    const backoff = failedSeq !== null && !park ? Math.min(MAX_BACKOFF_MS, retryBackoffMillis * 2 ** Math.min(30, run.started - 1)) : null;
    await this.#writer.write(outcome(run.claimed, run.acked, run.started, park ? failedSeq : null, error, backoff, true));
  }

  async #heartbeat(): Promise<void> {
    const runs = [...this.#running.values()].filter((run) => !run.settled);
    if (runs.length === 0) return;
    const sentAt = performance.now();
    try {
      const kept = await this.#context.retryingStaleMap(async () => {
        const routing = this.#context.routing();
        const byShard = groupBy(runs, (run) => routing.ownerOf(run.claimed.key));
        const results = await Promise.all(
          [...byShard].map(([shardId, items]) =>
            renewLeases(
              stamped(this.#context, shardId, routing.version),
              this.#context.catalogSchema,
              this.group,
              items.map((run) => ({ key: run.claimed.key, token: run.claimed.token })),
              this.#options.leaseMillis,
            ),
          ),
        );
        return new Set(results.flatMap((set) => [...set]));
      });
      // Lost leases: another consumer may hold the key now; the run stops after its current event.
      for (const run of runs) {
        if (kept.has(run.claimed.key)) run.leaseEndsAt = sentAt + this.#options.leaseMillis;
        else if (!run.settled) abortRun(run, new Error('lease lost'));
      }
    } catch (error) {
      this.#report(error);
    }
  }

  async #stop(timeoutMillis: number): Promise<void> {
    this.#stopRequested = true;
    clearInterval(this.#pollTimer);
    await this.ready.catch(() => undefined);
    await Promise.all(this.#claims);
    // Waiting runs start and stop before their first event (#handle sees the stop): each gives
    // its lease back with nothing acknowledged and the claim's attempt taken back.
    for (const run of this.#waiting.splice(0)) this.#launch(run);
    const runs = [...this.#running.values()];
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMillis);
    });
    await Promise.race([Promise.all(runs.map((run) => run.done)), timedOut]);
    clearTimeout(timer);
    const late: Promise<void>[] = [];
    for (const run of this.#running.values()) {
      abortRun(run, new Error('consumer stopped'));
      if (!run.settled) late.push(this.#settle(run, null));
    }
    await Promise.all(late);
    await this.#writer.drained();
    clearInterval(this.#heartbeatTimer);
    await Promise.all([...this.#listeners.values()].map((listener) => (listener === 'opening' ? undefined : listener.close())));
    this.#listeners.clear();
    this.#onStopped();
  }

  #report(error: unknown): void {
    if (this.#stopRequested && isClosed(error)) return;
    try {
      this.#options.onError?.(error);
    } catch {
      // A throwing onError must not stop the consumer.
    }
  }
}

function isClosed(error: unknown): boolean {
  return (error as { code?: string } | undefined)?.code === 'ROUTER_CLOSED';
}
