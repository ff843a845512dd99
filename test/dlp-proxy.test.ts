import { mkdtempSync, readFileSync, writeFileSync, cpSync, mkdirSync, openSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { constants as zlibConstants, createGzip, gzipSync } from 'node:zlib';
import { once } from 'node:events';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCa } from '../src/inspection/ca.js';
import { startCIcap, type CIcap } from './helpers/c-icap.js';
import { startDns, type TestDns } from './helpers/dns-server.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { makeCa, makeLeaf } from './helpers/pki.js';
import { startTestProxy, type TestProxy } from './helpers/proxy.js';
import { cleanEnv, run } from './helpers/run.js';
import { openSocket } from './helpers/raw.js';

const CARD = '4111 1111 1111 1111';
const KEY = '-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n-----END RSA PRIVATE KEY-----\n';

let dir: string;
let origin: Origin;
let files: Origin;
let secure: Origin;
let dns: TestDns;
let icap: CIcap;
let proxy: TestProxy;
/** The same policies, with uploads scanned in worker threads (inspection.dlp_workers) and streamed past hold_bytes (spool_bytes: 0). */
let workers: TestProxy;
/** The same policies on the event loop, streaming past hold_bytes (spool_bytes: 0). */
let streamer: TestProxy;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'egress-dlp-'));
  origin = await startOrigin({ host: '127.0.0.2' });
  // Downloads: a Windows executable named like a picture, a text file, and a text with a secret.
  const pe = Buffer.alloc(4096);
  pe.write('MZ', 0);
  pe.writeUInt32LE(0x80, 0x3c);
  pe.write('PE\0\0', 0x80, 'latin1');
  files = await startOrigin({
    host: '127.0.0.4',
    handler: (req, res) => {
      if (req.url!.endsWith('.jpg')) { res.setHeader('content-type', 'image/jpeg'); res.end(pe); return; }
      res.setHeader('content-type', 'text/plain');
      res.end(req.url!.includes('secret') ? 'the TOPSECRET plans' : 'just some text');
    },
  });
  const originCa = makeCa('dlp origin CA');
  writeFileSync(join(dir, 'origin-ca.pem'), originCa.cert);
  secure = await startOrigin({ host: '127.0.0.3', tls: makeLeaf(originCa, ['secure.test'], ['127.0.0.3']) });
  dns = await startDns({ 'secure.test': ['127.0.0.3'] });
  icap = await startCIcap({
    filterRules: [
      'srv_content_filtering.Match Secret body /TOPSECRET/ score=10',
      'srv_content_filtering.Match Card body /CARD-[0-9]+/ score=1 info{MASK}=CARD-XXXX',
      'srv_content_filtering.Action block score{Secret>5}',
      'srv_content_filtering.Action replace score{Card>0} replaceInfo=MASK',
    ],
  });
  initCa(join(dir, 'ca'));
  const inspection = { enabled: true, ca_dir: join(dir, 'ca'), upstream_ca_file: join(dir, 'origin-ca.pem'), hold_bytes: 1 << 20, icap: { reqmod_url: icap.url('filter'), respmod_url: icap.url('filter'), timeout_ms: 2000 } };
  proxy = await startTestProxy({ dns: { servers: [dns.address] }, inspection });
  // The shipped default profile, plus the rules that apply it.
  mkdirSync(join(proxy.dir, 'policies', 'dlp'));
  cpSync(join(import.meta.dirname, '..', 'policies', 'dlp', 'default.yaml'), join(proxy.dir, 'policies', 'dlp', 'default.yaml'));
  // Bulk uploads: scanned whole, however large (the default profile stops at 16 MiB).
  writeFileSync(join(proxy.dir, 'policies', 'dlp', 'downloads.yaml'), stringify({
    version: 'v1', profiles: { nodownload: { detectors: [], file_types: { block: ['executable'], direction: 'download' } } },
  }));
  writeFileSync(join(proxy.dir, 'policies', 'dlp', 'bulk.yaml'), stringify({
    version: 'v1', profiles: { bulk: { detectors: [{ builtin: 'credit_card', action: 'block' }], max_scan_bytes: '512MiB', oversize: 'block' } },
  }));
  writeFileSync(join(proxy.dir, 'policies', 'rules.yaml'), stringify({
    version: 'v1',
    rules: [
      { id: 'icap-path', action: 'allow', dlp: ['icap'], when: { paths: ['/icap'] } },
      { id: 'bulk-path', action: 'allow', dlp: ['bulk'], when: { paths: ['/big', '/w/big', '/s/big'] } },
      { id: 'downloads', action: 'allow', dlp: ['nodownload'], when: { paths: ['/dl/'] } },
      { id: 'icap-downloads', action: 'allow', dlp: ['icap'], when: { paths: ['/scan/'] } },
      { id: 'inspect-secure', action: 'allow', inspect: true, dlp: ['default'], when: { apps: ['secure'] } },
      { id: 'dlp-everything', action: 'allow', dlp: ['default'] },
    ],
    apps: { secure: { hosts: ['secure.test'] } },
  }));
  expect(await proxy.running.reload()).toBe(true);
  workers = await startTestProxy({ dns: { servers: [dns.address] }, inspection: { ...inspection, dlp_workers: 2, spool_bytes: 0 } });
  streamer = await startTestProxy({ dns: { servers: [dns.address] }, inspection: { ...inspection, spool_bytes: 0 } });
  for (const p of [workers, streamer]) {
    cpSync(join(proxy.dir, 'policies'), join(p.dir, 'policies'), { recursive: true });
    expect(await p.running.reload()).toBe(true);
  }
}, 30_000);

