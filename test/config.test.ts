import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { FileValidationError, nearest } from '../src/config/validate.js';
import { loadPolicyDir } from '../src/policy/load.js';

function tempFile(name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'egress-cfg-'));
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof FileValidationError) return err.message.split('\n');
    throw err;
  }
  throw new Error('expected a validation error');
}

describe('config file', () => {
  it('accepts an empty file and fills every default', () => {
    const c = loadConfig({ config: tempFile('c.yaml', '') }, {});
    expect(c.listen).toBe('127.0.0.1:3128');
    expect(c.admin).toBe('127.0.0.1:9090');
    expect(c.forwarding.x_forwarded_for).toBe(false);
    expect(c.limits.max_header_bytes).toBe(32768);
    expect(Object.isFrozen(c.limits)).toBe(true);
  });

  it('names file, line, column and field for a bad value', () => {
    const file = tempFile('c.yaml', 'listen: 127.0.0.1:3128\nlimits:\n  headers_timeout_ms: -5\n');
    const [p] = problemsOf(() => loadConfig({ config: file }, {}));
    expect(p).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3:23 limits\\.headers_timeout_ms: `));
  });

  it('suggests the nearest valid key for a typo', () => {
    const file = tempFile('c.yaml', 'listen: 127.0.0.1:3128\nlimts:\n  max_connections: 5\nforwarding:\n  x_forwarded_fro: true\n');
    const problems = problemsOf(() => loadConfig({ config: file }, {}));
    expect(problems).toContainEqual(expect.stringMatching(/:2:1 limts: unknown field; did you mean "limits"\?/));
    expect(problems).toContainEqual(expect.stringMatching(/:5:3 forwarding\.x_forwarded_fro: unknown field; did you mean "x_forwarded_for"\?/));
  });

  it('reports a YAML syntax error with its position', () => {
    const file = tempFile('c.yaml', 'listen: [unclosed\n');
    const [p] = problemsOf(() => loadConfig({ config: file }, {}));
    expect(p).toMatch(/c\.yaml:\d+:\d+ /);
  });

  it('rejects a malformed listen address', () => {
    const file = tempFile('c.yaml', 'listen: localhost\n');
    expect(problemsOf(() => loadConfig({ config: file }, {}))[0]).toMatch(/:1:9 listen: expected HOST:PORT/);
  });

  it('takes every option from the environment, and the command line over the environment', () => {
    const env = { EGRESS_LISTEN: '127.0.0.1:4000', EGRESS_ADMIN: '127.0.0.1:4001', EGRESS_ALLOW_RANGES: '10.1.0.0/16, 10.2.0.0/16', EGRESS_NODE_ID: 'eu-1', EGRESS_LOG_LEVEL: 'warn', EGRESS_POLICIES: '/tmp/pol' };
    const fromEnv = loadConfig({}, env);
    expect(fromEnv).toMatchObject({ listen: '127.0.0.1:4000', admin: '127.0.0.1:4001', allow_ranges: ['10.1.0.0/16', '10.2.0.0/16'], node_id: 'eu-1', policiesDir: '/tmp/pol' });
    expect(fromEnv.log.level).toBe('warn');
    const fromCli = loadConfig({ listen: '127.0.0.1:5000', allowRanges: ['192.168.0.0/24'] }, env);
    expect(fromCli.listen).toBe('127.0.0.1:5000');
    expect(fromCli.allow_ranges).toEqual(['192.168.0.0/24']);
  });

  it('takes workers as a number or "auto" (one per core)', () => {
    expect(loadConfig({ config: tempFile('c.yaml', 'workers: 3\n') }, {}).workers).toBe(3);
    expect(loadConfig({ config: tempFile('c.yaml', 'workers: auto\n') }, {}).workers).toBeGreaterThanOrEqual(1);
    expect(loadConfig({}, { EGRESS_WORKERS: '2' }).workers).toBe(2);
    expect(problemsOf(() => loadConfig({ config: tempFile('c.yaml', 'workers: 0\n') }, {}))[0]).toMatch(/:1:10 workers: /);
  });

  it('names the environment variable or flag that holds a bad value', () => {
    expect(problemsOf(() => loadConfig({}, { EGRESS_LISTEN: 'nope' }))[0]).toMatch(/^EGRESS_LISTEN:0:0 expected HOST:PORT/);
    expect(problemsOf(() => loadConfig({ allowRanges: ['10.0.0.0/33'] }, {}))[0]).toMatch(/^--allow-range:0:0 expected an IP address or CIDR/);
  });
});

describe('policy files', () => {
  function policyDir(files: Record<string, string>): string {
    const dir = mkdtempSync(join(tmpdir(), 'egress-pol-'));
    for (const [n, t] of Object.entries(files)) writeFileSync(join(dir, n), t);
    return dir;
  }

  it('merges files and hashes the set into a version', () => {
    const a = loadPolicyDir(policyDir({ 'a.yaml': 'version: v1\ndefault: allow\nnetwork:\n  connect_ports: [443]\n', 'b.yaml': 'version: v1\nnetwork:\n  connect_ports: [8443, "9000-9001"]\n  allow_ranges: [10.0.0.0/8]\n' }));
    expect(a.defaultAction).toBe('allow');
    expect([443, 8443, 9000, 9001].every((p) => a.connectPorts.has(p))).toBe(true);
    expect(a.connectPorts.has(444)).toBe(false);
    expect(a.httpPorts.has(80)).toBe(true);
    expect(a.allowRanges).toEqual(['10.0.0.0/8']);
    const b = loadPolicyDir(policyDir({ 'a.yaml': 'version: v1\ndefault: deny\n' }));
    expect(b.version).not.toBe(a.version);
    expect(b.defaultAction).toBe('deny');
    expect(b.connectPorts.has(443)).toBe(true);
  });

  it('defaults to deny when no file sets a default', () => {
    expect(loadPolicyDir(policyDir({ 'a.yaml': 'version: v1\n' })).defaultAction).toBe('deny');
  });

  it('rejects two files that both set the default', () => {
    const problems = problemsOf(() => loadPolicyDir(policyDir({ 'a.yaml': 'version: v1\ndefault: allow\n', 'b.yaml': 'version: v1\ndefault: deny\n' })));
    expect(problems[0]).toMatch(/b\.yaml:2:1 default: "default" is already set in .*a\.yaml/);
  });

  it('reports every broken file with position, and a bad port range', () => {
    const problems = problemsOf(() => loadPolicyDir(policyDir({
      'a.yaml': 'version: v2\n',
      'b.yaml': 'version: v1\nnetwork:\n  connect_ports: ["9-3"]\n  alow_ranges: []\n',
    })));
    expect(problems).toContainEqual(expect.stringMatching(/a\.yaml:1:10 version: /));
    expect(problems).toContainEqual(expect.stringMatching(/b\.yaml:3:19 network\.connect_ports\[0\]: /));
    expect(problems).toContainEqual(expect.stringMatching(/b\.yaml:4:3 network\.alow_ranges: unknown field; did you mean "allow_ranges"\?/));
  });

  it('refuses an empty directory', () => {
    expect(problemsOf(() => loadPolicyDir(policyDir({})))[0]).toMatch(/no policy files/);
  });

  it('ships a default policy that loads', () => {
    const p = loadPolicyDir(join(import.meta.dirname, '..', 'policies'));
    expect(p.connectPorts.has(443)).toBe(true);
    expect(p.connectPorts.has(22)).toBe(false);
  });
});

describe('nearest', () => {
  it('suggests only close keys', () => {
    expect(nearest('lisen', ['listen', 'admin'])).toBe('listen');
    expect(nearest('zzzzzz', ['listen', 'admin'])).toBeUndefined();
  });
});

describe('JSON Schemas for editors', () => {
  it('are committed and match the schemas used at load time (run `egress-proxy schema` after a change)', async () => {
    const { readFileSync } = await import('node:fs');
    const { jsonSchemas } = await import('../src/config/json-schema.js');
    const root = join(import.meta.dirname, '..');
    const s = jsonSchemas();
    expect(JSON.parse(readFileSync(join(root, 'policies', 'schema.json'), 'utf8'))).toEqual(s.policy);
    expect(JSON.parse(readFileSync(join(root, 'docs', 'config.schema.json'), 'utf8'))).toEqual(s.config);
  });
});

describe('shipped examples', () => {
  it('deploy/config.example.yaml is valid', () => {
    const c = loadConfig({ config: join(import.meta.dirname, '..', 'deploy', 'config.example.yaml') }, {});
    expect(c.node_id).toBe('egress-eu-1');
    expect(c.pac.direct_domains).toEqual(['.corp.example']);
  });
});
