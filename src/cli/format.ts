/** Small text helpers for the CLI's human-readable output. */

/** 850 ms, 12.3 s, 4m 05s, 2h 07m, 3d 04h. */
export function formatAge(millis: number): string {
  if (millis < 1_000) return `${Math.max(0, Math.round(millis))} ms`;
  const seconds = millis / 1_000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const whole = Math.floor(seconds);
  const two = (n: number) => String(n).padStart(2, '0');
  if (whole < 3_600) return `${Math.floor(whole / 60)}m ${two(whole % 60)}s`;
  if (whole < 86_400) return `${Math.floor(whole / 3_600)}h ${two(Math.floor(whole / 60) % 60)}m`;
  return `${Math.floor(whole / 86_400)}d ${two(Math.floor(whole / 3_600) % 24)}h`;
}

/** server_version_num 170002 -> "17.2" (PostgreSQL 10 and later). */
export function formatServerVersion(versionNum: number): string {
  if (versionNum <= 0) return 'unknown';
  return `${Math.floor(versionNum / 10_000)}.${versionNum % 10_000}`;
}

/** Left-aligned first column, right-aligned others. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const all = [header, ...rows];
  const widths = header.map((_, col) => Math.max(...all.map((row) => (row[col] ?? '').length)));
  const line = (row: readonly string[]) =>
    row
      .map((cell, col) => (col === 0 ? cell.padEnd(widths[col]!) : cell.padStart(widths[col]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

export function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? '' : 's'}`;
}