afterAll(async () => {
  await workers?.close();
  await streamer?.close();
  await proxy?.close();
  await Promise.all([origin?.close(), files?.close(), secure?.close(), icap?.stop()]);
  dns?.close();
});

const post = (p: TestProxy, path: string, args: string[]) =>
  run('curl', ['-sS', '-i', '--max-time', '20', '-x', p.url, ...args, `${origin.url}${path}`], { env: cleanEnv() });
const rawLog = (p: TestProxy = proxy): string => { p.lines(); return readFileSync(join(p.dir, 'proxy.log'), 'utf8'); };

/** POSTs `body` through `p` in 8 KiB writes (each after the last is taken); resolves with the status line. */
async function trickle(p: TestProxy, path: string, type: string, encoding: string | undefined, body: Buffer): Promise<string> {
  const sock = await openSocket(p.port);
  let answer = '';
  sock.on('data', (d: Buffer) => { answer += d.toString('latin1'); });
  // Plain listeners, not events.once: an EPIPE or reset when the proxy cuts the upload must not throw.
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  sock.on('error', () => { /* the proxy may cut the upload: that is the point */ });
  sock.write(`POST ${origin.url}${path} HTTP/1.1\r\nHost: ${new URL(origin.url).host}\r\nContent-Type: ${type}\r\n` +
    `${encoding ? `Content-Encoding: ${encoding}\r\n` : ''}Content-Length: ${body.length}\r\nConnection: close\r\n\r\n`);
  for (let o = 0; o < body.length && !answer && !sock.destroyed; o += 8192) {
    if (!sock.write(body.subarray(o, o + 8192))) await Promise.race([new Promise((r) => sock.once('drain', r)), closed]);
    await new Promise((r) => setImmediate(r));
  }
  await Promise.race([closed, new Promise((r) => setTimeout(r, 5000))]);
  sock.destroy();
  return answer.split('\r\n')[0] ?? '';
}

