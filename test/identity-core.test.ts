import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevIdp, type DevIdp } from '../src/identity/dev-idp.js';
import { initCa } from '../src/inspection/ca.js';
import { startDns, type TestDns } from './helpers/dns-server.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { makeCa, makeLeaf } from './helpers/pki.js';
import { startTestProxy, type TestProxy } from './helpers/proxy.js';
import { cleanEnv, run } from './helpers/run.js';
import { freePort } from './helpers/ports.js';

const MOZILLA = 'Mozilla/5.0 (X11; Linux x86_64) Chrome/140.0 Safari/537.36';


let idp: DevIdp;
let dns: TestDns;
let plain: Origin;
let secure: Origin;
let proxy: TestProxy;
let dir: string;
let portal: string;

beforeAll(async () => {
  const adminPort = await freePort();
  portal = `http://127.0.0.1:${adminPort}`;
  // Short-lived tokens: the expiry test waits for one to run out.
  idp = await startDevIdp({
    accessTokenTtl: 3,
    portal: { clientId: 'egress-proxy', clientSecret: 'core-secret', redirectUris: [`${portal}/auth/callback`] },
  });
  dir = mkdtempSync(join(tmpdir(), 'egress-idcore-'));
  writeFileSync(join(dir, 'secret'), 'core-secret', { mode: 0o600 });
  const originCa = makeCa('core origin CA');
  writeFileSync(join(dir, 'origin-ca.pem'), originCa.cert);
  initCa(join(dir, 'ca'));
  dns = await startDns({ 'plain.test': ['127.0.0.2'], 'secure.test': ['127.0.0.3'], 'banned.test': ['127.0.0.2'] });
  plain = await startOrigin({ host: '127.0.0.2' });
  secure = await startOrigin({ host: '127.0.0.3', tls: makeLeaf(originCa, ['secure.test'], ['127.0.0.3']) });
  proxy = await startTestProxy({
    admin: `127.0.0.1:${adminPort}`,
    dns: { servers: [dns.address] },
    inspection: { enabled: true, ca_dir: join(dir, 'ca'), upstream_ca_file: join(dir, 'origin-ca.pem') },
    identity: { issuer: idp.issuer, revalidate_s: 1, sign_in: { client_secret_file: join(dir, 'secret') } },
  }, { default: 'deny' });
  writeFileSync(join(proxy.dir, 'policies', 'rules.yaml'), stringify({
    version: 'v1',
    apps: { banned: { hosts: ['banned.test'] }, secure: { hosts: ['secure.test'] } },
    rules: [
      { id: 'no-banned', action: 'deny', message: 'Not for anyone.', when: { apps: ['banned'] } },
      { id: 'inspect-secure', action: 'allow', inspect: true, when: { apps: ['secure'], anonymous: false } },
      { id: 'workloads', action: 'allow', when: { services: ['ci-runner'] } },
    ],
  }));
  expect(await proxy.running.reload()).toBe(true);
}, 30_000);

afterAll(async () => {
  await proxy?.close();
  await Promise.all([plain?.close(), secure?.close(), idp?.close()]);
  dns?.close();
});

const curl = (args: string[]) => run('curl', ['-sS', '-i', '--max-time', '10', ...args], { env: cleanEnv() });

describe('when policy asks for an identity', () => {
  it('challenges an anonymous request that only an identity could admit (407, both schemes offered)', async () => {
    const r = await curl(['-x', proxy.url, `http://plain.test:${plain.port}/`]);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 407 /);
    expect(r.stdout).toMatch(/proxy-authenticate: Basic realm="egress-proxy"/i);
    expect(r.stdout).toMatch(/proxy-authenticate: Bearer realm="egress-proxy"/i);
    expect(r.stdout).toMatch(/x-egress-reason: auth_required/i);
    expect(await proxy.waitForAccess((l) => l.host === 'plain.test' && l.reason === 'auth_required')).toMatchObject({ status: 407, auth: 'anonymous', decision: 'deny' });
  });

  it('does not ask for credentials when a rule refuses everyone: 403 with the rule\'s message', async () => {
    const r = await curl(['-x', proxy.url, `http://banned.test:${plain.port}/`]);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 403 /);
    expect(r.stdout).toMatch(/x-egress-reason: policy_denied/i);
    expect(r.stdout).not.toMatch(/proxy-authenticate/i);
    expect(r.stdout).toContain('Not for anyone.');
  });

  it('sends an anonymous browser on an HTTPS site to sign in from inside the intercepted connection', async () => {
    const url = `https://secure.test:${secure.port}/account?tab=1`;
    const r = await curl(['-A', MOZILLA, '--cacert', join(dir, 'ca', 'ca.pem'), '-x', proxy.url, url]);
    // The tunnel is accepted and intercepted; the request inside gets the redirect.
    expect(r.stdout).toMatch(/^HTTP\/1\.1 200 Connection established\r\n\r\nHTTP\/1\.1 302 /);
    expect(r.stdout).toContain(`location: ${portal}/auth/login?rd=${encodeURIComponent(url)}`);
    expect(secure.seen.some((s) => s.url === '/account?tab=1')).toBe(false);
    const tunnel = await proxy.waitForAccess((l) => l.kind === 'connect' && l.host === 'secure.test');
    expect(tunnel).toMatchObject({ inspected: true, auth: 'anonymous' });
    // Not a browser: the tunnel itself is challenged, nothing is intercepted.
    const tool = await curl(['--cacert', join(dir, 'ca', 'ca.pem'), '-x', proxy.url, url]);
    expect(tool.stdout).toMatch(/^HTTP\/1\.1 407 /);
  });

  it('ends an open tunnel when the token that admitted it expires (within revalidate_s)', async () => {
    const token = await idp.serviceToken();
    const sock: Socket = connect(proxy.port, '127.0.0.1');
    await once(sock, 'connect');
    const basic = Buffer.from(`ci-runner:${token}`).toString('base64');
    sock.write(`CONNECT 127.0.0.2:${plain.port} HTTP/1.1\r\nHost: 127.0.0.2:${plain.port}\r\nProxy-Authorization: Basic ${basic}\r\n\r\n`);
    const [head] = (await once(sock, 'data')) as [Buffer];
    expect(head.toString()).toMatch(/^HTTP\/1\.1 200 /);
    const started = Date.now();
    const closed = once(sock, 'close');
    sock.on('error', () => undefined);
    await closed;
    // Token lifetime 3 s, sweep every second: closed after expiry, not before, and not much later.
    const lived = Date.now() - started;
    expect(lived).toBeGreaterThan(500);
    expect(lived).toBeLessThan(3_000 + 1_000 + 2_000);
    const line = await proxy.waitForAccess((l) => l.kind === 'connect' && l.service === 'ci-runner' && l.host === '127.0.0.2');
    expect(line).toMatchObject({ auth: 'token', status: 200 });
  }, 15_000);
});
