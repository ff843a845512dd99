import { createPacResolver } from 'pac-resolver';
import { chromium } from 'playwright-core';
import { QuickJS } from 'quickjs-wasi';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDns, type TestDns } from './helpers/dns-server.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { startTestProxy, type TestProxy } from './helpers/proxy.js';

async function pacFor(proxy: TestProxy): Promise<{ text: string; find: (url: string) => Promise<string>; type: string | undefined }> {
  const res = await request(`${proxy.adminUrl}/proxy.pac`);
  const text = await res.body.text();
  const vm = await QuickJS.create();
  return { text, find: createPacResolver(vm, text), type: res.headers['content-type'] as string | undefined };
}

describe('PAC file', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startTestProxy({
      pac: { proxy: 'proxy.corp.example:3128', direct_domains: ['intranet.corp.example', '.internal.example', '*.svc.example'], direct_cidrs: ['10.0.0.0/8', '192.168.10.0/24'] },
    });
  });
  afterAll(() => proxy.close());

  it('is served at /proxy.pac and /wpad.dat with the PAC media type', async () => {
    const pac = await pacFor(proxy);
    expect(pac.type).toBe('application/x-ns-proxy-autoconfig');
    const wpad = await request(`${proxy.adminUrl}/wpad.dat`);
    expect(await wpad.body.text()).toBe(pac.text);
  });

  it.each([
    ['http://intranet.corp.example/', 'DIRECT'],
    ['https://INTRANET.corp.example./x', 'DIRECT'],
    ['http://www.intranet.corp.example/', 'PROXY proxy.corp.example:3128'],
    ['http://internal.example/', 'DIRECT'],
    ['http://a.b.internal.example/', 'DIRECT'],
    ['http://notinternal.example/', 'PROXY proxy.corp.example:3128'],
    ['http://api.svc.example/', 'DIRECT'],
    ['http://10.20.30.40/', 'DIRECT'],
    ['http://192.168.10.7/', 'DIRECT'],
    ['http://192.168.11.7/', 'PROXY proxy.corp.example:3128'],
    ['https://example.com/', 'PROXY proxy.corp.example:3128'],
  ])('%s -> %s (no DIRECT fallback for the internet)', async (url, expected) => {
    const pac = await pacFor(proxy);
    expect(await pac.find(url)).toBe(expected);
  });

  it('sends browsers DIRECT to the sign-in portal (through the proxy it would be refused as the proxy itself)', async () => {
    const withPortal = await startTestProxy({ identity: { sign_in: { portal_url: 'https://login.corp.example:8443/' } } });
    try {
      const pac = await pacFor(withPortal);
      expect(await pac.find('https://login.corp.example:8443/auth/login')).toBe('DIRECT');
      expect(await pac.find('https://example.com/')).toBe(`PROXY 127.0.0.1:${withPortal.port}`);
    } finally {
      await withPortal.close();
    }
    // Without identity there is no portal, and nothing extra goes DIRECT.
    expect(await (await pacFor(proxy)).find('https://login.corp.example/')).toBe('PROXY proxy.corp.example:3128');
  });

  it('adds a DIRECT fallback only when configured', async () => {
    const open = await startTestProxy({ pac: { fallback_direct: true } });
    try {
      const pac = await pacFor(open);
      expect(await pac.find('https://example.com/')).toBe(`PROXY 127.0.0.1:${open.port}; DIRECT`);
    } finally {
      await open.close();
    }
  });
});

describe('headless Chromium with --proxy-pac-url', () => {
  let proxy: TestProxy;
  let origin: Origin;
  let dns: TestDns;
  beforeAll(async () => {
    origin = await startOrigin({ handler: (_q, res) => { res.setHeader('content-type', 'text/html'); res.end('<title>through the proxy</title><h1>hello</h1>'); } });
    dns = await startDns({ 'app.test': ['127.0.0.2'] });
    proxy = await startTestProxy({ dns: { servers: [dns.address] } }, { allow_ranges: ['127.0.0.2/32'] });
  });
  afterAll(async () => {
    await proxy.close();
    await origin.close();
    dns.close();
  });

  it('loads a page through the proxy chosen by the PAC file, seen in the access log', async () => {
    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: [
        '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', `--proxy-pac-url=${proxy.adminUrl}/proxy.pac`,
      ],
    });
    try {
      const page = await browser.newPage();
      const res = await page.goto(`http://app.test:${origin.port}/page`);
      expect(res?.status()).toBe(200);
      expect(await page.title()).toBe('through the proxy');
      const line = await proxy.waitForAccess((l) => typeof l.url === 'string' && l.url.endsWith('/page'));
      expect(line).toMatchObject({ host: 'app.test', resolved_ip: '127.0.0.2', status: 200, decision: 'allow' });
      expect(String(line.user_agent)).toMatch(/Chrome/);
    } finally {
      await browser.close();
    }
  });
});
