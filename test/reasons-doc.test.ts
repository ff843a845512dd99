import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REASONS } from '../src/errors/reasons.js';

describe('docs/reasons.md', () => {
  it('documents every reason id the proxy can give, each once', () => {
    const rows = readFileSync(join(import.meta.dirname, '..', 'docs', 'reasons.md'), 'utf8').split('\n')
      .map((l) => /^\| `([a-z0-9_]+)` \|/.exec(l)?.[1]).filter((id): id is string => id !== undefined);
    expect(rows.filter((id, i) => rows.indexOf(id) !== i)).toEqual([]);
    expect(Object.keys(REASONS).filter((id) => !rows.includes(id))).toEqual([]);
    expect(rows.filter((id) => !(id in REASONS))).toEqual([]);
  });
});