/** The upload checks, through one proxy; `at` prefixes the paths so each proxy's requests stay apart at the origin. */
function uploadChecks(p: () => TestProxy, at: string, spooled: boolean): void {
  it('blocks a card number: 403 with an incident id, the origin receives nothing, the log masks it', async () => {
    const r = await post(p(), `${at}/card`, ['--data-binary', `order=1&card=${CARD}&note=thanks`]);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 403 /);
    expect(r.stdout).toMatch(/x-egress-reason: dlp_match/i);
    const incident = /Incident (inc-[a-z0-9-]+)/.exec(r.stdout)?.[1];
    expect(incident).toBeDefined();
    expect(origin.seen.some((s) => s.url === `${at}/card`)).toBe(false);
    const line = await p().waitForAccess((l) => String(l.url).endsWith(`${at}/card`));
    expect(line).toMatchObject({ decision: 'deny', reason: 'dlp_match', incident, rule: 'dlp-everything' });
    expect(String(line.dlp)).toContain('credit_card:1');
    expect(String(line.dlp)).toMatch(/4111\*+1111/);
    expect(rawLog(p())).not.toContain('4111 1111 1111 1111');
    expect(rawLog(p())).not.toContain('4111111111111111');
  });

  it('lets a clean upload through with its body intact', async () => {
    const r = await post(p(), `${at}/clean`, ['--data-binary', 'hello=world&n=12345']);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 200 /);
    expect(origin.seen.find((s) => s.url === `${at}/clean`)!.body!.toString()).toBe('hello=world&n=12345');
  });

  it('finds a secret inside a gzip body, a multipart file and base64 inside JSON', async () => {
    const gz = join(dir, 'body.gz');
    writeFileSync(gz, gzipSync(Buffer.from(`{"note":"pay with ${CARD}"}`)));
    const a = await post(p(), `${at}/gz`, ['-H', 'Content-Encoding: gzip', '-H', 'Content-Type: application/json', '--data-binary', `@${gz}`]);
    expect(a.stdout).toMatch(/x-egress-reason: dlp_match/i);
    const keyFile = join(dir, 'id_rsa.txt');
    writeFileSync(keyFile, KEY);
    const b = await post(p(), `${at}/multipart`, ['-F', 'comment=see attached', '-F', `file=@${keyFile}`]);
    expect(b.stdout).toMatch(/x-egress-reason: dlp_match/i);
    const c = await post(p(), `${at}/b64`, ['-H', 'Content-Type: application/json', '--data-binary', JSON.stringify({ blob: Buffer.from(`backup ${KEY}`).toString('base64') })]);
    expect(c.stdout).toMatch(/x-egress-reason: dlp_match/i);
    expect(origin.seen.some((s) => [`${at}/gz`, `${at}/multipart`, `${at}/b64`].includes(s.url))).toBe(false);
  });

  it('blocks an executable upload by its magic bytes, whatever its name', async () => {
    const exe = join(dir, 'holiday.jpg');
    const pe = Buffer.alloc(512);
    pe.write('MZ', 0);
    pe.writeUInt32LE(0x80, 0x3c);
    pe.write('PE\0\0', 0x80, 'latin1');
    writeFileSync(exe, pe);
    const r = await post(p(), `${at}/exe`, ['-F', `photo=@${exe};type=image/jpeg`]);
    expect(r.stdout).toMatch(/x-egress-reason: dlp_file_type/i);
  });

  it('alerts on a US SSN: allowed, logged with an incident id at warn level', async () => {
    const r = await post(p(), `${at}/ssn`, ['--data-binary', 'name=Jo&ssn=123-45-6789']);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 200 /);
    const line = await p().waitForAccess((l) => String(l.url).endsWith(`${at}/ssn`));
    expect(line.incident).toMatch(/^inc-/);
    expect(String(line.dlp)).toContain('us_ssn:1');
    expect(p().lines().some((l) => l.level === 'warn' && l.incident === line.incident)).toBe(true);
    expect(rawLog(p())).not.toContain('123-45-6789');
  });

  largeUploadChecks(p, at, spooled);
}

/**
 * Uploads larger than hold_bytes: `spooled`, the proxy holds them on disk until the verdict and
 * the destination gets nothing of a blocked one; otherwise (spool_bytes: 0) they stream while
 * scanned and the destination gets nothing from the secret on.
 */
