import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { SESSION_HANDOFF_PATH } from '../src/identity/authenticate.js';
import { startDevIdp, type DevIdp } from '../src/identity/dev-idp.js';
import type { Principal } from '../src/identity/principal.js';
import { SESSION_COOKIE, SessionStore } from '../src/identity/sessions.js';
import { initCa } from '../src/inspection/ca.js';
import { startDns, type TestDns } from './helpers/dns-server.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { makeCa, makeLeaf } from './helpers/pki.js';
import { startTestProxy, type TestProxy } from './helpers/proxy.js';
import { cleanEnv, run } from './helpers/run.js';
import { freePort } from './helpers/ports.js';
import { launchThroughProxy } from './helpers/browser.js';

// Session cookies on intercepted sites, with the address binding off: only a cookie can say who a
// browser is, so every signed-in request below was recognised by one.

const MOZILLA = 'Mozilla/5.0 (X11; Linux x86_64) Chrome/140.0 Safari/537.36';
let portal: string;
let dir: string;
let key: Uint8Array;
let idp: DevIdp;
let dns: TestDns;
let origin: Origin;
let proxy: TestProxy;
let browser: Browser;
let app: string;
let other: string;


interface Answer { status: number; headers: Record<string, string[]>; body: string }

/** One HTTPS request through the proxy with curl, as a browser would (so the tunnel is intercepted). */
async function viaProxy(url: string, o: { cookie?: string; ua?: string } = {}): Promise<Answer> {
  const args = ['-sS', '-i', '--max-time', '10', '-A', o.ua ?? MOZILLA, '--cacert', join(dir, 'ca', 'ca.pem'), '-x', proxy.url];
  if (o.cookie) args.push('-H', `Cookie: ${o.cookie}`);
  return parse(await run('curl', [...args, url], { env: cleanEnv() }));
}

/** One request straight to the portal with curl. */
async function toPortal(path: string, cookie?: string): Promise<Answer> {
  const args = ['-sS', '-i', '--max-time', '10'];
  if (cookie) args.push('-H', `Cookie: ${cookie}`);
  return parse(await run('curl', [...args, `${portal}${path}`], { env: cleanEnv() }));
}

function parse(r: { code: number; stdout: string; stderr: string }): Answer {
  expect(r.code, r.stderr).toBe(0);
  // Skip the proxy's "200 Connection established" of an intercepted tunnel.
  const text = r.stdout.replace(/^HTTP\/1\.1 200 Connection established\r\n\r\n/, '');
  const end = text.indexOf('\r\n\r\n');
  const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
  const headers: Record<string, string[]> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    (headers[l.slice(0, i).toLowerCase()] ??= []).push(l.slice(i + 1).trim());
  }
  return { status: Number(statusLine!.split(' ')[1]), headers, body: text.slice(end + 4) };
}

/** Fills the dev IdP's sign-in form when it shows. */
async function signInAs(page: Page, user: string, until: (u: URL) => boolean): Promise<void> {
  await page.waitForURL((u) => u.href.startsWith(`${idp.issuer}/interaction/`) || until(u));
  if (page.url().startsWith(`${idp.issuer}/interaction/`)) {
    await page.selectOption('#login', user);
    await Promise.all([page.waitForURL(until), page.click('#signin')]);
  }
}

const ticketUrl = (site: string): RegExp => new RegExp(`^${site.replace(/\./g, '\\.')}${SESSION_HANDOFF_PATH.replace(/\./g, '\\.')}\\?ticket=[A-Za-z0-9_.-]+$`);

