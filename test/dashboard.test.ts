import { randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EncryptJWT } from 'jose';
import type { Browser, Page } from 'playwright-core';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startDevIdp, type DevIdp } from '../src/identity/dev-idp.js';
import { SESSION_COOKIE } from '../src/identity/sessions.js';
import { AccessRecord } from '../src/logging/access-record.js';
import { LiveStats, mergeSnapshots, RPS_SECONDS, type LiveSnapshot } from '../src/logging/live-stats.js';
import { launchThroughProxy } from './helpers/browser.js';
import { startDns, type TestDns } from './helpers/dns-server.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { freePort } from './helpers/ports.js';
import { startTestProxy, type TestProxy } from './helpers/proxy.js';
import { cleanEnv, run } from './helpers/run.js';

// ---------------------------------------------------------------- LiveStats, with real records

/** A minute boundary (epoch ms), so windows are easy to reason about. */
const T0 = 1_700_000_040_000;

function record(o: { decision: 'allow' | 'deny' | 'error'; reason?: AccessRecord['reason']; user?: string; service?: string; host?: string; rule?: string; status?: number; incident?: string; dlp?: string }): AccessRecord {
  const r = new AccessRecord('http', '127.0.0.9', 40000);
  r.method = 'GET';
  r.decision = o.decision;
  r.reason = o.reason ?? (o.decision === 'allow' ? 'allowed' : o.decision === 'deny' ? 'policy_denied' : 'upstream_refused');
  r.status = o.status ?? (o.decision === 'allow' ? 200 : o.decision === 'deny' ? 403 : 502);
  r.user = o.user;
  r.service = o.service;
  r.auth = o.user || o.service ? 'token' : 'anonymous';
  r.host = o.host;
  r.rule = o.rule;
  r.incident = o.incident;
  r.dlp = o.dlp;
  return r;
}

const names = (l: LiveSnapshot['top_users']): Record<string, number> => Object.fromEntries(l.items);

