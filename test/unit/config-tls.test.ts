import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { poolSessionSettings, resolveConfig, sslFor } from '../../src/config.js';
import { ShardRouterError } from '../../src/errors.js';

/** The config's `ssl` and `statementTimeoutMillis`: validated, per shard, and the key never shown. */

const KEY = '-----BEGIN PRIVATE KEY-----\nTOP-SECRET-KEY-MATERIAL\n-----END PRIVATE KEY-----';

describe('ssl in the config', () => {
  const config = resolveConfig({
    shards: [
      { id: 's0', connectionString: 'postgres://app:pw@db0/app' },
      { id: 's1', connectionString: 'postgres://app:pw@db1/app', ssl: { ca: 'CA1', servername: 'db1.internal' } },
    ],
    ssl: { ca: 'CA', cert: 'CERT', key: KEY, rejectUnauthorized: true },
    statementTimeoutMillis: 1500,
  });

  it('applies the all-shards options unless a shard has its own', () => {
    expect(sslFor(config, 's0')).toMatchObject({ ca: 'CA', cert: 'CERT', rejectUnauthorized: true });
    expect((sslFor(config, 's0') as { key?: string }).key).toBe(KEY);
    expect(sslFor(config, 's1')).toEqual({ ca: 'CA1', servername: 'db1.internal' });
    expect(sslFor(config, 'added-later')).toBe(config.ssl);
  });

  it('never shows the key in inspect or JSON output', () => {
    for (const shown of [inspect(config, { depth: 10 }), JSON.stringify(config), inspect(config.shards, { depth: 10 })]) {
      expect(shown).not.toContain('TOP-SECRET');
      expect(shown).not.toContain('pw@');
    }
  });

  it('sets statement_timeout on the pools connections only when configured', () => {
    expect(poolSessionSettings(config)).toEqual({ statement_timeout: '1500' });
    expect(poolSessionSettings(resolveConfig({ shards: [{ id: 's0', connectionString: 'postgres://db0/app' }] }))).toEqual({});
  });

  it('refuses unknown TLS options, a bad timeout, and TLS set both in the URL and the option, without echoing values', () => {
    const cases = [
      { ssl: { key: KEY, passphrase: 'x' } },
      { ssl: { key: KEY, rejectUnauthorized: 'no' } },
      { statementTimeoutMillis: 0 },
      { ssl: { key: KEY }, shards: [{ id: 's0', connectionString: 'postgres://db0/app?sslmode=require' }] },
    ];
    for (const overrides of cases) {
      let error: unknown;
      try {
        resolveConfig({ shards: [{ id: 's0', connectionString: 'postgres://db0/app' }], ...overrides });
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(ShardRouterError);
      expect((error as ShardRouterError).code).toBe('INVALID_CONFIG');
      expect(inspect(error)).not.toContain('TOP-SECRET');
    }
  });
});
