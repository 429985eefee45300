import type { Section } from '../section.js';
import { broadcastSection } from './broadcast.js';
import { coordinatorSection } from './coordinator.js';
import { executeSection } from './execute.js';
import { hashSection } from './hash.js';
import { hashMixedSection } from './hash-mixed.js';
import { locksSection } from './locks.js';
import { idempotencySection } from './idempotency.js';
import { naiveSection } from './naive.js';
import { observeSection } from './observe.js';
import { outboxSection } from './outbox.js';
import { querySection } from './query.js';
import { rebalanceSection } from './rebalance.js';
import { recoverySection } from './recovery.js';
import { sagasSection } from './sagas.js';
import { scalingSection } from './scaling.js';
import { streamSection } from './stream.js';
import { transactionsSection } from './transactions.js';

/** Every section, in run order: micro first, then end-to-end from the cheapest to the heaviest. */
export const SECTIONS: readonly Section<unknown>[] = [
  hashSection,
  hashMixedSection,
  executeSection,
  querySection,
  naiveSection,
  observeSection,
  transactionsSection,
  recoverySection,
  idempotencySection,
  sagasSection,
  broadcastSection,
  coordinatorSection,
  streamSection,
  scalingSection,
  rebalanceSection,
  outboxSection,
  locksSection,
];
