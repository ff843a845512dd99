import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { BUILTIN_IDS, cardConfidence, luhn, maskBuiltin, ssnValid } from '../src/inspection/dlp/detectors.js';
import { builtinProfile, finding, profileFrom, scan } from './fixtures/dlp/util.js';

type Corpus = Record<string, { match: string[]; no_match: string[] }>;
const corpus = parse(readFileSync(join(import.meta.dirname, 'fixtures/dlp/corpus.yaml'), 'utf8')) as Corpus;

// Sentences around each sample: the sample must be found in running text, at either end of the
// body and inside JSON, not only on its own.
const contexts = [(x: string) => x, (x: string) => `Here it is: ${x} (sent by ops).\n`, (x: string) => `{"note":"see below","value":${JSON.stringify(x)}}`];

describe('built-in detectors: corpus of true and false positives', () => {
  it('covers every built-in detector', () => {
    expect(Object.keys(corpus).sort()).toEqual([...BUILTIN_IDS].sort());
  });

  for (const id of BUILTIN_IDS) {
    describe(id, () => {
      const profile = builtinProfile([id]);
      for (const sample of corpus[id]!.match) {
        it(`finds ${JSON.stringify(sample).slice(0, 70)}`, () => {
          for (const ctx of contexts.slice(0, id === 'private_key' ? 2 : 3)) {
            const v = scan(profile, ctx(sample));
            const f = finding(v, id);
            expect(f, ctx(sample)).toBeDefined();
            expect(f!.count).toBe(1);
            expect(f!.occurrences).toBe(1);
            expect(v.action).toBe('block');
            expect(['medium', 'high']).toContain(f!.confidence);
            // Masked: never the sample in clear, and stars where the value was.
            for (const m of f!.samples) {
              if (id !== 'private_key') expect(m).toMatch(/\*/);
              expect(sample).not.toContain(m.length >= 8 && id !== 'private_key' && id !== 'slack_webhook' ? m : '\u0000');
            }
            expect(JSON.stringify(v)).not.toContain(sample.replace(/[\s-]/g, '').slice(0, 40).length >= 12 && id !== 'private_key' ? sample : '\u0000');
          }
        });
      }
      for (const sample of corpus[id]!.no_match) {
        it(`ignores ${JSON.stringify(sample).slice(0, 70)}`, () => {
          for (const ctx of contexts) {
            const v = scan(profile, ctx(sample));
            expect(finding(v, id), ctx(sample)).toBeUndefined();
            expect(v.action).toBe('allow');
          }
        });
      }
    });
  }
});

describe('validation rules', () => {
  it('Luhn', () => {
    expect(luhn('4111111111111111')).toBe(true);
    expect(luhn('4111111111111112')).toBe(false);
    expect(luhn('79927398713')).toBe(true);
  });

  it('card confidence: scheme, grouping and context', () => {
    expect(cardConfidence('4111111111111111', false, () => false)).toBe(2);
    expect(cardConfidence('4111111111111111', true, () => false)).toBe(3);
    expect(cardConfidence('4111111111111111', false, () => true)).toBe(3);
    expect(cardConfidence('9111111111111110', false, () => true)).toBe(1); // Luhn, no scheme
    expect(cardConfidence('9111111111111110', false, () => true, 2)).toBe(0);
    expect(cardConfidence('4111111111111112', true, () => true)).toBe(0);
    expect(cardConfidence('0000000000000000', true, () => true)).toBe(0);
  });

  it('SSN areas, groups and serials never issued', () => {
    expect(ssnValid('123', '45', '6789')).toBe(true);
    for (const [a, g, s] of [['000', '12', '3456'], ['666', '12', '3456'], ['900', '12', '3456'], ['999', '12', '3456'], ['123', '00', '4567'], ['123', '45', '0000']]) {
      expect(ssnValid(a!, g!, s!), `${a}-${g}-${s}`).toBe(false);
    }
  });

  it('a card context word raises an unseparated number to high confidence', () => {
    const p = builtinProfile(['credit_card']);
    expect(finding(scan(p, 'ref 4111111111111111'), 'credit_card')!.confidence).toBe('medium');
    expect(finding(scan(p, 'Visa card number: 4111111111111111'), 'credit_card')!.confidence).toBe('high');
    expect(finding(scan(p, 'ref 4111 1111 1111 1111'), 'credit_card')!.confidence).toBe('high');
  });

  it('a private key header without key material is low confidence, counted only when asked', () => {
    const placeholder = '-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----';
    expect(scan(builtinProfile(['private_key']), placeholder).findings).toEqual([]);
    const low = profileFrom('version: v1\nprofiles:\n  p:\n    detectors: [{ builtin: private_key, min_confidence: low, action: alert }]\n');
    const f = finding(scan(low, placeholder), 'private_key');
    expect(f).toMatchObject({ count: 1, confidence: 'low', samples: ['-----BEGIN PRIVATE KEY-----'] });
  });
});

describe('masking', () => {
  const cases: [Parameters<typeof maskBuiltin>[0], string, string][] = [
    ['credit_card', '4111111111111111', '4111********1111'],
    ['credit_card', '378282246310005', '3782********005'], // at most half in clear
    ['us_ssn', '123-45-6789', '***-**-6789'],
    ['iban', 'DE89370400440532013000', 'DE89**************3000'],
    ['email', 'alice@example.com', 'a***@example.com'],
    ['aws_access_key_id', 'AKIAIOSFODNN7EXAMPLE', 'AKIA************MPLE'],
    ['aws_secret_key', 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', `${'*'.repeat(36)}EKEY`],
    ['github_token', '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', `ghp_${'*'.repeat(32)}INUx`],
    ['jwt', 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIi', 'eyJhbG************'],
  ];
  for (const [id, value, masked] of cases) {
    it(`${id}: ${masked}`, () => {
      expect(maskBuiltin(id, value)).toBe(masked);
      expect(maskBuiltin(id, value)).not.toBe(value);
    });
  }

  it('never shows more than half of a short value', () => {
    const m = maskBuiltin('aws_access_key_id', 'AKIA1234');
    expect(m.replace(/\*/g, '').length).toBeLessThanOrEqual(4);
  });
});
