import { describe, expect, it } from 'vitest';
import { registryNameParts } from '../../src/catalog/registries.js';

/** Registry names are `format('%I.%I', schema, table)`: quoted only where PostgreSQL needs it. */
describe('registryNameParts', () => {
  it.each([
    ['public.orders', ['public', 'orders']],
    ['public."Orders"', ['public', 'Orders']],
    ['"My Schema"."order"', ['My Schema', 'order']],
    ['"a.b".c', ['a.b', 'c']],
    ['s."x""y"', ['s', 'x"y']],
    ['"""".t', ['"', 't']],
  ])('%s -> %j', (text, parts) => {
    expect(registryNameParts(text)).toEqual(parts);
  });
});
