import { ProxyAgent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCli, writeSetup } from './helpers/cli.js';
import { startOrigin, type Origin } from './helpers/origin.js';

// SIGTERM under load: every request a client saw complete has its access-log line, exactly once.

let origin: Origin;
beforeAll(async () => {
  origin = await startOrigin({ handler: (_req, res) => res.end('ok') });
});
afterAll(() => origin.close());

describe('SIGTERM under load', () => {
  it('loses no access-log line of a completed request', async () => {
    const p = await startCli(['--config', writeSetup({ limits: { drain_timeout_ms: 3000 } })]);
    const completed: string[] = [];
    let stop = false;
    const clients = 16;
    const perClient = 4000; // bounded even if the proxy never stopped
    const deadline = Date.now() + 20_000;
    const agents: ProxyAgent[] = [];
    const client = async (c: number): Promise<void> => {
      const agent = new ProxyAgent({ uri: p.url, proxyTunnel: false, connections: 1 });
      agents.push(agent);
      for (let i = 0; i < perClient && !stop && Date.now() < deadline; i++) {
        const path = `/r/${c}/${i}`;
        try {
          const res = await request(`${origin.url}${path}`, { dispatcher: agent });
          const body = await res.body.text();
          if (res.statusCode === 200 && body === 'ok') completed.push(path);
        } catch {
          // Refused or cut during the drain: not completed, so no line is owed.
          if (stop) return;
        }
      }
    };
    const load = Promise.all(Array.from({ length: clients }, (_, c) => client(c)));
    // Let the load build up, then stop the proxy in the middle of it.
    const until = Date.now() + 10_000;
    while (completed.length < 1500 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    p.child.kill('SIGTERM');
    const code = await p.exited;
    stop = true;
    await load;
    await Promise.all(agents.map((a) => a.close().catch(() => undefined)));
    expect(code).toBe(0);
    expect(completed.length).toBeGreaterThan(1000);

    const lines = p.stdout().split('\n').filter((l) => l.includes('"type":"access"'));
    const counts = new Map<string, number>();
    for (const l of lines) {
      const url = String((JSON.parse(l) as { url?: string }).url);
      const path = url.slice(url.indexOf('/r/'));
      counts.set(path, (counts.get(path) ?? 0) + 1);
    }
    const missing = completed.filter((path) => counts.get(path) !== 1);
    expect(missing, `${missing.length} of ${completed.length} completed requests without exactly one line`).toEqual([]);
    expect(p.stdout()).toContain('"msg":"stopped"');
  }, 60_000);
});
