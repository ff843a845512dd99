import { describe, expect, it } from 'vitest';
import { Scanner } from '../src/inspection/dlp/scanner.js';
import { mergeVerdicts } from '../src/inspection/dlp/tally.js';
import { builtinProfile, finding, profileFrom, scan } from './fixtures/dlp/util.js';

const SEGMENT = 64 * 1024;
const ALL = ['credit_card', 'us_ssn', 'iban', 'email', 'aws_access_key_id', 'aws_secret_key', 'github_token',
  'slack_token', 'slack_webhook', 'google_api_key', 'private_key', 'jwt'];
const SECRETS = [
  'card 4111 1111 1111 1111', 'ssn 536-22-1234', 'iban DE89 3704 0044 0532 0130 00', 'mail alice@example.com',
  'id AKIAIOSFODNN7EXAMPLE', 'aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
  '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', 'xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx',
  'https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX', 'AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe',
  '-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dV\n-----END PRIVATE KEY-----',
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U',
];
const TEXT = SECRETS.join(' ; ') + '\n';

/** Every detector found exactly once. */
function expectAllOnce(v: ReturnType<typeof scan>): void {
  expect(v.findings.map((f) => f.detector).sort()).toEqual([...ALL].sort());
  for (const f of v.findings) expect([f.detector, f.occurrences]).toEqual([f.detector, 1]);
}

