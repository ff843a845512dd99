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
});
