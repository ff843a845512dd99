import { describe, expect, it } from 'vitest';
import { ProxyError } from '../src/errors/proxy-error.js';
import { parseAbsoluteTarget, parseConnectTarget } from '../src/listeners/target.js';
import { upstreamHeaders } from '../src/egress/headers.js';

describe('absolute-form targets', () => {
  it.each([
    ['http://Example.COM/a?b=1', { scheme: 'http', host: 'example.com', port: 80, path: '/a?b=1', hostHeader: 'example.com' }],
    ['http://example.com./', { host: 'example.com', hostHeader: 'example.com' }],
    ['https://example.com:8443', { scheme: 'https', port: 8443, path: '/', hostHeader: 'example.com:8443' }],
    ['http://bücher.example/', { host: 'xn--bcher-kva.example' }],
    ['http://[::1]:8080/', { host: '::1', port: 8080, hostHeader: '[::1]:8080' }],
    ['http://2130706433/', { host: '127.0.0.1' }],
    ['http://0x7f000001/', { host: '127.0.0.1' }],
    ['ws://chat.example/socket', { scheme: 'ws', port: 80 }],
    ['wss://chat.example/socket', { scheme: 'wss', port: 443 }],
  ])('%s', (raw, expected) => {
    expect(parseAbsoluteTarget(raw)).toMatchObject(expected);
  });

  it.each(['ftp://example.com/', 'http://user:pw@example.com/', 'not a url', 'http:///path', 'file:///etc/passwd'])('rejects %s', (raw) => {
    expect(() => parseAbsoluteTarget(raw)).toThrow(ProxyError);
  });
});

describe('CONNECT targets', () => {
  it.each([
    ['example.com:443', { host: 'example.com', port: 443 }],
    ['EXAMPLE.com.:443', { host: 'example.com', port: 443 }],
    ['[2001:db8::1]:443', { host: '2001:db8::1', port: 443 }],
    ['2130706433:443', { host: '127.0.0.1', port: 443 }],
  ])('%s', (raw, expected) => {
    expect(parseConnectTarget(raw)).toMatchObject(expected);
  });

  it.each(['example.com', 'example.com:0', 'example.com:70000', 'a@b:443', 'example.com:443/x', ':443', ''])('rejects %j', (raw) => {
    expect(() => parseConnectTarget(raw)).toThrow(expect.objectContaining({ reason: 'bad_target' }));
  });
});

describe('upstream headers', () => {
  it('drops headers the Connection header names, keeps order, appends to an existing Via', () => {
    const out = upstreamHeaders(
      ['Host', 'evil', 'Connection', 'close, X-A', 'X-A', '1', 'Accept', '*/*', 'Via', '1.0 corp-cache', 'Keep-Alive', 'timeout=5'],
      'close, X-A',
      { host: 'example.com', via: '1.1 n1 (egress-proxy)', forwardedFor: undefined },
    );
    expect(out).toEqual(['host', 'example.com', 'Accept', '*/*', 'via', '1.0 corp-cache, 1.1 n1 (egress-proxy)']);
  });

  it('adds X-Forwarded-For only when asked, replacing any the client sent', () => {
    const out = upstreamHeaders(['X-Forwarded-For', '10.9.9.9'], undefined, { host: 'h', via: undefined, forwardedFor: '10.0.0.5' });
    expect(out).toEqual(['host', 'h', 'x-forwarded-for', '10.0.0.5']);
  });
});

describe('access-log serialisation', () => {
  it('writes valid JSON whatever the client put in its User-Agent', async () => {
    const { AccessRecord } = await import('../src/logging/access-record.js');
    const rec = new AccessRecord('http', '127.0.0.1', 1234);
    rec.user_agent = 'evil"\\\n\u0001\u2028agent';
    rec.url = 'http://example.com:80/a%22b';
    const line = rec.serialise('{"level":"info"');
    expect(line.endsWith('}\n')).toBe(true);
    expect(JSON.parse(line)).toMatchObject({ user_agent: 'evil"\\\n\u0001\u2028agent', url: 'http://example.com:80/a%22b', kind: 'http' });
  });

  it('keeps lone surrogates (escaped) and clips long client values with an ellipsis', async () => {
    const { AccessRecord } = await import('../src/logging/access-record.js');
    const rec = new AccessRecord('http', '127.0.0.1', 1234);
    rec.user_agent = `ua\ud83d${'x'.repeat(300)}`;
    rec.host = 'h\ude00.example';
    const parsed = JSON.parse(rec.serialise('{"level":"info"')) as { user_agent: string; host: string };
    expect(parsed.host).toBe('h\ude00.example');
    expect(parsed.user_agent).toBe(`ua\ud83d${'x'.repeat(253)}…`);
  });

  it('reuses no piece of an earlier line whose values differ', async () => {
    const { AccessRecord } = await import('../src/logging/access-record.js');
    const { ANONYMOUS } = await import('../src/identity/principal.js');
    const socket = { remoteAddress: '127.0.0.1', remotePort: 4000 } as unknown as import('node:net').Socket;
    const req = (method: string) => ({ socket, method, headers: {} }) as unknown as import('node:http').IncomingMessage;
    const alice = Object.freeze({ method: 'token' as const, user: 'alice', groups: Object.freeze(['eng']) });
    const lines: Array<Record<string, unknown>> = [];
    const variants: Array<(r: InstanceType<typeof AccessRecord>) => void> = [
      (r) => Object.assign(r, { host: 'a.example', port: 80, rule: 'r1', decision: 'allow', reason: 'allowed', resolved_ip: '127.0.0.2' }),
      (r) => Object.assign(r, { host: 'a.example', port: 81, rule: 'r1', decision: 'allow', reason: 'allowed', resolved_ip: '127.0.0.3' }),
      (r) => Object.assign(r, { host: 'b.example', port: 81, rule: 'r2', decision: 'deny', reason: 'policy_denied', resolved_ip: '127.0.0.3' }),
      (r) => r.identify(alice, undefined, undefined),
      (r) => { r.identify(alice, undefined, undefined); r.groups = 'eng,ops'; },
      (r) => { r.identify(ANONYMOUS, undefined, undefined); r.kind = 'websocket'; r.client_ip = '127.0.0.9'; },
    ];
    for (const v of variants) {
      const rec = AccessRecord.forRequest('http', req(lines.length % 2 ? 'POST' : 'GET'));
      v(rec);
      lines.push(JSON.parse(rec.serialise('{"level":"info"')) as Record<string, unknown>);
    }
    expect(lines.map((l) => [l.method, l.host, l.port, l.rule, l.decision, l.resolved_ip, l.auth, l.user, l.groups, l.kind, l.client_ip])).toEqual([
      ['GET', 'a.example', 80, 'r1', 'allow', '127.0.0.2', 'anonymous', undefined, undefined, 'http', '127.0.0.1'],
      ['POST', 'a.example', 81, 'r1', 'allow', '127.0.0.3', 'anonymous', undefined, undefined, 'http', '127.0.0.1'],
      ['GET', 'b.example', 81, 'r2', 'deny', '127.0.0.3', 'anonymous', undefined, undefined, 'http', '127.0.0.1'],
      ['POST', undefined, undefined, undefined, 'error', undefined, 'token', 'alice', 'eng', 'http', '127.0.0.1'],
      ['GET', undefined, undefined, undefined, 'error', undefined, 'token', 'alice', 'eng,ops', 'http', '127.0.0.1'],
      ['POST', undefined, undefined, undefined, 'error', undefined, 'anonymous', undefined, undefined, 'websocket', '127.0.0.9'],
    ]);
  });
});
