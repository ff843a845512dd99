import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BodyInspector, type BodyInfo } from '../src/inspection/dlp/decode.js';
import { loadDlpProfiles, type CompiledProfile } from '../src/inspection/dlp/profile.js';
import { ScanPool, type Inspector } from '../src/inspection/dlp/scan-pool.js';
import type { Verdict } from '../src/inspection/dlp/tally.js';

// Real worker threads running the compiled scan worker; every verdict is checked against the
// same body scanned on this thread.
const CARD = '4111 1111 1111 1111';
let profile: CompiledProfile;
let pool: ScanPool;
const errors: Error[] = [];

beforeAll(() => {
  profile = loadDlpProfiles(join(import.meta.dirname, '..', 'policies', 'dlp')).get('default')!;
  pool = new ScanPool(2, (e) => errors.push(e));
});
afterAll(async () => {
  await pool.close();
});

/** Writes `body` in `size`-byte chunks the way the upload path does, then ends. */
async function feed(insp: Inspector | BodyInspector, body: Buffer, size = 7): Promise<Verdict> {
  for (let o = 0; o < body.length; o += size) if (!insp.write(body.subarray(o, o + size))) await insp.drained();
  return insp.end();
}

const multipart = (boundary: string, file: string): Buffer => Buffer.from(
  `--${boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nsee file\r\n` +
  `--${boundary}\r\nContent-Disposition: form-data; name="f"; filename="cards.txt"\r\nContent-Type: text/plain\r\n\r\n${file}\r\n--${boundary}--\r\n`);

describe('DLP scan workers', () => {
  const cases: [string, Buffer, BodyInfo][] = [
    ['a clean JSON body', Buffer.from(JSON.stringify({ user: 'jo', items: [1, 2, 3], note: 'nothing to see' })), { contentType: 'application/json', direction: 'upload' }],
    ['a card split across tiny chunks', Buffer.from(`order=1&card=${CARD}&x=y`), { contentType: 'application/x-www-form-urlencoded', direction: 'upload' }],
    ['a card inside gzip', gzipSync(Buffer.from(`{"note":"pay with ${CARD}"}`)), { contentType: 'application/json', contentEncoding: 'gzip', direction: 'upload' }],
    ['a card in a multipart file', multipart('XyZ', `cards: ${CARD}`), { contentType: 'multipart/form-data; boundary=XyZ', direction: 'upload' }],
    ['an SSN (alert)', Buffer.from('name=Jo&ssn=123-45-6789'), { contentType: 'application/x-www-form-urlencoded', direction: 'upload' }],
    ['a gzip body that does not decode', Buffer.from('not gzip at all'), { contentType: 'text/plain', contentEncoding: 'gzip', direction: 'upload' }],
  ];
  for (const [name, body, info] of cases) {
    it(`gives the same verdict as the event loop: ${name}`, async () => {
      const local = await feed(new BodyInspector(profile, info), body);
      const remote = await feed(pool.inspector(profile, info), body);
      expect(remote).toEqual(local);
    });
  }

  it('reports a block once the chunk is scanned, before the body ends', async () => {
    const insp = pool.inspector(profile, { contentType: 'text/plain', direction: 'upload' });
    // Enough text after the card that the scanner does not keep it back for the next chunk.
    insp.write(Buffer.concat([Buffer.from(`first part, card ${CARD}, then `), Buffer.alloc(200 * 1024, 'more text ')]));
    expect(insp.blocked).toBe(false); // not scanned yet: the worker has it
    await insp.sync();
    expect(insp.blocked).toBe(true);
    expect((await insp.end()).reason).toBe('dlp_match');
  });

  it('makes the request path wait when too many chunks are on their way', async () => {
    const insp = pool.inspector(profile, { contentType: 'text/plain', direction: 'upload' });
    const chunk = Buffer.alloc(64 * 1024, 'lorem ipsum ');
    let refused = 0;
    for (let i = 0; i < 32; i++) if (!insp.write(chunk)) { refused++; await insp.drained(); }
    expect(refused).toBeGreaterThan(0);
    expect((await insp.end()).scannedBytes).toBe(32 * 64 * 1024);
  });

  it('fails closed when a worker dies mid-body (dlp_error), and a new worker takes its place', async () => {
    const one = new ScanPool(1, (e) => errors.push(e));
    try {
      const insp = one.inspector(profile, { contentType: 'text/plain', direction: 'upload' });
      const before = errors.length;
      const dead = one.threads[0]!;
      insp.write(Buffer.alloc(256 * 1024, 'some text '));
      await dead.terminate();
      await insp.sync(); // answered by the failure if not by the worker: never left waiting
      expect(insp.write(Buffer.from('more'))).toBe(true); // ignored, never waits
      await insp.drained();
      const v = await insp.end();
      expect(v).toMatchObject({ action: 'block', reason: 'dlp_error' });
      expect(insp.blocked).toBe(true);
      expect(errors.length).toBe(before + 1);
      expect(one.threads[0]).not.toBe(dead);
      const next = await feed(one.inspector(profile, { contentType: 'text/plain', direction: 'upload' }), Buffer.from(`card ${CARD}`));
      expect(next.reason).toBe('dlp_match');
    } finally {
      await one.close();
    }
  });

  it('blocks what is still being scanned when the pool closes, and a dropped body frees its scan', async () => {
    const two = new ScanPool(1, (e) => errors.push(e));
    const dropped = two.inspector(profile, { contentType: 'text/plain', direction: 'upload' });
    dropped.write(Buffer.from('partial body'));
    dropped.drop();
    expect((await dropped.end()).reason).toBe('dlp_error');
    // Abandoned without a word: the sweep forgets bodies untouched for long; active ones stay.
    const abandoned = two.inspector(profile, { contentType: 'text/plain', direction: 'upload' });
    abandoned.write(Buffer.from('partial body'));
    two.sweep(Date.now() - 60_000);
    expect(abandoned.blocked).toBe(false);
    two.sweep(Date.now() + 1);
    expect(abandoned.blocked).toBe(true);
    expect((await abandoned.end()).reason).toBe('dlp_error');
    const open = two.inspector(profile, { contentType: 'text/plain', direction: 'upload' });
    open.write(Buffer.from('partial body'));
    await two.close();
    expect(await open.end()).toMatchObject({ action: 'block', reason: 'dlp_error' });
    // After close, bodies are scanned on the event loop.
    expect((await feed(two.inspector(profile, { contentType: 'text/plain', direction: 'upload' }), Buffer.from(`card ${CARD}`))).reason).toBe('dlp_match');
  });
});
