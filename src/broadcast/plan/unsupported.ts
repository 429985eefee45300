import { ShardRouterError } from '../../errors.js';

/** The planner's refusal: UNSUPPORTED, naming the construct whose result cannot be merged exactly. */
export function unsupported(construct: string, detail = ''): ShardRouterError {
  return new ShardRouterError(
    'UNSUPPORTED',
    `broadcast cannot merge ${construct} exactly across shards${detail ? `: ${detail}` : ''}. ` +
      'Run it per shard with executeOn, or rewrite it with the supported subset (see docs/broadcast.md)',
  );
}
