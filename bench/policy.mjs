// Policy decision time at scale: 10,000 rules over 100,000 real app domains (UT1 category lists
// from ../shared/data/ut1, CC BY-SA 4.0), compiled by the proxy's own loader. Not part of the
// default `npm run bench` parts; run it with `node bench/policy.mjs` (after `npm run build`).
//   node bench/policy.mjs [--rules 10000] [--domains 100000] [--decisions 200000]
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT } from './lib/servers.mjs';

const { values: opt } = parseArgs({ options: {
  rules: { type: 'string', default: '10000' }, domains: { type: 'string', default: '100000' },
  decisions: { type: 'string', default: '200000' }, ut1: { type: 'string', default: join(ROOT, '..', 'shared', 'data', 'ut1') },
} });
const RULES = Number(opt.rules);
const DOMAINS = Number(opt.domains);
const DECISIONS = Math.min(2_000_000, Number(opt.decisions));
if (!existsSync(join(ROOT, 'dist/policy/load.js'))) throw new Error('dist/ missing: run `npm run build` first');
if (!existsSync(opt.ut1)) throw new Error(`UT1 lists not found at ${opt.ut1} (--ut1 DIR)`);
const { loadPolicyDir, loadPolicyDirOffThread } = await import(join(ROOT, 'dist/policy/load.js'));
const { monitorEventLoopDelay } = await import('node:perf_hooks');
const { decide } = await import(join(ROOT, 'dist/policy/decide.js'));

// Real domains: the largest categories that are present, until DOMAINS are collected.
const CATEGORIES = ['gambling', 'shopping', 'publicite', 'games', 'press', 'cryptojacking', 'vpn', 'redirector', 'bank', 'blog', 'dating', 'audio-video', 'webmail', 'chat', 'sports'];
const dir = mkdtempSync(join(tmpdir(), 'egress-policy-bench-'));
if (!process.env.KEEP) process.on('exit', () => rmSync(dir, { recursive: true, force: true })); else console.error(dir);
const domains = [];
const perCategory = new Map();
for (const c of CATEGORIES) {
  const file = join(opt.ut1, c, 'domains');
  if (!existsSync(file) || domains.length >= DOMAINS) continue;
  const list = readFileSync(file, 'utf8').split('\n').map((s) => s.trim()).filter(Boolean).slice(0, DOMAINS - domains.length);
  perCategory.set(c, list);
  domains.push(...list);
}
// Apps of 50 domains each as explicit hosts, plus one app per category list (categories: [...]).
const APP_SIZE = 50;
const apps = {};
let appCount = 0;
const hostDomains = domains.slice(0, Math.floor(domains.length / 2));
for (let i = 0; i < hostDomains.length; i += APP_SIZE) {
  apps[`app-${appCount++}`] = { hosts: hostDomains.slice(i, i + APP_SIZE).flatMap((d) => [d, `*.${d}`]) };
}
// The other half comes in through category lists, as admins would point at UT1 folders.
const rest = domains.slice(hostDomains.length);
const catNames = [];
for (let i = 0, n = 0; i < rest.length; i += 5000, n++) {
  const name = `bench-cat-${n}`;
  mkdirSync(join(dir, 'categories', name), { recursive: true });
  writeFileSync(join(dir, 'categories', name, 'domains'), rest.slice(i, i + 5000).join('\n') + '\n');
  apps[`cat-${n}`] = { categories: [name] };
  catNames.push(`cat-${n}`);
  appCount++;
}
const appNames = Object.keys(apps);
const GROUPS = 200;
const rules = [];
for (let i = 0; i < RULES; i++) {
  const r = { id: `r${i}`, action: i % 3 === 0 ? 'deny' : 'allow', when: {} };
  if (i % 100 === 99) r.when.groups = [`g${i % GROUPS}`]; // 1% of rules name no app: checked on every request
  else r.when.apps = [appNames[i % appNames.length]];
  if (i % 2 === 0) r.when.groups = [`g${i % GROUPS}`, `g${(i * 7) % GROUPS}`];
  if (i % 5 === 0) r.when.methods = ['GET', 'POST'];
  if (i % 11 === 0) r.when.sources = ['10.0.0.0/8'];
  if (i % 13 === 0) r.mode = 'report';
  rules.push(r);
}
writeFileSync(join(dir, 'bench.json.yaml'), JSON.stringify({ version: 'v1', default: 'deny', apps, rules }));

const t0 = performance.now();
const heap0 = process.memoryUsage().heapUsed;
const policy = loadPolicyDir(dir);
const compileMs = performance.now() - t0;
const heapMiB = (process.memoryUsage().heapUsed - heap0) / 1048576;

// A reload as the proxy does it: read and validate in a worker, compile here. The longest
// event-loop stall is what in-flight requests would feel.
const loop = monitorEventLoopDelay({ resolution: 5 });
loop.enable();
const r0 = performance.now();
await loadPolicyDirOffThread(dir);
const reloadMs = performance.now() - r0;
loop.disable();

// Queries: listed domains, subdomains of them, and unlisted names; users in a few groups.
let seed = 42;
const rnd = (n) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
const queries = Array.from({ length: 10_000 }, (_, i) => {
  const d = domains[rnd(domains.length)];
  const host = i % 4 === 0 ? `www.${d}` : i % 10 === 9 ? `unlisted-${i}.example` : d;
  return {
    kind: 'http', host, port: 443, scheme: 'https', method: i % 2 ? 'GET' : 'PUT', path: '/x', source: i % 3 ? '10.1.2.3' : '192.0.2.9',
    identity: { user: `user${i}`, groups: [`g${rnd(GROUPS)}`, `g${rnd(GROUPS)}`, `g${rnd(GROUPS)}`] },
  };
});
for (let i = 0; i < 20_000; i++) decide(policy, queries[i % queries.length]); // warm-up
const times = new Float64Array(DECISIONS);
let allow = 0;
for (let i = 0; i < DECISIONS; i++) {
  const q = queries[i % queries.length];
  const s = process.hrtime.bigint();
  const d = decide(policy, q);
  times[i] = Number(process.hrtime.bigint() - s) / 1000;
  if (d.action === 'allow') allow++;
}
times.sort();
const pct = (p) => times[Math.min(times.length - 1, Math.floor((p / 100) * times.length))];
const result = {
  machine: { cpu: cpus()[0]?.model, cores: cpus().length, node: process.version },
  rules: policy.rules.length, apps: policy.apps.length, host_entries: policy.hosts.size, real_domains: domains.length,
  compile_ms: Math.round(compileMs), heap_mib: Math.round(heapMiB),
  reload_ms: Math.round(reloadMs), reload_max_loop_stall_ms: Math.round(loop.max / 1e6),
  decisions: DECISIONS, allowed: allow,
  p50_us: Number(pct(50).toFixed(2)), p90_us: Number(pct(90).toFixed(2)), p99_us: Number(pct(99).toFixed(2)),
};
console.log(JSON.stringify(result, null, 2));
console.log(`${result.p50_us <= 10 ? 'PASS' : 'MISS'}  median decision ${result.p50_us} us (target <= 10 us) with ${result.rules} rules, ${result.host_entries} host entries`);
mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(join(ROOT, 'bench/results/policy.json'), JSON.stringify(result, null, 2) + '\n');