describe('streaming scanner', () => {
  const all = builtinProfile(ALL);

  it('finds every detector in one write', () => {
    expectAllOnce(scan(all, TEXT));
  });

  it('finds each match exactly once whatever the chunking: one byte at a time', () => {
    const s = new Scanner(all);
    for (const b of Buffer.from(TEXT)) s.write(Buffer.of(b));
    expectAllOnce(s.verdict());
  });

  it('finds a card split across two chunks at every split point', () => {
    const card = 'pay with 4111-1111-1111-1111 today';
    const p = builtinProfile(['credit_card']);
    for (let k = 0; k <= card.length; k++) {
      const v = scan(p, card.slice(0, k), card.slice(k));
      expect(finding(v, 'credit_card')?.occurrences, `split at ${k}`).toBe(1);
    }
  });

  it('finds matches straddling the scanner\'s own segment and hold boundaries exactly once', () => {
    const p = builtinProfile(['credit_card', 'aws_access_key_id', 'private_key', 'jwt']);
    const secret = `${SECRETS[0]} ${SECRETS[4]} ${SECRETS[10]} ${SECRETS[11]}`;
    // Around the points where the first segment ends and where its commit point lies.
    for (const around of [SEGMENT - 1024, SEGMENT, 2 * SEGMENT - 1024]) {
      for (let shift = -secret.length - 2; shift <= 2; shift += 7) {
        const pad = 'lorem ipsum '.repeat(Math.ceil((around + shift) / 12)).slice(0, around + shift);
        const body = Buffer.from(pad + secret + ' end');
        for (const split of [1, 4096, around + shift + 9, body.length - 3]) {
          const v = scan(p, body.subarray(0, split), body.subarray(split));
          for (const id of ['credit_card', 'aws_access_key_id', 'private_key', 'jwt']) {
            expect(finding(v, id)?.occurrences, `${id} at ${around}${shift >= 0 ? '+' : ''}${shift}, split ${split}`).toBe(1);
          }
        }
      }
    }
  });

  it('counts distinct values by default, or every occurrence with count: all', () => {
    const body = 'card 4111 1111 1111 1111\n'.repeat(20) + 'card 5555 5555 5555 4444\n';
    const distinct = builtinProfile(['credit_card']);
    expect(finding(scan(distinct, body), 'credit_card')).toMatchObject({ count: 2, occurrences: 21 });
    const all = profileFrom('version: v1\nprofiles:\n  p:\n    detectors: [{ builtin: credit_card, count: all, action: block }]\n');
    expect(finding(scan(all, body), 'credit_card')).toMatchObject({ count: 21, occurrences: 21 });
  });

  it('applies thresholds: block at 10 cards, alert on one, alert on any private key', () => {
    const p = profileFrom(`version: v1
profiles:
  p:
    detectors:
      - { builtin: credit_card, threshold: 10, action: block }
      - { builtin: credit_card, name: one_card, action: alert }
      - { builtin: private_key, action: alert }
`);
    const cards = ['4111111111111111', '5555555555554444', '5105105105105100', '378282246310005', '371449635398431',
      '6011111111111117', '6011000990139424', '3530111333300000', '3566002020360505', '4012888888881881'];
    const nine = scan(p, cards.slice(0, 9).map((c) => `card ${c}`).join('\n'));
    expect(nine.action).toBe('alert');
    expect(finding(nine, 'credit_card')).toMatchObject({ count: 9, triggered: false, action: 'block' });
    expect(finding(nine, 'one_card')).toMatchObject({ count: 9, triggered: true });
    const ten = scan(p, cards.map((c) => `card ${c}`).join('\n'));
    expect(ten).toMatchObject({ action: 'block', reason: 'dlp_match' });
    expect(finding(ten, 'credit_card')).toMatchObject({ count: 10, triggered: true });
    expect(finding(ten, 'credit_card')!.samples).toHaveLength(3);
    const key = scan(p, SECRETS[10]!);
    expect(key).toMatchObject({ action: 'alert', reason: 'dlp_match' });
    expect(scan(p, 'nothing to see').action).toBe('allow');
  });

  it('signals block as soon as a threshold is reached', () => {
    const s = new Scanner(builtinProfile(['aws_access_key_id']));
    let calls = 0;
    s.tally.onBlock = () => calls++;
    s.write(Buffer.from(`x AKIAIOSFODNN7EXAMPLE ${'y'.repeat(200_000)}`));
    expect(calls).toBe(1);
    expect(s.blocked).toBe(true);
    s.write(Buffer.from(' AKIAI44QH8DHBEXAMPLE '));
    expect(s.verdict().action).toBe('block');
    expect(calls).toBe(1);
  });

  it('stops at max_scan_bytes and reports the body as not fully scanned', () => {
    const allow = builtinProfile(['aws_access_key_id'], '    max_scan_bytes: 4KiB\n    oversize: allow\n');
    const late = ['a'.repeat(4090), ' AKIAIOSFODNN7EXAMPLE'];
    expect(scan(allow, ...late)).toMatchObject({ action: 'allow', reason: 'dlp_unscanned', truncated: true, unscanned: 'oversize', scannedBytes: 4096 });
    const block = builtinProfile(['aws_access_key_id'], '    max_scan_bytes: 4096\n    oversize: block\n');
    expect(scan(block, ...late)).toMatchObject({ action: 'block', reason: 'dlp_oversize' });
    // Within the limit, the key is found.
    expect(scan(allow, 'AKIAIOSFODNN7EXAMPLE').action).toBe('block');
  });

  it('decodes base64 blocks inside JSON, nested base64, and wrapped (MIME) base64', () => {
    const p = builtinProfile(['credit_card', 'aws_access_key_id']);
    const inner = Buffer.from(`invoice paid with 4111 1111 1111 1111 ${'and some more words '.repeat(3)}`).toString('base64');
    expect(finding(scan(p, JSON.stringify({ attachment: inner })), 'credit_card')?.occurrences).toBe(1);
    const twice = Buffer.from(`blob=${Buffer.from(`key AKIAIOSFODNN7EXAMPLE ${'padding '.repeat(10)}`).toString('base64')}`).toString('base64');
    expect(finding(scan(p, `{"data":"${twice}"}`), 'aws_access_key_id')?.occurrences).toBe(1);
    // 76-character lines, the card falling across a line break.
    const long = Buffer.from(`${'x'.repeat(50)} card 4111 1111 1111 1111 ${'y'.repeat(100)}`).toString('base64');
    const wrapped = long.match(/.{1,76}/g)!.join('\r\n');
    expect(wrapped.split('\r\n')[0]!.length).toBe(76);
    expect(finding(scan(p, `Content-Transfer-Encoding: base64\r\n\r\n${wrapped}\r\n`), 'credit_card')?.occurrences).toBe(1);
    // Split across chunks at every point of the block.
    const body = `{"a":"${inner}"}`;
    for (let k = 0; k < body.length; k += 5) {
      expect(finding(scan(p, body.slice(0, k), body.slice(k)), 'credit_card')?.occurrences, `split ${k}`).toBe(1);
    }
  });

  it('limits decoded base64 per body (base64_max_bytes) and can turn it off', () => {
    const p = builtinProfile(['credit_card'], '    decode: { base64_max_bytes: 1KiB }\n');
    const blob = Buffer.from(`${'z'.repeat(2000)} 4111 1111 1111 1111 `).toString('base64');
    const v = scan(p, `{"a":"${blob}"}`);
    expect(finding(v, 'credit_card')).toBeUndefined();
    const off = builtinProfile(['credit_card'], '    decode: { base64: false }\n');
    const small = Buffer.from('card 4111 1111 1111 1111 and then some more text').toString('base64');
    expect(scan(off, `{"a":"${small}"}`).findings).toEqual([]);
  });

  it('custom regexes (RE2) and keyword dictionaries, with thresholds', () => {
    const p = profileFrom(`version: v1
profiles:
  p:
    detectors:
      - { regex: 'EMP-[0-9]{6}', name: employee_id, threshold: 2, action: block }
      - { keywords: [confidential, project falcon, 機密], name: markings, action: alert }
      - { keywords: [Secret], name: exact, case_sensitive: true, whole_word: false, threshold: 2, action: alert }
`);
    expect(scan(p, 'EMP-123456 only').action).toBe('allow');
    const v = scan(p, 'EMP-123456 and EMP-654321, CONFIDENTIAL: Project  Falcon; project falcon; 機密 TopSecretSecret');
    expect(v.action).toBe('block');
    expect(finding(v, 'employee_id')).toMatchObject({ count: 2, samples: ['E*********'] }); // short values: one character in clear
    expect(finding(v, 'markings')).toMatchObject({ count: 3, occurrences: 3 });
    expect(finding(v, 'exact')).toMatchObject({ count: 1, occurrences: 2 });
    // Whole words only: "confidentiality" is not the keyword.
    expect(finding(scan(p, 'confidentiality agreement'), 'markings')).toBeUndefined();
  });

  it('runs a catastrophic pattern in linear time (RE2 semantics, no backtracking)', () => {
    const p = profileFrom(`version: v1
profiles:
  p:
    detectors:
      - { regex: '(a+)+$', name: evil, action: alert }
      - { regex: '(x|x|x)*y', name: evil2, action: alert }
`);
    // A backtracking engine needs 2^n steps here; this finishes well within the test timeout.
    const v = scan(p, `${'a'.repeat(200_000)}!\n${'x'.repeat(200_000)}`);
    expect(finding(v, 'evil')).toBeUndefined();
    expect(finding(v, 'evil2')).toBeUndefined();
    expect(finding(scan(p, 'baaa'), 'evil')).toMatchObject({ count: 1 });
  });

  it('merges the verdicts of several profiles: the strongest action wins, findings add up', () => {
    const cards = scan(builtinProfile(['credit_card']), 'card 4111 1111 1111 1111');
    const none = scan(builtinProfile(['aws_access_key_id'], '    max_scan_bytes: 4096\n'), 'x'.repeat(5000));
    const m = mergeVerdicts([none, cards]);
    expect(m).toMatchObject({ action: 'block', reason: 'dlp_match', truncated: true, unscanned: 'oversize' });
    expect(m.findings.map((f) => f.detector)).toEqual(['credit_card']);
    expect(mergeVerdicts([none])).toBe(none);
    expect(mergeVerdicts([scan(builtinProfile(['iban']), 'hello'), none])).toMatchObject({ action: 'allow', reason: 'dlp_unscanned' });
  });

  it('streams 200 MB with bounded memory and finds the one secret at the end', () => {
    const p = builtinProfile(ALL);
    const rec = (i: number) => `{"id":${100000 + i},"ts":${1700000000000 + i},"user":"user${i}","note":"order shipped to customer","sha":"${(i * 2654435761 >>> 0).toString(16).padStart(8, '0').repeat(5)}"}\n`;
    let chunk = '';
    for (let i = 0; chunk.length < 1 << 20; i++) chunk += rec(i);
    const buf = Buffer.from(chunk.slice(0, 1 << 20));
    const s = new Scanner(p, undefined, { maxBytes: 256 << 20 });
    const mem = () => { const m = process.memoryUsage(); return m.heapUsed + m.arrayBuffers; };
    // Warm up, then measure growth from here.
    for (let i = 0; i < 8; i++) s.write(buf.subarray((i * 131072) % buf.length, ((i * 131072) % buf.length) + 131072));
    const base = mem();
    let peak = base;
    const total = 200 << 20;
    for (let sent = 1 << 20; sent < total; sent += buf.length) {
      for (let off = 0; off < buf.length; off += 65536) s.write(buf.subarray(off, off + 65536));
      peak = Math.max(peak, mem());
    }
    s.write(Buffer.from('\naws_access_key_id=AKIAIOSFODNN7EXAMPLE\n'));
    const v = s.verdict();
    expect(v.scannedBytes).toBeGreaterThanOrEqual(total);
    expect(finding(v, 'aws_access_key_id')).toMatchObject({ count: 1, occurrences: 1 });
    expect(v.action).toBe('block');
    // The scanner keeps a window and counters, not the body: far less than the 200 MB streamed.
    expect(peak - base).toBeLessThan(48 << 20);
  });
});
