import { ProxyAgent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCli, writeSetup } from './helpers/cli.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { parsePrometheus, sumOf } from './helpers/prometheus.js';
import { cleanEnv, run } from './helpers/run.js';

let origin: Origin;
beforeAll(async () => {
  origin = await startOrigin({
    handler: (req, res) => {
      if (req.url === '/slow') return void setTimeout(() => res.end('slow done'), 700);
      res.end('ok');
    },
  });
});
afterAll(() => origin.close());

const accessLines = (out: string): Array<Record<string, unknown>> =>
  out.split('\n').filter((l) => l.includes('"type":"access"')).map((l) => JSON.parse(l) as Record<string, unknown>);

describe('several workers sharing the listeners (--workers 2)', () => {
  it('serves from both workers, replaces a dead one, and drains all on SIGTERM', async () => {
    const p = await startCli(['--config', writeSetup(), '--workers', '2']);
    try {
      // startCli returns at the first worker's ready line; the second may still be starting.
      for (let i = 0; i < 200 && p.stdout().split('"egress-proxy ready"').length - 1 < 2; i++) await new Promise((r) => setTimeout(r, 50));
      // Fresh connections are spread over the workers.
      for (let i = 0; i < 12; i++) {
        const r = await run('curl', ['-sS', '-x', p.url, `${origin.url}/n${i}`], { env: cleanEnv() });
        expect(r.stdout).toBe('ok');
      }
      await new Promise((r) => setTimeout(r, 200));
      const workers = new Set(accessLines(p.stdout()).map((l) => l.worker));
      expect(workers).toEqual(new Set([1, 2]));
      // Every line is whole JSON even with two processes writing to one stdout.
      for (const line of p.stdout().split('\n').filter(Boolean)) expect(() => JSON.parse(line)).not.toThrow();

      // Kill one worker outright: the supervisor starts a replacement and service continues.
      const ready = (): number => p.stdout().split('\n').filter((l) => l.includes('"egress-proxy ready"')).length;
      const before = ready();
      const victim = Number(/"pid":(\d+)/.exec(await (await request(`http://127.0.0.1:${p.adminPort}/healthz`)).body.text())?.[1]);
      expect(victim).toBeGreaterThan(0);
      process.kill(victim, 'SIGKILL');
      const deadline = Date.now() + 10_000;
      while (ready() === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(ready()).toBe(before + 1);
      expect((await run('curl', ['-sS', '-x', p.url, `${origin.url}/after-crash`], { env: cleanEnv() })).stdout).toBe('ok');

      // SIGTERM to the supervisor: the in-flight request still completes, then everything exits 0.
      const agent = new ProxyAgent({ uri: p.url, proxyTunnel: false });
      const inflight = request(`${origin.url}/slow`, { dispatcher: agent });
      await new Promise((r) => setTimeout(r, 200));
      p.child.kill('SIGTERM');
      const res = await inflight;
      expect(await res.body.text()).toBe('slow done');
      expect(await p.exited).toBe(0);
      await agent.close();
      expect(p.stdout()).toContain('"msg":"all workers stopped"');
      expect(accessLines(p.stdout()).filter((l) => String(l.url).endsWith('/slow'))).toHaveLength(1);
    } finally {
      p.child.kill('SIGKILL');
    }
  }, 60_000);

  it('one scrape of /metrics counts the requests of every worker', async () => {
    const p = await startCli(['--config', writeSetup(), '--workers', '2']);
    try {
      for (let i = 0; i < 200 && p.stdout().split('"egress-proxy ready"').length - 1 < 2; i++) await new Promise((r) => setTimeout(r, 50));
      const n = 10;
      for (let i = 0; i < n; i++) expect((await run('curl', ['-sS', '-x', p.url, `${origin.url}/m${i}`], { env: cleanEnv() })).stdout).toBe('ok');
      await new Promise((r) => setTimeout(r, 200));
      const lines = accessLines(p.stdout());
      expect(new Set(lines.map((l) => l.worker))).toEqual(new Set([1, 2]));
      // Whichever worker answers the scrape, it reports the node's total.
      for (let i = 0; i < 4; i++) {
        const text = await (await request(`http://127.0.0.1:${p.adminPort}/metrics`)).body.text();
        const families = await parsePrometheus(text);
        expect(sumOf(families, 'egress_proxy_requests_total', { decision: 'allow', kind: 'http' })).toBe(n);
        expect(sumOf(families, 'egress_proxy_request_duration_seconds_count', { kind: 'http' })).toBe(n);
      }
    } finally {
      p.child.kill('SIGKILL');
    }
  }, 60_000);

  it('rejects a bad --workers value', async () => {
    const r = await run(process.execPath, [(await import('./helpers/cli.js')).CLI, 'start', '--config', writeSetup(), '--workers', 'lots']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--workers:0:0 expected a number from 1 to 256, or "auto"/);
  });
});
