import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { importJWK, SignJWT, type JWTPayload } from 'jose';
import { ProxyAgent, request } from 'undici';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newSigningKey, startDevIdp, type DevIdp } from '../src/identity/dev-idp.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { makeCa, makeLeaf } from './helpers/pki.js';
import { startTestProxy, type TestProxy } from './helpers/proxy.js';
import { rawExchange } from './helpers/raw.js';
import { cleanEnv, run } from './helpers/run.js';
import { freePort } from './helpers/ports.js';

const keyA = newSigningKey();
const keyB = newSigningKey();
let idp: DevIdp;
let idpPort: number;
let proxy: TestProxy;
let origin: Origin;
let httpsOrigin: Origin;
let caFile: string;
let caPem: string;
/** Every token a test sent: none may ever appear in a log file. */
const sent: string[] = [];
/** Times the IdP served its JWKS (key rotation and rate limiting are judged by it). */
const jwksFetches: number[] = [];

async function startIdp(keys: JsonWebKey[], port?: number): Promise<DevIdp> {
  const i = await startDevIdp({ signingKeys: keys, ...(port !== undefined ? { port } : {}) });
  i.server.prependListener('request', (req) => { if (req.url?.startsWith('/jwks')) jwksFetches.push(Date.now()); });
  return i;
}

/** A token signed by `key` (a private JWK) with the usual workload claims, overridden by `claims`. */
async function sign(key: JsonWebKey, claims: JWTPayload = {}, header: Record<string, unknown> = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const alg = (header.alg as string | undefined) ?? 'ES256';
  const k = await importJWK(key as Parameters<typeof importJWK>[0], alg);
  const t = await new SignJWT({ iss: idp.issuer, aud: 'egress-proxy', client_id: 'ci-runner', sub: 'ci-runner', iat: now, exp: now + 600, ...claims })
    .setProtectedHeader({ alg, kid: kidOf(key), typ: 'at+jwt', ...header })
    .sign(k);
  sent.push(t);
  return t;
}

const kidOf = (k: JsonWebKey): string => (k as { kid: string }).kid;
const b64 = (s: string): string => Buffer.from(s).toString('base64');
const b64url = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');

async function token(): Promise<string> {
  const t = await idp.serviceToken('ci-runner');
  sent.push(t);
  return t;
}

/** Raw log text: what an operator (or an attacker with the file) would see. */
function logText(): string {
  proxy.lines(); // flushes
  return readFileSync(join(proxy.dir, 'proxy.log'), 'utf8');
}

/** A plain-HTTP request through the proxy with the given Proxy-Authorization (raw, so any value can be sent). */
function rawGet(path: string, auth: string | undefined): Promise<string> {
  const authLine = auth === undefined ? '' : `Proxy-Authorization: ${auth}\r\n`;
  return rawExchange(proxy.port, `GET ${origin.url}${path} HTTP/1.1\r\nHost: ${origin.host}:${origin.port}\r\n${authLine}Connection: close\r\n\r\n`);
}

