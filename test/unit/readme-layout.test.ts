import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/** README's "Project layout" is checked against the real tree: nothing listed is missing, no folder of src/ is left out. */

const ROOT = path.resolve(import.meta.dirname, '../..');

function layoutEntries(): string[] {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const section = readme.split('\n## Project layout\n')[1]?.split('\n## ')[0] ?? '';
  const block = section.split('```')[1] ?? '';
  return block
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((entry) => entry !== '');
}

describe('README project layout', () => {
  const entries = layoutEntries();

  it('lists paths that exist', () => {
    expect(entries.length).toBeGreaterThan(10);
    expect(entries.filter((entry) => !existsSync(path.join(ROOT, entry)))).toEqual([]);
  });

  it('lists every folder of src/ and its subfolders', () => {
    const folders = readdirSync(path.join(ROOT, 'src'), { recursive: true, withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => path.relative(ROOT, path.join(entry.parentPath, entry.name)));
    const listed = new Set(entries.map((entry) => entry.replace(/\/$/, '')));
    expect(folders.filter((folder) => !listed.has(folder))).toEqual([]);
  });
});
