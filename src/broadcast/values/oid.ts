/**
 * PostgreSQL's value semantics on text forms, per type OID: the order (order.ts), equality
 * (text-forms.ts) and partial aggregate combination (partials.ts) a broadcast merge needs so
 * that its answer equals one server's.
 *
 * Inputs are the text forms exactly as the shards sent them (NULL as JS null). The date/time
 * parsers need DateStyle ISO (they throw on other styles) and the float formatter reproduces
 * extra_float_digits >= 1 (the default since PostgreSQL 12); the shard sessions must use those,
 * and one TimeZone if timestamptz text is passed through unchanged.
 */

/** The built-in type OIDs (pg_type.oid) that this module models. */
export const OID = {
  bool: 16,
  char: 18,
  name: 19,
  int8: 20,
  int2: 21,
  int4: 23,
  text: 25,
  oid: 26,
  float4: 700,
  float8: 701,
  bpchar: 1042,
  varchar: 1043,
  date: 1082,
  time: 1083,
  timestamp: 1114,
  timestamptz: 1184,
  interval: 1186,
  numeric: 1700,
  uuid: 2950,
} as const;
