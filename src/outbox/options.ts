import { ShardRouterError } from '../errors.js';
import { checkOptionKeys } from './json.js';
import { checkTopic } from './publish.js';

/** What a handler gets for one event. */
export interface OutboxEvent {
  /** Unique across the cluster and stable forever: use it as the idempotency key of your effect. */
  readonly id: string;
  readonly topic: string;
  /** The key it was published under, as text (String(key)). */
  readonly key: string;
  /** Its position in the key's stream (1, 2, ...). */
  readonly seq: number;
  readonly payload: unknown;
  readonly headers: Readonly<Record<string, unknown>>;
  /** 1 for the first delivery to this group; more after failures or a consumer that died. */
  readonly attempt: number;
  readonly publishedAt: Date;
  /** The shard it was read from. */
  readonly shardId: string;
  /** Aborted when this consumer lost the key's lease or is stopping past its timeout. */
  readonly signal: AbortSignal;
}

export interface ConsumeOptions {
  /** The consumer group: 1-200 printable characters. Every group sees every event of its topics. */
  readonly group: string;
  /** Topics this group receives (1-200 printable characters each). */
  readonly topics: readonly string[];
  /** Called once per delivery; resolve to acknowledge, throw to retry later. */
  readonly handler: (event: OutboxEvent) => Promise<void> | void;
  /** Most keys claimed on a shard at once, and most events of a key per claim. Default 100. */
  readonly batchSize?: number;
  /** Most keys handled at once over all shards. Default 10. */
  readonly concurrency?: number;
  /** Deliveries before an event is parked (its key then waits for retry or skip). Default 10. */
  readonly maxAttempts?: number;
  /** First retry delay; doubles per attempt, at most 60 s. Default 1000. */
  readonly retryBackoffMillis?: number;
  /** Where a new group starts: every retained event, or only events published after it was created. Default 'earliest'. */
  readonly from?: 'earliest' | 'latest';
  /** How long a claim holds a key without renewal before another consumer may take it over. Default 30 000. */
  readonly leaseMillis?: number;
  /** Poll interval besides NOTIFY wake-ups. Default 1000. */
  readonly pollIntervalMillis?: number;
  /** Background failures (a shard down, ...): the consumer keeps going. */
  readonly onError?: (error: unknown) => void;
}

export type ResolvedConsumeOptions = Required<Omit<ConsumeOptions, 'onError'>> & {
  readonly onError: ((error: unknown) => void) | undefined;
};

const KEYS = [
  'group',
  'topics',
  'handler',
  'batchSize',
  'concurrency',
  'maxAttempts',
  'retryBackoffMillis',
  'from',
  'leaseMillis',
  'pollIntervalMillis',
  'onError',
];

function int(value: unknown, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || (value as number) < min || (value as number) > max)
    throw new ShardRouterError('INVALID_ARGUMENT', `${name} must be an integer from ${min} to ${max}`);
  return value as number;
}

/** Validates consume() options (INVALID_ARGUMENT naming the first bad one) and fills the defaults. */
export function resolveConsumeOptions(options: unknown): ResolvedConsumeOptions {
  if (options === undefined) throw new ShardRouterError('INVALID_ARGUMENT', 'consume options are required ({ group, topics, handler })');
  const given = checkOptionKeys(options, KEYS, 'consume options') as Partial<ConsumeOptions>;
  checkTopic(given.group, 'group');
  if (!Array.isArray(given.topics) || given.topics.length === 0 || given.topics.length > 1000)
    throw new ShardRouterError('INVALID_ARGUMENT', 'topics must be a non-empty array of topic names (at most 1000)');
  for (const topic of given.topics) checkTopic(topic, 'each topic');
  if (typeof given.handler !== 'function')
    throw new ShardRouterError('INVALID_ARGUMENT', 'handler must be a function (event) => Promise<void>');
  if (given.onError !== undefined && typeof given.onError !== 'function')
    throw new ShardRouterError('INVALID_ARGUMENT', 'onError must be a function');
  const from = given.from ?? 'earliest';
  if (from !== 'earliest' && from !== 'latest') throw new ShardRouterError('INVALID_ARGUMENT', "from must be 'earliest' or 'latest'");
  return {
    group: given.group,
    topics: [...new Set(given.topics)].sort(),
    handler: given.handler,
    batchSize: int(given.batchSize, 'batchSize', 100, 1, 10_000),
    concurrency: int(given.concurrency, 'concurrency', 10, 1, 10_000),
    maxAttempts: int(given.maxAttempts, 'maxAttempts', 10, 1, 1_000_000),
    retryBackoffMillis: int(given.retryBackoffMillis, 'retryBackoffMillis', 1_000, 0, 3_600_000),
    from,
    leaseMillis: int(given.leaseMillis, 'leaseMillis', 30_000, 100, 3_600_000),
    pollIntervalMillis: int(given.pollIntervalMillis, 'pollIntervalMillis', 1_000, 10, 3_600_000),
    onError: given.onError,
  };
}
