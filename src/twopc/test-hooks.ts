/**
 * @internal Test-only hooks into the transaction engine; not part of the public API.
 *
 * `fault` runs at each protocol step and is awaited: a test can kill the process there
 * (SIGKILL), terminate a participant's backend, stop a server, or throw. A throw is handled
 * exactly like a failure of the step it sits next to (a lost connection, outcome unknown).
 * `statement` sees every statement the engine sends, e.g. to assert that a single-shard
 * transaction sends no PREPARE.
 */
export const FAULT_POINTS = [
  'before-prepare',
  /** `index` = how many PREPAREs have completed so far, `of` = how many there are. */
  'after-prepare',
  'before-decision',
  'after-decision',
  'before-commit-prepared',
  'after-commit-prepared',
] as const;

export type FaultPoint = (typeof FAULT_POINTS)[number];

export interface FaultContext {
  readonly point: FaultPoint;
  readonly gid: string;
  readonly shardId: string;
  /** The PostgreSQL backend pid of the participant's connection (for pg_terminate_backend). */
  readonly backendPid: number | undefined;
  /** 1-based position among the `of` participants of this step (the decision step has 1 of 1). */
  readonly index: number;
  readonly of: number;
  /** 1 for the first try of a step, 2 for the coordinator's retry on a fresh connection. */
  readonly attempt: number;
}

export interface TestHooks {
  fault: ((context: FaultContext) => void | Promise<void>) | undefined;
  statement: ((shardId: string, sql: string) => void) | undefined;
}

export const testHooks: TestHooks = { fault: undefined, statement: undefined };
