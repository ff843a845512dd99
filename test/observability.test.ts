import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevIdp, type DevIdp } from '../src/identity/dev-idp.js';
import { initCa } from '../src/inspection/ca.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { parsePrometheus, sumOf, type PromFamily } from './helpers/prometheus.js';
import { makeCa, makeLeaf } from './helpers/pki.js';
import { startTestProxy, type TestProxy } from './helpers/proxy.js';
import { rawExchange } from './helpers/raw.js';
import { cleanEnv, run } from './helpers/run.js';

// Access-log lines for each kind of exchange, what never reaches the log, and /metrics matching the traffic.

const CARD = '4111 1111 1111 1111';
const COOKIE = 'sessionid=c00kie-s3cret-value';
const SET_COOKIE = 'origin-session=set-c00kie-s3cret';
const BASIC = 'Basic dXNlcjpwYXNzLXMzY3JldA==';
const URL_TOKEN = 'url-t0ken-s3cret';

let idp: DevIdp;
let origin: Origin;
let secure: Origin;
let proxy: TestProxy;
let token: string;
let caFile: string;
let inside: Origin;
let proxyCa: string;

async function scrape(): Promise<PromFamily[]> {
  const r = await request(`${proxy.adminUrl}/metrics`);
  expect(r.statusCode).toBe(200);
  expect(String(r.headers['content-type'])).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheus(await r.body.text());
}

const curl = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
  run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-x', proxy.url, ...args], { env: cleanEnv() });

beforeAll(async () => {
  idp = await startDevIdp({});
  token = await idp.serviceToken('ci-runner');
  origin = await startOrigin({
    host: '127.0.0.2',
    handler: (req, res) => {
      res.setHeader('set-cookie', SET_COOKIE);
      res.setHeader('content-type', 'text/plain');
      res.end(`hello ${req.url}`);
    },
  });
  const ca = makeCa('observability origin CA');
  secure = await startOrigin({ host: '127.0.0.3', tls: makeLeaf(ca, ['secure.test'], ['127.0.0.3']) });
  inside = await startOrigin({ host: '127.0.0.2', tls: makeLeaf(ca, ['inside.test'], ['127.0.0.2']) });
  const tmp = mkdtempSync(join(tmpdir(), 'egress-obs-'));
  caFile = join(tmp, 'origin-ca.pem');
  writeFileSync(caFile, ca.cert);
  initCa(join(tmp, 'ca'));
  proxyCa = join(tmp, 'ca', 'ca.pem');
  proxy = await startTestProxy({
    identity: { issuer: idp.issuer },
    inspection: { enabled: true, ca_dir: join(tmp, 'ca'), upstream_ca_file: caFile },
  }, { default: 'deny' });
  const dir = proxy.dir;
  mkdirSync(join(dir, 'policies', 'dlp'));
  cpSync(join(import.meta.dirname, '..', 'policies', 'dlp', 'default.yaml'), join(dir, 'policies', 'dlp', 'default.yaml'));
  writeFileSync(join(dir, 'policies', 'test.yaml'), stringify({
    version: 'v1',
    default: 'deny',
    network: { allow_ranges: ['127.0.0.2/31'], connect_ports: ['1-65535'], http_ports: ['1-65535'] },
    rules: [
      { id: 'no-blocked-path', action: 'deny', message: 'not this path', when: { paths: ['/blocked'] } },
      { id: 'keep-query', action: 'allow', log_query: true, when: { services: ['ci-runner'], paths: ['/keep'] } },
      { id: 'ci-uploads', action: 'allow', dlp: ['default'], when: { services: ['ci-runner'], paths: ['/upload'] } },
      { id: 'inspect-inside', action: 'allow', inspect: true, when: { services: ['ci-runner'], apps: ['inside'] } },
      { id: 'ci', action: 'allow', when: { services: ['ci-runner'] } },
    ],
    apps: { inside: { cidrs: ['127.0.0.2/32'], ports: [inside.port] } },
  }));
  expect(await proxy.running.reload()).toBe(true);
});

afterAll(async () => {
  await proxy?.close();
  await origin?.close();
  await secure?.close();
  await inside?.close();
  await idp?.close();
});

const auth = (): string[] => ['--proxy-user', `ci-runner:${token}`];

