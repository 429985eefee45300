import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config.js';
import { ShardRouter, ShardRouterError } from '../../src/index.js';

const SECRET = 'hunter2-do-not-print';
const good = (id: string, port = 5432) => ({ id, connectionString: `postgres://app:${SECRET}@db-${id}:${port}/app` });

function configError(config: unknown): ShardRouterError {
  try {
    resolveConfig(config);
  } catch (error) {
    expect(error).toBeInstanceOf(ShardRouterError);
    return error as ShardRouterError;
  }
  throw new Error('config was accepted');
}

describe('config validation', () => {
  it.each([
    ['no shards key', {}, 'shards'],
    ['an empty shard list', { shards: [] }, 'shards: at least one shard'],
    ['duplicate ids', { shards: [good('s0'), { ...good('s0', 5433) }] }, 'shards.1.id: duplicate shard id'],
    ['a bad URL', { shards: [{ id: 's0', connectionString: `not a url ${SECRET}` }] }, 'shards.0.connectionString'],
    ['a non-postgres URL', { shards: [{ id: 's0', connectionString: `http://u:${SECRET}@h/db` }] }, 'shards.0.connectionString'],
    ['bucketCount 0', { shards: [good('s0')], bucketCount: 0 }, 'bucketCount'],
    ['a fractional bucketCount', { shards: [good('s0')], bucketCount: 10.5 }, 'bucketCount'],
    ['a string bucketCount', { shards: [good('s0')], bucketCount: '1024' }, 'bucketCount'],
    ['an unsafe shard id', { shards: [{ ...good('s0'), id: "s0'; DROP" }] }, 'shards.0.id'],
    ['an unsafe catalog schema', { shards: [good('s0')], catalogSchema: 'Bad-Name' }, 'catalogSchema'],
    ['a reserved catalog schema', { shards: [good('s0')], catalogSchema: 'pg_catalog' }, 'catalogSchema: must not start with pg_'],
    ['pool min above max', { shards: [good('s0')], pool: { min: 5, max: 2 } }, 'pool.min'],
    ['an unknown field (a typo)', { shards: [good('s0')], bucketcount: 8 }, 'bucketcount'],
    ['a non-object', 'postgres://x', '(config)'],
  ])('rejects %s with INVALID_CONFIG naming the field', (_, config, field) => {
    const error = configError(config);
    expect(error.code).toBe('INVALID_CONFIG');
    expect(error.message).toContain(field);
    expect(error.message).not.toContain(SECRET);
  });

  it('lists every invalid field at once', () => {
    const error = configError({
      shards: [good('s0'), { id: '', connectionString: 'nope' }],
      bucketCount: -3,
      pool: { max: 0 },
    });
    for (const field of ['shards.1.id', 'shards.1.connectionString', 'bucketCount', 'pool.max']) expect(error.message).toContain(field);
  });

  it('never shows passwords when the resolved config is printed', () => {
    const config = resolveConfig({ shards: [good('s0'), good('s1')] });
    expect(JSON.stringify(config)).not.toContain(SECRET);
    expect(inspect(config, { depth: 10 })).not.toContain(SECRET);
    expect(config.shards[0]!.displayUrl).toBe('postgres://app:***@db-s0:5432/app');
    expect(config.shards[0]!.connectionString).toContain(SECRET);
    expect(Object.isFrozen(config) && Object.isFrozen(config.shards[0])).toBe(true);
  });

  it('fills defaults: pool and catalog schema; bucketCount stays unset until creation', () => {
    const config = resolveConfig({ shards: [good('s0')] });
    expect(config.pool).toEqual({ max: 10, min: 0, acquireTimeoutMillis: 5000, idleTimeoutMillis: 30000, connectTimeoutMillis: 5000 });
    expect(config.catalogSchema).toBe('shard_router');
    expect(config.applicationName).toBe('pg-shard-router');
    expect(config.bucketCount).toBeUndefined();
  });

  it('makes ShardRouter.connect reject before any connection attempt', async () => {
    await expect(ShardRouter.connect({ shards: [] })).rejects.toMatchObject({ code: 'INVALID_CONFIG' });
  });
});