function largeUploadChecks(p: () => TestProxy, at: string, spooled: boolean): void {
  /** What the destination got of an upload cut at byte `cut`: nothing at all when spooled (it was never asked). */
  const expectCutAt = (path: string, cut: number): void => {
    const seen = origin.seen.find((s) => s.url === `${at}${path}`);
    if (spooled) expect(seen).toBeUndefined();
    else expect(seen?.bodyBytes ?? 0).toBeLessThanOrEqual(cut);
  };
  it(`${spooled ? 'holds on disk' : 'streams'} an upload larger than hold_bytes (memory bounded) and blocks it when the secret comes at the end`, async () => {
    const big = join(dir, 'big.bin');
    const fd = openSync(big, 'w');
    const block = Buffer.alloc(1 << 20, 'lorem ipsum dolor sit amet 0123456789 ');
    for (let i = 0; i < 200; i++) writeSync(fd, block);
    writeSync(fd, Buffer.from(` card ${CARD} `));
    closeSync(fd);
    const before = process.memoryUsage();
    const r = await post(p(), `${at}/big`, ['-H', 'Content-Type: text/plain', '--data-binary', `@${big}`]);
    const after = process.memoryUsage();
    const line = await p().waitForAccess((l) => String(l.url).endsWith(`${at}/big`), 20_000);
    expect(line).toMatchObject({ reason: 'dlp_match' });
    // The destination never got the whole upload (it was cut before its last chunk).
    expectCutAt('/big', 200 * (1 << 20));
    expect(r.stdout).not.toMatch(/^HTTP\/1\.1 200 /m);
    // 200 MiB went through this process; what it kept is far less.
    expect(after.arrayBuffers - before.arrayBuffers).toBeLessThan(64 << 20);
  }, 60_000);

  // Small writes, so the proxy reads the body in many chunks smaller than a scan segment.
  it(`sends nothing ${spooled ? 'at all' : 'from the secret on'} of a large upload: plain text, written in 8 KiB pieces`, async () => {
    const block = Buffer.alloc(3 << 20, 'lorem ipsum dolor sit amet 0123456789 ');
    const card = Buffer.from(` card ${CARD} `);
    const status = await trickle(p(), `${at}/mid`, 'text/plain', undefined, Buffer.concat([block, card, block]));
    // The 403 may be lost to the reset of a connection cut mid-upload; the log line is not.
    expect(status).not.toMatch(/^HTTP\/1\.1 2/);
    expect(await p().waitForAccess((l) => String(l.url).endsWith(`${at}/mid`), 20_000)).toMatchObject({ reason: 'dlp_match' });
    // Past hold_bytes (1 MiB) the body is spooled, or streams but never the card, nor anything after it.
    expectCutAt('/mid', block.length);
  }, 30_000);

  it(`sends nothing ${spooled ? 'at all' : 'from the secret on'} of a large JSON upload, however escaped the text before it`, async () => {
    // Six bytes on the wire per character the scanner sees (JSON unescaping in between).
    const before = `{"note":"${'\\u0041'.repeat(500_000)}`;
    const body = Buffer.from(`${before} card ${CARD} ${'\\u0041'.repeat(200_000)}"}`);
    const status = await trickle(p(), `${at}/midjson`, 'application/json', undefined, body);
    expect(status).not.toMatch(/^HTTP\/1\.1 2/);
    expect(await p().waitForAccess((l) => String(l.url).endsWith(`${at}/midjson`), 20_000)).toMatchObject({ reason: 'dlp_match' });
    expectCutAt('/midjson', before.length);
  }, 30_000);

  it(`sends nothing ${spooled ? 'at all' : 'from the secret on'} of a large gzip upload`, async () => {
    // Letters that do not compress away, so the compressed body is larger than what is held.
    let seed = 7;
    const letters = Buffer.alloc(4 << 20);
    for (let i = 0; i < letters.length; i++) { seed = (seed * 1103515245 + 12345) & 0x7fffffff; letters[i] = 97 + (seed % 26); }
    for (let i = 64; i < letters.length; i += 64) letters[i] = 32;
    const gz = createGzip();
    const parts: Buffer[] = [];
    gz.on('data', (d: Buffer) => parts.push(d));
    gz.write(letters.subarray(0, 2 << 20));
    await new Promise<void>((r) => gz.flush(zlibConstants.Z_FULL_FLUSH, () => r()));
    const clean = parts.reduce((n, b) => n + b.length, 0); // every byte up to here decodes to letters only
    gz.end(Buffer.concat([Buffer.from(` card ${CARD} `), letters.subarray(2 << 20)]));
    await once(gz, 'end');
    const status = await trickle(p(), `${at}/midgz`, 'text/plain', 'gzip', Buffer.concat(parts));
    expect(status).not.toMatch(/^HTTP\/1\.1 2/);
    expect(await p().waitForAccess((l) => String(l.url).endsWith(`${at}/midgz`), 20_000)).toMatchObject({ reason: 'dlp_match' });
    expectCutAt('/midgz', clean);
  }, 30_000);
}

