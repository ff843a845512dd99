import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { IcapClient, type IcapOptions, type IcapVerdict, type OriginalBody } from '../src/inspection/icap.js';
import { startCIcap, startFakeIcap, startRelay, type CIcap } from './helpers/c-icap.js';

// srv_content_filtering: a planted word blocks, a card-like number is rewritten.
const FILTER_RULES = [
  'srv_content_filtering.Match Secret body /TOPSECRET/ score=10',
  'srv_content_filtering.Match Card body /CARD-[0-9]+/ score=1 info{MASK}=CARD-XXXX',
  'srv_content_filtering.Action block score{Secret>5}',
  'srv_content_filtering.Action replace score{Card>0} replaceInfo=MASK',
];

let icap: CIcap | undefined;
const clients: IcapClient[] = [];

function client(o: Partial<IcapOptions> & { url: string }): IcapClient {
  const c = new IcapClient({ timeoutMs: 3000, failOpen: false, maxBodyBytes: 1 << 20, ...o });
  clients.push(c);
  return c;
}

async function drain(b: OriginalBody): Promise<Buffer | null> {
  if (b === null || Buffer.isBuffer(b)) return b;
  const parts: Buffer[] = [];
  for await (const c of b) parts.push(c);
  return Buffer.concat(parts);
}

