// Cost of the access log and metrics on the request path (see docs/benchmarks.md "Logging and metrics").
//
// Small requests (wrk, 50 connections) through egress-proxy processes built the same way:
//   quiet:  no access log (log.level: warn) and no metrics (metrics.enabled: false);
//   file:   every access line written to a rotating file on disk, metrics on and scraped every second;
//   stdout: the same, but the lines go to stdout (the default destination), a pipe that another
//           process reads, as a container runtime or journald would;
// each full proxy paired with a quiet one started with it, plus direct to the origin and through
// Squid for scale, in interleaved rounds so a noisy neighbour hits all alike, in alternating
// order. Then each pair is loaded at the same time on the one core it shares. Target, for each
// destination: the full proxy serves at least 95% as many requests as its quiet partner when they
// share a core (the steadier measure; one at a time is shown too).
// With --control, a third pair of two quiet processes measures the measure itself: what it
// reports when there is no difference at all (its own bias and spread, in the same run).
//   npm run build && node bench/observability.mjs [--seconds 10] [--rounds 4] [--log-dir DIR (default: the temp dir)] [--no-pin] [--control]
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { median } from './lib/curl.mjs';
import { cpuMs, run, sleep, start } from './lib/proc.mjs';
import { fmt, medianInterval, ratio, targetLines } from './lib/report.mjs';
import { makeCert, ORIGIN_HOST, squidVersion, startOrigin, startProxy, startSquid, stop } from './lib/servers.mjs';
import { wrk } from './lib/wrk.mjs';

const { values: opt } = parseArgs({ options: { seconds: { type: 'string', default: '10' }, rounds: { type: 'string', default: '4' }, 'log-dir': { type: 'string' }, pin: { type: 'boolean', default: true }, control: { type: 'boolean', default: false } }, allowNegative: true });
const SECONDS = Math.min(60, Number(opt.seconds));
// Each process settles into its own speed (identical ones differ by up to 15%), so more rounds of
// fresh processes, rather than longer ones, are what narrow the result.
const ROUNDS = Math.min(24, Math.max(2, Number(opt.rounds)));
const log = (msg) => console.error(`bench: ${msg}`);

