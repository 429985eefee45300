import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { MachineInfo } from './machine.js';
import { isMeasured } from './section.js';
import type { Figure, SectionReport, TargetCheck, Unit } from './section.js';

/** What one `npm run bench` writes to bench/results/<timestamp>.json and bench/results/latest.json. */
export interface BenchResults {
  readonly format: 'pg-shard-router-bench/1';
  /** The command line, e.g. `npm run bench -- --quick`. */
  readonly command: string;
  readonly quick: boolean;
  /** `--only` sections, or null for all. */
  readonly only: readonly string[] | null;
  readonly startedAt: string;
  readonly seconds: number;
  readonly machine: MachineInfo;
  /** The code measured: HEAD, and whether src/ had uncommitted changes (others may be editing it). */
  readonly code: { readonly commit: string; readonly srcDirty: boolean };
  readonly postgres: { readonly version: string; readonly source: string; readonly shards: number };
  readonly sections: readonly SectionReport[];
  /** Every guard passed and no section crashed: the exit code is 0 exactly when this is true. */
  readonly ok: boolean;
}

export const RESULTS_DIR = path.join(path.dirname(new URL(import.meta.url).pathname), 'results');
export const LATEST_RESULTS = path.join(RESULTS_DIR, 'latest.json');

/** HEAD and whether src/ differs from it; 'unknown' outside a git checkout. */
export function describeCode(): BenchResults['code'] {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    const status = execFileSync('git', ['status', '--porcelain', '--', 'src'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return { commit, srcDirty: status.trim() !== '' };
  } catch {
    return { commit: 'unknown', srcDirty: false };
  }
}

/**
 * Writes `<ISO timestamp>.json`, and `latest.json` for a full run only (README's figures come
 * from it, so a quick or partial run must not replace it); returns the timestamped path.
 */
export function writeResults(results: BenchResults, dir = RESULTS_DIR): string {
  mkdirSync(dir, { recursive: true });
  const json = `${JSON.stringify(results, null, 2)}\n`;
  const file = path.join(dir, `${results.startedAt.replace(/:/g, '-')}.json`);
  writeFileSync(file, json);
  if (!results.quick && results.only === null) writeFileSync(path.join(dir, 'latest.json'), json);
  return file;
}

const RATE_UNITS: ReadonlySet<Unit> = new Set(['keys/s', 'queries/s', 'transfers/s', 'rows/s']);

/** `32.31 M keys/s`, `37,158 queries/s`, `12.5 ms`, `1.022x`. */
export function formatValue(value: number, unit: Unit): string {
  if (!Number.isFinite(value)) return String(value);
  if (RATE_UNITS.has(unit)) {
    return value >= 1e6 ? `${(value / 1e6).toFixed(2)} M ${unit}` : `${Math.round(value).toLocaleString('en-US')} ${unit}`;
  }
  switch (unit) {
    case 'ms':
      return `${value < 10 ? value.toFixed(2) : value.toFixed(1)} ms`;
    case 'µs':
      return `${value.toFixed(1)} µs`;
    case 'MB':
    case 'MB/s':
      return `${value.toFixed(1)} ${unit}`;
    case 'x':
      return `${formatRatio(value)}x`;
    default:
      return String(value);
  }
}

export function formatRatio(ratio: number): string {
  if (!Number.isFinite(ratio)) return String(ratio);
  return ratio >= 10 ? ratio.toFixed(1) : ratio.toFixed(3);
}

/** `ratio >= 0.97`, `>= 25.00 M keys/s`, `<= 45.3 ms (1.2 x slowest shard + 2 ms)`. */
export function formatTarget(target: TargetCheck): string {
  const threshold =
    target.on === 'ratio'
      ? `ratio ${target.comparison} ${formatRatio(target.threshold)}`
      : `${target.comparison} ${formatValue(target.threshold, target.unit)}`;
  return target.thresholdText === undefined ? threshold : `${threshold} (${target.thresholdText})`;
}

export function formatMet(target: TargetCheck | undefined): string {
  if (target === undefined) return '';
  return target.met ? 'met' : 'NOT met';
}

function baselineCell(figure: Figure): string {
  return figure.baseline === undefined ? '' : `${figure.baseline.label}: ${formatValue(figure.baseline.value, figure.unit)}`;
}

/** What a section's guard column says. */
export function guardSummary(section: SectionReport): string {
  switch (section.status) {
    case 'ok':
      return `OK (${section.guard.length} checks)`;
    case 'guard-failed':
      return `FAILED (${section.guard.filter((c) => !c.ok).length} of ${section.guard.length})`;
    case 'crashed':
      return 'CRASHED';
    case 'not-built':
      return '';
    default: {
      const never: never = section;
      return never;
    }
  }
}

export const SUMMARY_HEADER = ['section', 'measure', 'value', 'baseline (same rounds)', 'ratio', 'target', 'met', 'guard'] as const;
/** Text columns of the summary; numbers are right-aligned. */
export const SUMMARY_LEFT_ALIGNED: readonly number[] = [0, 1, 3, 5, 6, 7];

/** The rows of the summary table: one per figure, plus one per crashed or not-built section. */
export function summaryRows(sections: readonly SectionReport[]): string[][] {
  const rows: string[][] = [];
  for (const section of sections) {
    switch (section.status) {
      case 'ok':
      case 'guard-failed':
        section.figures.forEach((figure, i) => {
          rows.push([
            i === 0 ? section.name : '',
            figure.label,
            formatValue(figure.value, figure.unit),
            baselineCell(figure),
            figure.ratio === undefined ? '' : formatRatio(figure.ratio),
            figure.target === undefined ? '' : formatTarget(figure.target),
            formatMet(figure.target),
            i === 0 ? guardSummary(section) : '',
          ]);
        });
        break;
      case 'crashed':
        rows.push([section.name, `crashed: ${section.error.split('\n')[0]}`, '', '', '', '', '', 'CRASHED']);
        break;
      case 'not-built':
        rows.push([section.name, `not built yet (${section.reason})`, '', '', '', '', '', '']);
        break;
      default: {
        const never: never = section;
        throw new Error(`unknown section status ${JSON.stringify(never)}`);
      }
    }
  }
  return rows;
}

/** Every failed guard check, as `section: label: detail` lines. */
export function failedChecks(sections: readonly SectionReport[]): string[] {
  return sections.flatMap((section) =>
    isMeasured(section)
      ? section.guard.filter((c) => !c.ok).map((c) => `${section.name}: ${c.label}: ${c.detail}`)
      : section.status === 'crashed'
        ? [`${section.name}: crashed: ${section.error}`]
        : [],
  );
}
