import { parseArgs } from 'node:util';
import type { ParseArgsConfig } from 'node:util';
import { ShardRouterError } from '../errors.js';

/** parseArgs, with its errors (unknown flag, missing value) turned into INVALID_ARGUMENT. */
export function parseFlags<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new ShardRouterError('INVALID_ARGUMENT', `${message}\nrun "pg-shard-router --help" for usage`);
  }
}

export function positiveInteger(flag: string, text: string | undefined): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new ShardRouterError('INVALID_ARGUMENT', `${flag} must be a positive integer, got "${text ?? ''}"`);
  }
  return value;
}

export function nonNegativeInteger(flag: string, text: string): number {
  const value = Number(text);
  // The digit check rejects "", " ", "1e3" and "0x10", which Number() would accept.
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value)) {
    throw new ShardRouterError('INVALID_ARGUMENT', `${flag} must be a non-negative integer, got "${text}"`);
  }
  return value;
}

/** --shards, else PG_SHARD_URLS: comma-separated, blanks dropped. */
export function shardUrlsFrom(flag: string | undefined, env: NodeJS.ProcessEnv): string[] {
  const raw = flag ?? env.PG_SHARD_URLS ?? '';
  const urls = raw
    .split(',')
    .map((url) => url.trim())
    .filter((url) => url !== '');
  if (urls.length === 0) {
    throw new ShardRouterError('INVALID_ARGUMENT', 'no shards given: pass --shards <url,url,...> or set PG_SHARD_URLS');
  }
  return urls;
}
