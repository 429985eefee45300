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
  return formatColumns(header, rows, header.map((_, col) => col).slice(1));
}

/** A table whose columns are left-aligned except the `right` ones (numbers). */
export function formatColumns(header: readonly string[], rows: readonly (readonly string[])[], right: readonly number[]): string {
  const all = [header, ...rows];
  const widths = header.map((_, col) => Math.max(...all.map((row) => (row[col] ?? '').length)));
  const line = (row: readonly string[]) =>
    row
      .map((cell, col) => (right.includes(col) ? cell.padStart(widths[col]!) : cell.padEnd(widths[col]!)))
      .join('  ')
      .trimEnd();
  return all.map(line).join('\n');
}

/** Indents every line of `text` by `by` spaces. */
export function indent(text: string, by = 2): string {
  const pad = ' '.repeat(by);
  return text
    .split('\n')
    .map((line) => pad + line)
    .join('\n');
}

export function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? '' : 's'}`;
}
