export { ShardRouter } from './router/shard-router.js';
export type { ExecuteResult, RouterStatus, ShardInfo, ShardState, ShardStatus } from './router/shard-router.js';
export type { ExecuteOptions } from './router/shard-router.js';
export type { ShardPgPool, LentClient } from './pool/pg-pool-face.js';
export type { Transaction } from './twopc/coordinator.js';
export type {
  IdempotencyOptions,
  IdempotentExecuteOptions,
  IdempotentExecuteResult,
  IdempotentReplay,
} from './idempotency/idempotency-keys.js';
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
export type { SagaOptions, SagaStepContext, SagaStepDefinition, StepResults } from './saga/definition.js';
export type { SagaState, StepState, StepLog, SagaRecord } from './saga/log.js';
export { SagaError } from './saga/outcome.js';
export type { SagaCompleted } from './saga/outcome.js';
export type { RegisteredTable, TableKind } from './catalog/registries.js';
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