beforeAll(async () => {
  const adminPort = await freePort();
  portal = `http://127.0.0.1:${adminPort}`;
  idp = await startDevIdp({
    portal: { clientId: 'egress-proxy', clientSecret: 'site-secret', redirectUris: [`${portal}/auth/callback`], postLogoutRedirectUris: [`${portal}/auth/signed-out`] },
  });
  dir = mkdtempSync(join(tmpdir(), 'egress-sitecookie-'));
  writeFileSync(join(dir, 'secret'), 'site-secret', { mode: 0o600 });
  key = new Uint8Array(randomBytes(32));
  writeFileSync(join(dir, 'session.key'), Buffer.from(key).toString('hex'), { mode: 0o600 });
  const originCa = makeCa('site-cookie origin CA');
  writeFileSync(join(dir, 'origin-ca.pem'), originCa.cert);
  initCa(join(dir, 'ca'));
  dns = await startDns({ 'app.test': ['127.0.0.3'], 'other.test': ['127.0.0.3'] });
  origin = await startOrigin({ host: '127.0.0.3', tls: makeLeaf(originCa, ['app.test', 'other.test'], ['127.0.0.3']), handler: (req, res) => res.end(`hello from origin ${req.url}`) });
  app = `https://app.test:${origin.port}`;
  other = `https://other.test:${origin.port}`;
  proxy = await startTestProxy({
    admin: `127.0.0.1:${adminPort}`,
    dns: { servers: [dns.address] },
    inspection: { enabled: true, ca_dir: join(dir, 'ca'), upstream_ca_file: join(dir, 'origin-ca.pem') },
    identity: {
      issuer: idp.issuer, revalidate_s: 1,
      sign_in: { client_secret_file: join(dir, 'secret'), session_key_file: join(dir, 'session.key'), ip_binding_s: 0 },
    },
  }, { default: 'deny' });
  writeFileSync(join(proxy.dir, 'policies', 'signed-in.yaml'), stringify({ version: 'v1', rules: [{ id: 'signed-in', action: 'allow', when: { anonymous: false } }] }));
  expect(await proxy.running.reload()).toBe(true);
  // Chromium trusts the interception leaves by their shared key's SPKI hash.
  const leaf = proxy.running.runtime.inspection!.minter.certificate('app.test');
  const spki = createHash('sha256').update(new X509Certificate(leaf).publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
  browser = await launchThroughProxy(`http://127.0.0.1:${proxy.port}`, [`--ignore-certificate-errors-spki-list=${spki}`]);
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await proxy?.close();
  await idp?.close();
  await origin?.close();
  dns?.close();
});

describe('session cookie on intercepted sites (address binding off)', () => {
  let context: BrowserContext;
  let page: Page;
  const visited: string[] = [];
  let appHandoff: string;
  let portalCookie: string;

  it('signs in from an https page, hands the session to that site through a one-time ticket, then loads the page as alice', async () => {
    context = await browser.newContext();
    page = await context.newPage();
    page.on('request', (r) => visited.push(r.url()));
    await page.goto(`${app}/page`);
    expect(page.url()).toMatch(new RegExp(`^${idp.issuer}/interaction/`));
    expect(await proxy.waitForAccess((l) => l.url === `${app}/page` && l.reason === 'auth_required')).toMatchObject({ status: 302, auth: 'anonymous', inspected: true });
    await signInAs(page, 'alice', (u) => u.href === `${app}/page`);
    expect(await page.textContent('body')).toBe('hello from origin /page');
    expect(await proxy.waitForAccess((l) => l.url === `${app}/page` && l.status === 200)).toMatchObject({ auth: 'session', user: 'alice', groups: 'eng', rule: 'signed-in', inspected: true });

    // callback -> hand-off on app.test -> the page
    const callback = visited.findIndex((u) => u.startsWith(`${portal}/auth/callback`));
    appHandoff = visited[callback + 1]!;
    expect(appHandoff).toMatch(ticketUrl(app));
    expect(visited[callback + 2]).toBe(`${app}/page`);
    const siteCookie = (await context.cookies(app)).find((c) => c.name === SESSION_COOKIE);
    expect(siteCookie).toMatchObject({ domain: 'app.test', path: '/', secure: true, httpOnly: true, sameSite: 'Lax' });
    const portalSession = (await context.cookies(portal)).find((c) => c.name === SESSION_COOKIE)!;
    expect(siteCookie!.value).not.toBe(portalSession.value);
    portalCookie = `${SESSION_COOKIE}=${portalSession.value}`;

    // The hand-off is answered by the proxy and logged without its ticket; it never reaches the site.
    expect(origin.seen.some((s) => s.url.startsWith('/.well-known/'))).toBe(false);
    expect(await proxy.waitForAccess((l) => l.rule === 'sign-in' && l.host === 'app.test')).toMatchObject({ status: 302, decision: 'allow', inspected: true });
    const handoffLog = proxy.lines().find((l) => l.event === 'session_handoff');
    expect(handoffLog).toMatchObject({ user: 'alice', site: `app.test:${origin.port}`, client_ip: '127.0.0.1' });
    const ticket = new URL(appHandoff).searchParams.get('ticket')!;
    const logText = JSON.stringify(proxy.lines());
    expect(logText).not.toContain(ticket.slice(-40));
    expect(logText).not.toContain(siteCookie!.value.slice(-40));

    // The site's own cookies reach it; the proxy's never do.
    await page.evaluate(() => { document.cookie = 'theme=dark; Path=/; Secure'; });
    await page.reload();
    expect(await page.textContent('body')).toBe('hello from origin /page');
    const seen = origin.seen.filter((s) => s.url === '/page');
    expect(seen.length).toBeGreaterThanOrEqual(2);
    for (const s of seen) expect(String(s.headers.cookie ?? '')).not.toContain('__Host-egress-');
    expect(seen.at(-1)!.headers.cookie).toBe('theme=dark');
  });

  it('gives a second intercepted site its cookie through the portal, without the IdP', async () => {
    const from = visited.length;
    await page.goto(`${other}/second`);
    expect(page.url()).toBe(`${other}/second`);
    expect(await page.textContent('body')).toBe('hello from origin /second');
    const path = visited.slice(from);
    expect(path.some((u) => u.startsWith(idp.issuer))).toBe(false);
    expect(path[0]).toBe(`${other}/second`);
    expect(path[1]).toBe(`${portal}/auth/login?rd=${encodeURIComponent(`${other}/second`)}`);
    expect(path[2]).toMatch(ticketUrl(other));
    expect(path[3]).toBe(`${other}/second`);
    expect(await proxy.waitForAccess((l) => l.url === `${other}/second` && l.status === 200)).toMatchObject({ auth: 'session', user: 'alice' });
    expect((await context.cookies(other)).find((c) => c.name === SESSION_COOKIE)).toMatchObject({ domain: 'other.test', secure: true, httpOnly: true });
  });

  it('refuses a replayed, foreign-site, expired, tampered or missing ticket with 400 and no cookie', async () => {
    const refused = async (url: string, why: string): Promise<void> => {
      const r = await viaProxy(url);
      expect(r.status, why).toBe(400);
      expect(r.headers['x-egress-reason'], why).toEqual(['signin_not_started']);
      expect(r.headers['set-cookie'], why).toBeUndefined();
      expect(r.body, why).toContain(`${portal}/auth/login`);
    };
    await refused(appHandoff, 'replayed');

    // A fresh ticket for other.test, from the portal (a live portal session skips the IdP).
    const rd = `${other}/x?y=1`;
    const fresh = await toPortal(`/auth/login?rd=${encodeURIComponent(rd)}`, portalCookie);
    expect(fresh.status).toBe(302);
    const otherHandoff = fresh.headers.location![0]!;
    expect(otherHandoff).toMatch(ticketUrl(other));
    await refused(otherHandoff.replace(other, app), 'ticket for other.test used on app.test');
    // The same ticket on its own site works: the refusal above was about the site.
    const ok = await viaProxy(otherHandoff);
    expect(ok.status).toBe(302);
    expect(ok.headers.location).toEqual([rd]);
    expect(ok.headers['referrer-policy']).toEqual(['no-referrer']);
    expect(ok.headers['set-cookie']).toHaveLength(1);
    expect(ok.headers['set-cookie']![0]).toMatch(new RegExp(`^${SESSION_COOKIE}=[A-Za-z0-9_.-]+; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=\\d+$`));
    await refused(otherHandoff, 'replayed after success');

    // Tickets sealed elsewhere with the same key (another node): an expired one, a live one as the control.
    const store = new SessionStore({ key, ttlS: 3600, ipBindingS: 0, portal });
    try {
      const alice: Principal = { method: 'session', user: 'alice', groups: ['eng'], expiresAt: Date.now() + 3_600_000, sessionId: randomBytes(9).toString('base64url') };
      const site = `app.test:${origin.port}`;
      const handoff = (t: string): string => `${app}${SESSION_HANDOFF_PATH}?ticket=${t}`;
      await refused(handoff(await store.sealTicket(alice, site, `${app}/late`, Date.now() - 61_000)), 'expired');
      await refused(handoff(await store.sealTicket(alice, site, `${other}/elsewhere`)), 'return URL on another site');
      await refused(handoff(await store.sealTicket(alice, site, `http://app.test:${origin.port}/plain`)), 'return URL not https');
      const live = await store.sealTicket(alice, site, `${app}/on-time`);
      await refused(handoff(live.slice(0, -4) + (live.endsWith('AAAA') ? 'BBBB' : 'AAAA')), 'tampered');
      const control = await viaProxy(handoff(live));
      expect(control.status).toBe(302);
      expect(control.headers.location).toEqual([`${app}/on-time`]);
    } finally {
      store.close();
    }
    await refused(`${app}${SESSION_HANDOFF_PATH}`, 'no ticket');
    await refused(`${app}${SESSION_HANDOFF_PATH}?ticket=x.y.z`, 'garbage');
    expect((await viaProxy(`${app}${SESSION_HANDOFF_PATH}/other`)).status).toBe(404);
    const refusedLine = await proxy.waitForAccess((l) => l.rule === 'sign-in' && l.status === 400);
    expect(refusedLine).toMatchObject({ inspected: true, host: 'app.test' });
    expect(refusedLine.url).toBeUndefined();
    expect(origin.seen.some((s) => s.url.startsWith('/.well-known/'))).toBe(false);
    const why = proxy.lines().filter((l) => l.event === 'sign_in_failed').map((l) => String(l.detail));
    expect(why).toEqual(expect.arrayContaining([
      `hand-off on app.test:${origin.port}: ticket already used`,
      `hand-off on app.test:${origin.port}: ticket for other.test:${origin.port}`,
      `hand-off on other.test:${origin.port}: ticket already used`,
      `hand-off on app.test:${origin.port}: ticket tampered, expired or not a ticket`,
      `hand-off on app.test:${origin.port}: return URL not on this site`,
      `hand-off on app.test:${origin.port}: no ticket`,
    ]));
  });

  it('accepts a site cookie only on its own site, never at the portal or on plain proxy requests', async () => {
    const otherCookie = `${SESSION_COOKIE}=${(await context.cookies(other)).find((c) => c.name === SESSION_COOKIE)!.value}`;
    const own = await viaProxy(`${other}/own-site`, { cookie: otherCookie });
    expect(own.status).toBe(200);
    expect(await proxy.waitForAccess((l) => l.url === `${other}/own-site`)).toMatchObject({ auth: 'session', user: 'alice' });
    const elsewhere = await viaProxy(`${app}/not-its-site`, { cookie: otherCookie });
    expect(elsewhere.status).toBe(302);
    expect(elsewhere.headers.location![0]).toMatch(new RegExp(`^${portal}/auth/login\\?rd=`));
    expect(await proxy.waitForAccess((l) => l.url === `${app}/not-its-site`)).toMatchObject({ auth: 'anonymous', reason: 'auth_required' });
    // Not inside an intercepted connection: a plain proxy request with the cookie stays anonymous.
    const plain = await parse(await run('curl', ['-sS', '-i', '-x', proxy.url, '-H', `Cookie: ${otherCookie}`, `http://other.test:${origin.port}/plain`], { env: cleanEnv() }));
    expect(plain.status).toBe(407);
    // At the portal it is no session at all: it cannot mint tickets for other sites.
    expect((await toPortal('/auth/', otherCookie)).body).toContain('Not signed in');
    const login = await toPortal(`/auth/login?rd=${encodeURIComponent(`${app}/z`)}`, otherCookie);
    expect(login.headers.location![0]!.startsWith(`${idp.issuer}/`)).toBe(true);
  });

  it('does not loop a plain http page back to the portal when only a cookie could identify the browser', async () => {
    const r = await toPortal(`/auth/login?rd=${encodeURIComponent(`http://app.test:${origin.port}/plain`)}`, portalCookie);
    expect(r.status).toBe(200);
    expect(r.body).toContain('plain <code>http</code> page');
    expect(r.body).toContain('<b id="user">alice</b>');
  });

  it('with the address binding on, hands a ticket only to sites the proxy will intercept for the user', async () => {
    const adminPort = await freePort();
    const bound = await startTestProxy({
      admin: `127.0.0.1:${adminPort}`,
      dns: { servers: [dns.address] },
      inspection: { enabled: true, ca_dir: join(dir, 'ca'), upstream_ca_file: join(dir, 'origin-ca.pem') },
      identity: { issuer: idp.issuer, sign_in: { client_secret_file: join(dir, 'secret'), session_key_file: join(dir, 'session.key'), ip_binding_s: 3600 } },
    }, { default: 'deny' });
    const store = new SessionStore({ key, ttlS: 3600, ipBindingS: 0, portal });
    try {
      writeFileSync(join(bound.dir, 'policies', 'signed-in.yaml'), stringify({
        version: 'v1',
        apps: { app: { hosts: ['app.test'] } },
        rules: [
          { id: 'inspect-app', action: 'allow', inspect: true, when: { apps: ['app'], anonymous: false } },
          { id: 'signed-in', action: 'allow', when: { anonymous: false } },
        ],
      }));
      expect(await bound.running.reload()).toBe(true);
      const { value } = await store.create({ user: 'alice', email: undefined, groups: ['eng'] });
      const login = async (rd: string): Promise<string> => {
        const r = parse(await run('curl', ['-sS', '-i', '-H', `Cookie: ${SESSION_COOKIE}=${value}`, `${bound.adminUrl}/auth/login?rd=${encodeURIComponent(rd)}`], { env: cleanEnv() }));
        expect(r.status).toBe(302);
        // First the bind step on the proxy's own name (through the proxy), then on to the page.
        const step = r.headers.location![0]!;
        expect(step.startsWith(`http://egress-proxy.invalid${SESSION_HANDOFF_PATH}?ticket=`)).toBe(true);
        const s = parse(await run('curl', ['-sS', '-i', '-x', bound.url, step], { env: cleanEnv() }));
        expect(s.status).toBe(302);
        return s.headers.location![0]!;
      };
      // other.test is tunnelled, not intercepted, for a signed-in user: a ticket would reach the site itself.
      expect(await login(`${other}/direct`)).toBe(`${other}/direct`);
      expect(await login(`${app}/inspected`)).toMatch(ticketUrl(app));
      // The address binding admits the tunnel, straight to the real site.
      const direct = parse(await run('curl', ['-sS', '-i', '--cacert', join(dir, 'origin-ca.pem'), '-x', bound.url, `${other}/direct`], { env: cleanEnv() }));
      expect(direct).toMatchObject({ status: 200, body: 'hello from origin /direct' });
      expect(await bound.waitForAccess((l) => l.kind === 'connect' && l.host === 'other.test')).toMatchObject({ auth: 'session', user: 'alice', rule: 'signed-in' });
    } finally {
      store.close();
      await bound.close();
    }
  });

  it('signing out at the portal ends the session on every site', async () => {
    const appCookie = `${SESSION_COOKIE}=${(await context.cookies(app)).find((c) => c.name === SESSION_COOKIE)!.value}`;
    await page.goto(`${portal}/auth/`);
    await page.click('#signout');
    await page.waitForURL(`${portal}/auth/signed-out`);
    await page.goto(`${app}/after`);
    expect(page.url()).toMatch(new RegExp(`^${idp.issuer}/interaction/`));
    expect(await proxy.waitForAccess((l) => l.url === `${app}/after`)).toMatchObject({ auth: 'anonymous', reason: 'auth_required' });
    expect((await viaProxy(`${app}/after-curl`, { cookie: appCookie })).status).toBe(302);
    expect(proxy.lines().some((l) => l.event === 'sign_out' && l.user === 'alice')).toBe(true);
    await context.close();
  });
});