function rawConnect(auth: string | undefined): Promise<string> {
  const authLine = auth === undefined ? '' : `Proxy-Authorization: ${auth}\r\n`;
  const target = `${httpsOrigin.host}:${httpsOrigin.port}`;
  return rawExchange(proxy.port, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${authLine}\r\n`, { waitMs: 1000 });
}

const header = (raw: string, name: string): string[] =>
  raw.split('\r\n\r\n')[0]!.split('\r\n').filter((l) => l.toLowerCase().startsWith(`${name}:`)).map((l) => l.slice(name.length + 1).trim());

function expect407(raw: string, reason: string): void {
  expect(raw.split('\r\n')[0]).toBe('HTTP/1.1 407 Proxy Authentication Required');
  expect(header(raw, 'x-egress-reason')).toEqual([reason]);
  expect(header(raw, 'proxy-authenticate')).toContain('Basic realm="egress-proxy", charset="UTF-8"');
  expect(header(raw, 'proxy-authenticate')).toContain('Bearer realm="egress-proxy"');
}


beforeAll(async () => {
  idp = await startIdp([keyA]);
  idpPort = Number(new URL(idp.issuer).port);
  origin = await startOrigin({ host: '127.0.0.2' });
  const ca = makeCa();
  caPem = ca.cert;
  caFile = join(mkdtempSync(join(tmpdir(), 'egress-ca-')), 'ca.pem');
  writeFileSync(caFile, ca.cert);
  httpsOrigin = await startOrigin({ host: '127.0.0.3', tls: makeLeaf(ca, ['origin.test'], ['127.0.0.3']) });
  proxy = await startTestProxy({ identity: { issuer: idp.issuer, jwks_refresh_min_s: 1 } }, { default: 'deny' });
  writeFileSync(join(proxy.dir, 'policies', 'test.yaml'), stringify({
    version: 'v1',
    default: 'deny',
    network: { allow_ranges: ['127.0.0.2/31'], connect_ports: ['1-65535'], http_ports: ['1-65535'] },
    rules: [
      { id: 'ci', action: 'allow', when: { services: ['ci-runner'] } },
      { id: 'eng', action: 'allow', when: { groups: ['eng'] } },
    ],
  }));
  expect(await proxy.running.reload()).toBe(true);
});

afterAll(async () => {
  await proxy?.close();
  await origin?.close();
  await httpsOrigin?.close();
  await idp?.close();
});

describe('workload tokens from the identity provider', () => {
  it('admits curl with the token as the proxy URL password (Basic), and the origin never sees it', async () => {
    const t = await token();
    const r = await run('curl', ['-sS', '-x', `http://ci-runner:${t}@127.0.0.1:${proxy.port}`, `${origin.url}/basic`], { env: cleanEnv() });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ url: '/basic' });
    const line = await proxy.waitForAccess((l) => l.url === `${origin.url}/basic`);
    expect(line).toMatchObject({ status: 200, decision: 'allow', rule: 'ci', auth: 'token', service: 'ci-runner' });
    expect(line.user).toBeUndefined();
    const seen = origin.seen.find((s) => s.url === '/basic')!;
    expect(seen.headers['proxy-authorization']).toBeUndefined();
    expect(JSON.stringify(seen.rawHeaders)).not.toContain(t.split('.')[2]);
    expect(logText()).not.toContain(t);
  });

  it('admits curl with Proxy-Authorization: Bearer, plain HTTP and CONNECT', async () => {
    const t = await token();
    const r = await run('curl', ['-sS', '-x', proxy.url, '--proxy-header', `Proxy-Authorization: Bearer ${t}`, `${origin.url}/bearer`], { env: cleanEnv() });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ url: '/bearer' });
    expect(origin.seen.find((s) => s.url === '/bearer')!.headers['proxy-authorization']).toBeUndefined();
    expect(await proxy.waitForAccess((l) => l.url === `${origin.url}/bearer`)).toMatchObject({ status: 200, auth: 'token', service: 'ci-runner' });

    const before = proxy.access().filter((l) => l.kind === 'connect').length;
    const c = await run('curl', ['-sS', '--cacert', caFile, '-x', proxy.url, '--proxy-header', `Proxy-Authorization: Bearer ${t}`, `${httpsOrigin.url}/tunnel-bearer`], { env: cleanEnv() });
    expect(c.code, c.stderr).toBe(0);
    expect(JSON.parse(c.stdout)).toMatchObject({ url: '/tunnel-bearer' });
    await proxy.waitForAccess(() => proxy.access().filter((l) => l.kind === 'connect').length > before);
    expect(proxy.access().filter((l) => l.kind === 'connect').at(-1)).toMatchObject({ status: 200, auth: 'token', service: 'ci-runner', host: '127.0.0.3' });
  });

  it('admits a CONNECT with HTTPS_PROXY=http://svc:<token>@proxy (curl)', async () => {
    const t = await token();
    const r = await run('curl', ['-sS', '--cacert', caFile, `${httpsOrigin.url}/env`], { env: cleanEnv({ HTTPS_PROXY: `http://ci-runner:${t}@127.0.0.1:${proxy.port}` }) });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ url: '/env' });
    const line = await proxy.waitForAccess((l) => l.kind === 'connect' && l.port === httpsOrigin.port && l.status === 200 && l.auth === 'token');
    expect(line).toMatchObject({ service: 'ci-runner', rule: 'ci' });
  });

  it('admits undici ProxyAgent with token: "Bearer ..." (tunnel and plain HTTP) and with svc:<token> in its URL', async () => {
    const t = await token();
    const tunnel = new ProxyAgent({ uri: proxy.url, token: `Bearer ${t}`, requestTls: { ca: caPem } });
    const plain = new ProxyAgent({ uri: proxy.url, token: `Bearer ${t}`, proxyTunnel: false });
    const inUrl = new ProxyAgent({ uri: `http://ci-runner:${t}@127.0.0.1:${proxy.port}`, requestTls: { ca: caPem } });
    try {
      const a = await request(`${httpsOrigin.url}/undici`, { dispatcher: tunnel });
      expect(a.statusCode).toBe(200);
      expect(await a.body.json()).toMatchObject({ url: '/undici' });
      const b = await request(`${origin.url}/undici-plain`, { dispatcher: plain });
      expect(b.statusCode).toBe(200);
      expect(await b.body.json()).toMatchObject({ url: '/undici-plain' });
      expect(origin.seen.find((s) => s.url === '/undici-plain')!.headers['proxy-authorization']).toBeUndefined();
      // Credentials in the proxy URL, as EnvHttpProxyAgent takes them from HTTPS_PROXY.
      const c = await request(`${httpsOrigin.url}/undici-url`, { dispatcher: inUrl });
      expect(c.statusCode).toBe(200);
      expect(await c.body.json()).toMatchObject({ url: '/undici-url' });
    } finally {
      await tunnel.close();
      await plain.close();
      await inUrl.close();
    }
  });

  it('accepts the token as the Basic user with an empty password', async () => {
    const t = await token();
    const raw = await rawGet('/token-as-user', `Basic ${b64(`${t}:`)}`);
    expect(raw.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
  });

  it('takes a user token as a user: name, email and groups from the claims, no service', async () => {
    const t = await sign(keyA, { sub: 'alice', email: 'alice@example.com', groups: ['eng', 'oncall'], client_id: 'some-app' });
    const raw = await rawGet('/user-token', `Bearer ${t}`);
    expect(raw.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    const line = await proxy.waitForAccess((l) => l.url === `${origin.url}/user-token`);
    expect(line).toMatchObject({ auth: 'token', user: 'alice', email: 'alice@example.com', groups: 'eng,oncall', rule: 'eng' });
    expect(line.service).toBeUndefined();
  });

  it('asks for credentials without any: 407, Basic realm and auth_required (HTTP and CONNECT)', async () => {
    const raw = await rawGet('/none', undefined);
    expect407(raw, 'auth_required');
    expect(await proxy.waitForAccess((l) => l.url === `${origin.url}/none`)).toMatchObject({ status: 407, reason: 'auth_required', auth: 'anonymous' });
    const c = await rawConnect(undefined);
    expect407(c, 'auth_required');
    const r = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-x', proxy.url, `${origin.url}/none-curl`], { env: cleanEnv() });
    expect(r.stdout).toBe('407');
  });
});