describe('access log: one line per exchange, with its identity', () => {
  it('an allowed request names the workload, the listener, the egress node and address, and timings', async () => {
    expect((await curl([...auth(), `${origin.url}/allowed?x=1`])).stdout).toBe('200');
    const l = await proxy.waitForAccess((x) => x.url === `http://127.0.0.2:${origin.port}/allowed?REDACTED`);
    expect(l).toMatchObject({
      kind: 'http', listener: 'proxy', method: 'GET', scheme: 'http', host: '127.0.0.2', port: origin.port, resolved_ip: '127.0.0.2',
      egress_node: 'test-node', status: 200, decision: 'allow', reason: 'allowed', rule: 'ci', auth: 'token', service: 'ci-runner',
      inspected: false, client_ip: '127.0.0.1', node: 'test-node',
    });
    expect(l.egress_ip).toMatch(/^127\./);
    expect(l.policy_version).toBe(proxy.running.runtime.current.policy.version);
    expect(typeof l.ttfb_ms).toBe('number');
    expect(l.ttfb_ms as number).toBeLessThanOrEqual(l.duration_ms as number);
    expect(l.bytes_out as number).toBeGreaterThan(0);
    expect(l.user_agent).toMatch(/^curl\//);
  });

  it('a rule with log_query keeps the query string; others redact it', async () => {
    await curl([...auth(), `${origin.url}/keep?page=2`]);
    const l = await proxy.waitForAccess((x) => x.rule === 'keep-query');
    expect(l.url).toBe(`http://127.0.0.2:${origin.port}/keep?page=2`);
  });

  it('a policy deny names the rule and reason; an auth failure names its reason and no identity', async () => {
    expect((await curl([...auth(), `${origin.url}/blocked`])).stdout).toBe('403');
    const d = await proxy.waitForAccess((x) => x.rule === 'no-blocked-path');
    expect(d).toMatchObject({ decision: 'deny', reason: 'policy_denied', status: 403, service: 'ci-runner' });
    expect(d.egress_ip).toBeUndefined();
    expect((await curl(['--proxy-user', 'ci-runner:not-a-token', `${origin.url}/bad-token`])).stdout).toBe('407');
    const a = await proxy.waitForAccess((x) => typeof x.url === 'string' && x.url.endsWith('/bad-token'));
    expect(a).toMatchObject({ decision: 'deny', reason: 'token_invalid', status: 407, auth: 'anonymous' });
    expect(a.service).toBeUndefined();
  });

  it('a CONNECT tunnel gets one line when it ends, with bytes both ways', async () => {
    const r = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-x', proxy.url, ...auth(), '--cacert', caFile,
      `https://127.0.0.3:${secure.port}/tunnelled`], { env: cleanEnv() });
    expect(r.stdout, r.stderr).toBe('200');
    const l = await proxy.waitForAccess((x) => x.kind === 'connect' && x.port === secure.port);
    expect(l).toMatchObject({ method: 'CONNECT', status: 200, decision: 'allow', resolved_ip: '127.0.0.3', egress_node: 'test-node', inspected: false, service: 'ci-runner' });
    expect(l.url).toBeUndefined();
    expect(l.bytes_in as number).toBeGreaterThan(100);
    expect(l.bytes_out as number).toBeGreaterThan(100);
    expect(l.egress_ip).toMatch(/^127\./);
  });

  it('an inspected request is logged as such, with its path, inside the tunnel that carried it', async () => {
    const r = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-x', proxy.url, ...auth(), '--cacert', proxyCa,
      `https://127.0.0.2:${inside.port}/decrypted?q=1`], { env: cleanEnv() });
    expect(r.stdout, r.stderr).toBe('200');
    const l = await proxy.waitForAccess((x) => x.kind === 'http' && x.url === `https://127.0.0.2:${inside.port}/decrypted?REDACTED`);
    expect(l).toMatchObject({ inspected: true, listener: 'proxy', rule: 'inspect-inside', service: 'ci-runner', auth: 'token', status: 200, method: 'GET', scheme: 'https' });
    const t = await proxy.waitForAccess((x) => x.kind === 'connect' && x.port === inside.port);
    expect(t).toMatchObject({ inspected: true, rule: 'inspect-inside', status: 200 });
  });

  it('a DLP block carries the incident and masked findings', async () => {
    const r = await curl([...auth(), '--data-binary', `card=${CARD}`, `${origin.url}/upload`]);
    expect(r.stdout).toBe('403');
    const l = await proxy.waitForAccess((x) => x.reason === 'dlp_match');
    expect(l).toMatchObject({ decision: 'deny', rule: 'ci-uploads', status: 403 });
    expect(l.incident).toMatch(/\S/);
    expect(l.dlp).toMatch(/credit_card:1/);
  });
});

describe('what never reaches the log', () => {
  it('credentials, cookies, tokens in URLs and DLP matches are absent from the raw log', async () => {
    await rawExchange(proxy.port,
      `GET ${origin.url}/secrets?access_token=${URL_TOKEN} HTTP/1.1\r\nHost: 127.0.0.2:${origin.port}\r\n` +
      `Proxy-Authorization: Bearer ${token}\r\nAuthorization: ${BASIC}\r\nCookie: ${COOKIE}\r\nConnection: close\r\n\r\n`);
    await proxy.waitForAccess((x) => typeof x.url === 'string' && x.url.includes('/secrets'));
    await proxy.waitForAccess((x) => x.reason === 'dlp_match');
    proxy.lines();
    const raw = readFileSync(join(proxy.dir, 'proxy.log'), 'utf8');
    for (const secret of [token, BASIC, 'dXNlcjpwYXNzLXMzY3JldA', COOKIE, 'c00kie-s3cret', SET_COOKIE, 'set-c00kie-s3cret', URL_TOKEN, CARD, '4111111111111111']) {
      expect(raw.includes(secret), `log contains ${secret.slice(0, 12)}…`).toBe(false);
    }
  });
});

