import { createHash, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCa } from '../src/inspection/ca.js';
import { startDns, type TestDns } from './helpers/dns-server.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { makeCa, makeLeaf } from './helpers/pki.js';
import { startTestProxy, type TestProxy } from './helpers/proxy.js';
import { cleanEnv, run } from './helpers/run.js';

// Destinations: trusted by the proxy through inspection.upstream_ca_file.
let dir: string;
let originCaPem: ReturnType<typeof makeCa>;
const originCa = (): ReturnType<typeof makeCa> => originCaPem;
let proxyCaFile: string;
let originCaFile: string;
let good: Origin;
let expired: Origin;
let selfSigned: Origin;
let wrongName: Origin;
let dns: TestDns;
let proxy: TestProxy;

const POLICY = `version: v1
default: allow
network:
  allow_ranges: [127.0.0.2/31, 127.0.0.4/30]
  connect_ports: ["1-65535"]
  http_ports: ["1-65535"]
apps:
  pinned: { hosts: [pinned.test] }
rules:
  - id: no-uploads
    action: deny
    message: Uploads are not allowed here.
    when: { methods: [POST], paths: [/upload] }
  - id: bypass-pinned
    action: allow
    inspect: false
    when: { apps: [pinned] }
  - id: inspect-all
    action: allow
    inspect: true
`;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'egress-mitm-'));
  originCaPem = makeCa('test origin CA');
  const originCa = originCaPem;
  originCaFile = join(dir, 'origin-ca.pem');
  writeFileSync(originCaFile, originCa.cert);
  const names = ['app.test', 'app2.test', 'warm.test', 'pinned.test'];
  good = await startOrigin({ host: '127.0.0.3', tls: makeLeaf(originCa, names, ['127.0.0.3']) });
  wrongName = await startOrigin({ host: '127.0.0.4', tls: makeLeaf(originCa, ['other.test'], ['127.0.0.99']) });
  selfSigned = await startOrigin({ host: '127.0.0.5', tls: (() => { const c = makeCa('self-signed'); return makeLeaf(c, names, ['127.0.0.5']); })() });
  expired = await startOrigin({ host: '127.0.0.6', tls: makeLeaf(originCa, names, ['127.0.0.6'], -2) });
  dns = await startDns({ 'app.test': ['127.0.0.3'], 'app2.test': ['127.0.0.3'], 'warm.test': ['127.0.0.3'], 'pinned.test': ['127.0.0.3'] });
  initCa(join(dir, 'ca'));
  proxyCaFile = join(dir, 'ca', 'ca.pem');
  proxy = await startTestProxy({
    dns: { servers: [dns.address] },
    inspection: { enabled: true, ca_dir: join(dir, 'ca'), upstream_ca_file: originCaFile, auto_bypass_after: 2 },
  });
  writeFileSync(join(proxy.dir, 'policies', 'test.yaml'), POLICY);
  expect(await proxy.running.reload()).toBe(true);
});

afterAll(async () => {
  await proxy.close();
  await Promise.all([good.close(), expired.close(), selfSigned.close(), wrongName.close()]);
  dns.close();
});

const curl = (args: string[]) => run('curl', ['-sS', '--max-time', '10', '-x', proxy.url, ...args], { env: cleanEnv() });