const dir = mkdtempSync(join(tmpdir(), 'egress-bench-obs-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const running = [];

/** Pins a process (all its threads) to CPU `cpu`; false when taskset is missing or fails. */
async function pin(pid, cpu) {
  return (await run('taskset', ['-apc', String(cpu), String(pid)])).code === 0;
}

async function main() {
  if ((await run('bash', ['-c', 'command -v wrk'])).code !== 0) throw new Error('wrk is needed: apt-get install wrk');
  // The proxy under test gets a core of its own; this process, and so wrk and the origin it starts,
  // the other. Unpinned, two identical proxies differed by up to 15% here; pinned, by 3%.
  const pinned = opt.pin && cpus().length >= 2 && (await pin(process.pid, 0));
  if (!pinned) log('not pinning processes to cores (--no-pin, one core, or no taskset): expect more noise');
  const cert = await makeCert(dir);
  const origin = await startOrigin(dir, cert);
  running.push(origin.child);
  const sq = (await squidVersion()) ? await startSquid(dir) : undefined;
  if (sq) running.push(sq.child);
  if (sq && pinned) await pin(sq.child.pid, 1);
  else log('squid not installed: apt-get install squid-openssl (skipping its column)');
  const url = `http://${ORIGIN_HOST}:${origin.http}/small`;
  const quiet = () => ({ log: '{level: warn}', configLines: ['metrics: {enabled: false}'] });
  const CONFIGS = {
    'quiet-file': quiet,
    'quiet-stdout': quiet,
    'quiet-control': quiet,
    control: quiet,
    file: (logDir) => ({ log: `{level: info, stdout: false, file: {path: ${join(logDir, 'access.log')}, rotate_bytes: 67108864, keep: 2}}`, configLines: ['metrics: {enabled: true}'] }),
    stdout: (logDir) => ({ log: '{level: info}', configLines: ['metrics: {enabled: true}'], stdout: join(logDir, 'stdout.fifo') }),
  };
  let fresh = 0;
  /** A new process per round: which of two identical processes started first was worth up to 15% here. */
  const startOne = async (key) => {
    const d = join(dir, `${key}-${++fresh}`);
    mkdirSync(d);
    const logDir = key === 'file' && opt['log-dir'] ? mkdtempSync(join(opt['log-dir'], 'egress-obs-')) : d;
    let reader;
    if (key === 'stdout') {
      // The reader counts lines as it goes (wc, on the bench's core, where a log shipper would run).
      if ((await run('mkfifo', [join(d, 'stdout.fifo')])).code !== 0) throw new Error('mkfifo failed');
      reader = start('bash', ['-c', `exec wc -l < '${join(d, 'stdout.fifo')}'`], { stdout: 'pipe' });
      let said = '';
      reader.stdout.setEncoding('utf8').on('data', (t) => { said += t; });
      reader.count = new Promise((resolve) => reader.stdout.once('end', () => resolve(Number(said.trim()) || 0)));
    }
    const p = await startProxy(d, CONFIGS[key](logDir));
    running.push(p.child);
    if (pinned) await pin(p.child.pid, 1);
    return { key, port: p.port, pid: p.child.pid, admin: p.admin, child: p.child, logDir, reader };
  };

  const runs = {};
  const shared = {};
  let scrapes = 0;
  const lines = { file: 0, stdout: 0 };
  const FULL = ['file', 'stdout'];
  const PAIRS = opt.control ? [...FULL, 'control'] : FULL;
  /** One measurement, one process at a time, with the whole core. */
  const alone = async (key, port, pid, round) => {
    await sleep(1000);
    log(`${key}: round ${round}/${ROUNDS} (${SECONDS} s)`);
    const cpu0 = pid && cpuMs(pid);
    const { raw, ...r } = await wrk({ originUrl: url, proxyPort: port, seconds: SECONDS, dir });
    if (pid) r.cpu_us_per_req = ((cpuMs(pid) - cpu0) * 1000) / r.requests;
    if (r.non2xx || r.socket_errors) log(`  ${key}: ${r.non2xx} non-2xx, ${r.socket_errors} socket errors\n${raw}`);
    (runs[key] ??= []).push(r);
  };
  for (let round = 1; round <= ROUNDS; round++) {
    const scale = [['direct', undefined, undefined], ['squid', sq?.port, sq?.child.pid]].filter(([k, port]) => k === 'direct' || port);
    for (const [key, port] of scale) {
      log(`${key}: round ${round}/${ROUNDS} warm-up (2 s)`);
      await wrk({ originUrl: url, proxyPort: port, seconds: 2, dir });
    }
    for (const [key, port, pid] of round % 2 === 1 ? scale : [...scale].reverse()) await alone(key, port, pid, round);
    // Each full proxy gets a quiet partner of its own, started with it and loaded as it is: a
    // quiet process shared by both pairs served 5% more in whichever pair came second.
    for (const k of round % 2 === 1 ? PAIRS : [...PAIRS].reverse()) {
      const q = `quiet-${k}`;
      // Start order and run order alternate (ABBA), so neither proxy always goes first.
      const pair = round % 2 === 1 ? [await startOne(q), await startOne(k)] : [await startOne(k), await startOne(q)];
      const full = pair.find((p) => p.key === k);
      const quiet = pair.find((p) => p.key === q);
      // Prometheus would scrape too: once a second, bounded by the round's length.
      let scraping = k !== 'control';
      const scraper = (async () => {
        while (scraping && scrapes < 10_000) {
          const r = await fetch(`http://127.0.0.1:${full.admin}/metrics`).catch(() => undefined);
          if (r) { await r.text(); scrapes++; }
          await sleep(1000);
        }
      })();
      for (const p of pair) {
        log(`${p.key}: round ${round}/${ROUNDS} warm-up (2 s)`);
        await wrk({ originUrl: url, proxyPort: p.port, seconds: 2, dir });
      }
      for (const p of pair) await alone(p.key, p.port, p.pid, round);
      // Both at once, sharing their core: the scheduler gives each half of it, so the share of
      // requests each serves is its cost per request, under the very same machine state. One
      // after the other, a round's two proxies differed by up to 15% for reasons of the moment.
      await sleep(1000);
      log(`${q} + ${k} sharing a core: round ${round}/${ROUNDS} (${SECONDS} s)`);
      const cpu0 = [quiet, full].map((p) => cpuMs(p.pid));
      const rs = await Promise.all([quiet, full].map((p) => wrk({ originUrl: url, proxyPort: p.port, seconds: SECONDS, dir })));
      const [rq, rf] = [quiet, full].map((p, i) => {
        const { raw, ...r } = rs[i];
        r.cpu_us_per_req = ((cpuMs(p.pid) - cpu0[i]) * 1000) / r.requests;
        if (r.non2xx || r.socket_errors) log(`  ${p.key} (shared): ${r.non2xx} non-2xx, ${r.socket_errors} socket errors\n${raw}`);
        return r;
      });
      (shared[k] ??= []).push({ served: ratio(rf.requests, rq.requests), cpu: ratio(rf.cpu_us_per_req, rq.cpu_us_per_req), errors: rq.non2xx + rq.socket_errors + rf.non2xx + rf.socket_errors });
      scraping = false;
      await scraper;
      for (const p of pair) {
        await stop(p.child);
        running.splice(running.indexOf(p.child), 1);
      }
      // The full proxy really wrote its lines: count them (the file and its rotations; all lines
      // the reader of stdout saw, the proxy's few own messages among them).
      if (k === 'file') {
        for (const f of readdirSync(full.logDir).filter((n) => n.startsWith('access.log'))) {
          lines.file += readFileSync(join(full.logDir, f), 'utf8').split('\n').filter((l) => l.includes('"type":"access"')).length;
        }
        if (opt['log-dir']) rmSync(full.logDir, { recursive: true, force: true });
      } else if (k === 'stdout') {
        lines.stdout += await full.reader.count;
      }
    }
  }
  for (const c of running.reverse()) await stop(c);

  const m = Object.fromEntries(Object.entries(runs).map(([k, rs]) => [k, {
    rps: median(rs.map((r) => r.rps)), p99_ms: median(rs.map((r) => r.p99_ms)), cpu_us_per_req: rs[0].cpu_us_per_req === undefined ? undefined : median(rs.map((r) => r.cpu_us_per_req)),
    errors: rs.reduce((a, r) => a + r.non2xx + r.socket_errors, 0), rounds: rs.map((r) => Math.round(r.rps)),
  }]));
  // Each round's own pair: how far the rounds agree (a round's processes share the machine's state of the moment).
  const paired = (k, key) => runs[k].map((r, i) => ratio(r[key], runs[`quiet-${k}`][i][key]));
  console.log(`\negress-proxy logging + metrics cost  ${new Date().toISOString()}  (${ROUNDS} rounds x ${SECONDS} s, median)`);
  console.log('one at a time (the whole core each):');
  console.log(['', 'req/s', 'p99 ms', 'proxy CPU us/req', 'rounds req/s'].join('\t'));
  for (const [k, v] of Object.entries(m)) console.log([k, fmt(v.rps), fmt(v.p99_ms, 2), fmt(v.cpu_us_per_req, 1), v.rounds.join(' ')].join('\t'));
  for (const k of PAIRS) {
    console.log(`per round, ${k}/quiet: req/s ${paired(k, 'rps').map((x) => fmt(x, 3)).join(' ')}; CPU per request ${paired(k, 'cpu_us_per_req').map((x) => fmt(x, 3)).join(' ')}`);
  }
  console.log(`file/direct req/s ${fmt(ratio(m.file.rps, m.direct.rps), 2)}${m.squid ? `; file/squid ${fmt(ratio(m.file.rps, m.squid.rps), 2)}` : ''}`);
  console.log('\nsharing a core (quiet and one full proxy loaded at once), per round, full/quiet:');
  for (const k of PAIRS) {
    console.log(`${k}: requests ${shared[k].map((x) => fmt(x.served, 3)).join(' ')}; CPU per request ${shared[k].map((x) => fmt(x.cpu, 3)).join(' ')}`);
  }
  const errors = Object.values(shared).flat().reduce((a, r) => a + r.errors, 0) + Object.values(m).reduce((a, v) => a + v.errors, 0);
  console.log(`lines written: file ${lines.file.toLocaleString('en-US')} access lines, stdout ${lines.stdout.toLocaleString('en-US')} lines; /metrics scrapes: ${scrapes}; errors: ${errors}`);
  const where = { file: 'a file on disk', stdout: 'stdout, a pipe (the default)' };
  const targets = FULL.flatMap((k) => {
    const seqCost = 1 - median(paired(k, 'rps'));
    // Unpinned, the proxies do not share one core, and their shares say nothing of their costs.
    const cost = pinned ? 1 - median(shared[k].map((x) => x.served)) : seqCost;
    // The rounds' spread, as an interval for the cost: a verdict inside it is not settled by this run.
    const [lo, hi] = medianInterval(pinned ? shared[k].map((x) => 1 - x.served) : paired(k, 'rps').map((x) => 1 - x));
    const cpuCost = median(shared[k].map((x) => x.cpu)) - 1;
    return [
      { name: `log (${where[k]}) + metrics cost on requests served, ${pinned ? 'sharing a core' : 'one at a time (not pinned)'} <= 5%`, value: `${fmt(cost * 100, 1)}% (95% interval ${fmt(lo * 100, 1)}–${fmt(hi * 100, 1)}%)`, status: cost <= 0.05 && errors === 0 ? 'PASS' : 'MISS' },
      ...(pinned ? [{ name: '  (for reference) the same, one at a time', value: `${fmt(seqCost * 100, 1)}%`, status: 'info' }] : []),
      { name: `  (for reference) CPU per request, ${k} vs quiet, ${pinned ? 'sharing a core' : 'loaded at once'}`, value: `${cpuCost >= 0 ? '+' : ''}${fmt(cpuCost * 100, 1)}%`, status: 'info' },
    ];
  });
  if (opt.control) {
    // Two quiet processes: a perfect measure would say 0%. What it says is its own floor.
    const c = shared.control.map((x) => 1 - x.served);
    const [lo, hi] = medianInterval(c);
    targets.push({ name: 'the measure itself: quiet vs quiet, sharing a core (no difference to find)', value: `${fmt(median(c) * 100, 1)}% (95% interval ${fmt(lo * 100, 1)}–${fmt(hi * 100, 1)}%)`, status: 'info' });
  }
  console.log(`\ntargets:\n${targetLines(targets)}`);
}

try {
  await main();
} catch (err) {
  console.error(`bench: failed: ${err.stack ?? err}`);
  for (const c of running.reverse()) await stop(c).catch(() => undefined);
  process.exitCode = 1;
}
