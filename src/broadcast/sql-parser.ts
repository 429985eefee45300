/**
 * Transitional: the parser lives in plan/sql-parser.ts. This path stays only while
 * router/shard-router.ts imports loadParser from here; remove it once the router opens the
 * broadcaster with Broadcaster.open.
 */
export { loadParser } from './plan/sql-parser.js';
