import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { allowInsecureRequests, ClientSecretBasic, Configuration, discovery } from 'openid-client';
import pino from 'pino';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevIdp, type DevIdp, type DevUser } from '../src/identity/dev-idp.js';
import { Portal } from '../src/identity/portal.js';
import { GroupsRefresher } from '../src/identity/refresh.js';
import { SESSION_COOKIE, SessionStore } from '../src/identity/sessions.js';

// Group refresh against the real dev IdP, with the store, refresher and portal built here so the
// refresh interval can be one second (the proxy's is identity.sign_in.groups_refresh_s).

const SECRET = 'refresh-secret';
const CLAIMS = { user: 'sub', email: 'email', groups: 'groups' };
const users: DevUser[] = [
  { id: 'alice', email: 'alice@example.com', name: 'Alice Example', groups: ['eng'] },
  { id: 'bob', email: 'bob@example.com', name: 'Bob Example', groups: ['finance'] },
];
const logged: Array<Record<string, unknown>> = [];
const log = pino({ level: 'info' }, { write: (s: string) => void logged.push(JSON.parse(s) as Record<string, unknown>) });
let portal: string;
let idp: DevIdp;
let store: SessionStore;
let refresher: GroupsRefresher;
let server: Server;
let browser: Browser;
/** Grants and refresh tokens as the IdP saves them (the test's view of the IdP, never the proxy's). */
const grants: Array<{ jti: string; accountId: string }> = [];
const refreshTokens: string[] = [];


/** Polls `f` until it returns true (at most ~15 s). */
async function eventually(what: string, f: () => boolean): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (f()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`never happened: ${what}`);
}

async function signIn(page: Page, user: string): Promise<string> {
  await page.goto(`${portal}/auth/login`);
  await page.waitForURL((u) => u.href.startsWith(`${idp.issuer}/interaction/`));
  await page.selectOption('#login', user);
  await Promise.all([page.waitForURL(`${portal}/auth/`), page.click('#signin')]);
  return (await page.context().cookies(portal)).find((c) => c.name === SESSION_COOKIE)!.value;
}

beforeAll(async () => {
  const port = await freePort();
  portal = `http://127.0.0.1:${port}`;
  idp = await startDevIdp({
    users,
    portal: { clientId: 'egress-proxy', clientSecret: SECRET, redirectUris: [`${portal}/auth/callback`], postLogoutRedirectUris: [`${portal}/auth/signed-out`] },
  });
  idp.provider.on('grant.saved', (g) => grants.push({ jti: String(g.jti), accountId: String(g.accountId) }));
  idp.provider.on('refresh_token.saved', (t) => refreshTokens.push(String(t.jti)));
  const cfg = await discovery(new URL(idp.issuer), 'egress-proxy', undefined, ClientSecretBasic(SECRET), { execute: [allowInsecureRequests] });
  const oidc = (): Promise<Configuration> => Promise.resolve(cfg);
  store = new SessionStore({ key: new Uint8Array(randomBytes(32)), ttlS: 3600, ipBindingS: 3600, portal });
  refresher = new GroupsRefresher({ store, oidc, claims: CLAIMS, intervalS: 1, log });
  const p = new Portal({
    store, oidc, portal, scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'], claims: CLAIMS, ttlS: 3600, ipBindingS: 3600,
    intercepts: () => false, refresher, log,
  });
  server = createHttpServer((req, res) => p.handle(req, res)).listen(port, '127.0.0.1');
  await once(server, 'listening');
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'] });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  refresher?.close();
  store?.close();
  server?.closeAllConnections();
  server?.close();
  await idp?.close();
});

