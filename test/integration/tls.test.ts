import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter, ShardRouterError } from '../../src/index.js';
import type { ShardRouterConfig } from '../../src/index.js';
import { startLocalCluster } from '../../src/local.js';
import type { LocalCluster } from '../../src/local.js';
import { eventually, rejectionOf, uniqueName } from '../support/cluster.js';

/**
 * The `ssl` option against a real local server with TLS on: certificates made here with
 * openssl, a self-signed server certificate that verifies with `ca` and is refused without it,
 * per-shard options, sslmode in the URL, and TLS secrets kept out of errors and inspect output.
 */

let dir: string;
let cluster: LocalCluster;
let serverCert: string;
let clientCert: string;
let clientKey: string;

function openssl(...args: string[]): void {
  execFileSync('/usr/bin/openssl', args, { stdio: 'ignore' });
}

/** A self-signed certificate and its key, for 127.0.0.1 (as IP and DNS name). */
function selfSigned(name: string, subject: string): { cert: string; key: string } {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  openssl(
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${subject}`,
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', key, '-out', cert,
  ); // biome-ignore format: one openssl command line
  return { cert, key };
}

function postgresIds(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

function routerConfig(overrides: Partial<ShardRouterConfig>): ShardRouterConfig {
  return {
    shards: [{ id: 's0', connectionString: cluster.connectionStrings[0]! }],
    catalogSchema: uniqueName('cat'),
    recovery: { intervalMillis: 0, atConnect: false },
    mapRefresh: { intervalMillis: 0, listen: true },
    ...overrides,
  };
}

/** Whether every connection of this router's application to the server uses TLS (and there are some). */
async function routerConnectionsUseTls(router: ShardRouter): Promise<boolean[]> {
  const { rows } = await router.executeOn<{ ssl: boolean }>(
    's0',
    `SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name LIKE 'pg-shard-router%'`,
  );
  return rows.map((row) => row.ssl);
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'pg-shard-router-tls-'));
  chmodSync(dir, 0o755);
  const server = selfSigned('server', '127.0.0.1');
  const client = selfSigned('client', 'app');
  // PostgreSQL refuses a key readable by others; as root the server runs as `postgres`, who must own it.
  const ids = postgresIds();
  if (ids) chownSync(server.key, ids.uid, ids.gid);
  chmodSync(server.key, 0o600);
  serverCert = readFileSync(server.cert, 'utf8');
  clientCert = readFileSync(client.cert, 'utf8');
  clientKey = readFileSync(client.key, 'utf8');
  cluster = await startLocalCluster({ shards: 1, settings: { ssl: 'on', ssl_cert_file: server.cert, ssl_key_file: server.key } });
});

afterAll(async () => {
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('TLS to the shards', () => {
  it('connects every connection over TLS when the server certificate verifies against `ca`', async () => {
    const router = await ShardRouter.connect(routerConfig({ ssl: { ca: serverCert, rejectUnauthorized: true } }));
    try {
      await router.execute('k', 'SELECT 1');
      // The pool's connections and the map listener's (which starts in the background).
      await eventually('the map listener is connected', async () => (await routerConnectionsUseTls(router)).length >= 2);
      expect((await routerConnectionsUseTls(router)).every((ssl) => ssl)).toBe(true);
      // A cancel connects the same way: a cancelled statement is really stopped.
      const error = await rejectionOf(router.execute('k', 'SELECT pg_sleep(600)', [], { timeoutMillis: 300 }));
      expect((error as ShardRouterError).code).toBe('STATEMENT_TIMEOUT');
    } finally {
      await router.close();
    }
  });

  it('refuses the self-signed certificate when rejectUnauthorized is true and no ca trusts it', async () => {
    const error = await rejectionOf(ShardRouter.connect(routerConfig({ ssl: { rejectUnauthorized: true } })));
    expect(error).toBeInstanceOf(ShardRouterError);
    expect((error as ShardRouterError).code).toBe('SHARD_UNAVAILABLE');
    expect((error as Error).message).toMatch(/self[- ]signed certificate/);
  });

  it("a shard's own ssl replaces the config's", async () => {
    const router = await ShardRouter.connect(
      routerConfig({
        ssl: { rejectUnauthorized: true },
        shards: [{ id: 's0', connectionString: cluster.connectionStrings[0]!, ssl: { ca: serverCert, servername: 'localhost' } }],
      }),
    );
    try {
      expect((await routerConnectionsUseTls(router)).every((ssl) => ssl)).toBe(true);
    } finally {
      await router.close();
    }
  });

  it('sslmode in the URL keeps working; TLS in both the URL and the ssl option is INVALID_CONFIG', async () => {
    const url = new URL(cluster.connectionStrings[0]!);
    url.searchParams.set('sslmode', 'verify-full');
    url.searchParams.set('sslrootcert', path.join(dir, 'server.crt'));
    const router = await ShardRouter.connect(routerConfig({ shards: [{ id: 's0', connectionString: url.toString() }] }));
    try {
      expect((await routerConnectionsUseTls(router)).every((ssl) => ssl)).toBe(true);
    } finally {
      await router.close();
    }
    const both = await rejectionOf(
      ShardRouter.connect(routerConfig({ ssl: { ca: serverCert }, shards: [{ id: 's0', connectionString: url.toString() }] })),
    );
    expect((both as ShardRouterError).code).toBe('INVALID_CONFIG');
  });

  it('never shows the TLS key in errors or inspect output', async () => {
    // A client certificate and key the server does not ask for: TLS works, and the key is a secret.
    const secret = clientKey.split('\n')[1]!;
    const ssl = { ca: serverCert, cert: clientCert, key: clientKey };
    const router = await ShardRouter.connect(routerConfig({ ssl }));
    try {
      await router.execute('k', 'SELECT 1');
      expect(inspect(router, { depth: 8 })).not.toContain(secret);
      expect(inspect(router.poolFor('k'), { depth: 8 })).not.toContain(secret);
      expect(JSON.stringify(router.shards())).not.toContain(secret);
    } finally {
      await router.close();
    }
    const refused = await rejectionOf(ShardRouter.connect(routerConfig({ ssl: { ...ssl, ca: clientCert } })));
    expect((refused as ShardRouterError).code).toBe('SHARD_UNAVAILABLE');
    expect(inspect(refused, { depth: 8 })).not.toContain(secret);
    const invalid = await rejectionOf(ShardRouter.connect(routerConfig({ ssl: { ...ssl, rejectUnauthorized: 'yes' as never } })));
    expect((invalid as ShardRouterError).code).toBe('INVALID_CONFIG');
    expect(inspect(invalid, { depth: 8 })).not.toContain(secret);
  });
});