describe('DLP on uploads through the proxy', () => {
  uploadChecks(() => proxy, '', true);
  describe('scanned in worker threads (dlp_workers: 2), streamed past hold_bytes (spool_bytes: 0)', () => uploadChecks(() => workers, '/w', false));
  describe('on the event loop, streamed past hold_bytes (spool_bytes: 0)', () => largeUploadChecks(() => streamer, '/s', false));

  it('inspects inside intercepted HTTPS the same way', async () => {
    const r = await run('curl', ['-sS', '-i', '--cacert', join(dir, 'ca', 'ca.pem'), '-x', proxy.url, '--data-binary', `card=${CARD}`, `https://secure.test:${secure.port}/pay`], { env: cleanEnv() });
    expect(r.stdout).toMatch(/^HTTP\/1\.1 200 Connection established\r\n\r\nHTTP\/1\.1 403 /);
    expect(r.stdout).toMatch(/x-egress-reason: dlp_match/i);
    expect(secure.seen.some((s) => s.url === '/pay')).toBe(false);
    expect(await proxy.waitForAccess((l) => String(l.url).endsWith('/pay'))).toMatchObject({ inspected: true, reason: 'dlp_match' });
  });

  it('asks the ICAP service (a real c-icap) when the rule names the icap profile: allow and block', async () => {
    // (c-icap's content filter reads text bodies.)
    const ok = await post(proxy, '/icap/ok', ['-H', 'Content-Type: text/plain', '--data-binary', 'nothing to see']);
    expect(ok.stdout).toMatch(/^HTTP\/1\.1 200 /);
    expect(await proxy.waitForAccess((l) => String(l.url).endsWith('/icap/ok'))).toMatchObject({ icap: 'reqmod:unmodified,respmod:unmodified' });
    const bad = await post(proxy, '/icap/bad', ['-H', 'Content-Type: text/plain', '--data-binary', 'this is TOPSECRET material']);
    expect(bad.stdout).toMatch(/^HTTP\/1\.1 403 /);
    expect(bad.stdout).toMatch(/x-egress-reason: icap_blocked/i);
    expect(origin.seen.some((s) => s.url === '/icap/bad')).toBe(false);
    expect(icap.accessLog()).toMatch(/REQMOD/);
  });

  it('forwards the body as the ICAP service rewrote it (with its new length)', async () => {
    const r = await post(proxy, '/icap/mod', ['-H', 'Content-Type: text/plain', '--data-binary', 'pay with CARD-123456 today']);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 200 /);
    const seen = origin.seen.find((s) => s.url === '/icap/mod')!;
    expect(seen.body!.toString()).toBe('pay with CARD-XXXX today');
    expect(seen.headers['content-length']).toBe(String(seen.body!.length));
    expect(await proxy.waitForAccess((l) => String(l.url).endsWith('/icap/mod'))).toMatchObject({ icap: 'reqmod:modified-request,respmod:unmodified' });
  });
});

describe('checks on downloads', () => {
  const get = (path: string) => run('curl', ['-sS', '-i', '--max-time', '10', '-x', proxy.url, `${files.url}${path}`], { env: cleanEnv() });

  it('refuses an executable download by its magic bytes (named .jpg, typed image/jpeg); other files pass intact', async () => {
    const exe = await get('/dl/holiday.jpg');
    expect(exe.stdout).toMatch(/^HTTP\/1\.1 403 /);
    expect(exe.stdout).toMatch(/x-egress-reason: dlp_file_type/i);
    expect(exe.stdout).not.toContain('MZ');
    expect(await proxy.waitForAccess((l) => String(l.url).endsWith('/dl/holiday.jpg'))).toMatchObject({ reason: 'dlp_file_type', decision: 'deny' });
    const txt = await get('/dl/notes.txt');
    expect(txt.stdout).toMatch(/^HTTP\/1\.1 200 /);
    expect(txt.stdout.endsWith('just some text')).toBe(true);
  });

  it('sends responses to the ICAP RESPMOD service: a clean one passes, a flagged one is replaced by its answer', async () => {
    const ok = await get('/scan/plain');
    expect(ok.stdout).toMatch(/^HTTP\/1\.1 200 /);
    expect(ok.stdout.endsWith('just some text')).toBe(true);
    const bad = await get('/scan/secret');
    expect(bad.stdout).not.toContain('TOPSECRET plans');
    expect(bad.stdout).not.toMatch(/^HTTP\/1\.1 200 /);
    expect(await proxy.waitForAccess((l) => String(l.url).endsWith('/scan/secret'))).toMatchObject({ icap: 'reqmod:unmodified,respmod:blocked' });
    expect(icap.accessLog()).toMatch(/RESPMOD/);
  });
});