describe('TLS interception', () => {
  it('terminates TLS with a minted certificate and forwards inside, logged as inspected', async () => {
    const r = await curl(['--cacert', proxyCaFile, '-w', '\n%{http_code}', `https://app.test:${good.port}/inside?q=1`]);
    expect(r.code, r.stderr).toBe(0);
    const [body, code] = r.stdout.split('\n');
    expect(code).toBe('200');
    expect(JSON.parse(body!)).toMatchObject({ url: '/inside?q=1', host: `app.test:${good.port}` });
    const line = await proxy.waitForAccess((l) => l.kind === 'http' && String(l.url).startsWith('https://app.test'));
    expect(line).toMatchObject({ inspected: true, method: 'GET', rule: 'inspect-all', status: 200, resolved_ip: '127.0.0.3', client_ip: '127.0.0.1' });
    const tunnel = await proxy.waitForAccess((l) => l.kind === 'connect' && l.host === 'app.test');
    expect(tunnel).toMatchObject({ inspected: true, status: 200 });
  });

  it('shows the client a certificate from the proxy CA for the requested name', async () => {
    const r = await run('openssl', ['s_client', '-proxy', `127.0.0.1:${proxy.port}`, '-connect', `app.test:${good.port}`, '-servername', 'app.test', '-showcerts'], { input: '' });
    const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.stdout)?.[0];
    expect(pem).toBeDefined();
    const leaf = new X509Certificate(pem!);
    expect(leaf.issuer).toContain('egress-proxy interception CA');
    expect(leaf.subjectAltName).toBe('DNS:app.test');
    expect(leaf.checkIssued(new X509Certificate((await import('node:fs')).readFileSync(proxyCaFile)))).toBe(true);
  });

  it('decides on method and path inside the tunnel: a POST to /upload is refused and never reaches the origin', async () => {
    const before = good.seen.length;
    const r = await curl(['--cacert', proxyCaFile, '-i', '-d', 'secret=1', `https://app.test:${good.port}/upload`]);
    // curl -i prints the proxy's "200 Connection established" first, then the answer from inside.
    expect(r.stdout).toMatch(/^HTTP\/1\.1 200 Connection established\r\n\r\nHTTP\/1\.1 403/);
    expect(r.stdout).toMatch(/x-egress-reason: policy_denied/i);
    expect(r.stdout).toContain('Uploads are not allowed here.');
    expect(good.seen.length).toBe(before);
    await proxy.waitForAccess((l) => l.inspected === true && l.rule === 'no-uploads' && l.decision === 'deny');
  });

  it('forwards an allowed inspected POST with its body intact', async () => {
    const r = await curl(['--cacert', proxyCaFile, '--data-binary', 'a=1&b=two', `https://app.test:${good.port}/submit`]);
    expect(JSON.parse(r.stdout)).toMatchObject({ method: 'POST', url: '/submit' });
    const seen = good.seen.find((x) => x.url === '/submit')!;
    expect(seen.body?.toString()).toBe('a=1&b=two');
    expect(await proxy.waitForAccess((l) => String(l.url).endsWith('/submit'))).toMatchObject({ inspected: true, method: 'POST', status: 200 });
  });

  it('keeps one upstream connection per server name when names share an address', async () => {
    // Interleaved names on one address must not tear down each other's kept-alive connections.
    const dialled: string[] = [];
    const onSecure = (s: import('node:tls').TLSSocket): void => { dialled.push(String((s as unknown as { servername?: string }).servername)); };
    good.server.on('secureConnection', onSecure);
    try {
      for (const name of ['app.test', 'app2.test', 'app.test', 'app2.test', 'app.test']) {
        const r = await curl(['--cacert', proxyCaFile, '-w', '%{http_code}', '-o', '/dev/null', `https://${name}:${good.port}/pooled`]);
        expect(r.stdout, r.stderr).toBe('200');
      }
    } finally {
      good.server.off('secureConnection', onSecure);
    }
    expect(dialled.filter((n) => n === 'app2.test')).toHaveLength(1);
    expect(dialled.filter((n) => n === 'app.test').length).toBeLessThanOrEqual(1);
  });

  it('opens the verified connection to the destination during the client\'s handshake (preconnect), and uses it', async () => {
    const dialled: string[] = [];
    const onSecure = (s: import('node:tls').TLSSocket): void => { dialled.push(String((s as unknown as { servername?: string }).servername)); };
    good.server.on('secureConnection', onSecure);
    try {
      // A TLS handshake with the proxy and no request at all: the destination is already connected.
      const hs = await run('openssl', ['s_client', '-proxy', `127.0.0.1:${proxy.port}`, '-connect', `warm.test:${good.port}`, '-servername', 'warm.test', '-CAfile', proxyCaFile], { input: '' });
      expect(hs.stdout).toMatch(/Verify return code: 0/);
      for (let i = 0; i < 40 && !dialled.includes('warm.test'); i++) await new Promise((r) => setTimeout(r, 25));
      expect(dialled.filter((n) => n === 'warm.test')).toHaveLength(1);
      // A request that follows uses that connection: still one connection to the destination.
      const r = await curl(['--cacert', proxyCaFile, '-w', '%{http_code}', '-o', '/dev/null', `https://warm.test:${good.port}/warm`]);
      expect(r.stdout, r.stderr).toBe('200');
      expect(dialled.filter((n) => n === 'warm.test')).toHaveLength(1);
    } finally {
      good.server.off('secureConnection', onSecure);
    }
  });

  it('bypasses by policy from the SNI: the client sees the origin\'s own certificate', async () => {
    const r = await run('openssl', ['s_client', '-proxy', `127.0.0.1:${proxy.port}`, '-connect', `pinned.test:${good.port}`, '-servername', 'pinned.test'], { input: '' });
    expect(r.stdout).toMatch(/issuer=CN ?= ?test origin CA/);
    const line = await proxy.waitForAccess((l) => l.kind === 'connect' && l.host === 'pinned.test');
    expect(line).toMatchObject({ inspected: false, rule: 'bypass-pinned' });
  });

  it.each([
    ['expired', () => expired, 'upstream_cert_expired'],
    ['self-signed', () => selfSigned, 'upstream_cert_untrusted'],
    ['for another name', () => wrongName, 'upstream_cert_name_mismatch'],
  ])('never papers over an upstream certificate that is %s', async (_n, origin, reason) => {
    const o = origin();
    const r = await curl(['--cacert', proxyCaFile, '-i', '-H', 'Accept: text/html', `https://${o.host}:${o.port}/x`]);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 200 Connection established\r\n\r\nHTTP\/1\.1 502/);
    expect(r.stdout).toMatch(new RegExp(`x-egress-reason: ${reason}`, 'i'));
    expect(o.seen).toHaveLength(0);
  });

  it('offers TLS 1.2+ only and no weak suites to clients', async () => {
    const target = ['-proxy', `127.0.0.1:${proxy.port}`, '-connect', `app.test:${good.port}`, '-servername', 'app.test'];
    // SECLEVEL=0 makes this client willing to use old protocols and suites, so a failure is the proxy's refusal.
    for (const v of ['-tls1', '-tls1_1']) {
      const old = await run('openssl', ['s_client', ...target, v, '-cipher', 'DEFAULT@SECLEVEL=0'], { input: '' });
      expect(old.stdout, v).toMatch(/no peer certificate available/);
      expect(old.stdout, v).toMatch(/Cipher is \(NONE\)/);
    }
    const weak = await run('openssl', ['s_client', ...target, '-tls1_2', '-cipher', 'DES-CBC3-SHA:RC4-SHA:NULL-SHA256:EXP:aNULL:@SECLEVEL=0'], { input: '' });
    expect(weak.stdout).toMatch(/Cipher is \(NONE\)/);
    const ok = await run('openssl', ['s_client', ...target, '-tls1_2'], { input: '' });
    expect(ok.stdout).toMatch(/Protocol\s*:\s*TLSv1\.2/);
  });

  it('counts clients that refuse the certificate and bypasses the host after auto_bypass_after', async () => {
    const o = good;
    // curl without the proxy CA refuses our certificate, twice.
    for (let i = 0; i < 2; i++) {
      const r = await curl([`https://127.0.0.3:${o.port}/pinning`]);
      expect(r.code).not.toBe(0);
    }
    await proxy.waitForAccess((l) => l.kind === 'connect' && l.reason === 'client_tls_refused');
    // Third time the host is tunnelled untouched: the origin's own chain (trusted via --cacert origin CA).
    const r = await curl(['--cacert', originCaFile, `https://127.0.0.3:${o.port}/after-bypass`]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).url).toBe('/after-bypass');
    expect(proxy.lines().some((l) => l.msg === 'clients keep refusing the interception certificate; host now bypassed')).toBe(true);
    const status = (await (await fetch(`${proxy.adminUrl}/inspection/status`)).json()) as { refusals: Record<string, number>; auto_bypassed: string[]; leaves_minted: number };
    expect(status.refusals['127.0.0.3']).toBe(2);
    expect(status.auto_bypassed).toContain('127.0.0.3');
    expect(status.leaves_minted).toBeGreaterThan(0);
    // Protocol and cipher mismatches (the TLS 1.1 probes above, to app.test) are not counted as pinning.
    expect(proxy.running.runtime.inspection!.autoBypass.has('app.test')).toBe(false);
  });

  it('carries a WebSocket (wss) inside an intercepted tunnel after a real 101', async () => {
    const { createServer } = await import('node:https');
    const { WebSocketServer, WebSocket } = await import('ws');
    const tlsServer = createServer({ ...(await import('./helpers/pki.js')).makeLeaf(originCa(), ['app.test'], ['127.0.0.3']) });
    const wss = new WebSocketServer({ server: tlsServer });
    wss.on('connection', (ws) => ws.on('message', (m) => ws.send(`echo:${m.toString()}`)));
    tlsServer.listen(0, '127.0.0.3');
    await once(tlsServer, 'listening');
    const port = (tlsServer.address() as { port: number }).port;
    const { HttpsProxyAgent } = await import('./helpers/proxy-agent.js');
    try {
      const ws = new WebSocket(`wss://app.test:${port}/live`, { agent: new HttpsProxyAgent(proxy.port), ca: (await import('node:fs')).readFileSync(proxyCaFile) });
      await once(ws, 'open');
      ws.send('hi');
      const [msg] = (await once(ws, 'message')) as [Buffer];
      expect(msg.toString()).toBe('echo:hi');
      ws.close();
      const line = await proxy.waitForAccess((l) => l.kind === 'websocket' && String(l.url).includes('/live'));
      expect(line).toMatchObject({ status: 101, inspected: true, url: `wss://app.test:${port}/live` });
    } finally {
      wss.close();
      tlsServer.close();
    }
  });

  it('headless Chromium loads an HTTPS page through the proxy, inspected', async () => {
    const { readFileSync } = await import('node:fs');
    // Chromium trusts the shared leaf key by its SPKI hash (no system trust store is touched).
    const leafPem = proxy.running.runtime.inspection!.minter.certificate('app.test');
    const spki = new X509Certificate(leafPem).publicKey.export({ type: 'spki', format: 'der' });
    const hash = createHash('sha256').update(spki).digest('base64');
    expect(readFileSync(proxyCaFile, 'utf8')).toContain('BEGIN CERTIFICATE');
    // Chromium's own background requests also reach the proxy; its resolver is the test DNS, so they
    // end in dns_failure there and nothing leaves the machine.
    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium', headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', `--proxy-server=http://127.0.0.1:${proxy.port}`, `--ignore-certificate-errors-spki-list=${hash}`],
    });
    try {
      const page = await browser.newPage();
      const res = await page.goto(`https://app.test:${good.port}/browser`);
      expect(res?.status()).toBe(200);
      expect(await page.content()).toContain('/browser');
      const line = await proxy.waitForAccess((l) => String(l.url).endsWith('/browser'));
      expect(line).toMatchObject({ inspected: true, status: 200 });
      expect(String(line.user_agent)).toMatch(/Chrome/);
    } finally {
      await browser.close();
    }
  });
});
