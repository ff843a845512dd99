import { describe, expect, it } from 'vitest';
import { FileValidationError } from '../src/config/validate.js';
import { decide, explain, type PolicyQuery } from '../src/policy/decide.js';
import { compile } from './helpers/policy.js';

const base = (q: Partial<PolicyQuery>): PolicyQuery => ({ kind: 'http', host: 'example.com', port: 443, scheme: 'https', method: 'GET', path: '/', ...q });

const POLICY = `
version: v1
default: deny
network:
  http_ports: [80, 443, 8443]
  connect_ports: [443]
apps:
  slack: { hosts: ["*.slack.com"] }
  slack-apex: { hosts: [slack.com] }
  github-acme: { urls: ["https://api.github.com/repos/acme/"] }
  internal-net: { cidrs: ["10.20.0.0/16", "fd12:3456::/32"] }
  admin-port: { hosts: [admin.example], ports: [8443] }
  idn: { hosts: ["bücher.example"] }
groups:
  eng: [alice, carol@acme.example]
devices:
  trusted: { managed: true, disk_encrypted: true }
  managed: { managed: true }
rules:
  - id: try-block-slack
    action: deny
    mode: report
    when: { apps: [slack] }
  - id: slack-for-eng
    action: allow
    when: { apps: [slack], groups: [eng] }
    inspect: false
  - id: github-acme-write
    action: allow
    when: { apps: [github-acme], methods: [POST, PUT], devices: [trusted] }
    dlp: [icap]
  - id: internal-from-office
    action: allow
    when: { apps: [internal-net], sources: [192.168.10.0/24, "2001:db8:1::/48"] }
  - id: admin-only
    action: allow
    when: { apps: [admin-port], users: [Bob] }
  - id: night-batch
    action: allow
    when: { services: [batch], time: { from: "22:00", to: "06:00", days: [mon, tue, wed, thu, fri], tz: Europe/Paris } }
  - id: deny-anon
    action: deny
    message: Sign in first.
    when: { anonymous: true }
  - id: idn
    action: allow
    when: { apps: [idn] }
`;

