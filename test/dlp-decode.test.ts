import { readFileSync } from 'node:fs';
import { brotliCompressSync, deflateRawSync, deflateSync, gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { BodyInspector, type BodyInfo } from '../src/inspection/dlp/decode.js';
import type { CompiledProfile } from '../src/inspection/dlp/profile.js';
import type { Verdict } from '../src/inspection/dlp/tally.js';
import { ooxml, zip } from './fixtures/dlp/archives.js';
import { builtinProfile, finding } from './fixtures/dlp/util.js';

const CARD = 'pay 4111 1111 1111 1111 now';
const KEY = 'aws_access_key_id = AKIAIOSFODNN7EXAMPLE';

/** Streams `body` through an inspector in chunks of `size`, honouring backpressure. */
async function inspect(profile: CompiledProfile, info: Omit<BodyInfo, 'direction'> & { direction?: BodyInfo['direction'] }, body: Buffer | string, size = 1000): Promise<Verdict> {
  const insp = new BodyInspector(profile, { direction: 'upload', ...info });
  const buf = Buffer.from(body);
  for (let i = 0; i < buf.length; i += size) {
    if (!insp.write(buf.subarray(i, i + size))) await insp.drained();
  }
  return insp.end();
}

/** A multipart/form-data body serialised by undici's FormData (the real encoder). */
async function multipart(form: FormData): Promise<{ body: Buffer; contentType: string }> {
  const res = new Response(form);
  return { body: Buffer.from(await res.arrayBuffer()), contentType: res.headers.get('content-type')! };
}

const profile = builtinProfile(['credit_card', 'aws_access_key_id', 'private_key'], '    file_types: { block: [executable, office_macro, encrypted_archive], direction: upload }\n');

describe('BodyInspector: decoders before detection', () => {
  it('scans a plain body synchronously', async () => {
    const v = await inspect(profile, {}, `${'x'.repeat(5000)} ${CARD}`);
    expect(v).toMatchObject({ action: 'block', reason: 'dlp_match', truncated: false });
    expect(finding(v, 'credit_card')?.samples).toEqual(['4111********1111']);
  });

  for (const [enc, data] of [
    ['gzip', gzipSync(`${'text '.repeat(20_000)}${CARD}`)],
    ['x-gzip', gzipSync(CARD)],
    ['deflate', deflateSync(`${'text '.repeat(20_000)}${CARD}`)],
    ['deflate', deflateRawSync(CARD)], // raw deflate, as some servers send it
    ['br', brotliCompressSync(`${'text '.repeat(20_000)}${CARD}`)],
    ['gzip, br', brotliCompressSync(gzipSync(CARD))],
  ] as const) {
    it(`Content-Encoding: ${enc} (${data.length} bytes)`, async () => {
      for (const size of [1, 100, 65536]) {
        if (size === 1 && data.length > 2000) continue;
        const v = await inspect(profile, { contentEncoding: enc }, data, size);
        expect(finding(v, 'credit_card')?.occurrences, `chunks of ${size}`).toBe(1);
        expect(v.action).toBe('block');
      }
    });
  }

  it('an unsupported or corrupt Content-Encoding is undecodable: blocked by default, allowed when the profile says so', async () => {
    expect(await inspect(profile, { contentEncoding: 'zstd' }, CARD)).toMatchObject({ action: 'block', reason: 'dlp_undecodable', unscanned: 'undecodable' });
    const corrupt = gzipSync(CARD);
    corrupt.fill(0x41, 10, 20);
    const v = await inspect(profile, { contentEncoding: 'gzip' }, corrupt);
    expect(v).toMatchObject({ action: 'block', reason: 'dlp_undecodable' });
    expect(v.error).toMatch(/^gzip: /);
    const lenient = builtinProfile(['credit_card'], '    undecodable: allow\n');
    expect(await inspect(lenient, { contentEncoding: 'compress' }, CARD)).toMatchObject({ action: 'allow', reason: 'dlp_unscanned', unscanned: 'undecodable' });
  });

  it('stops a decompression bomb at the ratio limit', async () => {
    const bomb = gzipSync(Buffer.alloc(64 << 20));
    expect(bomb.length).toBeLessThan(100_000);
    const p = builtinProfile(['credit_card'], '    max_scan_bytes: 256MiB\n    decode: { max_ratio: 100 }\n');
    const v = await inspect(p, { contentEncoding: 'gzip' }, bomb, 16384);
    expect(v).toMatchObject({ action: 'allow', reason: 'dlp_unscanned', unscanned: 'decompression_ratio', truncated: true });
    expect(v.scannedBytes).toBeLessThan(32 << 20);
  });

  it('stops at max_scan_bytes of decoded output', async () => {
    const p = builtinProfile(['credit_card'], '    max_scan_bytes: 64KiB\n    oversize: block\n');
    const v = await inspect(p, { contentEncoding: 'gzip' }, gzipSync(`${'a'.repeat(100_000)} ${CARD}`));
    expect(v).toMatchObject({ action: 'block', reason: 'dlp_oversize', scannedBytes: 65536, truncated: true });
    expect(v.findings).toEqual([]);
  });

  it('JSON: escapes are undone, including \\u escapes split across chunks', async () => {
    const escaped = '{"note":"pay \\u0034\\u00311\\u0031\\u0031 1111\\/1111 1111 1111 done \\ud83d\\ude00","k":"AKIAIOSFODNN\\u0037EXAMPLE"}';
    for (const size of [1, 3, 1000]) {
      const v = await inspect(profile, { contentType: 'application/json; charset=utf-8' }, escaped, size);
      expect(finding(v, 'aws_access_key_id')?.occurrences, `chunks of ${size}`).toBe(1);
    }
    const card = '{"c":"\\u0034\\u0031\\u0031\\u0031 1111 1111 1111"}';
    expect(finding(await inspect(profile, { contentType: 'application/vnd.api+json' }, card, 2), 'credit_card')?.occurrences).toBe(1);
    // Without the JSON decoder the escaped card is not a card.
    expect(finding(await inspect(profile, { contentType: 'text/plain' }, card), 'credit_card')).toBeUndefined();
  });

  it('base64 inside JSON inside gzip', async () => {
    const doc = JSON.stringify({ file: Buffer.from(`Dear team, the card is ${CARD} thanks`).toString('base64') });
    const v = await inspect(profile, { contentType: 'application/json', contentEncoding: 'gzip' }, gzipSync(doc), 50);
    expect(finding(v, 'credit_card')?.occurrences).toBe(1);
  });

  it('application/x-www-form-urlencoded values are decoded', async () => {
    const body = `a=1&card=${encodeURIComponent('4111 1111 1111 1111')}&key=${encodeURIComponent(KEY)}&b=2`;
    expect(body).toContain('%20');
    for (const size of [1, 2, 1000]) {
      const v = await inspect(profile, { contentType: 'application/x-www-form-urlencoded' }, body, size);
      expect(finding(v, 'credit_card')?.occurrences, `chunks of ${size}`).toBe(1);
      expect(finding(v, 'aws_access_key_id')?.occurrences).toBe(1);
    }
    const plus = 'card=4111+1111+1111+1111';
    expect(finding(await inspect(profile, { contentType: 'application/x-www-form-urlencoded' }, plus), 'credit_card')?.occurrences).toBe(1);
  });

  it('multipart/form-data: fields and files scanned part by part, files typed by content', async () => {
    const form = new FormData();
    form.append('comment', `see attachment, ${CARD}`);
    form.append('notes', new Blob([`${'line\n'.repeat(3000)}${KEY}\n`]), 'notes.txt');
    form.append('avatar', new Blob([readFileSync(process.execPath).subarray(0, 200_000)]), 'cat.jpg');
    const { body, contentType } = await multipart(form);
    for (const size of [7, 1400, 65536]) {
      const v = await inspect(profile, { contentType }, body, size);
      expect(finding(v, 'credit_card')?.occurrences, `chunks of ${size}`).toBe(1);
      expect(finding(v, 'aws_access_key_id')?.occurrences).toBe(1);
      expect(v.files).toEqual([{ part: { field: 'avatar', filename: 'cat.jpg' }, type: 'elf', kinds: ['executable'], blocked: true }]);
      expect(v.action).toBe('block');
    }
  });

  it('file types apply in the configured direction only', async () => {
    const form = new FormData();
    form.append('f', new Blob([readFileSync(process.execPath).subarray(0, 10_000)]), 'tool.bin');
    const { body, contentType } = await multipart(form);
    expect((await inspect(profile, { contentType, direction: 'upload' }, body)).reason).toBe('dlp_file_type');
    expect((await inspect(profile, { contentType, direction: 'download' }, body)).action).toBe('allow');
    // A download of a macro document, with a profile that checks both directions.
    const both = builtinProfile(['credit_card'], '    file_types: { block: [office_macro], direction: both }\n');
    expect(await inspect(both, { contentType: 'application/octet-stream', direction: 'download' }, ooxml(true))).toMatchObject({ action: 'block', reason: 'dlp_file_type', files: [{ type: 'ooxml', kinds: ['office_macro'], blocked: true }] });
    expect((await inspect(both, { contentType: 'application/octet-stream', direction: 'download' }, ooxml(false))).action).toBe('allow');
    // Decoded first: a gzip Content-Encoding around an encrypted zip.
    const enc = zip([{ name: 'x', data: 'y', encrypted: true }]);
    expect((await inspect(profile, { contentEncoding: 'gzip' }, gzipSync(enc))).files[0]).toMatchObject({ type: 'zip', kinds: ['archive', 'encrypted_archive'], blocked: true });
  });

  it('signals block early, before the body ends', async () => {
    let early = 0;
    const insp = new BodyInspector(profile, { direction: 'upload', onBlock: () => early++ });
    insp.write(readFileSync(process.execPath).subarray(0, 8192));
    expect(early).toBe(1);
    expect(insp.blocked).toBe(true);
    insp.write(Buffer.from(KEY));
    expect((await insp.end()).action).toBe('block');
    expect(early).toBe(1);
  });

  it('malformed multipart is undecodable', async () => {
    const v = await inspect(profile, { contentType: 'multipart/form-data' }, 'no boundary here');
    expect(v).toMatchObject({ action: 'block', reason: 'dlp_undecodable' });
    const cut = await inspect(profile, { contentType: 'multipart/form-data; boundary=XyZ' }, '--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\nhello');
    expect(cut).toMatchObject({ action: 'block', reason: 'dlp_undecodable' });
  });
});
