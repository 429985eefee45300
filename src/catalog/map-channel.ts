/** The NOTIFY channel of a cluster's map changes (a cluster id is a validated uuid). */
export function mapChannel(clusterId: string): string {
  return `psr_map_${clusterId.replaceAll('-', '')}`;
}