describe('LiveStats', () => {
  it('counts per second and per minute, and forgets what falls out of the window', () => {
    const s = new LiveStats({ node: 'n1', active: () => 7 });
    for (let i = 0; i < 3; i++) s.add(record({ decision: 'allow', user: 'alice', host: 'a.test' }), T0 + 1000);
    s.add(record({ decision: 'deny', service: 'ci-runner', host: 'b.test', rule: 'no-b' }), T0 + 2500);
    s.add(record({ decision: 'error', host: 'c.test', reason: 'upstream_refused' }), T0 + 65_000);
    s.add(record({ decision: 'error', host: 'd.test', reason: 'dns_failure' }), T0 + 65_200);
    s.add(record({ decision: 'error', reason: 'client_aborted' }), T0 + 65_300);

    const now = T0 + 65_500;
    const all = s.snapshot(10, now);
    expect(all.rps.end).toBe(Math.floor(now / 1000));
    expect(all.rps.allow).toHaveLength(RPS_SECONDS);
    const at = (ms: number): number => RPS_SECONDS - 1 - (all.rps.end - Math.floor(ms / 1000));
    expect(all.rps.allow[at(T0 + 1000)]).toBe(3);
    expect(all.rps.deny[at(T0 + 2500)]).toBe(1);
    expect(all.rps.error[at(T0 + 65_000)]).toBe(3);
    expect(all.rps.allow.reduce((a, b) => a + b) + all.rps.deny.reduce((a, b) => a + b) + all.rps.error.reduce((a, b) => a + b)).toBe(7);
    expect(all.totals).toEqual({ allow: 3, deny: 1, error: 3 });
    expect(names(all.top_users)).toEqual({ alice: 3, 'ci-runner': 1, anonymous: 3 });
    expect(all.top_users.items[0]).toEqual(['alice', 3]); // ties ranked by name: alice before anonymous
    expect(names(all.top_hosts)).toEqual({ 'a.test': 3, 'b.test': 1, 'c.test': 1, 'd.test': 1 });
    expect(all.upstream_per_minute).toHaveLength(10);
    expect(all.upstream_per_minute.slice(-2)).toEqual([0, 2]);
    expect(all.nodes).toEqual([{ node: 'n1', pid: process.pid, active: 7, requests: 7, upstream_errors: { upstream_refused: 1, dns_failure: 1 } }]);
    expect(all.recent_denies).toEqual([{ t: T0 + 2500, user: 'ci-runner', host: 'b.test', reason: 'policy_denied', rule: 'no-b', status: 403 }]);
    // Plain JSON: survives a round trip unchanged.
    expect(JSON.parse(JSON.stringify(all))).toEqual(all);

    // The last minute only: the current minute's records.
    const last = s.snapshot(1, now);
    expect(last.totals).toEqual({ allow: 0, deny: 0, error: 3 });
    expect(names(last.top_users)).toEqual({ anonymous: 3 });
    expect(last.upstream_per_minute).toEqual([2]);
    expect(last.recent_denies).toHaveLength(1); // recent lists are the last N, whatever the window

    // Twelve minutes on: the per-second ring and the minute buckets no longer hold any of it.
    const later = T0 + 12 * 60_000 + 500;
    s.add(record({ decision: 'allow', user: 'bob', host: 'e.test' }), later);
    const after = s.snapshot(10, later);
    expect(after.totals).toEqual({ allow: 1, deny: 0, error: 0 });
    expect(names(after.top_users)).toEqual({ bob: 1 });
    expect(after.nodes[0]!.upstream_errors).toEqual({});
    expect(after.rps.allow.reduce((a, b) => a + b) + after.rps.error.reduce((a, b) => a + b)).toBe(1);
    // A snapshot never asks for more minutes than are kept.
    expect(s.snapshot(600, later).minutes).toBe(10);
  });

  it('caps distinct users and hosts per minute, counting the overflow as other', () => {
    const s = new LiveStats({ node: 'n1', maxKeys: 3 });
    for (const u of ['u1', 'u2', 'u3', 'u4', 'u5']) s.add(record({ decision: 'allow', user: u, host: `${u}.test` }), T0);
    s.add(record({ decision: 'allow', user: 'u1', host: 'u1.test' }), T0 + 10); // a known key still counts
    const snap = s.snapshot(10, T0 + 1000);
    expect(names(snap.top_users)).toEqual({ u1: 2, u2: 1, u3: 1 });
    expect(snap.top_users.other).toBe(2);
    expect(snap.top_hosts.other).toBe(2);
    // Top lists are cut at 20 items; the rest joins other, so the sum stays exact.
    const wide = new LiveStats({ node: 'n1' });
    for (let i = 0; i < 30; i++) wide.add(record({ decision: 'allow', user: `user-${i}`, host: 'x.test' }), T0);
    const w = wide.snapshot(10, T0);
    expect(w.top_users.items).toHaveLength(20);
    expect(w.top_users.other).toBe(10);
  });

  it('keeps the last 50 denies and incidents, newest first, with the masked dlp field only', () => {
    const s = new LiveStats({ node: 'n1' });
    for (let i = 0; i < 60; i++) s.add(record({ decision: 'deny', user: `u${i}`, host: 'h.test', rule: `r${i}` }), T0 + i * 100);
    s.add(record({ decision: 'deny', reason: 'dlp_match', user: 'carol', host: 'up.test', rule: 'dlp', incident: 'inc-abc', dlp: 'credit_card:1[4111********1111]:block' }), T0 + 9000);
    s.add(record({ decision: 'allow', user: 'carol', host: 'up.test', incident: 'inc-def', dlp: 'us_ssn:1[***-**-6789]:alert' }), T0 + 9100);
    const snap = s.snapshot(10, T0 + 10_000);
    expect(snap.recent_denies).toHaveLength(50);
    expect(snap.recent_denies[0]).toMatchObject({ user: 'carol', reason: 'dlp_match' });
    expect(snap.recent_denies[1]).toMatchObject({ user: 'u59', rule: 'r59' });
    expect(snap.recent_denies.at(-1)).toMatchObject({ user: 'u11' });
    expect(snap.recent_incidents).toEqual([
      { t: T0 + 9100, user: 'carol', host: 'up.test', incident: 'inc-def', reason: 'allowed', dlp: 'us_ssn:1[***-**-6789]:alert' },
      { t: T0 + 9000, user: 'carol', host: 'up.test', incident: 'inc-abc', reason: 'dlp_match', dlp: 'credit_card:1[4111********1111]:block' },
    ]);
  });

  it('merges worker snapshots: seconds aligned, counts summed, lists re-ranked and interleaved', () => {
    const a = new LiveStats({ node: 'w1', active: () => 2 });
    const b = new LiveStats({ node: 'w2', active: () => 3 });
    a.add(record({ decision: 'allow', user: 'alice', host: 'a.test' }), T0 + 5000);
    a.add(record({ decision: 'deny', user: 'alice', host: 'x.test' }), T0 + 5100);
    b.add(record({ decision: 'allow', user: 'alice', host: 'a.test' }), T0 + 5200);
    b.add(record({ decision: 'allow', user: 'bob', host: 'b.test' }), T0 + 4300);
    b.add(record({ decision: 'deny', user: 'bob', host: 'y.test' }), T0 + 5400);
    b.add(record({ decision: 'error', host: 'c.test', reason: 'upstream_timeout' }), T0 + 6000);
    // Taken a second apart, as a real gather would be.
    const sa = a.snapshot(10, T0 + 6500);
    const sb = b.snapshot(10, T0 + 7500);
    const m = mergeSnapshots([sa, sb]);
    expect(m.rps.end).toBe(Math.floor((T0 + 7500) / 1000));
    const at = (ms: number): number => RPS_SECONDS - 1 - (m.rps.end - Math.floor(ms / 1000));
    expect(m.rps.allow[at(T0 + 5000)]).toBe(2);
    expect(m.rps.allow[at(T0 + 4300)]).toBe(1);
    expect(m.rps.deny[at(T0 + 5100)]).toBe(2);
    expect(m.rps.error[at(T0 + 6000)]).toBe(1);
    expect(m.totals).toEqual({ allow: 3, deny: 2, error: 1 });
    expect(m.top_users.items).toEqual([['alice', 3], ['bob', 2], ['anonymous', 1]]);
    expect(names(m.top_hosts)).toEqual({ 'a.test': 2, 'b.test': 1, 'c.test': 1, 'x.test': 1, 'y.test': 1 });
    expect(m.recent_denies.map((d) => d.user)).toEqual(['bob', 'alice']);
    expect(m.nodes.map((n) => [n.node, n.active, n.requests])).toEqual([['w1', 2, 2], ['w2', 3, 4]]);
    expect(m.upstream_per_minute.at(-1)).toBe(1);
    expect(mergeSnapshots([sa])).toBe(sa);
    expect(() => mergeSnapshots([])).toThrow(/no snapshot/);
  });

  it('stays cheap and bounded under many distinct hosts', () => {
    const s = new LiveStats({ node: 'n1', maxKeys: 2000 });
    const recs = Array.from({ length: 5000 }, (_, i) => record({ decision: i % 7 === 0 ? 'deny' : 'allow', user: `u${i % 3000}`, host: `h${i}.test` }));
    const start = performance.now();
    for (let i = 0; i < 200_000; i++) s.add(recs[i % 5000]!, T0 + i);
    const ms = performance.now() - start;
    expect(ms).toBeLessThan(2000);
    const snap = s.snapshot(10, T0 + 200_000);
    expect(snap.totals.allow + snap.totals.deny).toBe(200_000);
    // Each minute holds at most 2000 hosts; the rest is counted, not kept.
    expect(snap.top_hosts.items.reduce((a, [, c]) => a + c, 0) + snap.top_hosts.other).toBe(200_000);
    expect(snap.recent_denies).toHaveLength(50);
  });
});

