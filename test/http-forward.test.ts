import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { request, ProxyAgent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, type Origin } from './helpers/origin.js';
import { startTestProxy, type TestProxy } from './helpers/proxy.js';
import { openSocket, rawExchange, readUntil } from './helpers/raw.js';
import { cleanEnv, run } from './helpers/run.js';

let proxy: TestProxy;
let origin: Origin;
let agent: ProxyAgent;

beforeAll(async () => {
  proxy = await startTestProxy({}, { http_ports: ['1024-65535'] });
  origin = await startOrigin({
    handler: (req, res, seen) => {
      if (req.url === '/trailers') {
        res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' });
        res.write('hello');
        res.addTrailers({ 'x-checksum': 'abc123' });
        res.end();
        return;
      }
      if (req.url === '/never') return; // answers nothing: the client gives up first
      if (req.url?.startsWith('/hop')) {
        res.writeHead(200, { connection: 'x-secret-hop', 'x-secret-hop': 'leak', 'keep-alive': 'timeout=5', 'proxy-authenticate': 'Basic' });
        res.end('ok');
        return;
      }
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ method: req.method, url: req.url, host: req.headers.host, bytes: seen.bodyBytes }));
    },
  });
  agent = new ProxyAgent({ uri: proxy.url, proxyTunnel: false });
});

afterAll(async () => {
  await agent.close();
  await origin.close();
  await proxy.close();
});

