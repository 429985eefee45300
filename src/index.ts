export { ShardRouter } from './router/shard-router.js';
export type { ExecuteResult, RouterStatus, ShardInfo, ShardState, ShardStatus } from './router/shard-router.js';
export type { ExecuteOptions } from './router/shard-router.js';
export type { ShardPgPool, LentClient } from './pool/pg-pool-face.js';
export type { Transaction, PublishOptions, PublishedEvent, JsonValue } from './outbox/publish.js';
export type { OutboxConsumer } from './outbox/consumer.js';
export type { ConsumeOptions, OutboxEvent } from './outbox/options.js';
export type { OutboxAdmin, OutboxStatus, OutboxGroupStatus, ParkedEvent } from './outbox/admin.js';
export type {
  IdempotencyOptions,
  IdempotentExecuteOptions,
  IdempotentExecuteResult,
  IdempotentReplay,
} from './idempotency/idempotency-keys.js';
export type { RoutedQueryResult } from './twopc/coordinator.js';
export type { QueryExplanation, QueryOptions, QueryResult } from './query/engine.js';
export type { QueryRoute } from './query/route.js';
export { decodeId, ID_EPOCH_MS, IDS_PER_MS_PER_SHARD, MAX_ID_SLOTS, ID_BITS_RUN_OUT_AT } from './ids/layout.js';
export type { DecodedId } from './ids/layout.js';
export { ISOLATION_LEVELS } from './twopc/transaction-options.js';
export type { IsolationLevel, TransactionOptions } from './twopc/transaction-options.js';
export type { RecoveryReport, SettledTransaction, InDoubtTransaction, ShardRecoveryReport } from './twopc/recovery.js';
export type { PreparedTransactionInfo } from './twopc/status.js';
export type { BroadcastOptions, BroadcastResult, BroadcastStreamOptions, ShardFailure } from './broadcast/types.js';
export { Rebalancer } from './rebalance/rebalancer.js';
export type {
  RebalancerOptions,
  RebalanceOptions,
  RebalanceProgress,
  RebalanceReport,
  AddShardReport,
  ResumeReport,
  MoveProgress,
  MoveReport,
  PlannedMove,
  VerifyReport,
  MisplacedRows,
  DivergentReferenceTable,
} from './rebalance/rebalancer.js';
export { Saga } from './saga/sagas.js';
export type { SagaResumeReport, SagaSummary } from './saga/sagas.js';
export type { SagaStateCount } from './saga/counts.js';
export type { SagaOptions, SagaStepContext, SagaStepDefinition, StepResults } from './saga/definition.js';
export type { SagaState, StepState, StepLog, SagaRecord } from './saga/log.js';
export { SagaError } from './saga/outcome.js';
export type { SagaCompleted } from './saga/outcome.js';
export type { RegisteredTable, ShardedTableOptions, TableKind } from './catalog/registries.js';
export { hashKey, bucketOf } from './placement/hash.js';
export type { ShardKey } from './placement/hash.js';
export { BucketMap } from './placement/bucket-map.js';
export type { ShardRouterConfig, SslConfig } from './config.js';
export { redactConnectionString } from './config.js';
export { ShardRouterError, QueryError, ERROR_CODES } from './errors.js';
export type { ErrorCode } from './errors.js';
export type { PoolStats } from './pool/shard-pool.js';
export type { Logger, TracerProviderLike } from './config.js';
export type {
  RouterMetrics,
  StatementMetrics,
  ErrorMetrics,
  PoolMetrics,
  TwoPhaseMetrics,
  MoveMetrics,
  HistogramSnapshot,
  ExtraGauge,
  Route,
  Outcome,
} from './observe/metrics-store.js';
export type { HeldLockInfo, LockOptions, LockStatus } from './lock/types.js';
export { LOCK_CLASS_ID, GATE_CLASS_ID } from './rebalance/lock-space.js';
