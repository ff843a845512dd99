import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EncryptJWT } from 'jose';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { loadConfig } from '../src/config/load.js';
import { startDevIdp, type DevIdp } from '../src/identity/dev-idp.js';
import { safeReturnTo } from '../src/identity/portal.js';
import { withoutProxyCookies } from '../src/egress/headers.js';
import { AUTH_COOKIE, loadSessionKey, SESSION_COOKIE } from '../src/identity/sessions.js';
import { createLogger } from '../src/logging/logger.js';
import { startProxy } from '../src/proxy.js';
import { startDns, type TestDns } from './helpers/dns-server.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { startTestProxy, type TestProxy } from './helpers/proxy.js';
import { cleanEnv, run } from './helpers/run.js';
import { freePort } from './helpers/ports.js';
import { launchThroughProxy } from './helpers/browser.js';

const MOZILLA = 'Mozilla/5.0 (X11; Linux x86_64) test';
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


/** A request through the proxy with curl from a given loopback source address. */
async function viaProxy(url: string, o: { from?: string; ua?: string; cookie?: string } = {}): Promise<{ status: number; location: string; body: string }> {
  const args = ['-sS', '-x', proxy.url, '-o', '-', '-w', '\n%{http_code} %{redirect_url}', '--interface', o.from ?? '127.0.0.5'];
  if (o.ua) args.push('-A', o.ua);
  if (o.cookie) args.push('-H', `Cookie: ${o.cookie}`);
  const r = await run('curl', [...args, url], { env: cleanEnv() });
  expect(r.code, r.stderr).toBe(0);
  const nl = r.stdout.lastIndexOf('\n');
  const [status, location] = r.stdout.slice(nl + 1).split(' ');
  return { status: Number(status), location: location ?? '', body: r.stdout.slice(0, nl) };
}

/** A sealed session made with the test's own copy of the key, the way another node would. */
function forgeSession(o: { user: string; groups: string[]; exp: number; key?: Uint8Array }): Promise<string> {
  return new EncryptJWT({ pur: 'session', sid: randomBytes(12).toString('base64url'), user: o.user, groups: o.groups })
    .setProtectedHeader({ alg: 'dir', enc: 'A256GCM' }).setIssuedAt(o.exp - 3600).setExpirationTime(o.exp).encrypt(o.key ?? key);
}

