import type { Section } from '../section.js';
import { broadcastSection } from './broadcast.js';
import { executeSection } from './execute.js';
import { hashSection } from './hash.js';
import { naiveSection } from './naive.js';
import { rebalanceSection } from './rebalance.js';
import { scalingSection } from './scaling.js';
import { streamSection } from './stream.js';
import { transactionsSection } from './transactions.js';

/** A section that is listed (so the output says what is missing) but not run. */
function notBuilt(name: string, title: string, reason: string): Section<never> {
  return {
    name,
    title,
    notBuilt: reason,
    run: () => Promise.reject(new Error(`section ${name} is not built yet (${reason})`)),
    format: () => '',
  };
}

/** Every section, in run order: micro first, then end-to-end from the cheapest to the heaviest. */
export const SECTIONS: readonly Section<unknown>[] = [
  hashSection,
  executeSection,
  naiveSection,
  transactionsSection,
  broadcastSection,
  streamSection,
  scalingSection,
  rebalanceSection,
];
