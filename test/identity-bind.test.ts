import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { SESSION_HANDOFF_PATH } from '../src/identity/authenticate.js';
import { deviceCaFiles, ensureDeviceCa, issueDeviceCert } from '../src/identity/device-ca.js';
import { startDevIdp, type DevIdp } from '../src/identity/dev-idp.js';
import { bindUrl } from '../src/identity/portal.js';
import type { Principal } from '../src/identity/principal.js';
import { SESSION_COOKIE, SessionStore } from '../src/identity/sessions.js';
import { initCa } from '../src/inspection/ca.js';
import { PROBE_HOST } from '../src/listeners/probe.js';
import { startDns, type TestDns } from './helpers/dns-server.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { makeCa, makeLeaf } from './helpers/pki.js';
import { startTestProxy, type LogLine, type TestProxy } from './helpers/proxy.js';
import { cleanEnv, run } from './helpers/run.js';
import { freePort } from './helpers/ports.js';
import { launchThroughProxy } from './helpers/browser.js';

// The bind step: after sign-in the portal sends the browser to the proxy's own name, through the
// proxy, where the session is bound to the device certificate and the client address the proxy
// itself sees. `devProxy` has the address binding off and a device listener: only a device can
// be bound there. `ipProxy` has the address binding on, no device listener, and intercepts
// secure.test for signed-in users (tunnel.test it only tunnels).

const BIND_URL = new RegExp(`^http://${PROBE_HOST.replace(/\./g, '\\.')}${SESSION_HANDOFF_PATH.replace(/\./g, '\\.')}\\?ticket=[A-Za-z0-9_.-]+$`);
const BIND_SITE = `${PROBE_HOST}:80`;
let dir: string;
let key: Uint8Array;
let idp: DevIdp;
let dns: TestDns;
let origin: Origin;
let tlsOrigin: Origin;
let devProxy: TestProxy;
let ipProxy: TestProxy;
let devPortal: string;
let ipPortal: string;
let browser: Browser;
let app: string;
let secure: string;
let tunnelled: string;
let proxyCaFile: string;
const devices = new Map<string, { cert: string; key: string }>();


interface Answer { status: number; headers: Record<string, string[]>; body: string }

