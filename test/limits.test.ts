import { createServer } from 'node:net';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBlackhole } from './helpers/blackhole.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { startTestProxy, type TestProxy } from './helpers/proxy.js';
import { openSocket, rawExchange, readUntil } from './helpers/raw.js';
import { cleanEnv, run } from './helpers/run.js';

let proxy: TestProxy;
let origin: Origin;

beforeAll(async () => {
  origin = await startOrigin({
    handler: (req, res) => {
      if (req.url === '/hang') return; // never answers
      if (req.url === '/reset') return void req.socket.destroy();
      res.end('ok');
    },
  });
  proxy = await startTestProxy({
    limits: {
      max_header_bytes: 8192,
      headers_timeout_ms: 600,
      upstream_connect_timeout_ms: 500,
      upstream_headers_timeout_ms: 500,
      max_connections: 30,
    },
  });
});

afterAll(async () => {
  await origin.close();
  await proxy.close();
});

describe('limits', () => {
  it('answers 431 header_too_large for an oversized head', async () => {
    const res = await rawExchange(proxy.port, `GET ${origin.url}/ HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(10_000)}\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 431/);
    expect(res).toMatch(/x-egress-reason: header_too_large/i);
    await proxy.waitForAccess((l) => l.kind === 'client_error' && l.reason === 'header_too_large');
  });

  it('cuts off a slowloris client with 408 request_timeout', async () => {
    const s = await openSocket(proxy.port);
    s.write(`GET ${origin.url}/ HTTP/1.1\r\nHost: x\r\n`);
    const drip = setInterval(() => s.writable && s.write('X-Slow: 1\r\n'), 100);
    const started = Date.now();
    const res = await readUntil(s, 'request_timeout', 5000);
    clearInterval(drip);
    expect(res).toMatch(/^HTTP\/1\.1 408/);
    expect(Date.now() - started).toBeLessThan(4000);
    s.destroy();
  });

  it('refuses connections over max_connections with 503 too_many_connections', async () => {
    const held = await Promise.all(Array.from({ length: 30 }, () => openSocket(proxy.port)));
    try {
      const res = await rawExchange(proxy.port, `GET ${origin.url}/ HTTP/1.1\r\nHost: x\r\n\r\n`);
      expect(res).toMatch(/^HTTP\/1\.1 503/);
      expect(res).toMatch(/x-egress-reason: too_many_connections/i);
    } finally {
      for (const s of held) s.destroy();
    }
    await new Promise((r) => setTimeout(r, 100));
    const again = await run('curl', ['-sS', '-x', proxy.url, `${origin.url}/after`], { env: cleanEnv() });
    expect(again.stdout).toBe('ok');
  });

  it('answers 504 upstream_connect_timeout when the destination never accepts (HTTP and CONNECT)', async () => {
    const hole = await startBlackhole();
    try {
      const started = Date.now();
      const r = await run('curl', ['-sS', '-i', '-x', proxy.url, `http://${hole.host}:${hole.port}/`], { env: cleanEnv() });
      expect(r.stdout).toMatch(/^HTTP\/1\.1 504/);
      expect(r.stdout).toMatch(/x-egress-reason: upstream_connect_timeout/i);
      expect(Date.now() - started).toBeLessThan(5000);
      const c = await rawExchange(proxy.port, `CONNECT ${hole.host}:${hole.port} HTTP/1.1\r\nHost: x\r\n\r\n`);
      expect(c).toMatch(/^HTTP\/1\.1 504/);
      expect(c).toMatch(/x-egress-reason: upstream_connect_timeout/i);
    } finally {
      hole.close();
    }
  });

  it('answers 504 upstream_timeout when the destination accepts but never answers', async () => {
    const r = await run('curl', ['-sS', '-i', '-x', proxy.url, `${origin.url}/hang`], { env: cleanEnv() });
    expect(r.stdout).toMatch(/^HTTP\/1\.1 504/);
    expect(r.stdout).toMatch(/x-egress-reason: upstream_timeout/i);
  });

  it('answers 502 upstream_refused for a closed port and 502 upstream_reset for a reset', async () => {
    const probe = createServer();
    probe.listen(0, '127.0.0.9');
    await once(probe, 'listening');
    const closedPort = (probe.address() as { port: number }).port;
    probe.close();
    const refused = await run('curl', ['-sS', '-i', '-x', proxy.url, `http://127.0.0.9:${closedPort}/`], { env: cleanEnv() });
    expect(refused.stdout).toMatch(/^HTTP\/1\.1 502/);
    expect(refused.stdout).toMatch(/x-egress-reason: upstream_refused/i);
    const tunnel = await rawExchange(proxy.port, `CONNECT 127.0.0.9:${closedPort} HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(tunnel).toMatch(/x-egress-reason: upstream_refused/i);
    const reset = await run('curl', ['-sS', '-i', '-x', proxy.url, `${origin.url}/reset`], { env: cleanEnv() });
    expect(reset.stdout).toMatch(/^HTTP\/1\.1 502/);
    expect(reset.stdout).toMatch(/x-egress-reason: upstream_reset/i);
  });
});

describe('request smuggling shapes are rejected with 400 and never forwarded', () => {
  const shapes: Array<[string, string]> = [
    ['Content-Length with Transfer-Encoding', 'Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['two different Content-Lengths', 'Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde'],
    ['Transfer-Encoding not ending in chunked', 'Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n'],
    ['obfuscated Transfer-Encoding', 'Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n'],
    ['space before the colon', 'Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n'],
    ['obs-fold continuation line', 'X-A: 1\r\n Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc'],
    ['bad chunk size', 'Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n'],
    ['negative Content-Length', 'Content-Length: -1\r\n\r\n'],
  ];
  it.each(shapes)('%s', async (_name, tail) => {
    const before = origin.seen.length;
    const res = await rawExchange(proxy.port, `POST ${origin.url}/smuggle HTTP/1.1\r\nHost: x\r\n${tail}`);
    expect(res).toMatch(/^HTTP\/1\.1 400/);
    expect(res).toMatch(/x-egress-reason: (smuggling_rejected|bad_request)/i);
    await new Promise((r) => setTimeout(r, 50));
    expect(origin.seen.length).toBe(before);
  });

  it('labels CL+TE as smuggling_rejected in the log', async () => {
    await rawExchange(proxy.port, `POST ${origin.url}/smuggle2 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`);
    await proxy.waitForAccess((l) => l.kind === 'client_error' && l.reason === 'smuggling_rejected');
  });
});
