import { execFile } from 'node:child_process';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '../..');
const tsx = path.join(root, 'node_modules', '.bin', 'tsx');

export interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `pg-shard-router <args>` from source as a child process; resolves with the exit code
 * instead of rejecting on non-zero. PG_SHARD_URLS of the test run does not leak in: `env` says
 * which shards a case means.
 */
export function runCli(args: readonly string[], env: Record<string, string> = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const childEnv = { ...process.env, PG_SHARD_URLS: '', ...env };
    execFile(tsx, ['src/cli/main.ts', ...args], { cwd: root, env: childEnv, timeout: 60_000 }, (error, stdout, stderr) => {
      if (error && typeof error.code !== 'number') {
        reject(error);
        return;
      }
      resolve({ code: typeof error?.code === 'number' ? error.code : 0, stdout, stderr });
    });
  });
}