function setCookies(h: Record<string, string | string[] | undefined>): string[] {
  const v = h['set-cookie'];
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

/** Fills the dev IdP's sign-in form when it shows (the IdP may remember the user and skip it). */
async function signInAs(page: Page, user: string, until: (u: URL) => boolean, issuer = idp.issuer): Promise<void> {
  await page.waitForURL((u) => u.href.startsWith(`${issuer}/interaction/`) || until(u));
  if (page.url().startsWith(`${issuer}/interaction/`)) {
    await page.selectOption('#login', user);
    await Promise.all([page.waitForURL(until), page.click('#signin')]);
  }
}

beforeAll(async () => {
  adminPort = await freePort();
  portal = `http://127.0.0.1:${adminPort}`;
  idp = await startDevIdp({
    portal: {
      clientId: 'egress-proxy', clientSecret: 's3cret-test',
      redirectUris: [`${portal}/auth/callback`], postLogoutRedirectUris: [`${portal}/auth/signed-out`],
    },
  });
  dir = mkdtempSync(join(tmpdir(), 'egress-signin-'));
  writeFileSync(join(dir, 'client-secret'), 's3cret-test\n', { mode: 0o600 });
  key = new Uint8Array(randomBytes(32));
  writeFileSync(join(dir, 'session.key'), Buffer.from(key).toString('hex') + '\n', { mode: 0o600 });
  dns = await startDns({ 'app.test': ['127.0.0.2'] });
  origin = await startOrigin({ host: '127.0.0.2', handler: (req, res) => res.end(`hello from origin ${req.url}`) });
  appUrl = `http://app.test:${origin.port}`;
  proxy = await startTestProxy({
    admin: `127.0.0.1:${adminPort}`,
    dns: { servers: [dns.address] },
    identity: { issuer: idp.issuer, revalidate_s: 1, sign_in: { client_secret_file: join(dir, 'client-secret'), session_key_file: join(dir, 'session.key') } },
  }, { default: 'deny' });
  writeFileSync(join(proxy.dir, 'policies', 'signed-in.yaml'), stringify({ version: 'v1', rules: [{ id: 'signed-in', action: 'allow', when: { anonymous: false } }] }));
  await proxy.running.reload();
  // The portal and the IdP are on loopback, which Chromium reaches directly (its implicit proxy
  // bypass); every other name goes to the proxy, which resolves it with the test DNS only.
  browser = await launchThroughProxy(`http://127.0.0.1:${proxy.port}`);
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await proxy?.close();
  await idp?.close();
  await origin?.close();
  dns?.close();
});

describe('anonymous requests that need an identity', () => {
  it('answers a non-browser client with 407 and a browser GET with a redirect to the portal', async () => {
    const curl = await viaProxy(`${appUrl}/x`);
    expect(curl.status).toBe(407);
    const asBrowser = await viaProxy(`${appUrl}/x?a=1`, { ua: MOZILLA });
    expect(asBrowser.status).toBe(302);
    expect(asBrowser.location).toBe(`${portal}/auth/login?rd=${encodeURIComponent(`${appUrl}/x?a=1`)}`);
  });
});

describe('the portal refuses bad sign-in input', () => {
  it('starts a sign-in with a sealed, host-only, secure auth cookie and PKCE', async () => {
    const r = await request(`${portal}/auth/login?rd=${encodeURIComponent(`${appUrl}/y`)}`);
    expect(r.statusCode).toBe(302);
    const to = new URL(String(r.headers.location));
    expect(to.origin).toBe(idp.issuer);
    expect(to.searchParams.get('code_challenge_method')).toBe('S256');
    expect(to.searchParams.get('redirect_uri')).toBe(`${portal}/auth/callback`);
    expect(to.searchParams.get('state')).toBeTruthy();
    expect(to.searchParams.get('nonce')).toBeTruthy();
    const [c] = setCookies(r.headers);
    expect(c).toMatch(new RegExp(`^${AUTH_COOKIE}=[^;]+; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600$`));
    expect(c).not.toContain(to.searchParams.get('state')!); // sealed, not readable
    await r.body.dump();
  });

  it('refuses a callback without the auth cookie (login CSRF) and creates no session', async () => {
    const r = await request(`${portal}/auth/callback?code=abc&state=xyz`);
    expect(r.statusCode).toBe(400);
    expect(r.headers['x-egress-reason']).toBe('signin_not_started');
    expect(setCookies(r.headers).some((c) => c.startsWith(SESSION_COOKIE))).toBe(false);
    await r.body.dump();
  });

  it('refuses a callback whose state does not match this browser\'s auth cookie', async () => {
    const start = await request(`${portal}/auth/login`);
    await start.body.dump();
    const auth = setCookies(start.headers)[0]!.split(';')[0]!;
    const r = await request(`${portal}/auth/callback?code=abc&state=someone-elses-state`, { headers: { cookie: auth } });
    expect(r.statusCode).toBe(400);
    expect(r.headers['x-egress-reason']).toBe('signin_state_mismatch');
    expect(setCookies(r.headers).some((c) => c.startsWith(SESSION_COOKIE))).toBe(false);
    await r.body.dump();
    // A tampered auth cookie is no auth cookie at all.
    const state = new URL(String(start.headers.location)).searchParams.get('state')!;
    const bad = await request(`${portal}/auth/callback?code=abc&state=${state}`, { headers: { cookie: `${auth.slice(0, -3)}AAA` } });
    expect(bad.statusCode).toBe(400);
    expect(bad.headers['x-egress-reason']).toBe('signin_not_started');
    await bad.body.dump();
  });

  it('only returns to absolute http(s) URLs after sign-in', async () => {
    const home = `${portal}/auth/`;
    for (const rd of ['javascript:alert(1)', '//evil.example', '/\\evil.example', 'http:/evil.example', 'data:text/html,hi', 'ftp://x.example/',
      'https://user:pw@x.example/', ' https://x.example/', 'https://x.example/\nSet-Cookie: a=b', `https://x.example/${'a'.repeat(2100)}`, '', null]) {
      expect(safeReturnTo(rd, home), String(rd)).toBe(home);
    }
    expect(safeReturnTo('https://x.example/a?b=c#d', home)).toBe('https://x.example/a?b=c#d');
    expect(safeReturnTo('http://app.test:8080/p', home)).toBe('http://app.test:8080/p');
  });

  it('ignores a tampered, expired, wrongly keyed or foreign-purpose session cookie', async () => {
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const good = await forgeSession({ user: 'carol', groups: ['ops'], exp });
    // The key file works: a cookie sealed elsewhere with the same key is carol's session.
    const ok = await viaProxy(`${appUrl}/forged-ok`, { cookie: `${SESSION_COOKIE}=${good}` });
    expect(ok.status).toBe(200);
    expect(await proxy.waitForAccess((l) => String(l.url).endsWith('/forged-ok'))).toMatchObject({ auth: 'session', user: 'carol', groups: 'ops' });
    const tampered = good.slice(0, -30) + (good.at(-30) === 'A' ? 'B' : 'A') + good.slice(-29);
    const expired = await forgeSession({ user: 'carol', groups: ['ops'], exp: Math.floor(Date.now() / 1000) - 5 });
    const otherKey = await forgeSession({ user: 'carol', groups: ['ops'], exp, key: new Uint8Array(randomBytes(32)) });
    const authPurpose = await new EncryptJWT({ pur: 'auth', sid: 'x', user: 'carol', groups: [] })
      .setProtectedHeader({ alg: 'dir', enc: 'A256GCM' }).setExpirationTime(exp).encrypt(key);
    for (const [name, value] of Object.entries({ tampered, expired, otherKey, authPurpose, garbage: 'x.y.z' })) {
      const r = await viaProxy(`${appUrl}/bad-cookie-${name}`, { cookie: `${SESSION_COOKIE}=${value}` });
      expect(r.status, name).toBe(407);
      expect(await proxy.waitForAccess((l) => String(l.url).endsWith(`/bad-cookie-${name}`))).toMatchObject({ auth: 'anonymous', reason: 'auth_required' });
    }
  });

  it('drops only the proxy\'s own cookies from what goes upstream', () => {
    expect(withoutProxyCookies('a=1; b=2')).toBe('a=1; b=2');
    expect(withoutProxyCookies(`a=1; ${SESSION_COOKIE}=xyz; b=2;${AUTH_COOKIE}=q`)).toBe('a=1; b=2');
    expect(withoutProxyCookies(`${SESSION_COOKIE}=xyz`)).toBe('');
    expect(withoutProxyCookies('__Host-egressive=keep; __Host-other=1')).toBe('__Host-egressive=keep; __Host-other=1');
  });

  it('warns that a key made at start does not survive restarts, and refuses unusable settings at start', async () => {
    const noKey = await startTestProxy({ admin: '127.0.0.1:0', identity: { issuer: idp.issuer, sign_in: { client_secret_file: join(dir, 'client-secret') } } });
    try {
      expect(noKey.lines().some((l) => l.level === 'warn' && String(l.msg).includes('do not survive a restart'))).toBe(true);
    } finally {
      await noKey.close();
    }
    const secret = join(dir, 'client-secret');
    await expect(startTestProxy({ identity: { issuer: idp.issuer, sign_in: { client_secret_file: secret, portal_url: 'http://proxy.example.com' } } }))
      .rejects.toThrow(/portal_url http:\/\/proxy\.example\.com: must be https/);
    await expect(startTestProxy({ identity: { issuer: idp.issuer, sign_in: { client_secret_file: join(dir, 'nope') } } }))
      .rejects.toThrow(/client_secret_file .*nope: cannot read it \(ENOENT\)/);
    await expect(startTestProxy({ identity: { issuer: idp.issuer, sign_in: { client_secret_file: secret, session_key_file: secret } } }))
      .rejects.toThrow(/session_key_file .*must hold a 32-byte key/);
  });

  it('refuses a session key file that is not 32 bytes', () => {
    const f = join(dir, 'short.key');
    writeFileSync(f, randomBytes(31), { mode: 0o600 });
    expect(() => loadSessionKey(f)).toThrow(/must hold a 32-byte key.*31 bytes/);
    writeFileSync(f, 'ab'.repeat(31) + '\n', { mode: 0o600 });
    expect(() => loadSessionKey(f)).toThrow(/32-byte key/);
    writeFileSync(f, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
    expect(loadSessionKey(f)).toHaveLength(32);
    expect(() => loadSessionKey(join(dir, 'missing.key'))).toThrow(/cannot read it \(ENOENT\)/);
  });
});

describe('browser sign-in (headless Chromium)', () => {
  let context: BrowserContext;
  let page: Page;
  let firstSession: string;

  it('sends the browser to sign in and back to the page, which then loads as alice', async () => {
    context = await browser.newContext();
    // A session cookie planted before sign-in (session fixation) must not survive it.
    page = await context.newPage();
    await page.goto(`${portal}/auth/signed-out`);
    await page.evaluate((name) => { document.cookie = `${name}=planted-before-sign-in; Path=/; Secure; SameSite=Lax`; }, SESSION_COOKIE);
    expect((await context.cookies(portal)).find((c) => c.name === SESSION_COOKIE)?.value).toBe('planted-before-sign-in');
    await page.goto(`${appUrl}/hello`);
    expect(page.url()).toMatch(new RegExp(`^${idp.issuer}/interaction/`));
    const asked = await proxy.waitForAccess((l) => String(l.url).endsWith('/hello') && l.reason === 'auth_required');
    expect(asked).toMatchObject({ status: 302, auth: 'anonymous', client_ip: '127.0.0.1' });
    await signInAs(page, 'alice', (u) => u.href === `${appUrl}/hello`);
    expect(await page.textContent('body')).toBe('hello from origin /hello');
    const line = await proxy.waitForAccess((l) => String(l.url).endsWith('/hello') && l.status === 200);
    expect(line).toMatchObject({ auth: 'session', user: 'alice', email: 'alice@example.com', groups: 'eng', rule: 'signed-in', decision: 'allow' });

    const cookies = await context.cookies(portal);
    const session = cookies.find((c) => c.name === SESSION_COOKIE);
    // Chromium kept a Secure __Host- cookie from http://127.0.0.1: loopback counts as a secure origin.
    expect(session).toMatchObject({ secure: true, httpOnly: true, sameSite: 'Lax', path: '/', domain: '127.0.0.1' });
    expect(session!.value).not.toBe('planted-before-sign-in');
    expect(session!.value.split('.')).toHaveLength(5);
    expect(cookies.some((c) => c.name === AUTH_COOKIE)).toBe(false);
    firstSession = session!.value;
    // The browser's address is bound to alice: any client there is alice (the NAT caveat); others are not.
    const sameAddress = await viaProxy(`${appUrl}/same-address`, { from: '127.0.0.1' });
    expect(sameAddress.status).toBe(200);
    expect(await proxy.waitForAccess((l) => String(l.url).endsWith('/same-address'))).toMatchObject({ auth: 'session', user: 'alice' });
    expect((await viaProxy(`${appUrl}/other-address`, { from: '127.0.0.6' })).status).toBe(407);
    // The session cookie is a proxy credential on its own (another client address, no IP binding).
    const withCookie = await viaProxy(`${appUrl}/with-cookie`, { cookie: `${SESSION_COOKIE}=${firstSession}` });
    expect(withCookie).toMatchObject({ status: 200, body: 'hello from origin /with-cookie' });
    // ...and so it never reaches the destination.
    expect(origin.seen.find((x) => x.url === '/with-cookie')!.headers.cookie).toBeUndefined();
  });

  it('shows who is signed in, and signing out ends the session, its address binding, its cookie and its open connections', async () => {
    // Two connections from the browser's address, admitted by the address binding: a tunnel and a kept-alive request.
    const open = async (): Promise<{ sock: Socket; closed: Promise<unknown> }> => {
      const sock = connect({ host: '127.0.0.1', port: proxy.port, localAddress: '127.0.0.1' });
      await once(sock, 'connect');
      sock.on('error', () => undefined);
      return { sock, closed: once(sock, 'close') };
    };
    const tunnel = await open();
    tunnel.sock.write(`CONNECT app.test:${origin.port} HTTP/1.1\r\nHost: app.test:${origin.port}\r\n\r\n`);
    expect(String((await once(tunnel.sock, 'data'))[0])).toMatch(/^HTTP\/1\.1 200 /);
    const kept = await open();
    kept.sock.write(`GET ${appUrl}/kept-alive HTTP/1.1\r\nHost: app.test:${origin.port}\r\n\r\n`);
    let answer = '';
    for (let i = 0; i < 50 && !answer.includes('hello from origin /kept-alive'); i++) answer += String((await once(kept.sock, 'data'))[0]);
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    expect(await proxy.waitForAccess((l) => String(l.url).endsWith('/kept-alive'))).toMatchObject({ auth: 'session', user: 'alice' });

    await page.goto(`${portal}/auth/`);
    expect(await page.textContent('#user')).toBe('alice');
    expect(await page.textContent('#groups')).toBe('eng');
    await page.click('#signout');
    await page.waitForURL(`${portal}/auth/signed-out`);
    expect(await page.textContent('h1')).toBe('Signed out');
    expect((await context.cookies(portal)).some((c) => c.name === SESSION_COOKIE)).toBe(false);
    // Both connections end at the next sweep (revalidate_s: 1), not at their own pace.
    await Promise.all([tunnel.closed, kept.closed]);
    // The tunnel's line is written when it ends.
    expect(await proxy.waitForAccess((l) => l.kind === 'connect' && l.host === 'app.test')).toMatchObject({ auth: 'session', user: 'alice', client_ip: '127.0.0.1', status: 200 });
    expect(proxy.lines().some((l) => String(l.msg).startsWith('ended connections whose credential') && Number(l.connections) >= 2)).toBe(true);

    const revoked = await viaProxy(`${appUrl}/after-sign-out`, { cookie: `${SESSION_COOKIE}=${firstSession}` });
    expect(revoked.status).toBe(407);
    expect((await viaProxy(`${appUrl}/unbound`, { from: '127.0.0.1' })).status).toBe(407);
    await page.goto(`${appUrl}/again`);
    expect(page.url()).toMatch(new RegExp(`^${idp.issuer}/interaction/`)); // the IdP session ended too
    expect(await proxy.waitForAccess((l) => String(l.url).endsWith('/again'))).toMatchObject({ status: 302, reason: 'auth_required', auth: 'anonymous' });
  });

  it('mints a new session at the next sign-in and never follows a non-http return URL', async () => {
    await page.goto(`${portal}/auth/login?rd=${encodeURIComponent('javascript:alert(1)')}`);
    await signInAs(page, 'bob', (u) => u.href.startsWith(portal));
    expect(page.url()).toBe(`${portal}/auth/`);
    expect(await page.textContent('#user')).toBe('bob');
    const second = (await context.cookies(portal)).find((c) => c.name === SESSION_COOKIE)!.value;
    expect(second).not.toBe(firstSession);

    await page.goto(`${portal}/auth/login?rd=${encodeURIComponent('//evil.example/x')}`);
    await page.waitForURL((u) => u.href.startsWith(portal) && !u.pathname.startsWith('/auth/login'));
    expect(page.url()).toBe(`${portal}/auth/`);
    await context.close();
  });

  it('refuses a sign-out without the CSRF token of the session', async () => {
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const s = await forgeSession({ user: 'dave', groups: [], exp });
    const r = await request(`${portal}/auth/logout`, { method: 'POST', headers: { cookie: `${SESSION_COOKIE}=${s}`, 'content-type': 'application/x-www-form-urlencoded' }, body: 'csrf=nope' });
    expect(r.statusCode).toBe(403);
    expect(r.headers['x-egress-reason']).toBe('signout_csrf');
    await r.body.dump();
    const still = await viaProxy(`${appUrl}/still-dave`, { cookie: `${SESSION_COOKIE}=${s}` });
    expect(still.status).toBe(200);
  });
});

describe('dev mode', () => {
  it('signs in against the embedded identity provider with its generated client secret', async () => {
    const port = await freePort();
    const devDir = mkdtempSync(join(tmpdir(), 'egress-signin-dev-'));
    mkdirSync(join(devDir, 'policies'));
    writeFileSync(join(devDir, 'policies', 'p.yaml'), stringify({ version: 'v1', default: 'deny' }));
    writeFileSync(join(devDir, 'config.yaml'), stringify({ listen: '127.0.0.1:0', admin: `127.0.0.1:${port}`, policies: 'policies', inspection: { enabled: false } }));
    const logger = createLogger({ level: 'info', nodeId: 'dev', destination: join(devDir, 'proxy.log') });
    const dev = await startProxy(loadConfig({ config: join(devDir, 'config.yaml') }, {}), logger, { dev: true });
    const context = await browser.newContext();
    try {
      expect(dev.identity.devIdp).toBeDefined();
      const page = await context.newPage();
      const devPortal = `http://127.0.0.1:${port}`;
      await page.goto(`${devPortal}/auth/login`);
      await signInAs(page, 'bob', (u) => u.href.startsWith(devPortal), dev.identity.issuer!);
      expect(page.url()).toBe(`${devPortal}/auth/`);
      expect(await page.textContent('#user')).toBe('bob');
      expect(await page.textContent('#groups')).toBe('finance');
      logger.flush();
      expect(readFileSync(join(devDir, 'proxy.log'), 'utf8')).not.toContain('do not survive a restart');
    } finally {
      await context.close();
      await dev.drain();
    }
  });
});