function parse(r: { code: number; stdout: string; stderr: string }): Answer {
  expect(r.code, r.stderr).toBe(0);
  // Skip the proxy's "200 Connection established" of a tunnel.
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

/**
 * One request with curl: through the device listener (with the named device's certificate, or
 * none), through a plain listener, or straight to a portal; from a given loopback source address.
 */
async function curl(url: string, o: { via?: TestProxy; device?: string | null; from?: string; cookie?: string; method?: string } = {}): Promise<Answer> {
  const args = ['-sS', '-i', '--max-time', '10', '--interface', o.from ?? '127.0.0.1'];
  if (o.device !== undefined) {
    args.push('--proxy', `https://127.0.0.1:${devProxy.running.deviceAddress!.port}`, '--proxy-cacert', proxyCaFile);
    const c = o.device === null ? undefined : devices.get(o.device)!;
    if (c) args.push('--proxy-cert', c.cert, '--proxy-key', c.key);
  } else if (o.via) {
    args.push('-x', o.via.url);
  }
  if (o.cookie) args.push('-H', `Cookie: ${o.cookie}`);
  if (o.method) args.push('-X', o.method);
  return parse(await run('curl', [...args, url], { env: cleanEnv() }));
}

async function waitForLine(p: TestProxy, pred: (l: LogLine) => boolean): Promise<LogLine> {
  for (let i = 0; i < 160; i++) {
    const hit = p.lines().find(pred);
    if (hit) return hit;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no matching log line; have:\n${p.lines().map((l) => JSON.stringify(l)).join('\n')}`);
}

/** Fills the dev IdP's sign-in form when it shows. */
async function signInAs(page: Page, user: string, until: (u: URL) => boolean): Promise<void> {
  await page.waitForURL((u) => u.href.startsWith(`${idp.issuer}/interaction/`) || until(u));
  if (page.url().startsWith(`${idp.issuer}/interaction/`)) {
    await page.selectOption('#login', user);
    await Promise.all([page.waitForURL(until), page.click('#signin')]);
  }
}

const SIGNED_IN = stringify({ version: 'v1', rules: [{ id: 'signed-in', action: 'allow', when: { anonymous: false } }] });

beforeAll(async () => {
  const [devAdmin, ipAdmin] = [await freePort(), await freePort()];
  devPortal = `http://127.0.0.1:${devAdmin}`;
  ipPortal = `http://127.0.0.1:${ipAdmin}`;
  idp = await startDevIdp({
    portal: {
      clientId: 'egress-proxy', clientSecret: 'bind-secret',
      redirectUris: [`${devPortal}/auth/callback`, `${ipPortal}/auth/callback`],
      postLogoutRedirectUris: [`${devPortal}/auth/signed-out`, `${ipPortal}/auth/signed-out`],
    },
  });
  dir = mkdtempSync(join(tmpdir(), 'egress-bind-'));
  writeFileSync(join(dir, 'secret'), 'bind-secret', { mode: 0o600 });
  key = new Uint8Array(randomBytes(32));
  writeFileSync(join(dir, 'session.key'), Buffer.from(key).toString('hex'), { mode: 0o600 });
  writeFileSync(join(dir, 'other-session.key'), randomBytes(32).toString('hex'), { mode: 0o600 });
  // Device certificates from the device CA code `egress-proxy devices issue` uses.
  const caDir = join(dir, 'device-ca');
  const { ca } = ensureDeviceCa(caDir);
  for (const id of ['laptop-7', 'laptop-8']) {
    const issued = issueDeviceCert(ca, id);
    const files = { cert: join(dir, `${id}.pem`), key: join(dir, `${id}-key.pem`) };
    writeFileSync(files.cert, issued.certPem);
    writeFileSync(files.key, issued.keyPem, { mode: 0o600 });
    devices.set(id, files);
  }
  const proxyCa = makeCa('device listener CA');
  const leaf = makeLeaf(proxyCa, ['localhost'], ['127.0.0.1']);
  proxyCaFile = join(dir, 'proxy-ca.pem');
  writeFileSync(proxyCaFile, proxyCa.cert);
  writeFileSync(join(dir, 'server.pem'), leaf.cert);
  writeFileSync(join(dir, 'server-key.pem'), leaf.key, { mode: 0o600 });
  dns = await startDns({ 'app.test': ['127.0.0.2'], 'secure.test': ['127.0.0.3'], 'tunnel.test': ['127.0.0.3'] });
  origin = await startOrigin({ host: '127.0.0.2', handler: (req, res) => res.end(`hello from origin ${req.url}`) });
  app = `http://app.test:${origin.port}`;
  const originCa = makeCa('bind origin CA');
  writeFileSync(join(dir, 'origin-ca.pem'), originCa.cert);
  tlsOrigin = await startOrigin({ host: '127.0.0.3', tls: makeLeaf(originCa, ['secure.test', 'tunnel.test']), handler: (req, res) => res.end(`hello from origin ${req.url}`) });
  secure = `https://secure.test:${tlsOrigin.port}`;
  tunnelled = `https://tunnel.test:${tlsOrigin.port}`;
  initCa(join(dir, 'ca'));
  const signIn = { client_secret_file: join(dir, 'secret'), session_key_file: join(dir, 'session.key') };
  devProxy = await startTestProxy({
    admin: `127.0.0.1:${devAdmin}`,
    dns: { servers: [dns.address] },
    identity: { issuer: idp.issuer, revalidate_s: 1, sign_in: { ...signIn, ip_binding_s: 0 } },
    devices: { listen: '127.0.0.1:0', ca_file: deviceCaFiles(caDir).cert, server_cert_file: join(dir, 'server.pem'), server_key_file: join(dir, 'server-key.pem') },
  }, { default: 'deny' });
  ipProxy = await startTestProxy({
    admin: `127.0.0.1:${ipAdmin}`,
    dns: { servers: [dns.address] },
    inspection: { enabled: true, ca_dir: join(dir, 'ca'), upstream_ca_file: join(dir, 'origin-ca.pem') },
    // Its own session key: a ticket of the other proxy is no ticket here.
    identity: { issuer: idp.issuer, revalidate_s: 1, sign_in: { ...signIn, session_key_file: join(dir, 'other-session.key'), ip_binding_s: 600 } },
  }, { default: 'deny' });
  writeFileSync(join(devProxy.dir, 'policies', 'signed-in.yaml'), SIGNED_IN);
  expect(await devProxy.running.reload()).toBe(true);
  writeFileSync(join(ipProxy.dir, 'policies', 'signed-in.yaml'), stringify({
    version: 'v1',
    apps: { secure: { hosts: ['secure.test'] } },
    rules: [
      { id: 'inspect-secure', action: 'allow', inspect: true, when: { apps: ['secure'], anonymous: false } },
      { id: 'signed-in', action: 'allow', when: { anonymous: false } },
    ],
  }));
  expect(await ipProxy.running.reload()).toBe(true);
  // The portals and the IdP are on loopback, which Chromium reaches directly; every other name,
  // egress-proxy.invalid included, goes to ipProxy's plain listener.
  browser = await launchThroughProxy(`http://127.0.0.1:${ipProxy.port}`);
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await devProxy?.close();
  await ipProxy?.close();
  await idp?.close();
  await origin?.close();
  await tlsOrigin?.close();
  dns?.close();
});

describe('the bind step through the device (mTLS) listener', () => {
  let bind: string;

  it('binds the session to the device certificate the proxy sees, not to an address', async () => {
    // Chromium signs in at the portal, with a proxy that cannot be reached for everything but
    // loopback: the bind step it is sent to never arrives (the fallback case: nothing is bound, the
    // sign-in itself is done), and curl takes it through the device listener instead.
    const context = await browser.newContext({ proxy: { server: `http://127.0.0.1:${await freePort()}`, bypass: '127.0.0.1' } });
    const page = await context.newPage();
    const asked: string[] = [];
    page.on('request', (r) => asked.push(r.url()));
    await page.goto(`${devPortal}/auth/login?rd=${encodeURIComponent(`${app}/page`)}`);
    await page.selectOption('#login', 'alice');
    await Promise.all([page.waitForEvent('requestfailed', (r) => r.url().startsWith(`http://${PROBE_HOST}/`)), page.click('#signin')]);
    bind = asked.find((u) => u.startsWith(`http://${PROBE_HOST}/`))!;
    expect(bind).toMatch(BIND_URL);
    expect((await context.cookies(devPortal)).some((c) => c.name === SESSION_COOKIE)).toBe(true);
    await context.close();
    expect(devProxy.lines().some((l) => l.event === 'session_bound')).toBe(false);

    const r = await curl(bind, { device: 'laptop-7' });
    expect(r.status).toBe(302);
    expect(r.headers.location).toEqual([`${app}/page`]);
    expect(r.headers['referrer-policy']).toEqual(['no-referrer']);
    expect(r.headers['set-cookie']).toBeUndefined();
    const bound = await waitForLine(devProxy, (l) => l.event === 'session_bound');
    expect(bound).toMatchObject({ level: 'info', user: 'alice', device_id: 'laptop-7', client_ip: '127.0.0.1', address_bound: false });
    expect(typeof bound.session).toBe('string');
    const line = await devProxy.waitForAccess((l) => l.rule === 'sign-in' && l.host === PROBE_HOST);
    expect(line).toMatchObject({ status: 302, decision: 'allow' });
    expect(line.url).toBeUndefined();
    const ticket = new URL(bind).searchParams.get('ticket')!;
    expect(JSON.stringify(devProxy.lines())).not.toContain(ticket.slice(-40));
  });

  it('admits that device as alice from another address; without the certificate, or with another one, nothing does', async () => {
    const ok = await curl(`${app}/by-device`, { device: 'laptop-7', from: '127.0.0.7' });
    expect(ok).toMatchObject({ status: 200, body: 'hello from origin /by-device' });
    expect(await devProxy.waitForAccess((l) => String(l.url).endsWith('/by-device'))).toMatchObject({
      auth: 'session', user: 'alice', groups: 'eng', device_id: 'laptop-7', client_ip: '127.0.0.7', rule: 'signed-in', decision: 'allow',
    });
    // The address binding is off: the address the device came from (127.0.0.1) admits nothing.
    for (const [name, o] of Object.entries({
      plain: { via: devProxy, from: '127.0.0.7' }, plainSameAddress: { via: devProxy, from: '127.0.0.1' },
      noCertificate: { device: null, from: '127.0.0.1' }, otherDevice: { device: 'laptop-8', from: '127.0.0.1' },
    })) {
      const r = await curl(`${app}/not-${name}`, o);
      expect(r.status, name).toBe(407);
      expect(await devProxy.waitForAccess((l) => String(l.url).endsWith(`/not-${name}`)), name).toMatchObject({ auth: 'anonymous', reason: 'auth_required' });
    }
    expect(origin.seen.some((s) => s.url.startsWith('/not-'))).toBe(false);
  });

  it('refuses a replayed, foreign-site, wrong-port, expired, tampered or missing ticket with 400 and binds nothing', async () => {
    const refused = async (url: string, why: string): Promise<void> => {
      const r = await curl(url, { device: 'laptop-8' });
      expect(r.status, why).toBe(400);
      expect(r.headers['x-egress-reason'], why).toEqual(['signin_not_started']);
      expect(r.body, why).toContain(`${devPortal}/auth/login`);
    };
    const boundBefore = devProxy.lines().filter((l) => l.event === 'session_bound').length;
    await refused(bind, 'replayed');
    // Tickets sealed elsewhere with the same key (another node would do the same).
    const store = new SessionStore({ key, ttlS: 3600, ipBindingS: 0, portal: devPortal });
    try {
      const alice: Principal = { method: 'session', user: 'alice', groups: ['eng'], expiresAt: Date.now() + 3_600_000, sessionId: randomBytes(9).toString('base64url') };
      const rd = `${app}/after-bad`;
      await refused(bindUrl(await store.sealTicket(alice, 'app.test:443', 'https://app.test/x')), 'a hand-off ticket for another site');
      await refused(bindUrl(await store.sealTicket(alice, BIND_SITE, rd, Date.now() - 61_000)), 'expired');
      const live = await store.sealTicket(alice, BIND_SITE, rd);
      await refused(bindUrl(live).replace(PROBE_HOST, `${PROBE_HOST}:8080`), 'the proxy\'s name on another port');
      await refused(bindUrl(live.slice(0, -4) + (live.endsWith('AAAA') ? 'BBBB' : 'AAAA')), 'tampered');
      await refused(`http://${PROBE_HOST}${SESSION_HANDOFF_PATH}`, 'no ticket');
      await refused(`http://${PROBE_HOST}${SESSION_HANDOFF_PATH}?ticket=x.y.z`, 'garbage');
      expect((await curl(bindUrl(live), { device: 'laptop-8', method: 'POST' })).status).toBe(405);
      expect((await curl(`http://${PROBE_HOST}${SESSION_HANDOFF_PATH}/other`, { device: 'laptop-8' })).status).toBe(404);

      // Nothing was bound: laptop-8 is still nobody.
      expect(devProxy.lines().filter((l) => l.event === 'session_bound')).toHaveLength(boundBefore);
      expect((await curl(`${app}/laptop-8-before`, { device: 'laptop-8' })).status).toBe(407);
      const refusedLine = await devProxy.waitForAccess((l) => l.rule === 'sign-in' && l.status === 400);
      expect(refusedLine).toMatchObject({ host: PROBE_HOST, decision: 'deny', reason: 'signin_not_started' });
      expect(refusedLine.url).toBeUndefined();
      const why = devProxy.lines().filter((l) => l.event === 'sign_in_failed').map((l) => String(l.detail));
      expect(why).toEqual(expect.arrayContaining([
        `bind on ${BIND_SITE}: ticket already used`,
        `bind on ${BIND_SITE}: ticket for app.test:443`,
        `bind on ${BIND_SITE}: ticket tampered, expired or not a ticket`,
        `bind on ${PROBE_HOST}:8080: ticket for ${BIND_SITE}`,
        `bind on ${BIND_SITE}: no ticket`,
      ]));

      // The control: the ticket refused on the wrong port was not used up, and works where it belongs.
      const control = await curl(bindUrl(live), { device: 'laptop-8' });
      expect(control.status).toBe(302);
      expect(control.headers.location).toEqual([rd]);
      expect((await curl(`${app}/laptop-8-after`, { device: 'laptop-8' })).status).toBe(200);
      expect(await devProxy.waitForAccess((l) => String(l.url).endsWith('/laptop-8-after'))).toMatchObject({ auth: 'session', user: 'alice', device_id: 'laptop-8' });

      // Without a device or an address binding, a plain http page cannot be recognised: an explanation, not a loop.
      const plain = await curl(bindUrl(await store.sealTicket(alice, BIND_SITE, `${app}/plain`)), { via: devProxy });
      expect(plain.status).toBe(200);
      expect(plain.body).toContain('plain <code>http</code> page');
      expect(await waitForLine(devProxy, (l) => l.event === 'session_bound' && l.device_id === undefined)).toMatchObject({ user: 'alice', address_bound: false });
    } finally {
      store.close();
    }
  });
});

describe('the bind step through the plain listener (headless Chromium)', () => {
  let portalCookie: string;

  it('is transparent: sign-in lands on the original page, and the proxy bound the address it sees', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const visited: string[] = [];
    page.on('request', (r) => visited.push(r.url()));
    await page.goto(`${app}/hello`);
    expect(page.url()).toMatch(new RegExp(`^${idp.issuer}/interaction/`));
    await signInAs(page, 'alice', (u) => u.href === `${app}/hello`);
    expect(await page.textContent('body')).toBe('hello from origin /hello');
    // callback -> the bind step on the proxy's own name -> the page
    const callback = visited.findIndex((u) => u.startsWith(`${ipPortal}/auth/callback`));
    expect(visited[callback + 1]).toMatch(BIND_URL);
    expect(visited[callback + 2]).toBe(`${app}/hello`);
    expect(await ipProxy.waitForAccess((l) => l.url === `${app}/hello` && l.status === 200)).toMatchObject({ auth: 'session', user: 'alice', rule: 'signed-in' });
    expect(await ipProxy.waitForAccess((l) => l.rule === 'sign-in' && l.host === PROBE_HOST)).toMatchObject({ status: 302, decision: 'allow', client_ip: '127.0.0.1' });
    expect(await waitForLine(ipProxy, (l) => l.event === 'session_bound')).toMatchObject({ user: 'alice', client_ip: '127.0.0.1', address_bound: true });
    portalCookie = `${SESSION_COOKIE}=${(await context.cookies(ipPortal)).find((c) => c.name === SESSION_COOKIE)!.value}`;

    // A sign-in started at the portal itself has no page to go on to through the proxy: no bind step.
    const from = visited.length;
    await page.goto(`${ipPortal}/auth/login`);
    expect(page.url()).toBe(`${ipPortal}/auth/`);
    expect(visited.slice(from).some((u) => u.includes(PROBE_HOST))).toBe(false);
    await context.close();
  });

  it('binds the address the proxy sees, which need not be the one the portal sees', async () => {
    // A live portal session skips the IdP; the portal (reached from 127.0.0.1) sends the bind step on.
    const login = await curl(`${ipPortal}/auth/login?rd=${encodeURIComponent(`${app}/seen`)}`, { cookie: portalCookie });
    expect(login.status).toBe(302);
    const step = login.headers.location![0]!;
    expect(step).toMatch(BIND_URL);
    // The browser's proxy traffic comes from 127.0.0.9 (say, the portal is behind a load balancer).
    expect((await curl(`${app}/from-9-before`, { via: ipProxy, from: '127.0.0.9' })).status).toBe(407);
    const r = await curl(step, { via: ipProxy, from: '127.0.0.9' });
    expect(r.status).toBe(302);
    expect(r.headers.location).toEqual([`${app}/seen`]);
    expect(await waitForLine(ipProxy, (l) => l.event === 'session_bound' && l.client_ip === '127.0.0.9')).toMatchObject({ user: 'alice', address_bound: true });
    expect((await curl(`${app}/from-9`, { via: ipProxy, from: '127.0.0.9' })).status).toBe(200);
    expect(await ipProxy.waitForAccess((l) => String(l.url).endsWith('/from-9'))).toMatchObject({ auth: 'session', user: 'alice', client_ip: '127.0.0.9' });
    expect((await curl(`${app}/from-10`, { via: ipProxy, from: '127.0.0.10' })).status).toBe(407);
    // Once: the same step again binds nothing more.
    const again = await curl(step, { via: ipProxy, from: '127.0.0.10' });
    expect(again.status).toBe(400);
    expect((await curl(`${app}/from-10-after`, { via: ipProxy, from: '127.0.0.10' })).status).toBe(407);
  });

  it('goes on from the bind step to the hand-off of an intercepted https site, or straight to a tunnelled one', async () => {
    const step = async (rd: string): Promise<Answer> => {
      const login = await curl(`${ipPortal}/auth/login?rd=${encodeURIComponent(rd)}`, { cookie: portalCookie });
      expect(login.headers.location![0]).toMatch(BIND_URL);
      return curl(login.headers.location![0]!, { via: ipProxy });
    };
    // Asked as the user the binding just made recognisable: secure.test is intercepted for alice.
    const intercepted = await step(`${secure}/in`);
    expect(intercepted.status).toBe(302);
    const handoff = intercepted.headers.location![0]!;
    expect(handoff).toMatch(new RegExp(`^${secure.replace(/\./g, '\\.')}${SESSION_HANDOFF_PATH.replace(/\./g, '\\.')}\\?ticket=`));
    expect(intercepted.headers['referrer-policy']).toEqual(['no-referrer']);
    const cookie = parse(await run('curl', ['-sS', '-i', '--max-time', '10', '--cacert', join(dir, 'ca', 'ca.pem'), '-x', ipProxy.url, handoff], { env: cleanEnv() }));
    expect(cookie.headers.location).toEqual([`${secure}/in`]);
    expect(cookie.headers['set-cookie']![0]).toMatch(new RegExp(`^${SESSION_COOKIE}=`));
    // tunnel.test is only tunnelled: a hand-off ticket would reach the site itself, so none is made.
    const direct = await step(`${tunnelled}/direct`);
    expect(direct.status).toBe(302);
    expect(direct.headers.location).toEqual([`${tunnelled}/direct`]);
    expect(tlsOrigin.seen.some((r) => r.url.startsWith('/.well-known/'))).toBe(false);
  });
});