describe('policy engine', () => {
  const p = compile(POLICY);

  it('matches *.domain on subdomains only, not on the apex', () => {
    const alice = { user: 'alice' };
    expect(decide(p, base({ host: 'acme.slack.com', identity: alice })).rule).toBe('slack-for-eng');
    expect(decide(p, base({ host: 'a.b.slack.com', identity: alice })).rule).toBe('slack-for-eng');
    expect(decide(p, base({ host: 'slack.com', identity: alice })).rule).toBe('default');
    expect(decide(p, base({ host: 'evilslack.com', identity: alice })).rule).toBe('default');
  });

  it('ignores case and a trailing dot, and matches IDN names in punycode', () => {
    const alice = { user: 'alice' };
    expect(decide(p, base({ host: 'ACME.Slack.COM.', identity: alice })).rule).toBe('slack-for-eng');
    expect(decide(p, base({ host: 'xn--bcher-kva.example', identity: alice })).rule).toBe('idn');
    expect(decide(p, base({ host: 'bücher.example', identity: alice })).rule).toBe('idn');
  });

  it('takes groups from claims and from the groups section (user or email)', () => {
    expect(decide(p, base({ host: 'x.slack.com', identity: { user: 'dave', groups: ['eng'] } })).action).toBe('allow');
    expect(decide(p, base({ host: 'x.slack.com', identity: { email: 'carol@acme.example' } })).action).toBe('allow');
    expect(decide(p, base({ host: 'x.slack.com', identity: { user: 'mallory' } })).action).toBe('deny');
  });

  it('notes report-mode matches without enforcing them, and carries modifiers', () => {
    const d = decide(p, base({ host: 'x.slack.com', identity: { user: 'alice' } }));
    expect(d).toMatchObject({ action: 'allow', rule: 'slack-for-eng', modifiers: { inspect: false }, report: [{ rule: 'try-block-slack', action: 'deny' }] });
    expect(d.version).toBe(p.version);
  });

  it('matches URL prefixes, methods and device trust together', () => {
    const q = base({ host: 'api.github.com', path: '/repos/acme/widgets/issues', method: 'POST', identity: { user: 'alice' }, device: { managed: true, disk_encrypted: true } });
    expect(decide(p, q)).toMatchObject({ action: 'allow', rule: 'github-acme-write', modifiers: { dlp: ['icap'] } });
    expect(decide(p, { ...q, path: '/repos/other/x' }).rule).toBe('default');
    expect(decide(p, { ...q, method: 'GET' }).rule).toBe('default');
    expect(decide(p, { ...q, device: { managed: true } }).rule).toBe('default');
    expect(decide(p, { ...q, device: undefined }).rule).toBe('default');
  });

  it('matches IPv4 and IPv6 CIDR apps and source ranges', () => {
    const who = { user: 'alice' };
    expect(decide(p, base({ host: '10.20.3.4', source: '192.168.10.7', identity: who })).rule).toBe('internal-from-office');
    expect(decide(p, base({ host: 'fd12:3456::9', source: '2001:db8:1::5', identity: who })).rule).toBe('internal-from-office');
    expect(decide(p, base({ host: '10.20.3.4', source: '192.168.11.7', identity: who })).rule).toBe('default');
    expect(decide(p, base({ host: '10.21.0.1', source: '192.168.10.7', identity: who })).rule).toBe('default');
  });

  it('restricts an app to its ports, and users match case-insensitively', () => {
    expect(decide(p, base({ host: 'admin.example', port: 8443, identity: { user: 'bob' } })).rule).toBe('admin-only');
    expect(decide(p, base({ host: 'admin.example', port: 443, identity: { user: 'bob' } })).rule).toBe('default');
  });

  it('denies anonymous requests with the rule message', () => {
    expect(decide(p, base({ host: 'anything.example' }))).toMatchObject({ action: 'deny', rule: 'deny-anon', message: 'Sign in first.', reason: 'policy_denied' });
  });

  it('checks ports before rules', () => {
    expect(decide(p, base({ kind: 'connect', port: 8443 }))).toMatchObject({ action: 'deny', reason: 'port_not_allowed', rule: 'network.connect_ports' });
  });

  it('handles time windows across midnight, weekdays and DST in the rule time zone', () => {
    const batch = { service: 'batch' };
    const at = (iso: string) => decide(p, base({ host: 'x.example', identity: batch, at: new Date(iso) })).rule;
    // Paris is UTC+1 in winter: Tue 23:30 local = 22:30 UTC.
    expect(at('2026-11-24T22:30:00Z')).toBe('night-batch');
    // Wed 05:30 local belongs to Tuesday night's window.
    expect(at('2026-11-25T04:30:00Z')).toBe('night-batch');
    // Wed 06:30 local: outside.
    expect(at('2026-11-25T05:30:00Z')).toBe('default');
    // Sat 23:30 local: Saturday is not listed.
    expect(at('2026-11-28T22:30:00Z')).toBe('default');
    // Sat 01:00 local belongs to Friday night: inside.
    expect(at('2026-11-28T00:00:00Z')).toBe('night-batch');
    // Summer (UTC+2): Mon 2026-07-06 21:30 UTC = 23:30 local, inside; 20:30 UTC = 22:30 local inside; 19:30 UTC = 21:30 outside.
    expect(at('2026-07-06T21:30:00Z')).toBe('night-batch');
    expect(at('2026-07-06T19:30:00Z')).toBe('default');
    // Across the DST switch (Sun 2026-03-29): the same 20:30 UTC is 21:30 local (outside) on the
    // Monday before and 22:30 local (inside) on the Monday after.
    expect(at('2026-03-23T20:30:00Z')).toBe('default');
    expect(at('2026-03-30T20:30:00Z')).toBe('night-batch');
    // Mon 05:30 local belongs to Sunday night's window, and Sunday is not listed.
    expect(at('2026-03-30T03:30:00Z')).toBe('default');
  });

  it('explains every rule in order with the reason it matched or not', () => {
    const e = explain(p, base({ host: 'x.slack.com', identity: { user: 'mallory' } }));
    expect(e.apps).toEqual(['slack']);
    expect(e.lines.map((l) => [l.rule, l.matched])).toEqual([
      ['try-block-slack', true], ['slack-for-eng', false], ['github-acme-write', false], ['internal-from-office', false],
      ['admin-only', false], ['night-batch', false], ['deny-anon', false], ['idn', false],
    ]);
    expect(e.lines[1]!.why).toMatch(/identity mallory is not among/);
    expect(e.decision).toMatchObject({ action: 'deny', rule: 'default' });
  });
});

describe('policy compile errors', () => {
  const problems = (text: string): string[] => {
    try {
      compile(text);
    } catch (err) {
      if (err instanceof FileValidationError) return err.message.split('\n');
      throw err;
    }
    throw new Error('expected errors');
  };

  it('names unknown apps, device levels, categories, time zones and duplicate ids with positions', () => {
    const out = problems(`version: v1
apps:
  web: { categories: [no-such-category] }
rules:
  - id: a
    action: allow
    when: { apps: [nope], devices: [shiny] }
  - id: a
    action: deny
    when: { time: { tz: Mars/Olympus } }
`);
    expect(out).toContainEqual(expect.stringMatching(/policy\.yaml:3:23 apps\.web\.categories: unknown category "no-such-category"/));
    expect(out).toContainEqual(expect.stringMatching(/:7:20 rules\.a\.when\.apps: unknown app "nope"/));
    expect(out).toContainEqual(expect.stringMatching(/rules\.a\.when\.devices: unknown device level "shiny"/));
    expect(out).toContainEqual(expect.stringMatching(/rules: rule id "a" is used twice/));
    expect(out).toContainEqual(expect.stringMatching(/unknown time zone "Mars\/Olympus"/));
  });

  it('suggests the nearest key for a typo inside a rule', () => {
    const out = problems('version: v1\nrules:\n  - id: a\n    action: allow\n    wehn: {}\n');
    expect(out[0]).toMatch(/:5:5 rules\[0\]\.wehn: unknown field; did you mean "when"\?/);
  });
});

