import type { RebalanceContext } from './context.js';

/** @deprecated The old name of RebalanceContext (src/rebalance/context.ts), kept while the router still imports it. */
export type ClusterAccess = RebalanceContext;
