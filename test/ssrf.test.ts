import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AddressGuard, unmapV4 } from '../src/egress/addresses.js';
import { startDns, type TestDns } from './helpers/dns-server.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { startTestProxy, type TestProxy } from './helpers/proxy.js';
import { rawExchange } from './helpers/raw.js';
import { cleanEnv, run } from './helpers/run.js';

describe('address guard', () => {
  const guard = new AddressGuard(['127.0.0.2/32', 'fd12::/16']);
  it.each([
    ['127.0.0.1', 'denied'], ['127.255.255.254', 'denied'], ['10.1.2.3', 'denied'], ['172.16.0.1', 'denied'],
    ['172.31.255.255', 'denied'], ['192.168.1.1', 'denied'], ['100.64.0.1', 'denied'], ['169.254.169.254', 'denied'],
    ['0.0.0.0', 'denied'], ['224.0.0.1', 'denied'], ['239.255.255.250', 'denied'], ['240.0.0.1', 'denied'],
    ['255.255.255.255', 'denied'], ['192.0.2.1', 'denied'], ['198.18.0.1', 'denied'],
    ['::1', 'denied'], ['::', 'denied'], ['fd00::1', 'denied'], ['fc00::1', 'denied'], ['fe80::1', 'denied'],
    ['ff02::1', 'denied'], ['fd00:ec2::254', 'denied'], ['::ffff:127.0.0.1', 'denied'], ['::ffff:7f00:1', 'denied'],
    ['::ffff:169.254.169.254', 'denied'], ['::ffff:10.0.0.1', 'denied'], ['64:ff9b::a00:1', 'denied'], ['2002:a00:1::', 'denied'],
    ['not-an-ip', 'denied'],
    ['93.184.216.34', 'public'], ['8.8.8.8', 'public'], ['172.32.0.1', 'public'], ['2606:4700::1111', 'public'],
    ['127.0.0.2', 'allowed_internal'], ['::ffff:127.0.0.2', 'allowed_internal'], ['fd12::5', 'allowed_internal'],
  ])('%s is %s', (ip, verdict) => {
    expect(guard.check(ip)).toBe(verdict);
  });

  it('unmaps both spellings of IPv4-mapped IPv6', () => {
    expect(unmapV4('::ffff:127.0.0.1')).toBe('127.0.0.1');
    expect(unmapV4('::FFFF:7f00:0001')).toBe('127.0.0.1');
    expect(unmapV4('2001:db8::1')).toBe('2001:db8::1');
  });
});