describe('ICAP service down', () => {
  it('fails closed by default (503 icap_unavailable, 413 icap_too_large) and open when configured, saying so in the log', async () => {
    const closedProxy = await startTestProxy({ inspection: { enabled: false, hold_bytes: 65_536, icap: { reqmod_url: 'icap://127.0.0.1:1/filter', timeout_ms: 1000 } } });
    const openProxy = await startTestProxy({ inspection: { enabled: false, hold_bytes: 65_536, icap: { reqmod_url: 'icap://127.0.0.1:1/filter', timeout_ms: 1000, fail_open: true } } });
    try {
      for (const p of [closedProxy, openProxy]) {
        writeFileSync(join(p.dir, 'policies', 'rules.yaml'), stringify({ version: 'v1', rules: [{ id: 'icap-all', action: 'allow', dlp: ['icap'] }] }));
        expect(await p.running.reload()).toBe(true);
      }
      const a = await run('curl', ['-sS', '-i', '-x', closedProxy.url, '--data-binary', 'x=1', `${origin.url}/down-closed`], { env: cleanEnv() });
      expect(a.stdout).toMatch(/^HTTP\/1\.1 503 /);
      expect(a.stdout).toMatch(/x-egress-reason: icap_unavailable/i);
      const b = await run('curl', ['-sS', '-i', '-x', openProxy.url, '--data-binary', 'x=1', `${origin.url}/down-open`], { env: cleanEnv() });
      expect(b.stdout).toMatch(/^HTTP\/1\.1 200 /);
      expect(await openProxy.waitForAccess((l) => String(l.url).endsWith('/down-open'))).toMatchObject({ icap: 'reqmod:error:icap_unavailable:open' });
      // Larger than the proxy holds for the ICAP service: refused, or let through unchecked and logged as such.
      const big = join(dir, 'icap-big.bin');
      writeFileSync(big, Buffer.alloc(200_000, 'x'));
      const c = await run('curl', ['-sS', '-i', '-x', closedProxy.url, '--data-binary', `@${big}`, `${origin.url}/big-closed`], { env: cleanEnv() });
      expect(c.stdout).toMatch(/x-egress-reason: icap_too_large/i);
      const d = await run('curl', ['-sS', '-i', '-x', openProxy.url, '--data-binary', `@${big}`, `${origin.url}/big-open`], { env: cleanEnv() });
      expect(d.stdout).toMatch(/^HTTP\/1\.1 200 /);
      expect(await openProxy.waitForAccess((l) => String(l.url).endsWith('/big-open'))).toMatchObject({ icap: 'reqmod:error:icap_too_large:open' });
    } finally {
      await closedProxy.close();
      await openProxy.close();
    }
  });

  it('refuses a policy whose rule names a DLP profile that does not exist (last good policy kept)', async () => {
    writeFileSync(join(proxy.dir, 'policies', 'typo.yaml'), stringify({ version: 'v1', rules: [{ id: 'typo', action: 'allow', dlp: ['defualt'] }] }));
    expect(await proxy.running.reload()).toBe(false);
    expect(JSON.stringify(proxy.running.runtime.policyStatus)).toContain('no DLP profile \\"defualt\\"');
    const { rmSync } = await import('node:fs');
    rmSync(join(proxy.dir, 'policies', 'typo.yaml'));
    expect(await proxy.running.reload()).toBe(true);
  });
});