describe('bad tokens get 407 with their own reason, and never reach the log', () => {
  const now = (): number => Math.floor(Date.now() / 1000);
  const cases: Array<[string, () => Promise<string>, string]> = [
    ['expired', async () => `Bearer ${await sign(keyA, { iat: now() - 7200, exp: now() - 3600 })}`, 'token_expired'],
    ['not-yet-valid', async () => `Bearer ${await sign(keyA, { nbf: now() + 3600 })}`, 'token_not_yet_valid'],
    ['issued-in-future', async () => `Bearer ${await sign(keyA, { iat: now() + 3600, exp: now() + 7200 })}`, 'token_not_yet_valid'],
    ['audience', async () => `Bearer ${await sign(keyA, { aud: 'some-other-api' })}`, 'token_audience'],
    ['issuer', async () => `Bearer ${await sign(keyA, { iss: 'https://evil.example' })}`, 'token_issuer'],
    ['alg-none', async () => {
      const t = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ iss: idp.issuer, aud: 'egress-proxy', client_id: 'ci-runner', exp: now() + 600 })}.`;
      sent.push(t);
      return `Bearer ${t}`;
    }, 'token_algorithm'],
    ['hs256', async () => {
      const secret = new TextEncoder().encode('a-shared-secret-that-anyone-could-know');
      const t = await new SignJWT({ iss: idp.issuer, aud: 'egress-proxy', client_id: 'ci-runner', exp: now() + 600 }).setProtectedHeader({ alg: 'HS256', kid: kidOf(keyA) }).sign(secret);
      sent.push(t);
      return `Basic ${b64(`ci-runner:${t}`)}`;
    }, 'token_algorithm'],
    ['es384-not-accepted', async () => {
      const { privateKey } = await import('node:crypto').then((c) => c.generateKeyPairSync('ec', { namedCurve: 'P-384' }));
      return `Bearer ${await sign({ ...privateKey.export({ format: 'jwk' }), kid: kidOf(keyA) } as JsonWebKey, {}, { alg: 'ES384' })}`;
    }, 'token_algorithm'],
    ['tampered-signature', async () => {
      const [h, p, s] = (await sign(keyA)).split('.') as [string, string, string];
      const mid = Math.floor(s.length / 2);
      const t = `${h}.${p}.${s.slice(0, mid)}${s[mid] === 'A' ? 'B' : 'A'}${s.slice(mid + 1)}`;
      sent.push(t);
      return `Bearer ${t}`;
    }, 'token_signature'],
    ['tampered-claims', async () => {
      const [h, , s] = (await sign(keyA, { client_id: 'low-privilege', sub: 'low-privilege' })).split('.') as [string, string, string];
      const t = `${h}.${b64url({ iss: idp.issuer, aud: 'egress-proxy', client_id: 'ci-runner', sub: 'ci-runner', exp: now() + 600 })}.${s}`;
      sent.push(t);
      return `Bearer ${t}`;
    }, 'token_signature'],
    ['unknown-kid', async () => `Bearer ${await sign(newSigningKey())}`, 'token_unknown_key'],
    ['no-exp', async () => `Bearer ${await sign(keyA, { exp: undefined })}`, 'token_invalid'],
    ['no-subject', async () => `Bearer ${await sign(keyA, { sub: undefined, client_id: undefined })}`, 'token_invalid'],
    ['no-alg', async () => `Bearer ${b64url({ typ: 'JWT' })}.${b64url({ exp: 1 })}.c2ln`, 'token_invalid'],
    ['garbage-bearer', async () => 'Bearer not-a-jwt', 'token_invalid'],
    ['jwe-shaped', async () => 'Bearer a.b.c.d.e', 'token_invalid'],
    ['other-scheme', async () => 'Digest username="ci-runner", realm="egress-proxy"', 'token_invalid'],
    ['bad-base64', async () => 'Basic !!!not base64!!!', 'token_invalid'],
    ['basic-no-colon', async () => `Basic ${b64('just-a-user')}`, 'token_invalid'],
    ['empty-bearer', async () => 'Bearer', 'token_invalid'],
  ];

  for (const [name, make, reason] of cases) {
    it(`${name} -> ${reason}`, async () => {
      const auth = await make();
      const raw = await rawGet(`/bad-${name}`, auth);
      expect407(raw, reason);
      if (auth.length > 20) expect(raw).not.toContain(auth.slice(7));
      const line = await proxy.waitForAccess((l) => l.url === `${origin.url}/bad-${name}`);
      expect(line).toMatchObject({ status: 407, decision: 'deny', reason });
      expect(line.service).toBeUndefined();
      expect(origin.seen.some((s) => s.url === `/bad-${name}`)).toBe(false);
      const log = logText();
      for (const t of sent) {
        expect(log).not.toContain(t);
        expect(log).not.toContain(t.split('.')[1]);
      }
    });
  }

  it('refuses a bad token on CONNECT the same way', async () => {
    const t = await sign(keyA, { aud: 'some-other-api' });
    expect407(await rawConnect(`Bearer ${t}`), 'token_audience');
    expect407(await rawConnect('Bearer x.y.z'), 'token_invalid');
    expect(logText()).not.toContain(t);
  });
});

describe('verified tokens are cached; keys rotate; the issuer can be down', () => {
  it('a verified token is cached: the next use is answered synchronously, as Bearer or Basic', async () => {
    const t = await token();
    expect((await rawGet('/cache-1', `Bearer ${t}`)).split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    const auth = proxy.running.runtime.identity.tokens!;
    const second = auth.authenticate(`Bearer ${t}`);
    expect(second).not.toBeInstanceOf(Promise);
    expect(second).toMatchObject({ method: 'token', service: 'ci-runner' });
    // The same token as a Basic password hits the same entry.
    expect(auth.authenticate(`Basic ${b64(`x:${t}`)}`)).toBe(second);
  });

  it('refreshes the keys once for a new key id (rotation), then accepts tokens of either key', async () => {
    const old = await token();
    expect((await rawGet('/rotate-old', `Bearer ${old}`)).split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    await idp.close();
    idp = await startIdp([keyB, keyA], idpPort);
    // Well past the 1 s refresh cool-down, counted by jose from when the last fetch completed.
    const wait = jwksFetches.at(-1)! + 2000 - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const fetchesBefore = jwksFetches.length;
    const fresh = await token(); // signed by key B
    expect((await rawGet('/rotate-new', `Bearer ${fresh}`)).split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    expect(jwksFetches.length).toBe(fetchesBefore + 1);
    expect(await proxy.waitForAccess((l) => l.url === `${origin.url}/rotate-new`)).toMatchObject({ status: 200, auth: 'token', service: 'ci-runner' });
    // A token of the old key (not cached) still verifies from the refreshed set, with no fetch.
    expect((await rawGet('/rotate-a', `Bearer ${await sign(keyA)}`)).split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    expect(jwksFetches.length).toBe(fetchesBefore + 1);
  });

  it('rate-limits refreshes: unknown key ids within the cool-down do not fetch keys again', async () => {
    const slow = await startTestProxy({ identity: { issuer: idp.issuer, jwks_refresh_min_s: 3600 } }, { default: 'deny' });
    try {
      const auth = slow.running.runtime.identity.tokens!;
      const before = jwksFetches.length;
      await expect(auth.authenticate(`Bearer ${await token()}`)).resolves.toMatchObject({ service: 'ci-runner' });
      expect(jwksFetches.length).toBe(before + 1);
      for (let i = 0; i < 3; i++) {
        await expect(auth.authenticate(`Bearer ${await sign(newSigningKey())}`)).rejects.toMatchObject({ reason: 'token_unknown_key' });
      }
      expect(jwksFetches.length).toBe(before + 1);
    } finally {
      await slow.close();
    }
  });

  it('fails closed with 503 identity_unavailable when keys cannot be fetched; cached tokens keep working', async () => {
    const cached = await token();
    expect((await rawGet('/down-cached-1', `Bearer ${cached}`)).split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    await idp.close();
    const wait = jwksFetches.at(-1)! + 2000 - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const raw = await rawGet('/down-new', `Bearer ${await sign(newSigningKey())}`);
    expect(raw.split('\r\n')[0]).toBe('HTTP/1.1 503 Service Unavailable');
    expect(header(raw, 'x-egress-reason')).toEqual(['identity_unavailable']);
    expect(await proxy.waitForAccess((l) => l.url === `${origin.url}/down-new`)).toMatchObject({ status: 503, reason: 'identity_unavailable' });
    expect((await rawGet('/down-cached-2', `Bearer ${cached}`)).split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    idp = await startIdp([keyB, keyA], idpPort);
  });

  it('never wrote any token to the log', () => {
    const log = logText();
    expect(sent.length).toBeGreaterThan(20);
    for (const t of sent) expect(log).not.toContain(t);
  });
});

describe('start-up checks the issuer', () => {
  it('refuses to start when discovery fails', async () => {
    const port = await freePort();
    await expect(startTestProxy({ identity: { issuer: `http://127.0.0.1:${port}` } })).rejects.toThrow(/OIDC discovery failed for http:\/\/127\.0\.0\.1/);
  });

  it('refuses an issuer whose discovery document names another issuer', async () => {
    const fake = await startOrigin({
      host: '127.0.0.1',
      handler: (_req, res) => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ issuer: 'https://someone-else.example', jwks_uri: 'https://someone-else.example/jwks' }));
      },
    });
    try {
      await expect(startTestProxy({ identity: { issuer: fake.url } })).rejects.toThrow(/names issuer "https:\/\/someone-else\.example"/);
      expect(fake.seen[0]?.url).toBe('/.well-known/openid-configuration');
    } finally {
      await fake.close();
    }
  });

  it('refuses a plain-http issuer off loopback without contacting it', async () => {
    await expect(startTestProxy({ identity: { issuer: 'http://idp.example.com' } })).rejects.toThrow(/must be https/);
  });
});