describe('groups refresh during a session', () => {
  it('asks for offline_access with consent, so the IdP issues a refresh token', async () => {
    const r = await fetch(`${portal}/auth/login`, { redirect: 'manual' });
    const to = new URL(r.headers.get('location')!);
    expect(to.searchParams.get('scope')!.split(' ')).toContain('offline_access');
    expect(to.searchParams.get('prompt')).toBe('consent');
  });

  it('updates the groups of a live session when they change at the IdP, and ends it when the IdP refuses the refresh', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const cookie = await signIn(page, 'alice');
    expect(await page.textContent('#groups')).toBe('eng');
    const sid = store.open(cookie)!.sessionId!;
    expect(refresher.size).toBe(1);
    // The session is also bound to an address; the binding must see the new groups too.
    store.bind(store.open(cookie)!, '127.0.0.9', undefined);
    const viaAddress = (): readonly string[] | undefined => store.forRequest({ headers: {}, socket: {} } as IncomingMessage, '127.0.0.9', undefined)?.groups;
    expect(viaAddress()).toEqual(['eng']);

    users[0]!.groups = ['eng', 'ops'];
    await eventually('groups refreshed', () => store.open(cookie)?.groups.includes('ops') === true);
    expect(store.open(cookie)).toMatchObject({ user: 'alice', email: 'alice@example.com', groups: ['eng', 'ops'], sessionId: sid });
    expect(viaAddress()).toEqual(['eng', 'ops']);
    await page.goto(`${portal}/auth/`);
    expect(await page.textContent('#groups')).toBe('eng, ops');
    expect(logged.find((l) => l.event === 'session_refresh')).toMatchObject({ user: 'alice', session: sid, groups: 'eng,ops' });

    users[0]!.groups = ['eng'];
    await eventually('group removed', () => store.open(cookie)?.groups.includes('ops') === false);

    // Disabling the user at the IdP revokes their grant: the next refresh is refused, the session ends.
    const grant = grants.filter((g) => g.accountId === 'alice').at(-1)!;
    await (await idp.provider.Grant.find(grant.jti))!.destroy();
    await eventually('session ended', () => store.open(cookie) === undefined);
    expect(store.isRevoked(sid)).toBe(true);
    expect(viaAddress()).toBeUndefined();
    expect(refresher.size).toBe(0);
    expect(logged.find((l) => l.event === 'session_ended')).toMatchObject({ user: 'alice', session: sid, reason: expect.stringContaining('invalid_grant') });
    // The refresh tokens are never written anywhere in the log.
    const text = JSON.stringify(logged);
    expect(refreshTokens.length).toBeGreaterThan(0);
    for (const t of refreshTokens) expect(text).not.toContain(t);
    await context.close();
  });

  it('signing out stops the refresh of that session', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const before = refreshTokens.length;
    await signIn(page, 'bob');
    expect(refresher.size).toBe(1);
    expect(refreshTokens.length).toBeGreaterThan(before);
    await page.click('#signout');
    await page.waitForURL(`${portal}/auth/signed-out`);
    expect(refresher.size).toBe(0);
    await context.close();
  });

  it('keeps the session and its groups when the IdP cannot be reached', async () => {
    const port = await freePort(); // nothing listens there
    const meta = { issuer: idp.issuer, token_endpoint: `http://127.0.0.1:${port}/token` };
    const down = new Configuration(meta, 'egress-proxy', undefined, ClientSecretBasic(SECRET));
    allowInsecureRequests(down);
    const unreachable = new GroupsRefresher({ store, oidc: () => Promise.resolve(down), claims: CLAIMS, intervalS: 60, log });
    const noDiscovery = new GroupsRefresher({ store, oidc: () => Promise.reject(new Error('discovery failed')), claims: CLAIMS, intervalS: 60, log });
    try {
      const { value, principal } = await store.create({ user: 'carol', email: undefined, groups: ['ops'] });
      for (const r of [unreachable, noDiscovery]) {
        r.add(principal.sessionId!, 'some-refresh-token', 'carol', principal.expiresAt!);
        await r.tick(Date.now() + 61_000);
      }
      expect(store.open(value)).toMatchObject({ user: 'carol', groups: ['ops'] });
      expect(store.isRevoked(principal.sessionId!)).toBe(false);
      const failures = logged.filter((l) => l.event === 'session_refresh_failed');
      expect(failures.some((l) => l.session === principal.sessionId && l.user === 'carol')).toBe(true);
      expect(failures.some((l) => String(l.err).includes('discovery failed'))).toBe(true);
      expect(JSON.stringify(logged)).not.toContain('some-refresh-token');
    } finally {
      unreachable.close();
      noDiscovery.close();
    }
  });
});
import { freePort } from './helpers/ports.js';
