import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI } from './helpers/cli.js';
import { policyDir } from './helpers/policy.js';
import { run } from './helpers/run.js';

const cli = (...args: string[]) => run(process.execPath, [CLI, 'policy', ...args]);
const SHIPPED = join(import.meta.dirname, '..', 'policies');

const TEAM = `version: v1
default: deny
apps:
  github: { hosts: [github.com, "*.github.com"] }
groups:
  eng: [alice]
rules:
  - id: eng-github
    action: allow
    when: { apps: [github], groups: [eng] }
  - id: report-anon
    action: allow
    mode: report
    when: { anonymous: true }
`;

describe('egress-proxy policy', () => {
  it('check: passes the shipped policy and reports file:line:col for a broken one (exit 1)', async () => {
    const ok = await cli('check', SHIPPED);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^ok: 3 files, 5 rules, 4 apps/);
    const dir = policyDir({ 'a.yaml': 'version: v1\nrules:\n  - id: x\n    action: alow\n' });
    const bad = await cli('check', dir);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(new RegExp(`${join(dir, 'a.yaml').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:4:13 rules\\[0\\]\\.action: `));
  });

  it('test: runs the shipped cases, and reports a failing case with what it got', async () => {
    const shipped = await cli('test', SHIPPED);
    expect(shipped.code).toBe(0);
    expect(shipped.stdout).toMatch(/^9 passed, 0 failed$/m);
    const dir = policyDir({
      'team.yaml': TEAM,
      'tests/team.yaml': `version: v1
cases:
  - name: alice reaches github
    request: { url: "https://api.github.com/", user: alice }
    expect: { action: allow, rule: eng-github }
  - name: bob does not
    request: { url: "https://github.com/", user: bob }
    expect: { action: allow }
`,
    });
    const r = await cli('test', dir);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('ok   alice reaches github');
    expect(r.stdout).toMatch(/FAIL bob does not\n\s+want allow\n\s+got {2}deny by default/);
    expect(r.stdout).toMatch(/^1 passed, 1 failed$/m);
  });

  it('explain: every rule in order with why, and the decision', async () => {
    const dir = policyDir({ 'team.yaml': TEAM, 'devices.yaml': 'version: v1\ndevices:\n  laptop-7: { managed: true }\n' });
    const r = await cli('explain', '--policies', dir, '--user', 'alice', '--groups', 'eng', '--device', 'laptop-7', '--url', 'https://x.github.com/z', '--method', 'POST');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('apps: github');
    expect(r.stdout).toMatch(/1\. MATCH eng-github \(allow\): all conditions hold/);
    expect(r.stdout).toMatch(/2\. skip  report-anon \(allow, report\): request is identified/);
    expect(r.stdout).toMatch(/decision: allow by eng-github/);
    const unknown = await cli('explain', '--policies', dir, '--device', 'laptop-9', '--url', 'https://x.github.com/');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown device "laptop-9"');
  });

  it('replay: lists the logged requests whose decision a changed policy would change', async () => {
    const log = join(policyDir({}), 'access.log');
    const line = (o: Record<string, unknown>) => JSON.stringify({ level: 'info', time: '2026-11-26T10:00:00.000Z', type: 'access', decision: 'allow', reason: 'allowed', ...o });
    writeFileSync(log, [
      line({ kind: 'http', method: 'GET', scheme: 'https', host: 'api.github.com', port: 443, url: 'https://api.github.com:443/repos', rule: 'eng-github', user: 'alice' }),
      line({ kind: 'connect', method: 'CONNECT', scheme: 'https', host: 'github.com', port: 443, rule: 'default', decision: 'deny', reason: 'policy_denied', client_ip: '10.1.2.3' }),
      line({ kind: 'connect', method: 'CONNECT', scheme: 'https', host: 'example.com', port: 443, rule: 'default', decision: 'deny', reason: 'policy_denied', user: 'alice' }),
      '{"level":"info","msg":"not an access line"}',
      'garbage',
    ].join('\n'));
    const changed = policyDir({ 'team.yaml': TEAM.replace('default: deny', 'default: allow').replace('groups: [eng]', 'groups: [ops]') });
    const r = await cli('replay', '--log', log, '--policies', changed);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('GET https://api.github.com:443/repos alice: allow (eng-github) -> allow (default)');
    expect(r.stdout).toContain('CONNECT github.com:443 anonymous@10.1.2.3: deny (default) -> allow (default)');
    expect(r.stdout).toContain('CONNECT example.com:443 alice: deny (default) -> allow (default)');
    expect(r.stdout).toMatch(/^3 requests replayed against policy [0-9a-f]{12}, 3 would change, 1 lines skipped$/m);
    const same = await cli('replay', '--log', log, '--policies', policyDir({ 'team.yaml': TEAM }));
    expect(same.stdout).toMatch(/3 requests replayed .*, 0 would change/);
  });
});

describe('docs/policy.md', () => {
  it('its examples (language, test cases, inventory) load and their test cases pass', async () => {
    const { readFileSync } = await import('node:fs');
    const blocks = readFileSync(join(import.meta.dirname, '..', 'docs', 'policy.md'), 'utf8').split('```yaml').slice(1).map((b) => b.split('```')[0]!);
    const dir = policyDir({
      'example.yaml': blocks[0]!, 'tests/example.yaml': blocks[1]!, 'devices.yaml': blocks[2]!,
      'categories/gambling/domains': 'casino.example\n',
      'dlp/default.yaml': readFileSync(join(import.meta.dirname, '..', 'policies', 'dlp', 'default.yaml'), 'utf8'),
    });
    const r = await cli('test', dir);
    expect(r.stdout).toMatch(/^2 passed, 0 failed$/m);
    expect(r.code).toBe(0);
  });
});
