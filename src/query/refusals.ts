import { ShardRouterError } from '../errors.js';

/** router.query's refusal: UNSUPPORTED naming the construct and saying what to do instead. */
export function unsupportedQuery(construct: string, instead: string): ShardRouterError {
  return new ShardRouterError('UNSUPPORTED', `router.query cannot route ${construct}: ${instead}. Nothing was sent`);
}

/** KEY_REQUIRED: the statement would run on every shard and requireKey forbids it. */
export function keyRequired(table: string, statement: string): ShardRouterError {
  return new ShardRouterError(
    'KEY_REQUIRED',
    `this ${statement} does not pin the shard key of ${table}, so it would run on every shard, and requireKey is set. ` +
      'Add WHERE <key> = $n (or IN / = ANY), or pass { requireKey: false }. Nothing was sent',
  );
}
