import type { CatalogExtension } from '../catalog/catalog.js';
import { q } from '../sql.js';
import { idsCatalogDdl, slotFunctionsDdl } from './schema.js';
import { assignSlots } from './slots.js';

/**
 * The ids catalog as a catalog extension: the objects on every shard, and at connect (under
 * the catalog lock, with every configured shard) a slot for each shard that lacks one.
 */
export const idsExtension: CatalogExtension = {
  name: 'globally unique ids',
  async ensure(session, schema) {
    const present = await session.query<{ present: boolean }>('SELECT to_regprocedure($1) IS NOT NULL AS present', [
      `${q(schema)}.next_id()`,
    ]);
    if (present.rows[0]?.present) return;
    for (const statement of [...idsCatalogDdl(schema), ...slotFunctionsDdl(schema, null)]) await session.query(statement);
  },
  ensureCluster: (sessions, schema) => assignSlots(sessions, schema),
};