// ---------------------------------------------------------------- the dashboard, end to end

const CARD = '4111 1111 1111 1111';
const HOSTILE = '<img src=x id=pwned onerror=alert(1)>';
let adminPort: number;
let portal: string;
let dir: string;
let key: Uint8Array;
let idp: DevIdp;
let dns: TestDns;
let origin: Origin;
let proxy: TestProxy;
let browser: Browser;
let appUrl: string;
let token: string;
let incident: string;

/** A request through the proxy with curl from 127.0.0.5 (not the browser's address, which sign-in binds). */
async function viaProxy(url: string, o: { auth?: string; cookie?: string; data?: string } = {}): Promise<{ status: number; body: string }> {
  const proxyUrl = o.auth ? `http://${o.auth}@127.0.0.1:${proxy.port}` : proxy.url;
  const args = ['-sS', '--max-time', '10', '-x', proxyUrl, '-o', '-', '-w', '\n%{http_code}', '--interface', '127.0.0.5'];
  if (o.cookie) args.push('-H', `Cookie: ${o.cookie}`);
  if (o.data) args.push('--data-binary', o.data);
  const r = await run('curl', [...args, url], { env: cleanEnv() });
  expect(r.code, r.stderr).toBe(0);
  const nl = r.stdout.lastIndexOf('\n');
  return { status: Number(r.stdout.slice(nl + 1)), body: r.stdout.slice(0, nl) };
}

