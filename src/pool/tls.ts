import type { ConnectionOptions } from 'node:tls';
import type { SslConfig } from '../config.js';

/**
 * pg's `ssl` client option from the config's (validated, frozen) TLS options: a fresh object per
 * client, because pg marks `key` non-enumerable on the object it is given, which a frozen one
 * refuses. Nothing when the config has none, so pg reads sslmode from the URL (or PGSSLMODE).
 */
export function pgSslOption(ssl: SslConfig | undefined): { ssl?: boolean | ConnectionOptions } {
  if (ssl === undefined) return {};
  if (typeof ssl === 'boolean') return { ssl };
  const options: ConnectionOptions = {};
  if (ssl.ca !== undefined) options.ca = Array.isArray(ssl.ca) ? [...ssl.ca] : ssl.ca;
  if (ssl.cert !== undefined) options.cert = ssl.cert;
  // Read by name: the key is non-enumerable on the config's copy.
  if (ssl.key !== undefined) options.key = ssl.key;
  if (ssl.rejectUnauthorized !== undefined) options.rejectUnauthorized = ssl.rejectUnauthorized;
  if (ssl.servername !== undefined) options.servername = ssl.servername;
  return { ssl: options };
}
