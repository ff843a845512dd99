import { afterEach, describe, expect, it, vi } from 'vitest';
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

/** Numbers below `n` from xorshift32: the same values on every run. */
function randoms(seed: number): (n: number) => number {
  return (n) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
}

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

  it('encodes every value as JSON.stringify would, clipped, whatever the characters and sizes', async () => {
    const { AccessRecord } = await import('../src/logging/access-record.js');
    const rand = randoms(7);
    // Printable ASCII mostly (the fast path), with quotes, controls, many-byte and lone surrogate characters mixed in.
    const alphabet = ['a', 'Z', '/', '%', ' ', '~', '"', '\\', '\n', '\u0001', '\u001f', '\u007f', 'é', '\u2028', '€', '😀', '\ud800', '\udfff'];
    const text = (max: number): string => {
      // Plain ASCII, plain ASCII with one kind of special character mixed in, or anything.
      const chars = [`abc/.-_`, `ab~${alphabet[rand(alphabet.length)]}`, undefined][rand(3)];
      let s = '';
      for (let i = rand(max), j = 0; j < i; j++) s += chars ? chars[rand(chars.length)] : alphabet[rand(alphabet.length)];
      return s;
    };
    const clip = (v: string, max: number): string => (v.length > max ? `${v.slice(0, max)}…` : v);
    for (let i = 0; i < 300; i++) {
      const rec = new AccessRecord('http', '127.0.0.1', rand(65536));
      const v = { url: text(1700), user_agent: text(300), host: text(300), rule: text(300), report: text(1100), user: text(300) };
      Object.assign(rec, v, { status: rand(600), bytes_in: rand(2) ? rand(1000) : 2 ** 40 + rand(1000), bytes_out: rand(100000), ttfb_ms: rand(100000) / 7 });
      const parsed = JSON.parse(rec.serialise('{"level":"info"')) as Record<string, unknown>;
      expect(parsed).toMatchObject({
        url: clip(v.url, 1536), user_agent: clip(v.user_agent, 256), host: clip(v.host, 256), rule: clip(v.rule, 256),
        report: clip(v.report, 1024), user: clip(v.user, 256), status: rec.status, bytes_in: rec.bytes_in, bytes_out: rec.bytes_out,
        ttfb_ms: Math.round(rec.ttfb_ms! * 100) / 100, client_port: rec.client_port,
      });
    }
  });

  it('writes the URL from the target and the path as one string would be written, clipped, for any target in any order', async () => {
    const { AccessRecord } = await import('../src/logging/access-record.js');
    const rand = randoms(11);
    const alphabet = ['a', '/', '%', '?', '"', '\\', '\n', 'é', '😀', '\ud800'];
    const text = (max: number): string => {
      let s = '/';
      for (let i = rand(max), j = 0; j < i; j++) s += rand(4) ? 'x' : alphabet[rand(alphabet.length)];
      return s;
    };
    // Few targets, so the cached start of the URL is both reused and replaced.
    const targets = [['http', 'a.example', 80], ['http', 'a.example', 8080], ['https', 'a.example', 80], ['http', '::1', 80], ['http', 'h"\u0001é', 80]] as const;
    const clip = (v: string): string => (v.length > 1536 ? `${v.slice(0, 1536)}…` : v);
    for (let i = 0; i < 200; i++) {
      const [scheme, host, port] = targets[rand(targets.length)]!;
      const rec = new AccessRecord('http', '127.0.0.1', 1);
      Object.assign(rec, { scheme, host, port, path: text(rand(3) ? 40 : 1700) });
      const url = `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}${rec.path}`;
      expect(rec.url).toBe(url);
      expect((JSON.parse(rec.serialise('{"level":"info"')) as { url: string }).url).toBe(clip(url));
    }
    // A URL set whole is logged as it is.
    const rec = new AccessRecord('http', '127.0.0.1', 1);
    Object.assign(rec, { scheme: 'http', host: 'a.example', port: 80, path: '/a' });
    rec.url = 'http://b.example:81/b';
    expect(rec.path).toBeUndefined();
    expect((JSON.parse(rec.serialise('{"level":"info"')) as { url: string }).url).toBe('http://b.example:81/b');
  });

  it('reuses no piece of an earlier line whose values differ', async () => {
    const { AccessRecord } = await import('../src/logging/access-record.js');
    const { ANONYMOUS } = await import('../src/identity/principal.js');
    type Device = import('../src/identity/principal.js').Device;
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
      (r) => r.identify(alice, { id: 'laptop-1' } as Device, ['managed']),
      (r) => r.identify(alice, { id: 'laptop-2' } as Device, ['managed']),
      (r) => r.identify(alice, { id: 'laptop-2' } as Device, ['managed', 'corp']),
      // One field of the target at a time.
      (r) => Object.assign(r, { method: 'PUT', scheme: 'http', host: 'c.example', port: 443 }),
      (r) => Object.assign(r, { method: 'PUT', scheme: 'http', host: 'c.example', port: 8443 }),
      (r) => Object.assign(r, { method: 'PUT', scheme: 'https', host: 'c.example', port: 8443 }),
      // The client's address alone, then the egress address alone.
      (r) => Object.assign(r, { kind: 'http', client_ip: '127.0.0.10' }),
      (r) => Object.assign(r, { egress_node: 'n1', egress_ip: '127.0.0.5' }),
      (r) => Object.assign(r, { egress_node: 'n1', egress_ip: '127.0.0.6' }),
      (r) => Object.assign(r, { egress_node: 'n2', egress_ip: '127.0.0.6' }),
    ];
    for (const v of variants) {
      const rec = AccessRecord.forRequest('http', req(lines.length % 2 ? 'POST' : 'GET'));
      v(rec);
      lines.push(JSON.parse(rec.serialise('{"level":"info"')) as Record<string, unknown>);
    }
    expect(lines.slice(0, 12).map((l) => [l.method, l.host, l.port, l.rule, l.decision, l.resolved_ip, l.auth, l.user, l.groups, l.kind, l.client_ip])).toEqual([
      ['GET', 'a.example', 80, 'r1', 'allow', '127.0.0.2', 'anonymous', undefined, undefined, 'http', '127.0.0.1'],
      ['POST', 'a.example', 81, 'r1', 'allow', '127.0.0.3', 'anonymous', undefined, undefined, 'http', '127.0.0.1'],
      ['GET', 'b.example', 81, 'r2', 'deny', '127.0.0.3', 'anonymous', undefined, undefined, 'http', '127.0.0.1'],
      ['POST', undefined, undefined, undefined, 'error', undefined, 'token', 'alice', 'eng', 'http', '127.0.0.1'],
      ['GET', undefined, undefined, undefined, 'error', undefined, 'token', 'alice', 'eng,ops', 'http', '127.0.0.1'],
      ['POST', undefined, undefined, undefined, 'error', undefined, 'anonymous', undefined, undefined, 'websocket', '127.0.0.9'],
      ['GET', undefined, undefined, undefined, 'error', undefined, 'token', 'alice', 'eng', 'http', '127.0.0.1'],
      ['POST', undefined, undefined, undefined, 'error', undefined, 'token', 'alice', 'eng', 'http', '127.0.0.1'],
      ['GET', undefined, undefined, undefined, 'error', undefined, 'token', 'alice', 'eng', 'http', '127.0.0.1'],
      ['PUT', 'c.example', 443, undefined, 'error', undefined, 'anonymous', undefined, undefined, 'http', '127.0.0.1'],
      ['PUT', 'c.example', 8443, undefined, 'error', undefined, 'anonymous', undefined, undefined, 'http', '127.0.0.1'],
      ['PUT', 'c.example', 8443, undefined, 'error', undefined, 'anonymous', undefined, undefined, 'http', '127.0.0.1'],
    ]);
    expect(lines.slice(9, 12).map((l) => [l.method, l.scheme, l.host, l.port])).toEqual([
      ['PUT', 'http', 'c.example', 443], ['PUT', 'http', 'c.example', 8443], ['PUT', 'https', 'c.example', 8443],
    ]);
    expect(lines.slice(5, 9).map((l) => [l.device_id, l.device_trust])).toEqual([
      [undefined, undefined], ['laptop-1', 'managed'], ['laptop-2', 'managed'], ['laptop-2', 'managed,corp'],
    ]);
    expect(lines.slice(11).map((l) => [l.client_ip, l.egress_node, l.egress_ip])).toEqual([
      ['127.0.0.1', undefined, undefined], ['127.0.0.10', undefined, undefined], ['127.0.0.1', 'n1', '127.0.0.5'], ['127.0.0.1', 'n1', '127.0.0.6'],
      ['127.0.0.1', 'n2', '127.0.0.6'],
    ]);
  });
});

