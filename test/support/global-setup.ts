import type { TestProject } from 'vitest/node';
import { startTestBackend } from './backends.js';

declare module 'vitest' {
  export interface ProvidedContext {
    shardUrls: string[];
  }
}

/** Starts the shard servers once for the whole test run. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const backend = await startTestBackend();
  project.provide('shardUrls', backend.urls);
  return () => backend.stop();
}
