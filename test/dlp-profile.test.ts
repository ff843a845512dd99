import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileValidationError } from '../src/config/validate.js';
import { loadDlpProfiles, parseDlpFile } from '../src/inspection/dlp/profile.js';
import { scan } from './fixtures/dlp/util.js';

/** The FileValidationError problems of parsing `yaml`, as "line:col field: message" strings. */
function problems(yaml: string): string[] {
  try {
    parseDlpFile('p.yaml', yaml);
  } catch (err) {
    if (err instanceof FileValidationError) return err.problems.map((p) => `${p.line}:${p.col} ${p.field}: ${p.message}`);
    throw err;
  }
  return [];
}

describe('DLP profiles', () => {
  it('loads the shipped profiles, and the default one works as documented', () => {
    const profiles = loadDlpProfiles(join(import.meta.dirname, '..', 'policies', 'dlp'));
    expect([...profiles.keys()].sort()).toEqual(['default', 'strict']);
    const def = profiles.get('default')!;
    expect(def).toMatchObject({ maxScanBytes: 16 << 20, oversize: 'allow', undecodable: 'block' });
    expect(def.fileTypes).toEqual({ block: new Set(['executable']), direction: 'upload' });
    expect(scan(def, 'card 4111 1111 1111 1111').action).toBe('block');
    expect(scan(def, 'key AKIAIOSFODNN7EXAMPLE').action).toBe('block');
    expect(scan(def, 'ssn 536-22-1234')).toMatchObject({ action: 'alert', reason: 'dlp_match' });
    expect(scan(def, 'contact alice@example.com').action).toBe('allow');
    const hundred = Array.from({ length: 100 }, (_, i) => `user${i}@example.com`).join(', ');
    expect(scan(def, hundred).action).toBe('alert');
    expect(scan(def, '{"orders":[{"id":123456,"ts":1700000000000,"total":99.95}]}').findings).toEqual([]);
  });

  it('points at the line and column of a mistake', () => {
    expect(problems(`version: v1
profiles:
  p:
    detectors:
      - { builtin: credit_card, action: block, treshold: 3 }
`)).toEqual(['5:48 profiles.p.detectors[0].treshold: unknown field']);
    const bad = problems(`version: v1
profiles:
  p:
    detectors:
      - builtin: credit_cards
        action: stop
`);
    expect(bad.join('\n')).toMatch(/^5:\d+ profiles\.p\.detectors\[0\]/m);
    expect(problems('version: v2\nprofiles: {}\n')[0]).toMatch(/^1:\d+ version: /);
    expect(problems('version: v1\nprofiles:\n  Bad Name: {}\n')[0]).toMatch(/^3:\d+ profiles.Bad Name: Invalid key/);
  });

  it('rejects regexes RE2 cannot run in linear time, with their location', () => {
    const yaml = (re: string) => `version: v1
profiles:
  p:
    detectors:
      - { keywords: [ok], name: k, action: alert }
      - regex: '${re}'
        name: r
        action: block
`;
    expect(problems(yaml('(a)\\1'))).toEqual([expect.stringMatching(/^6:16 profiles\.p\.detectors\[1\]\.regex: invalid RE2 pattern: .*escape/)]);
    expect(problems(yaml('foo(?=bar)'))[0]).toMatch(/^6:16 .*invalid RE2 pattern/);
    expect(problems(yaml('(?<=x)y'))[0]).toMatch(/invalid RE2 pattern/);
    expect(problems(yaml('a*'))[0]).toMatch(/matches the empty string/);
    expect(problems(yaml('[a-'))[0]).toMatch(/invalid RE2 pattern/);
    expect(problems(yaml('(a+)+$'))).toEqual([]);
  });

  it('rejects duplicate detector names, and needs names on custom detectors', () => {
    expect(problems(`version: v1
profiles:
  p:
    detectors:
      - { builtin: credit_card, action: block }
      - { builtin: credit_card, threshold: 5, action: alert }
`)).toEqual([expect.stringMatching(/^6:\d+ profiles\.p\.detectors\[1\]\.name: detector name "credit_card" is already used by detectors\[0\]/)]);
    expect(problems('version: v1\nprofiles:\n  p:\n    detectors: [{ regex: "x+", action: block }]\n').join()).toMatch(/detectors\[0\]/);
  });

  it('reads sizes as bytes or with units, within bounds', () => {
    const p = parseDlpFile('p.yaml', 'version: v1\nprofiles:\n  p:\n    max_scan_bytes: 2MiB\n    decode: { base64_max_bytes: 65536 }\n').get('p')!;
    expect(p.maxScanBytes).toBe(2 << 20);
    expect(p.decode.base64MaxBytes).toBe(65536);
    expect(problems('version: v1\nprofiles:\n  p:\n    max_scan_bytes: 2 MB\n')[0]).toMatch(/expected bytes, or a size/);
    expect(problems('version: v1\nprofiles:\n  p:\n    max_scan_bytes: 10\n')[0]).toMatch(/at least 4096/);
    expect(problems('version: v1\nprofiles:\n  p:\n    detectors: [{ builtin: iban, threshold: 0, action: alert }]\n')[0]).toMatch(/threshold/);
  });

  it('reports every file\'s problems and profiles defined twice across files', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dlp-profiles-'));
    writeFileSync(join(dir, 'a.yaml'), 'version: v1\nprofiles:\n  shared: {}\n');
    writeFileSync(join(dir, 'b.yaml'), 'version: v1\nprofiles:\n  other: {}\n  shared: {}\n');
    writeFileSync(join(dir, 'c.yml'), 'version: v1\nprofiles: [oops\n');
    let err: unknown;
    try {
      loadDlpProfiles(dir);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FileValidationError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/b\.yaml:4:\d+ profiles\.shared: profile "shared" is already defined in .*a\.yaml/);
    expect(msg).toMatch(/c\.yml:\d+:\d+ /);
    expect(() => loadDlpProfiles(join(dir, 'missing'))).toThrow(/cannot read DLP profile directory/);
  });
});