describe('the access line prefix', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('keeps its time current to the millisecond, across seconds and for years JSON dates cannot fit in 24 characters', async () => {
    const { AccessPrefix } = await import('../src/logging/access-prefix.js');
    const { AccessRecord } = await import('../src/logging/access-record.js');
    const { LineBytes } = await import('../src/logging/line-bytes.js');
    const out = new LineBytes(64);
    vi.useFakeTimers();
    const times = ['2026-11-26T17:50:59.998Z', '2026-11-26T17:50:59.999Z', '2026-11-26T17:51:00.000Z', '2026-11-26T17:51:00.042Z', '+010000-01-01T00:00:00.000Z', '2026-11-26T17:51:00.043Z'];
    vi.setSystemTime(new Date(times[0]!));
    const prefix = AccessPrefix.live('"n1","worker":2');
    for (const t of times) {
      vi.setSystemTime(new Date(t));
      expect(JSON.parse(`${prefix.now().text()}}`)).toEqual({ level: 'info', time: t, node: 'n1', worker: 2, type: 'access' });
      // A line copies the prefix (cached with the pieces that follow it) and puts the time over it.
      const n = new AccessRecord('http', '127.0.0.1', 5).encode(out, prefix.now());
      expect(JSON.parse(out.buf.toString('utf8', 0, n))).toMatchObject({ time: t, node: 'n1', kind: 'http', client_port: 5 });
    }
  });
});