/** Fills the dev IdP's sign-in form when it shows (the IdP may remember the user and skip it). */
async function signInAs(page: Page, user: string, until: (u: URL) => boolean): Promise<void> {
  await page.waitForURL((u) => u.href.startsWith(`${idp.issuer}/interaction/`) || until(u));
  if (page.url().startsWith(`${idp.issuer}/interaction/`)) {
    await page.selectOption('#login', user);
    await Promise.all([page.waitForURL(until), page.click('#signin')]);
  }
}

beforeAll(async () => {
  adminPort = await freePort();
  portal = `http://127.0.0.1:${adminPort}`;
  idp = await startDevIdp({
    portal: { clientId: 'egress-proxy', clientSecret: 'dash-secret', redirectUris: [`${portal}/auth/callback`], postLogoutRedirectUris: [`${portal}/auth/signed-out`] },
  });
  dir = mkdtempSync(join(tmpdir(), 'egress-dashboard-'));
  writeFileSync(join(dir, 'client-secret'), 'dash-secret\n', { mode: 0o600 });
  key = new Uint8Array(randomBytes(32));
  writeFileSync(join(dir, 'session.key'), Buffer.from(key).toString('hex') + '\n', { mode: 0o600 });
  dns = await startDns({ 'app.test': ['127.0.0.2'], 'blocked.test': ['127.0.0.2'] });
  origin = await startOrigin({ host: '127.0.0.2', handler: (req, res) => res.end(`hello ${req.url}`) });
  appUrl = `http://app.test:${origin.port}`;
  proxy = await startTestProxy({
    admin: `127.0.0.1:${adminPort}`,
    dns: { servers: [dns.address] },
    identity: { issuer: idp.issuer, sign_in: { client_secret_file: join(dir, 'client-secret'), session_key_file: join(dir, 'session.key') } },
  }, { default: 'deny' });
  mkdirSync(join(proxy.dir, 'policies', 'dlp'));
  cpSync(join(import.meta.dirname, '..', 'policies', 'dlp', 'default.yaml'), join(proxy.dir, 'policies', 'dlp', 'default.yaml'));
  writeFileSync(join(proxy.dir, 'policies', 'rules.yaml'), stringify({
    version: 'v1',
    apps: { blocked: { hosts: ['blocked.test'] } },
    rules: [
      { id: 'no-blocked', action: 'deny', when: { apps: ['blocked'] } },
      { id: 'identified', action: 'allow', dlp: ['default'], when: { anonymous: false } },
    ],
  }));
  expect(await proxy.running.reload()).toBe(true);
  browser = await launchThroughProxy(`http://127.0.0.1:${proxy.port}`);

  // Traffic: a workload with a token (allowed, denied by a rule, a DLP block), an anonymous
  // client, and a user whose name is markup (a session sealed with the proxy's key).
  token = await idp.serviceToken();
  const auth = `ci-runner:${token}`;
  for (let i = 0; i < 4; i++) expect((await viaProxy(`${appUrl}/ok-${i}`, { auth })).status).toBe(200);
  expect((await viaProxy(`http://blocked.test:${origin.port}/nope`, { auth })).status).toBe(403);
  const dlp = await viaProxy(`${appUrl}/upload`, { auth, data: `card=${CARD}` });
  expect(dlp.status).toBe(403);
  incident = /Incident (inc-[a-z0-9-]+)/.exec(dlp.body)![1]!;
  expect((await viaProxy(`${appUrl}/anonymous`)).status).toBe(407);
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const hostile = await new EncryptJWT({ pur: 'session', sid: randomBytes(12).toString('base64url'), user: HOSTILE, groups: [] })
    .setProtectedHeader({ alg: 'dir', enc: 'A256GCM' }).setIssuedAt(exp - 3600).setExpirationTime(exp).encrypt(key);
  expect((await viaProxy(`${appUrl}/markup`, { cookie: `${SESSION_COOKIE}=${hostile}` })).status).toBe(200);
  await proxy.waitForAccess((l) => String(l.url).endsWith('/markup'));
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await proxy?.close();
  await idp?.close();
  await origin?.close();
  dns?.close();
});