describe('categories', () => {
  it('match a listed domain and its subdomains (squidGuard semantics)', () => {
    const p = compile(`version: v1
default: allow
apps:
  gambling: { categories: [gambling] }
rules:
  - id: no-gambling
    action: deny
    when: { apps: [gambling] }
`, { 'categories/gambling/domains': '# comment\ncasino.example\n\nbet.example\n' });
    expect(decide(p, base({ host: 'casino.example' })).rule).toBe('no-gambling');
    expect(decide(p, base({ host: 'www.casino.example' })).rule).toBe('no-gambling');
    expect(decide(p, base({ host: 'notcasino.example' })).rule).toBe('default');
  });

  it('match urls entries on host and path prefix when the path is known, from a categories_dir of the admin\'s lists', () => {
    const p = compile(`version: v1
default: allow
categories_dir: lists
apps:
  adult: { categories: [adult] }
rules:
  - id: no-adult
    action: deny
    when: { apps: [adult] }
`, { 'lists/adult/urls': '020sextoy.example/sk\nsite.example/tag/playboy\n', 'lists/adult/expressions': '(ignored)\n' });
    const http = (host: string, path: string) => base({ kind: 'http', scheme: 'http', port: 80, host, path });
    expect(decide(p, http('020sextoy.example', '/sk/item')).rule).toBe('no-adult');
    expect(decide(p, http('www.020sextoy.example', '/sk')).rule).toBe('no-adult');
    expect(decide(p, http('020sextoy.example', '/other')).rule).toBe('default');
    expect(decide(p, http('site.example', '/tag/playboy-x')).rule).toBe('no-adult');
    expect(decide(p, http('site.example', '/tags')).rule).toBe('default');
    // A tunnel that is not inspected has no path: a urls entry cannot match it.
    expect(decide(p, base({ kind: 'connect', host: '020sextoy.example', port: 443 })).rule).toBe('default');
  });

  it('refuse a category name that would read outside the categories directory', () => {
    expect(() => compile(`version: v1
apps:
  x: { categories: [".."] }
`, { 'categories/../passwd/domains': 'x.example\n' })).toThrow(/apps\.x\.categories/);
  });
});

describe('device trust predicates', () => {
  const p = compile(`version: v1
default: deny
devices:
  compliant:
    managed: true
    os: { in: [macos, windows] }
    os_version: { gte: "14.2" }
    last_seen: { within: 7d }
  any-managed: { managed: true }
rules:
  - id: compliant-only
    action: allow
    when: { devices: [compliant] }
  - id: unknown-devices
    action: deny
    message: Use a company device.
    when: { devices: [unknown] }
  - id: office-v6
    action: allow
    when: { sources: [192.168.0.0/16] }
`);
  const at = new Date('2026-11-26T12:00:00Z');
  const dev = (d: Record<string, string | number | boolean>) => decide(p, base({ host: 'x.example', identity: { user: 'alice' }, device: d, at })).rule;
  const good = { managed: true, os: 'macos', os_version: '14.10', last_seen: '2026-11-25T08:00:00Z' };

  it('compares versions by segment, checks sets and recency', () => {
    expect(dev(good)).toBe('compliant-only');
    expect(dev({ ...good, os_version: '14.1.9' })).toBe('default');
    expect(dev({ ...good, os_version: '15' })).toBe('compliant-only');
    expect(dev({ ...good, os: 'linux' })).toBe('default');
    expect(dev({ ...good, last_seen: '2026-11-10T08:00:00Z' })).toBe('default');
    expect(dev({ managed: true, os: 'macos', os_version: '15' })).toBe('default'); // last_seen unknown
  });

  it('treats a missing device certificate as "unknown"', () => {
    expect(decide(p, base({ host: 'x.example', identity: { user: 'alice' }, at }))).toMatchObject({ rule: 'unknown-devices', message: 'Use a company device.' });
  });

  it('explains which attribute failed', () => {
    const e = explain(p, base({ host: 'x.example', device: { ...good, os: 'linux' }, at }));
    expect(e.deviceLevels).toEqual(['any-managed']);
    expect(e.lines[0]!.why).toMatch(/device trust any-managed is not compliant/);
  });

  it('matches IPv4 sources written as IPv4-mapped IPv6', () => {
    expect(decide(p, base({ host: 'x.example', source: '::ffff:192.168.1.5', device: good, at: new Date('2026-12-31T00:00:00Z') })).rule).toBe('office-v6');
  });
});
