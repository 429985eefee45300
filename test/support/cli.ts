import { execFile } from 'node:child_process';
import path from 'node:path';
import { runCli as runCliInProcess } from '../../src/cli/run.js';
import { compiledProgram } from './programs.js';

const root = path.resolve(import.meta.dirname, '../..');

export interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `pg-shard-router <args>` in this process through the CLI's own entry (src/cli/run.ts),
 * capturing what it prints and its exit code. PG_SHARD_URLS of the test run does not leak in:
 * `env` says which shards a case means. A child process per call cost ~5 s of tsx start-up on
 * this machine; {@link runCliProcess} still checks the real program end to end.
 */
export async function runCli(args: readonly string[], env: Record<string, string> = {}): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const code = await runCliInProcess(args, {
    env: { ...process.env, PG_SHARD_URLS: '', ...env },
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
  });
  return { code, stdout, stderr };
}

/** Runs `pg-shard-router <args>` from source (bundled: see compiledProgram) as a child process; resolves with the exit code instead of rejecting on non-zero. */
export function runCliProcess(args: readonly string[], env: Record<string, string> = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const childEnv = { ...process.env, PG_SHARD_URLS: '', ...env };
    execFile(
      process.execPath,
      [compiledProgram('src/cli/main.ts'), ...args],
      { cwd: root, env: childEnv, timeout: 60_000 },
      (error, stdout, stderr) => {
        if (error && typeof error.code !== 'number') {
          reject(error);
          return;
        }
        resolve({ code: typeof error?.code === 'number' ? error.code : 0, stdout, stderr });
      },
    );
  });
}
