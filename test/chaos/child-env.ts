/** For the chaos child programs (which must not import vitest, so not ./support.ts). */

/** An environment variable the parent must have set. */
export function requiredEnv(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === '') throw new Error(`${name} is not set`);
  return value;
}
