import { relative } from 'node:path';
import { BaseSequencer } from 'vitest/node';
import type { TestSpecification } from 'vitest/node';
import { defineConfig } from 'vitest/config';

/**
 * The longest files (seconds on a quiet 2-core run, longest first). With two workers the run
 * lasts at least as long as its last file: these start first, so the short ones fill the gaps
 * at the end. Without results of an earlier run (a fresh CI checkout) vitest would order by file
 * size, which starts readme.test.ts (~50 s, a small file) among the last.
 */
const LONGEST_FIRST = [
  'test/chaos/rebalance-membership.test.ts',
  'test/chaos/rebalance-crash.test.ts',
  'test/integration/readme.test.ts',
  'test/chaos/bank.test.ts',
  'test/chaos/saga-crash.test.ts',
  'test/chaos/locks.test.ts',
  'test/chaos/crash-points.test.ts',
  'test/integration/broadcast-stream-cancel.test.ts',
];

class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const rank = (file: TestSpecification) => {
      const index = LONGEST_FIRST.indexOf(relative(file.project.config.root, file.moduleId).replaceAll('\\', '/'));
      return index === -1 ? LONGEST_FIRST.length : index;
    };
    // Array.prototype.sort is stable: the other files keep vitest's order.
    return sorted.sort((a, b) => rank(a) - rank(b));
  }
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One cluster for the whole run (started here, shared by every file through inject()).
    globalSetup: ['test/support/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    sequence: { sequencer: LongestFirst },
  },
});
