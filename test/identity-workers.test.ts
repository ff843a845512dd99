import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startDevIdp, type DevIdp } from '../src/identity/dev-idp.js';
import { startCli, type CliProxy } from './helpers/cli.js';
import { startDns, type TestDns } from './helpers/dns-server.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { cleanEnv, run } from './helpers/run.js';
import { freePort } from './helpers/ports.js';
import { launchThroughProxy } from './helpers/browser.js';


let idp: DevIdp;
let dns: TestDns;
let origin: Origin;
let proxy: CliProxy;
let browser: Browser;
let portal: string;

beforeAll(async () => {
  const adminPort = await freePort();
  portal = `http://127.0.0.1:${adminPort}`;
  idp = await startDevIdp({ portal: { clientId: 'egress-proxy', clientSecret: 'workers-secret', redirectUris: [`${portal}/auth/callback`], postLogoutRedirectUris: [`${portal}/auth/signed-out`] } });
  dns = await startDns({ 'app.test': ['127.0.0.2'] });
  origin = await startOrigin({ host: '127.0.0.2', handler: (req, res) => res.end(`hello ${req.url}`) });
  const dir = mkdtempSync(join(tmpdir(), 'egress-idworkers-'));
  mkdirSync(join(dir, 'policies'));
  writeFileSync(join(dir, 'secret'), 'workers-secret', { mode: 0o600 });
  writeFileSync(join(dir, 'policies', 'p.yaml'), stringify({
    version: 'v1', default: 'deny',
    network: { allow_ranges: ['127.0.0.2/32'], http_ports: ['1-65535'], connect_ports: ['1-65535'] },
    rules: [{ id: 'signed-in', action: 'allow', when: { anonymous: false } }],
  }));
  writeFileSync(join(dir, 'config.yaml'), stringify({
    listen: '127.0.0.1:0', admin: `127.0.0.1:${adminPort}`, node_id: 'w', inspection: { enabled: false },
    dns: { servers: [dns.address] }, identity: { issuer: idp.issuer, revalidate_s: 1, sign_in: { client_secret_file: 'secret' } },
  }));
  proxy = await startCli(['--config', join(dir, 'config.yaml'), '--workers', '2']);
  // startCli returns at the first worker's ready line; wait for the second.
  for (let i = 0; i < 200 && proxy.stdout().split('"egress-proxy ready"').length - 1 < 2; i++) await new Promise((r) => setTimeout(r, 50));
  browser = await launchThroughProxy(proxy.url);
}, 60_000);

afterAll(async () => {
  await browser?.close();
  proxy?.child.kill('SIGTERM');
  if (proxy) await proxy.exited;
  await idp?.close();
  await origin?.close();
  dns?.close();
});

const access = (): Array<Record<string, unknown>> =>
  proxy.stdout().split('\n').filter((l) => l.includes('"type":"access"')).map((l) => JSON.parse(l) as Record<string, unknown>);

async function waitFor<T>(f: () => T | undefined, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('browser sign-in with --workers 2', () => {
  it('a sign-in on one worker admits the browser on every worker, and a sign-out ends it on every worker', async () => {
    const page = await browser.newPage();
    const app = `http://app.test:${origin.port}`;
    await page.goto(`${app}/start`);
    await page.waitForURL((u) => u.href.startsWith(`${idp.issuer}/interaction/`));
    await page.selectOption('#login', 'alice');
    await Promise.all([page.waitForURL(`${app}/start`), page.click('#signin')]);
    expect(await page.textContent('body')).toBe('hello /start');
    // New connections from the same address are spread over both workers; all know alice.
    for (let i = 0; i < 12; i++) {
      const r = await run('curl', ['-sS', '-x', proxy.url, '-w', ' %{http_code}', `${app}/n${i}`], { env: cleanEnv() });
      expect(r.stdout).toBe(`hello /n${i} 200`);
    }
    const lines = await waitFor(() => {
      const l = access().filter((x) => /\/n\d+$/.test(String(x.url)));
      return l.length === 12 ? l : undefined;
    });
    expect(new Set(lines.map((l) => l.worker))).toEqual(new Set([1, 2]));
    for (const l of lines) expect(l).toMatchObject({ auth: 'session', user: 'alice', groups: 'eng' });
    // Sign out (on whichever worker serves the portal): every worker forgets the binding.
    await page.goto(`${portal}/auth/`);
    await Promise.all([page.waitForURL((u) => u.href.includes('signed-out') || u.href.startsWith(idp.issuer)), page.click('#signout')]);
    await new Promise((r) => setTimeout(r, 300));
    for (let i = 0; i < 6; i++) {
      const r = await run('curl', ['-sS', '-o', '/dev/null', '-x', proxy.url, '-w', '%{http_code}', `${app}/after${i}`], { env: cleanEnv() });
      expect(r.stdout).toBe('407');
    }
    await page.close();
  }, 60_000);

  it('the dashboard shows the whole node: every worker\'s requests, merged by the supervisor', async () => {
    const before = access().filter((x) => x.user === 'alice' && x.decision === 'allow').length;
    expect(new Set(access().filter((x) => x.user === 'alice').map((l) => l.worker))).toEqual(new Set([1, 2]));
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${portal}/ui`);
    await page.waitForURL((u) => u.href.startsWith(`${idp.issuer}/interaction/`) || u.href === `${portal}/ui`);
    if (page.url() !== `${portal}/ui`) {
      await page.selectOption('#login', 'ada');
      await Promise.all([page.waitForURL(`${portal}/ui`), page.click('#signin')]);
    }
    // Whichever worker serves the data, it reports both workers' traffic.
    for (let i = 0; i < 4; i++) {
      const data = await context.request.get(`${portal}/ui/data.json?minutes=10`);
      expect(data.status()).toBe(200);
      const body = (await data.json()) as { stats: { top_users: { items: Array<[string, number]> }; nodes: Array<{ pid: number }> } };
      expect(Object.fromEntries(body.stats.top_users.items).alice).toBeGreaterThanOrEqual(before);
      expect(new Set(body.stats.nodes.map((n) => n.pid)).size).toBe(2);
    }
    await context.close();
  }, 60_000);
});