describe('the admin dashboard (/ui)', () => {
  it('refuses requests without a session: the page sends to sign-in, the data and other methods are refused', async () => {
    const page = await request(`${portal}/ui`);
    expect(page.statusCode).toBe(302);
    expect(page.headers.location).toBe(`${portal}/auth/login?rd=${encodeURIComponent(`${portal}/ui`)}`);
    await page.body.dump();
    const data = await request(`${portal}/ui/data.json`);
    expect(data.statusCode).toBe(403);
    expect(data.headers['x-egress-reason']).toBe('auth_required');
    const text = await data.body.text();
    expect(text).not.toContain('ci-runner');
    expect(JSON.parse(text)).toMatchObject({ error: 'auth_required' });
    const post = await request(`${portal}/ui/data.json`, { method: 'POST', body: '{}' });
    expect(post.statusCode).toBe(405);
    await post.body.dump();
    // A session cookie that does not open (tampered) is no session.
    const bad = await request(`${portal}/ui/data.json`, { headers: { cookie: `${SESSION_COOKIE}=x.y.z.w.v` } });
    expect(bad.statusCode).toBe(403);
    await bad.body.dump();
  });

  it('shows the sample admin the traffic: top lists, denies with reason ids, DLP incidents, the rps chart, the policy', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const problems: string[] = [];
    // The dashboard's own console must stay clean (a CSP violation shows there); the IdP's pages are not ours.
    page.on('console', (m) => { if ((m.type() === 'error' || m.type() === 'warning') && page.url().startsWith(portal)) problems.push(`${m.text()} ${m.location().url}`); });
    page.on('response', (r) => { if (r.status() >= 400 && r.url().startsWith(portal)) problems.push(`${r.status()} ${r.url()}`); });
    page.on('pageerror', (e) => problems.push(String(e)));
    try {
      await page.goto(`${portal}/ui`);
      await signInAs(page, 'ada', (u) => u.href === `${portal}/ui`);
      // Ada's own browsing, recognised by her address after sign-in, shows up as hers.
      const other = await context.newPage();
      await other.goto(`${appUrl}/from-ada`);
      expect(await other.textContent('body')).toBe('hello /from-ada');
      await other.close();
      await proxy.waitForAccess((l) => String(l.url).endsWith('/from-ada') && l.user === 'ada');

      await page.reload();
      await page.waitForSelector('body[data-loaded]');
      const rows = (id: string): Promise<Record<string, number>> => page.$$eval(`#${id} g.row`, (gs) =>
        Object.fromEntries(gs.map((g) => [g.getAttribute('data-name') ?? '', Number(g.getAttribute('data-count'))])));
      const users = await rows('top-users');
      expect(users['ci-runner']).toBeGreaterThanOrEqual(6);
      expect(users.anonymous).toBeGreaterThanOrEqual(1);
      expect(users.ada).toBeGreaterThanOrEqual(1);
      // Markup from traffic is text, never HTML: the name shows as typed and no element was made of it.
      expect(users[HOSTILE]).toBe(1);
      expect(await page.textContent('#top-users')).toContain(HOSTILE.slice(0, 20));
      expect(await page.$('#pwned')).toBeNull();
      expect(await page.$$eval('img', (l) => l.length)).toBe(0);
      const hosts = await rows('top-hosts');
      expect(hosts['app.test']).toBeGreaterThanOrEqual(7);
      expect(hosts['blocked.test']).toBe(1);

      const denies = await page.$$eval('#denies tbody tr', (trs) => trs.map((tr) => [...(tr as HTMLTableRowElement).cells].map((c) => c.textContent)));
      expect(denies).toContainEqual([expect.any(String), 'ci-runner', 'blocked.test', 'policy_denied', 'no-blocked', '403']);
      expect(denies).toContainEqual([expect.any(String), 'anonymous', 'app.test', 'auth_required', 'default', '407']);
      const incidents = await page.$$eval('#incidents tbody tr', (trs) => trs.map((tr) => [...(tr as HTMLTableRowElement).cells].map((c) => c.textContent)));
      const inc = incidents.find((r) => r[3] === incident);
      expect(inc).toEqual([expect.any(String), 'ci-runner', 'app.test', incident, 'dlp_match', expect.stringMatching(/^credit_card:1\[4111\*+1111\]/)]);
      expect(await page.content()).not.toContain('4111 1111 1111 1111');

      const chart = await page.$eval('#rps-chart', (svg) => ({ max: Number(svg.getAttribute('data-max')), d: svg.querySelector('#rps-total')?.getAttribute('d') ?? '' }));
      expect(chart.max).toBeGreaterThanOrEqual(1);
      expect(chart.d.split('L')).toHaveLength(RPS_SECONDS);
      // Some point of the line is above the baseline (y smaller than the lowest y).
      const ys = chart.d.split(/[ML]/).filter(Boolean).map((p) => Number(p.split(',')[1]));
      expect(Math.min(...ys)).toBeLessThan(Math.max(...ys));

      const version = proxy.running.runtime.current.policy.version;
      expect(await page.textContent('#policy-version-full')).toBe(version);
      expect(await page.textContent('#node')).toBe('test-node');
      expect(await page.textContent('#viewer')).toBe('ada');
      expect(await page.isHidden('#policy-errors-box')).toBe(true);
      expect(await page.textContent('#nodes tbody')).toContain('test-node');

      // A broken policy change shows its errors; the version in force stays.
      writeFileSync(join(proxy.dir, 'policies', 'broken.yaml'), 'version: v1\nrules: [{ id: x, action: maybe }]\n');
      expect(await proxy.running.reload()).toBe(false);
      await page.reload();
      await page.waitForSelector('#policy-errors li');
      expect(await page.textContent('#policy-errors')).toContain('broken.yaml');
      expect(await page.textContent('#policy-version-full')).toBe(version);
      unlinkSync(join(proxy.dir, 'policies', 'broken.yaml'));
      expect(await proxy.running.reload()).toBe(true);

      // Headers: strict CSP, no framing, nothing cached; the data comes only to the signed-in admin.
      const html = await context.request.get(`${portal}/ui`);
      expect(html.status()).toBe(200);
      expect(html.headers()['content-security-policy']).toMatch(/script-src 'self'/);
      expect(html.headers()['content-security-policy']).not.toMatch(/unsafe-inline/);
      expect(html.headers()['x-frame-options']).toBe('DENY');
      expect(await html.text()).not.toMatch(/<script>|<style>|style=/);
      const data = await context.request.get(`${portal}/ui/data.json?minutes=5`);
      expect(data.headers()['cache-control']).toBe('no-store');
      expect((await data.json()) as { stats: { minutes: number } }).toMatchObject({ viewer: 'ada', stats: { minutes: 5 } });
      expect(problems).toEqual([]);
    } finally {
      await context.close();
    }
  });

  it('refuses a signed-in user outside the admin groups with admin_required', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      const refused = page.waitForResponse((r) => r.url() === `${portal}/ui` && r.status() === 403);
      await page.goto(`${portal}/ui`);
      await signInAs(page, 'alice', (u) => u.href === `${portal}/ui`);
      const r = await refused;
      expect(r.headers()['x-egress-reason']).toBe('admin_required');
      expect(await page.textContent('#reason')).toBe('admin_required');
      expect(await page.textContent('#user')).toBe('alice');
      const data = await context.request.get(`${portal}/ui/data.json`);
      expect(data.status()).toBe(403);
      expect(data.headers()['x-egress-reason']).toBe('admin_required');
      expect(await data.text()).not.toContain('ci-runner');
      expect((await context.request.get(`${portal}/ui/app.js`)).status()).toBe(403);
    } finally {
      await context.close();
    }
  });

  it('explains that the dashboard needs sign-in on a proxy without it', async () => {
    const bare = await startTestProxy({ admin: '127.0.0.1:0' });
    try {
      const page = await request(`${bare.adminUrl}/ui`);
      expect(page.statusCode).toBe(403);
      expect(page.headers['x-egress-reason']).toBe('admin_required');
      expect(await page.body.text()).toContain('needs browser sign-in');
      const data = await request(`${bare.adminUrl}/ui/data.json`);
      expect(data.statusCode).toBe(403);
      expect(await data.body.json()).toMatchObject({ error: 'admin_required' });
      const missing = await request(`${bare.adminUrl}/ui/nothing-here`);
      expect(missing.statusCode).toBe(404);
      await missing.body.dump();
    } finally {
      await bare.close();
    }
  });
});
