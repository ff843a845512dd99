import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCli, writeSetup } from './helpers/cli.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { startTestProxy, type TestProxy } from './helpers/proxy.js';
import { cleanEnv, run } from './helpers/run.js';

const RULES = (action: 'allow' | 'deny') => `version: v1
apps:
  origin: { hosts: [app.test], cidrs: [127.0.0.2/32] }
rules:
  - id: origin-rule
    action: ${action}
    message: The origin is closed for maintenance.
    when: { apps: [origin], methods: [GET] }
`;

let origin: Origin;
let proxy: TestProxy;

beforeAll(async () => {
  origin = await startOrigin();
  proxy = await startTestProxy({}, { default: 'deny', allow_ranges: ['127.0.0.2/32'] });
  writeFileSync(join(proxy.dir, 'policies', 'rules.yaml'), RULES('deny'));
  expect(await proxy.running.reload()).toBe(true);
});
afterAll(async () => {
  await proxy.close();
  await origin.close();
});

const status = async (): Promise<{ version: string; errors: string[]; rules: number }> =>
  (await (await request(`${proxy.adminUrl}/policy/status`)).body.json()) as { version: string; errors: string[]; rules: number };

describe('policy on the request path', () => {
  it('denies by rule: rule id and message on the block page and in the log line', async () => {
    const r = await run('curl', ['-sS', '-i', '-x', proxy.url, '-H', 'Accept: text/html', `${origin.url}/by-rule`], { env: cleanEnv() });
    expect(r.stdout).toMatch(/^HTTP\/1\.1 403/);
    expect(r.stdout).toMatch(/x-egress-reason: policy_denied/i);
    expect(r.stdout).toContain('The origin is closed for maintenance.');
    expect(r.stdout).toContain('rule <code>origin-rule</code>');
    const line = await proxy.waitForAccess((l) => String(l.url).endsWith('/by-rule'));
    expect(line).toMatchObject({ decision: 'deny', reason: 'policy_denied', rule: 'origin-rule', policy_version: (await status()).version });
    // POST is not covered by the rule: the default (deny) decides.
    const post = await run('curl', ['-sS', '-i', '-x', proxy.url, '-d', 'x', `${origin.url}/post`], { env: cleanEnv() });
    expect(post.stdout).toMatch(/\(rule default\)/);
  });

  it('reloads when a file changes, and keeps the last good policy when a change is broken', async () => {
    const before = await status();
    writeFileSync(join(proxy.dir, 'policies', 'rules.yaml'), RULES('allow'));
    const deadline = Date.now() + 5000;
    while ((await status()).version === before.version && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const after = await status();
    expect(after.version).not.toBe(before.version);
    expect(after.errors).toEqual([]);
    const ok = await run('curl', ['-sS', '-x', proxy.url, `${origin.url}/now-allowed`], { env: cleanEnv() });
    expect(JSON.parse(ok.stdout).url).toBe('/now-allowed');
    const line = await proxy.waitForAccess((l) => String(l.url).endsWith('/now-allowed'));
    expect(line).toMatchObject({ decision: 'allow', rule: 'origin-rule', policy_version: after.version });

    // A broken edit: the proxy keeps serving with the previous policy and says why.
    writeFileSync(join(proxy.dir, 'policies', 'rules.yaml'), 'version: v1\nrules:\n  - id: origin-rule\n    action: perhaps\n');
    const until = Date.now() + 5000;
    while ((await status()).errors.length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    const broken = await status();
    expect(broken.version).toBe(after.version);
    expect(broken.errors[0]).toMatch(/rules\.yaml:4:13 rules\[0\]\.action: /);
    const still = await run('curl', ['-sS', '-x', proxy.url, `${origin.url}/still-allowed`], { env: cleanEnv() });
    expect(JSON.parse(still.stdout).url).toBe('/still-allowed');
    expect(proxy.lines().some((l) => l.msg === 'policy reload failed; the last good policy stays in force')).toBe(true);
  });
});

describe('SIGHUP', () => {
  it('reloads the policy of a running CLI proxy', async () => {
    const cfg = writeSetup({ watch_policies: false });
    const p = await startCli(['--config', cfg]);
    try {
      const version = async () => ((await (await request(`http://127.0.0.1:${p.adminPort}/policy/status`)).body.json()) as { version: string }).version;
      const v1 = await version();
      // File watching is off here: only the signal can bring the change in.
      writeFileSync(join(cfg, '..', 'policies', 'p.yaml'), 'version: v1\ndefault: deny\nnetwork:\n  allow_ranges: [127.0.0.2/32]\n  http_ports: ["1-65535"]\n');
      await new Promise((r) => setTimeout(r, 400));
      expect(await version()).toBe(v1);
      p.child.kill('SIGHUP');
      const deadline = Date.now() + 5000;
      while ((await version()) === v1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(await version()).not.toBe(v1);
      const r = await run('curl', ['-sS', '-i', '-x', p.url, `${origin.url}/after-hup`], { env: cleanEnv() });
      expect(r.stdout).toMatch(/x-egress-reason: policy_denied/i);
    } finally {
      p.child.kill('SIGTERM');
      await p.exited;
    }
  });
});

describe('apps defined by CIDRs', () => {
  it('match a host name on the address it resolves to', async () => {
    const { startDns } = await import('./helpers/dns-server.js');
    const dns = await startDns({ 'cidr.test': ['127.0.0.2'], 'elsewhere.test': ['127.0.0.3'] });
    const p = await startTestProxy({ dns: { servers: [dns.address] } }, { default: 'deny', allow_ranges: ['127.0.0.2/31'] });
    try {
      writeFileSync(join(p.dir, 'policies', 'rules.yaml'), 'version: v1\napps:\n  lab: { cidrs: [127.0.0.2/32] }\nrules:\n  - id: lab-net\n    action: allow\n    when: { apps: [lab] }\n');
      expect(await p.running.reload()).toBe(true);
      const ok = await run('curl', ['-sS', '-x', p.url, `http://cidr.test:${origin.port}/lab`], { env: cleanEnv() });
      expect(JSON.parse(ok.stdout).url).toBe('/lab');
      expect(await p.waitForAccess((l) => String(l.url).endsWith('/lab'))).toMatchObject({ rule: 'lab-net', resolved_ip: '127.0.0.2' });
      const no = await run('curl', ['-sS', '-i', '-x', p.url, `http://elsewhere.test:${origin.port}/other`], { env: cleanEnv() });
      expect(no.stdout).toMatch(/x-egress-reason: policy_denied/i);
    } finally {
      await p.close();
      dns.close();
    }
  });
});