describe('plain HTTP through the explicit proxy', () => {
  it('forwards a GET with curl -x and logs one access line', async () => {
    const r = await run('curl', ['-sS', '-x', proxy.url, `${origin.url}/hello?token=secret123`], { env: cleanEnv() });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ method: 'GET', url: '/hello?token=secret123', host: `${origin.host}:${origin.port}` });
    const line = await proxy.waitForAccess((l) => typeof l.url === 'string' && l.url.includes('/hello'));
    expect(line).toMatchObject({ kind: 'http', method: 'GET', status: 200, decision: 'allow', reason: 'allowed', host: origin.host, port: origin.port, resolved_ip: origin.host });
    expect(line.url).toBe(`http://${origin.host}:${origin.port}/hello?REDACTED`);
    expect(JSON.stringify(proxy.lines())).not.toContain('secret123');
    expect(typeof line.duration_ms).toBe('number');
    expect(line.policy_version).toMatch(/^[0-9a-f]{12}$/);
  });

  it('forwards with HTTP_PROXY from the environment (curl)', async () => {
    const r = await run('curl', ['-sS', `${origin.url}/env`], { env: cleanEnv({ http_proxy: proxy.url }) });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).url).toBe('/env');
    await proxy.waitForAccess((l) => typeof l.url === 'string' && l.url.endsWith('/env'));
  });

  it('streams a large POST upload and a large download without buffering (undici ProxyAgent)', async () => {
    const size = 64 << 20;
    const chunk = Buffer.alloc(1 << 16, 7);
    let sent = 0;
    const body = new Readable({
      read() {
        if (sent >= size) {
          this.push(null);
          return;
        }
        sent += chunk.length;
        this.push(chunk);
      },
    });
    const res = await request(`${origin.url}/upload`, { method: 'POST', body, dispatcher: agent });
    expect(res.statusCode).toBe(200);
    expect(await res.body.json()).toMatchObject({ method: 'POST', bytes: size });
    expect(origin.seen.at(-1)!.headers['transfer-encoding']).toBe('chunked');
  });

  it('keeps Content-Length bodies as Content-Length (PUT)', async () => {
    const payload = Buffer.alloc(5 << 20, 1);
    const res = await request(`${origin.url}/put`, { method: 'PUT', body: payload, dispatcher: agent });
    expect(await res.body.json()).toMatchObject({ method: 'PUT', bytes: payload.length });
    const seen = origin.seen.find((s) => s.url === '/put')!;
    expect(seen.headers['content-length']).toBe(String(payload.length));
    expect(seen.headers['transfer-encoding']).toBeUndefined();
  });

  it('logs a client that leaves before the answer as client_aborted (499), without an error line', async () => {
    const sock = await openSocket(proxy.port);
    sock.write(`GET ${origin.url}/never HTTP/1.1\r\nHost: ${new URL(origin.url).host}\r\n\r\n`);
    // Until the request is upstream (bounded: the test fails if it never gets there).
    for (let i = 0; i < 250 && !origin.seen.some((s) => s.url === '/never'); i++) await new Promise((r) => setTimeout(r, 20));
    expect(origin.seen.some((s) => s.url === '/never')).toBe(true);
    sock.destroy();
    expect(await proxy.waitForAccess((l) => String(l.url).endsWith('/never'))).toMatchObject({ decision: 'error', reason: 'client_aborted', status: 499 });
    expect(proxy.lines().filter((l) => l.level === 'error')).toEqual([]);
  });

  it('streams a large download with the right bytes', async () => {
    const big = await startOrigin({
      host: '127.0.0.3',
      handler: (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        let left = 32;
        const block = Buffer.alloc(1 << 20, 'x');
        const pump = (): void => {
          while (left > 0) {
            left--;
            if (!res.write(block)) return void res.once('drain', pump);
          }
          res.end();
        };
        pump();
      },
    });
    try {
      const res = await request(`${big.url}/big`, { dispatcher: agent });
      const hash = createHash('sha256');
      let n = 0;
      for await (const c of res.body) { hash.update(c as Buffer); n += (c as Buffer).length; }
      expect(n).toBe(32 << 20);
      expect(hash.digest('hex')).toBe(createHash('sha256').update(Buffer.alloc(32 << 20, 'x')).digest('hex'));
    } finally {
      await big.close();
    }
  });

  it('passes response trailers through', async () => {
    const r = await run('curl', ['-sS', '--raw', '-i', '-x', proxy.url, `${origin.url}/trailers`], { env: cleanEnv() });
    expect(r.stdout).toMatch(/transfer-encoding: chunked/i);
    expect(r.stdout).toMatch(/\r\nx-checksum: abc123\r\n/i);
  });

  it('rebuilds Host from the absolute URI, strips hop-by-hop and spoofable headers, adds Via', async () => {
    const res = await rawExchange(
      proxy.port,
      `GET ${origin.url}/headers HTTP/1.1\r\nHost: evil.example\r\nConnection: keep-alive, X-Drop-Me\r\nX-Drop-Me: 1\r\n` +
        `Proxy-Authorization: Basic dXNlcjpwYXNz\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nX-Forwarded-For: 10.1.2.3\r\n` +
        `X-Forwarded-User: mallory\r\nX-Keep: yes\r\nConnection: close\r\n\r\n`,
    );
    expect(res).toMatch(/^HTTP\/1\.1 200/);
    const seen = origin.seen.find((s) => s.url === '/headers')!;
    expect(seen.headers.host).toBe(`${origin.host}:${origin.port}`);
    expect(seen.headers['x-keep']).toBe('yes');
    for (const h of ['x-drop-me', 'proxy-authorization', 'proxy-connection', 'te', 'x-forwarded-for', 'x-forwarded-user']) {
      expect(seen.headers[h], h).toBeUndefined();
    }
    expect(seen.headers.via).toBe('1.1 test-node (egress-proxy)');
    expect(res).toMatch(/\r\nvia: 1\.1 test-node \(egress-proxy\)\r\n/i);
  });

  it('drops hop-by-hop headers from the response', async () => {
    const res = await request(`${origin.url}/hop`, { dispatcher: agent });
    await res.body.text();
    expect(res.headers['x-secret-hop']).toBeUndefined();
    expect(res.headers['proxy-authenticate']).toBeUndefined();
  });

  it('decides every request on a kept-alive connection on its own', async () => {
    const s = await openSocket(proxy.port);
    s.write(`GET ${origin.url}/first HTTP/1.1\r\nHost: x\r\n\r\n`);
    const first = await readUntil(s, '"/first"');
    expect(first).toMatch(/^HTTP\/1\.1 200/);
    // Same connection, now to a port outside http_ports (1024-65535): denied.
    s.write(`GET http://${origin.host}:80/second HTTP/1.1\r\nHost: x\r\n\r\n`);
    const second = await readUntil(s, 'port_not_allowed');
    expect(second).toMatch(/HTTP\/1\.1 403/);
    s.write(`GET ${origin.url}/third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    expect(await readUntil(s, '"/third"')).toContain('200 OK');
    s.destroy();
  });

  it('answers Expect: 100-continue itself after the decision, and refuses before the body is sent', async () => {
    const ok = await run('curl', ['-sS', '-x', proxy.url, '-H', 'Expect: 100-continue', '--data-binary', '@-', `${origin.url}/expect`], {
      env: cleanEnv(), input: 'x'.repeat(2 << 20),
    });
    expect(JSON.parse(ok.stdout)).toMatchObject({ url: '/expect', bytes: 2 << 20 });
    expect(origin.seen.find((s) => s.url === '/expect')!.headers.expect).toBeUndefined();
    const s = await openSocket(proxy.port);
    s.write(`POST http://${origin.host}:80/denied HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n`);
    const got = await readUntil(s, 'port_not_allowed');
    expect(got).toMatch(/^HTTP\/1\.1 403/);
    expect(got).not.toContain('100 Continue');
    s.destroy();
  });

  it('forwards DELETE and OPTIONS bodies intact without desyncing the upstream connection', async () => {
    // http-proxy 1.18.1 mishandles these (its issue #1721); this proxy does not use it, and proves it here.
    for (const method of ['DELETE', 'OPTIONS']) {
      const res = await request(`${origin.url}/${method.toLowerCase()}-body`, { method, body: 'abcdefghij', dispatcher: agent });
      expect(await res.body.json()).toMatchObject({ method, bytes: 10 });
      const follow = await request(`${origin.url}/after-${method.toLowerCase()}`, { dispatcher: agent });
      expect(await follow.body.json()).toMatchObject({ method: 'GET', url: `/after-${method.toLowerCase()}`, bytes: 0 });
    }
    const seen = origin.seen.filter((s) => /-body$/.test(s.url));
    expect(seen.map((s) => [s.method, s.body?.toString()])).toEqual([['DELETE', 'abcdefghij'], ['OPTIONS', 'abcdefghij']]);
  });

  it('refuses origin-form requests on the proxy port (no forwarding to itself)', async () => {
    const res = await rawExchange(proxy.port, 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    expect(res).toMatch(/^HTTP\/1\.1 400/);
    expect(res).toMatch(/x-egress-reason: not_a_proxy_request/i);
  });

  it('answers with JSON or an HTML block page depending on Accept', async () => {
    const json = await run('curl', ['-sS', '-x', proxy.url, '-H', 'Accept: application/json', `http://${origin.host}:80/`], { env: cleanEnv() });
    expect(JSON.parse(json.stdout)).toEqual({ error: 'port_not_allowed', status: 403, message: expect.any(String), rule: 'network.http_ports' });
    const html = await run('curl', ['-sS', '-x', proxy.url, '-H', 'Accept: text/html', `http://${origin.host}:80/`], { env: cleanEnv() });
    expect(html.stdout).toContain('<code>port_not_allowed</code>');
  });
});