describe('the proxy denies internal destinations on the resolved address', () => {
  let proxy: TestProxy;
  let dns: TestDns;
  let origin: Origin;

  beforeAll(async () => {
    origin = await startOrigin({ host: '127.0.0.2' });
    dns = await startDns({
      'rebind.test': ['127.0.0.1'],
      'mixed.test': ['127.0.0.2', '127.0.0.1'],
      'ok.test': ['127.0.0.2'],
      'v6only.test': ['::1'],
    });
    proxy = await startTestProxy({ dns: { servers: [dns.address] } }, { allow_ranges: ['127.0.0.2/32'] });
  });
  afterAll(async () => {
    await proxy.close();
    await origin.close();
    dns.close();
  });

  // Only spellings of loopback (and 0.0.0.0, which also means this host) are sent through the proxy
  // here: were the guard ever broken, the proxy would dial them, and it must never dial anything
  // off this machine. Every other range is proven on the guard itself, above (same code, no dial).
  const denied = [
    'http://127.0.0.1/', 'http://127.5.6.7/', 'http://0.0.0.0/', 'http://[::1]/', 'http://[::ffff:127.0.0.1]/',
    'http://[::ffff:7f00:1]/', 'http://2130706433/', 'http://0x7f.0.0.1/', 'http://017700000001/', 'http://127.1/',
    'http://rebind.test/', 'http://mixed.test/', 'http://v6only.test/',
  ];
  it.each(denied)('%s -> 403 dest_private_address', async (url) => {
    const r = await run('curl', ['-sS', '-i', '-x', proxy.url, url], { env: cleanEnv() });
    expect(r.stdout).toMatch(/^HTTP\/1\.1 403/);
    expect(r.stdout).toMatch(/x-egress-reason: dest_private_address/i);
  });

  it('logs the canonical host and reason for a denied numeric spelling', async () => {
    await run('curl', ['-sS', '-x', proxy.url, 'http://2130706433/decimal'], { env: cleanEnv() });
    const line = await proxy.waitForAccess((l) => typeof l.url === 'string' && l.url.endsWith('/decimal'));
    expect(line).toMatchObject({ host: '127.0.0.1', reason: 'dest_private_address', decision: 'deny', status: 403 });
  });

  it('denies CONNECT to internal addresses too', async () => {
    for (const t of ['127.0.0.1:443', '[::1]:443', '[::ffff:127.0.0.1]:443', 'rebind.test:443']) {
      const res = await rawExchange(proxy.port, `CONNECT ${t} HTTP/1.1\r\nHost: ${t}\r\n\r\n`);
      expect(res, t).toMatch(/x-egress-reason: dest_private_address/i);
    }
  });

  it('reaches a name that resolves to an allowed range, dialling the checked address', async () => {
    const r = await run('curl', ['-sS', '-x', proxy.url, `http://ok.test:${origin.port}/named`], { env: cleanEnv() });
    expect(JSON.parse(r.stdout)).toMatchObject({ url: '/named', host: `ok.test:${origin.port}` });
    const line = await proxy.waitForAccess((l) => typeof l.url === 'string' && l.url.endsWith('/named'));
    expect(line).toMatchObject({ host: 'ok.test', resolved_ip: '127.0.0.2', status: 200 });
  });

  it('answers 502 dns_failure for a name that does not resolve', async () => {
    const r = await run('curl', ['-sS', '-i', '-x', proxy.url, 'http://nxdomain.test/'], { env: cleanEnv() });
    expect(r.stdout).toMatch(/^HTTP\/1\.1 502/);
    expect(r.stdout).toMatch(/x-egress-reason: dns_failure/i);
  });

  it('refuses requests addressed to the proxy itself, even when its range is allowed', async () => {
    const open = await startTestProxy({ allow_ranges: ['127.0.0.0/8'] }, { allow_ranges: [] });
    try {
      for (const url of [`http://127.0.0.1:${open.port}/`, `${open.adminUrl}/healthz`, `http://127.0.0.1:${open.port}/x`]) {
        const r = await run('curl', ['-sS', '-i', '-x', open.url, url], { env: cleanEnv() });
        expect(r.stdout, url).toMatch(/^HTTP\/1\.1 508/);
        expect(r.stdout, url).toMatch(/x-egress-reason: proxy_loop/i);
      }
    } finally {
      await open.close();
    }
  });

  it('detects a loop through its own Via entry', async () => {
    const r = await run('curl', ['-sS', '-i', '-x', proxy.url, '-H', 'Via: 1.1 test-node (egress-proxy)', `${origin.url}/loop`], { env: cleanEnv() });
    expect(r.stdout).toMatch(/x-egress-reason: proxy_loop/i);
    expect(origin.seen.find((s) => s.url === '/loop')).toBeUndefined();
  });
});

describe('--allow-range and policy allow_ranges open named internal ranges', () => {
  it('allows 127.0.0.7 only when allowed, and still denies 127.0.0.1', async () => {
    const origin = await startOrigin({ host: '127.0.0.7' });
    const closed = await startTestProxy({}, { allow_ranges: [] });
    const opened = await startTestProxy({ allow_ranges: ['127.0.0.7/32'] }, { allow_ranges: [] });
    try {
      const a = await run('curl', ['-sS', '-i', '-x', closed.url, `${origin.url}/x`], { env: cleanEnv() });
      expect(a.stdout).toMatch(/dest_private_address/);
      const b = await run('curl', ['-sS', '-x', opened.url, `${origin.url}/x`], { env: cleanEnv() });
      expect(JSON.parse(b.stdout).url).toBe('/x');
      const c = await run('curl', ['-sS', '-i', '-x', opened.url, 'http://127.0.0.1:9/'], { env: cleanEnv() });
      expect(c.stdout).toMatch(/dest_private_address/);
    } finally {
      await Promise.all([closed.close(), opened.close(), origin.close()]);
    }
  });
});