describe('/metrics', () => {
  it('parses as Prometheus text and counts what was sent', async () => {
    const before = await scrape();
    const n = 7;
    for (let i = 0; i < n; i++) expect((await curl([...auth(), `${origin.url}/counted/${i}`])).stdout).toBe('200');
    for (let i = 0; i < 3; i++) expect((await curl([...auth(), `${origin.url}/blocked/${i}`])).stdout).toBe('403');
    expect((await curl([`${origin.url}/anonymous`])).stdout).toBe('407');
    expect((await curl([...auth(), '--data-binary', `card=${CARD}`, `${origin.url}/upload`])).stdout).toBe('403');
    // Lines (and the counters, which learn of a request with its line) come when the exchange ends.
    await proxy.waitForAccess((x) => typeof x.url === 'string' && x.url.endsWith('/anonymous'));
    await new Promise((r) => setTimeout(r, 100));
    const after = await scrape();
    const delta = (name: string, want: Record<string, string>): number => sumOf(after, name, want) - sumOf(before, name, want);
    expect(delta('egress_proxy_requests_total', { kind: 'http', decision: 'allow', rule: 'ci', reason: 'allowed' })).toBe(n);
    expect(delta('egress_proxy_requests_total', { rule: 'no-blocked-path', reason: 'policy_denied', decision: 'deny' })).toBe(3);
    expect(delta('egress_proxy_requests_total', { reason: 'auth_required' })).toBe(1);
    expect(delta('egress_proxy_auth_failures_total', { reason: 'auth_required' })).toBe(1);
    expect(delta('egress_proxy_dlp_incidents_total', { detector: 'credit_card', action: 'block' })).toBe(1);
    expect(delta('egress_proxy_request_duration_seconds_count', { kind: 'http' })).toBe(n + 3 + 1 + 1);
    expect(delta('egress_proxy_time_to_first_byte_seconds_count', { kind: 'http' })).toBe(n + 3 + 1 + 1);
    // Each allowed answer is "hello /counted/i" (16 bytes) plus headers.
    expect(delta('egress_proxy_bytes_total', { direction: 'down' })).toBeGreaterThan(n * 16);
    expect(sumOf(after, 'egress_proxy_active_tunnels')).toBe(0);
    expect(sumOf(after, 'egress_proxy_policy_reloads_total')).toBeGreaterThanOrEqual(1);
    const info = after.find((f) => f.name === 'egress_proxy_policy_info')!;
    expect(info.samples.map((m) => m.labels.version)).toEqual([proxy.running.runtime.current.policy.version]);
    expect(after.find((f) => f.name === 'egress_proxy_egress_node_up')!.samples.map((m) => [m.labels, m.value])).toEqual([[{ node: 'test-node' }, 1]]);
    expect(sumOf(after, 'egress_proxy_process_cpu_seconds_total')).toBeGreaterThan(0);
  });

  it('never uses users, hosts or URLs as label values (bounded cardinality)', async () => {
    const families = await scrape();
    const values = families.flatMap((f) => f.samples.flatMap((m) => Object.values(m.labels)));
    expect(values.length).toBeGreaterThan(10);
    for (const v of values) {
      expect(v).not.toMatch(/127\.0\.0\.[23]|ci-runner|\/counted|secure\.test/);
    }
  });

  it('serves every metric the shipped Grafana dashboard queries', async () => {
    const dash = readFileSync(join(import.meta.dirname, '..', 'deploy', 'grafana', 'egress-proxy.json'), 'utf8');
    const asked = new Set([...dash.matchAll(/egress_proxy_[a-z0-9_]+/g)].map((m) => m[0].replace(/_bucket$/, '')));
    expect(asked.size).toBeGreaterThan(15);
    const families = await scrape();
    const served = new Set(families.flatMap((f) => [f.name, ...f.samples.map((x) => x.name.replace(/_bucket$/, ''))]));
    expect([...asked].filter((n) => !served.has(n))).toEqual([]);
  });

  it('is off when metrics.enabled is false', async () => {
    const p = await startTestProxy({ metrics: { enabled: false } });
    try {
      const r = await request(`${p.adminUrl}/metrics`);
      expect(r.statusCode).toBe(404);
      await r.body.dump();
    } finally {
      await p.close();
    }
  });
});