async function* chunked(data: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

const POST = (url = 'http://127.0.0.2/upload'): { method: string; url: string; headers: [string, string][] } => ({
  method: 'POST', url, headers: [['Host', '127.0.0.2'], ['Content-Type', 'text/plain']],
});
const GET_REQ = { method: 'GET', url: 'http://127.0.0.2/page', headers: [['Host', '127.0.0.2']] as [string, string][] };
const TEXT_RES = { status: 200, headers: [['Content-Type', 'text/plain']] as [string, string][] };

const OPTIONS_OK = 'ICAP/1.0 200 OK\r\nMethods: REQMOD, RESPMOD\r\nISTag: "t1"\r\nPreview: 4\r\nAllow: 204\r\nX-Include: X-Client-IP, X-Authenticated-User\r\nEncapsulated: null-body=0\r\n\r\n';
const isOptions = (r: Buffer): boolean => r.toString('latin1').startsWith('OPTIONS ');

function expectKind<K extends IcapVerdict['kind']>(v: IcapVerdict, kind: K): Extract<IcapVerdict, { kind: K }> {
  expect(v.kind, v.kind === 'error' ? `${v.reason}: ${v.detail}` : v.kind).toBe(kind);
  return v as Extract<IcapVerdict, { kind: K }>;
}

// A missing c-icap fails every test that needs it, with the install line (never a skip).
let startError: unknown;
beforeAll(async () => {
  try {
    icap = await startCIcap({ filterRules: FILTER_RULES });
  } catch (e) {
    startError = e;
  }
});

function cicap(): CIcap {
  if (startError !== undefined || icap === undefined) throw startError;
  return icap;
}

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

afterAll(async () => {
  await icap?.stop();
});

describe('against c-icap', () => {
  it('OPTIONS learns methods, preview, 204 and the ISTag', async () => {
    const info = await client({ url: cicap().url('echo') }).options();
    expect(info.methods).toEqual(expect.arrayContaining(['REQMOD', 'RESPMOD']));
    expect(info.preview).toBe(1024);
    expect(info.allow204).toBe(true);
    expect(info.istag).toMatch(/^".+"$/);
    expect(info.include).toContain('x-authenticated-user');
    expect(cicap().accessLog()).toMatch(/OPTIONS echo 200/);
  });

  it('an unknown service is a server error, not an allow', async () => {
    const c = client({ url: cicap().url('nope'), failOpen: true });
    await expect(c.options()).rejects.toMatchObject({ reason: 'icap_server_error' });
    const v = expectKind(await c.reqmod(POST(), Buffer.from('x'), {}), 'error');
    expect(v.reason).toBe('icap_server_error');
    expect(v.failOpen).toBe(true);
  });

  it('REQMOD allow: echo answers unmodified, the original body comes back', async () => {
    const c = client({ url: cicap().url('echo') });
    const noBody = expectKind(await c.reqmod(GET_REQ, null), 'unmodified');
    expect(noBody.original).toBeNull();
    const body = Buffer.from('hello world\n');
    const v = expectKind(await c.reqmod(POST(), chunked(body, 4)), 'unmodified');
    expect(await drain(v.original)).toEqual(body);
    expect([200, 204]).toContain(v.trace.icapStatus);
    expect(cicap().accessLog()).toMatch(/REQMOD echo (200|204)/);
  });

  it('REQMOD block: a planted word in the body gets the service\'s block page', async () => {
    const c = client({ url: cicap().url('filter') });
    const v = expectKind(await c.reqmod(POST(), Buffer.from('the plan is TOPSECRET, do not share\n')), 'blocked');
    expect(v.head.status).toBe(403);
    expect(v.body.toString()).toContain('blocked');
    expect(v.body.toString()).toContain('Secret');
    expect(v.head.headers.some(([n]) => n.toLowerCase() === 'content-length')).toBe(false);
  });

  it('REQMOD clean body through the filter is unmodified', async () => {
    const c = client({ url: cicap().url('filter') });
    const v = expectKind(await c.reqmod(POST(), Buffer.from('nothing to see here\n')), 'unmodified');
    expect(await drain(v.original)).toEqual(Buffer.from('nothing to see here\n'));
  });

  it('REQMOD modify: the filter rewrites a card number in the request body', async () => {
    const c = client({ url: cicap().url('filter') });
    const v = expectKind(await c.reqmod(POST(), Buffer.from('pay with CARD-12345678 now\n')), 'modified-request');
    expect(v.body?.toString()).toBe('pay with CARD-XXXX now\n');
    expect(v.head.method).toBe('POST');
    expect(v.head.url).toBe('http://127.0.0.2/upload');
  });

  it('RESPMOD modify and block', async () => {
    const c = client({ url: cicap().url('filter') });
    const mod = expectKind(await c.respmod(GET_REQ, TEXT_RES, Buffer.from('your card CARD-4242 is on file\n')), 'modified-response');
    expect(mod.head.status).toBe(200);
    expect(mod.body?.toString()).toBe('your card CARD-XXXX is on file\n');
    const blocked = expectKind(await c.respmod(GET_REQ, TEXT_RES, Buffer.from('leaked: TOPSECRET\n')), 'blocked');
    expect(blocked.head.status).toBe(403);
    expect(blocked.body.toString()).toContain('Web page access blocked');
    const clean = expectKind(await c.respmod(GET_REQ, TEXT_RES, Buffer.from('plain page\n')), 'unmodified');
    expect(await drain(clean.original)).toEqual(Buffer.from('plain page\n'));
  });

  it('RESPMOD through echo is unmodified', async () => {
    const c = client({ url: cicap().url('echo') });
    const body = Buffer.from('<html>ok</html>');
    const v = expectKind(await c.respmod(GET_REQ, { status: 200, headers: [['Content-Type', 'text/html']] }, body), 'unmodified');
    expect(await drain(v.original)).toEqual(body);
  });

  it('preview: a small preview, 100 Continue, then the rest, where the word sits', async () => {
    const c = client({ url: cicap().url('filter'), previewBytes: 512 });
    const body = Buffer.concat([Buffer.alloc(4000, 'a'), Buffer.from(' TOPSECRET '), Buffer.alloc(100, 'b')]);
    const v = expectKind(await c.reqmod(POST(), chunked(body, 1000)), 'blocked');
    expect(v.trace.previewBytes).toBe(512);
    expect(v.trace.continued).toBe(true);
    const echo = client({ url: cicap().url('echo'), previewBytes: 512 });
    const e = await echo.reqmod(POST(), body);
    expect(e.trace.previewBytes).toBe(512);
    expect(e.kind).toBe('unmodified');
  });

  it('preview holding the whole body ends with ieof and needs no 100 Continue', async () => {
    const c = client({ url: cicap().url('filter') });
    const v = expectKind(await c.reqmod(POST(), Buffer.from('short TOPSECRET')), 'blocked');
    expect(v.trace.previewBytes).toBe(15);
    expect(v.trace.continued).toBe(false);
  });

  it('a body over max_body_bytes: only the preview is sent; a service wanting more is an error carrying failOpen and the full original', async () => {
    const body = Buffer.concat([Buffer.alloc(9000, 'z'), Buffer.from(' TOPSECRET ')]);
    for (const failOpen of [true, false]) {
      const c = client({ url: cicap().url('filter'), maxBodyBytes: 4096, failOpen });
      const req = POST();
      req.headers.push(['Content-Length', String(body.length)]);
      const v = expectKind(await c.reqmod(req, chunked(body, 3000)), 'error');
      expect(v.reason).toBe('icap_too_large');
      expect(v.failOpen).toBe(failOpen);
      expect(v.trace.previewBytes).toBe(1024);
      expect(await drain(v.original)).toEqual(body);
    }
    // echo decides on the preview alone (204), so the oversized body passes with the service's consent.
    const e = expectKind(await client({ url: cicap().url('echo'), maxBodyBytes: 4096 }).reqmod(POST(), chunked(body, 3000)), 'unmodified');
    expect(e.trace).toMatchObject({ icapStatus: 204, previewBytes: 1024, continued: false });
    expect(await drain(e.original)).toEqual(body);
  });

  it('keeps connections alive and survives the server dropping idle ones', async () => {
    const relay = await startRelay(cicap().port);
    try {
      const c = client({ url: `icap://127.0.0.1:${relay.port}/echo` });
      for (let i = 0; i < 5; i++) expectKind(await c.reqmod(POST(), Buffer.from(`n${i}`)), 'unmodified');
      expect(relay.connections).toBe(1);
      relay.dropAll();
      const v = expectKind(await c.reqmod(POST(), Buffer.from('after drop')), 'unmodified');
      expect(relay.connections).toBe(2);
      expect(v.trace.reusedConnection).toBe(false);
      const again = expectKind(await c.reqmod(POST(), Buffer.from('again')), 'unmodified');
      expect(again.trace.reusedConnection).toBe(true);
    } finally {
      await relay.close();
    }
  });

  it('parallel requests each get their own verdict', async () => {
    const c = client({ url: cicap().url('filter') });
    const bodies = Array.from({ length: 12 }, (_, i) => (i % 3 === 0 ? `x${i} TOPSECRET` : i % 3 === 1 ? `x${i} CARD-${i}0` : `x${i} clean`));
    const verdicts = await Promise.all(bodies.map((b) => c.reqmod(POST(), Buffer.from(b))));
    expect(verdicts.map((v) => v.kind)).toEqual(bodies.map((_, i) => (i % 3 === 0 ? 'blocked' : i % 3 === 1 ? 'modified-request' : 'unmodified')));
  });
});

describe('when ICAP fails', () => {
  it('server down: icap_unavailable, with failOpen as configured', async () => {
    const fake = await startFakeIcap(() => 'close');
    const port = fake.port;
    await fake.close();
    for (const failOpen of [true, false]) {
      const c = client({ url: `icap://127.0.0.1:${port}/echo`, failOpen });
      const v = expectKind(await c.reqmod(POST(), Buffer.from('data')), 'error');
      expect(v.reason).toBe('icap_unavailable');
      expect(v.failOpen).toBe(failOpen);
      expect(await drain(v.original)).toEqual(Buffer.from('data'));
    }
  });

  it('a server that accepts and never answers: icap_timeout within the bound', async () => {
    const fake = await startFakeIcap(() => 'hang');
    try {
      const c = client({ url: fake.url, timeoutMs: 300, failOpen: true });
      const t0 = Date.now();
      const v = expectKind(await c.reqmod(POST(), Buffer.from('data')), 'error');
      expect(v.reason).toBe('icap_timeout');
      expect(v.failOpen).toBe(true);
      expect(Date.now() - t0).toBeLessThan(5000);
    } finally {
      await fake.close();
    }
  });

  it.each([
    ['garbage instead of a status line', { send: 'HELLO THERE\r\n\r\n' }],
    ['binary garbage', { send: Buffer.from([0, 1, 2, 255, 13, 10, 13, 10]) }],
    ['a 200 without Encapsulated', { send: 'ICAP/1.0 200 OK\r\nISTag: "t1"\r\n\r\n' }],
    ['offsets past the data, then close', { send: 'ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=500\r\n\r\nHTTP/1.1 403 No\r\n\r\n', close: true }],
    ['a cut chunked body', { send: 'ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=19\r\n\r\nHTTP/1.1 403 No\r\n\r\n10\r\nonly', close: true }],
    ['a bad chunk size', { send: 'ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=19\r\n\r\nHTTP/1.1 403 No\r\n\r\nzz\r\n\r\n' }],
    ['a huge encapsulated head offset', { send: 'ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, null-body=900000000\r\n\r\nHTTP/1.1 403 No\r\n\r\n' }],
    ['a doubled Encapsulated entry', { send: 'ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-hdr=19, null-body=38\r\n\r\nHTTP/1.1 403 No\r\n\r\nHTTP/1.1 403 No\r\n\r\n' }],
    ['an encapsulated head that is not HTTP', { send: 'ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, null-body=6\r\n\r\nBLAH\r\n' }],
  ] as const)('%s: icap_protocol, no crash', async (_name, action) => {
    const fake = await startFakeIcap((r) => (isOptions(r) ? { send: OPTIONS_OK } : action));
    try {
      const v = expectKind(await client({ url: fake.url, timeoutMs: 1000 }).reqmod(POST(), Buffer.from('data')), 'error');
      expect(v.reason).toBe('icap_protocol');
      expect(v.failOpen).toBe(false);
    } finally {
      await fake.close();
    }
  });

  it('garbage to OPTIONS, a close mid-head, and a stalled head', async () => {
    const garbage = await startFakeIcap(() => ({ send: 'SSH-2.0-OpenSSH\r\n\r\n' }));
    const cut = await startFakeIcap((r) => (isOptions(r) ? { send: OPTIONS_OK } : { send: 'ICAP/1.0 200 OK\r\nEncaps', close: true }));
    const stall = await startFakeIcap((r) => (isOptions(r) ? { send: OPTIONS_OK } : { send: 'ICAP/1.0 20' }));
    try {
      expect(expectKind(await client({ url: garbage.url }).reqmod(POST(), null), 'error').reason).toBe('icap_protocol');
      expect(expectKind(await client({ url: cut.url }).reqmod(POST(), null), 'error').reason).toBe('icap_protocol');
      expect(expectKind(await client({ url: stall.url, timeoutMs: 300 }).reqmod(POST(), null), 'error').reason).toBe('icap_timeout');
    } finally {
      await Promise.all([garbage.close(), cut.close(), stall.close()]);
    }
  });

  it('a flood without an end of head is refused, not buffered', async () => {
    const flood = await startFakeIcap(() => ({ send: `ICAP/1.0 200 OK\r\nX: ${'a'.repeat(200_000)}` }));
    try {
      const v = expectKind(await client({ url: flood.url }).reqmod(POST(), null), 'error');
      expect(v.reason).toBe('icap_protocol');
    } finally {
      await flood.close();
    }
  });

  it('an ICAP answer body over max_body_bytes is icap_too_large', async () => {
    const big = 'x'.repeat(5000);
    const fake = await startFakeIcap((r) => (isOptions(r) ? { send: OPTIONS_OK } : {
      send: `ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=19\r\n\r\nHTTP/1.1 403 No\r\n\r\n${big.length.toString(16)}\r\n${big}\r\n0\r\n\r\n`,
    }));
    try {
      const v = expectKind(await client({ url: fake.url, maxBodyBytes: 1000 }).reqmod(POST(), Buffer.from('data')), 'error');
      expect(v.reason).toBe('icap_too_large');
    } finally {
      await fake.close();
    }
  });
});

describe('framing on the wire', () => {
  it('REQMOD with preview: offsets, chunks, ieof, stripped credentials, X-Include headers', async () => {
    const fake = await startFakeIcap((r, n) => {
      if (isOptions(r)) return { send: OPTIONS_OK };
      return n === 1 ? { send: 'ICAP/1.0 100 Continue\r\n\r\n' } : { send: 'ICAP/1.0 204 No Content\r\nISTag: "t1"\r\n\r\n' };
    });
    try {
      const c = client({ url: fake.url });
      const req = { method: 'POST', url: 'http://127.0.0.2/x', headers: [['Host', '127.0.0.2'], ['Proxy-Authorization', 'Bearer secret-token'], ['Content-Type', 'text/plain']] as [string, string][] };
      const v = expectKind(await c.reqmod(req, Buffer.from('abcdefghij'), { clientIp: '10.1.2.3', user: 'alice@example.com', groups: ['eng', 'bad\r\ngroup'] }), 'unmodified');
      expect(v.trace).toMatchObject({ previewBytes: 4, continued: true, icapStatus: 204 });
      const preview = fake.requests[1]!.toString('latin1');
      const headEnd = preview.indexOf('\r\n\r\n') + 4;
      const head = preview.slice(0, headEnd);
      expect(head).toMatch(/^REQMOD icap:\/\/127\.0\.0\.1:\d+\/svc ICAP\/1\.0\r\n/);
      expect(head).toContain('\r\nAllow: 204\r\n');
      expect(head).toContain('\r\nPreview: 4\r\n');
      expect(head).toContain('\r\nX-Client-IP: 10.1.2.3\r\n');
      expect(head).toContain(`\r\nX-Authenticated-User: ${Buffer.from('alice@example.com').toString('base64')}\r\n`);
      expect(head).not.toContain('X-Authenticated-Groups');
      const off = Number(/Encapsulated: req-hdr=0, req-body=(\d+)\r\n/.exec(head)![1]);
      const httpHead = preview.slice(headEnd, headEnd + off);
      expect(httpHead).toBe('POST http://127.0.0.2/x HTTP/1.1\r\nHost: 127.0.0.2\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n');
      expect(preview.slice(headEnd + off)).toBe('4\r\nabcd\r\n0\r\n\r\n');
      expect(fake.requests[2]!.toString('latin1')).toBe('6\r\nefghij\r\n0\r\n\r\n');
      expect(preview).not.toContain('secret-token');
    } finally {
      await fake.close();
    }
  });

  it('RESPMOD offsets and a whole body in the preview (ieof); null-body without a body', async () => {
    const fake = await startFakeIcap((r) => (isOptions(r) ? { send: OPTIONS_OK } : { send: 'ICAP/1.0 204 No Content\r\n\r\n' }));
    try {
      const c = client({ url: fake.url });
      expectKind(await c.respmod(GET_REQ, { status: 404, headers: [['Content-Type', 'text/html']] }, Buffer.from('abc')), 'unmodified');
      expectKind(await c.respmod(GET_REQ, { status: 304, headers: [] }, null), 'unmodified');
      const [, withBody, noBody] = fake.requests.map((b) => b.toString('latin1'));
      const req = 'GET http://127.0.0.2/page HTTP/1.1\r\nHost: 127.0.0.2\r\n\r\n';
      const res = 'HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 3\r\n\r\n';
      expect(withBody).toContain(`Encapsulated: req-hdr=0, res-hdr=${req.length}, res-body=${req.length + res.length}\r\n`);
      expect(withBody).toContain('\r\nPreview: 3\r\n');
      expect(withBody!.endsWith(`\r\n\r\n${req}${res}3\r\nabc\r\n0; ieof\r\n\r\n`)).toBe(true);
      expect(noBody).toContain(`Encapsulated: req-hdr=0, res-hdr=${req.length}, null-body=${req.length + 'HTTP/1.1 304 Not Modified\r\n\r\n'.length}\r\n`);
      expect(noBody).not.toContain('Preview:');
      expect(fake.connections).toBe(1);
    } finally {
      await fake.close();
    }
  });

  it('a 200 that echoes the request is unmodified; a changed header is a modification', async () => {
    const echo = (r: Buffer, extra: string): string => {
      const text = r.toString('latin1');
      const start = text.indexOf('\r\n\r\n') + 4;
      const http = text.slice(start, start + Number(/req-body=(\d+)/.exec(text)![1])).replace('\r\n\r\n', `\r\nVia: ICAP/1.0 fake${extra}\r\n\r\n`);
      return `ICAP/1.0 200 OK\r\nEncapsulated: req-hdr=0, req-body=${http.length}\r\n\r\n${http}4\r\nbody\r\n0\r\n\r\n`;
    };
    const fake = await startFakeIcap((r, n) => (isOptions(r) ? { send: OPTIONS_OK.replace('Preview: 4\r\n', '') } : { send: echo(r, n === 1 ? '' : '\r\nX-Scanned: yes') }));
    try {
      const c = client({ url: fake.url });
      const same = expectKind(await c.reqmod(POST(), Buffer.from('body')), 'unmodified');
      expect(same.trace).toMatchObject({ icapStatus: 200, previewBytes: null });
      const changed = expectKind(await c.reqmod(POST(), Buffer.from('body')), 'modified-request');
      expect(changed.head.headers).toContainEqual(['X-Scanned', 'yes']);
      expect(changed.body?.toString()).toBe('body');
    } finally {
      await fake.close();
    }
  });

  it('OPTIONS with an opt-body is read through; a 100 Continue outside a preview is a protocol error', async () => {
    const opts = 'ICAP/1.0 200 OK\r\nMethods: REQMOD\r\nEncapsulated: opt-body=0\r\n\r\n5\r\nhello\r\n0\r\n\r\n';
    const fake = await startFakeIcap((r) => (isOptions(r) ? { send: opts } : { send: 'ICAP/1.0 100 Continue\r\n\r\n' }));
    try {
      const c = client({ url: fake.url });
      expect(await c.options()).toMatchObject({ methods: ['REQMOD'], preview: null, allow204: false });
      expect(expectKind(await c.reqmod(POST(), Buffer.from('data')), 'error').reason).toBe('icap_protocol');
      expect(expectKind(await c.respmod(GET_REQ, TEXT_RES, null), 'error').reason).toBe('icap_server_error');
    } finally {
      await fake.close();
    }
  });

  it('OPTIONS is cached; a new ISTag makes the client ask again', async () => {
    const fake = await startFakeIcap((r, n) => {
      if (isOptions(r)) return { send: OPTIONS_OK };
      return { send: `ICAP/1.0 204 No Content\r\nISTag: "${n < 3 ? 't1' : 't2'}"\r\n\r\n` };
    });
    try {
      const c = client({ url: fake.url });
      for (let i = 0; i < 4; i++) expectKind(await c.reqmod(GET_REQ, null), 'unmodified');
      const methods = fake.requests.map((b) => b.toString('latin1').split(' ')[0]);
      expect(methods).toEqual(['OPTIONS', 'REQMOD', 'REQMOD', 'REQMOD', 'OPTIONS', 'REQMOD']);
    } finally {
      await fake.close();
    }
  });

  it('refuses header injection and bad URLs before sending; close() ends the client', async () => {
    const fake = await startFakeIcap((r) => (isOptions(r) ? { send: OPTIONS_OK } : { send: 'ICAP/1.0 204 No Content\r\n\r\n' }));
    try {
      const c = client({ url: fake.url });
      const inj = await c.reqmod({ method: 'GET', url: 'http://127.0.0.2/', headers: [['X-A', 'v\r\nX-Evil: 1']] }, null);
      expect(expectKind(inj, 'error').reason).toBe('icap_protocol');
      const badUrl = await c.reqmod({ method: 'GET', url: 'http://127.0.0.2/a b', headers: [] }, null);
      expect(expectKind(badUrl, 'error').reason).toBe('icap_protocol');
      expect(fake.requests.some((b) => b.includes('X-Evil'))).toBe(false);
      c.close();
      expect(expectKind(await c.reqmod(GET_REQ, null), 'error').reason).toBe('icap_unavailable');
      expect(() => new IcapClient({ url: 'http://127.0.0.1/x', timeoutMs: 1, failOpen: false, maxBodyBytes: 1 })).toThrow(/icap:\/\//);
    } finally {
      await fake.close();
    }
  });
});
