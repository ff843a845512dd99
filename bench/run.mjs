// egress-proxy benchmark: direct vs Squid vs egress-proxy, all on loopback. See docs/benchmarks.md.
//   node bench/run.mjs [--only small|connect|plain|memory] [--profile] [--seconds 10] [--rounds 3] [--tunnels 10000] [--workers 1|N|auto]
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { summarize } from './lib/cpuprofile.mjs';
import { download, DOWNLOADS, median, summarizeDownloads } from './lib/curl.mjs';
import { cpuMs, rssKB, run, sleep } from './lib/proc.mjs';
import { markdown, table, targetLines, targets } from './lib/report.mjs';
import { makeCert, ORIGIN_HOST, ROOT, squidVersion, startOrigin, startProxy, startSquid, stop } from './lib/servers.mjs';
import { holdTunnels, tunnelCount } from './lib/tunnels.mjs';
import { wrk } from './lib/wrk.mjs';

const PARTS = ['memory', 'small', 'connect', 'plain'];
const { values: opt } = parseArgs({
  options: {
    only: { type: 'string' }, profile: { type: 'boolean', default: false },
    seconds: { type: 'string', default: '10' }, workers: { type: 'string', default: '1' }, rounds: { type: 'string', default: '3' }, tunnels: { type: 'string', default: '10000' },
  },
});
if (opt.only && !PARTS.includes(opt.only)) {
  console.error(`--only must be one of ${PARTS.join('|')}`);
  process.exit(2);
}
// --profile defaults to the request-rate test; profiling slows the proxy, so its numbers go to profiled.json only.
const parts = opt.only ? [opt.only] : opt.profile ? ['small'] : PARTS;
const seconds = Math.min(60, Number(opt.seconds));
const rounds = Math.min(5, Number(opt.rounds));
const log = (msg) => console.error(`bench: ${msg}`);

async function have(cmd) {
  return (await run('bash', ['-c', `command -v ${cmd}`])).code === 0;
}

const results = { date: new Date().toISOString(), parts, profiled: opt.profile, workers: opt.workers };
const dir = mkdtempSync(join(tmpdir(), 'egress-bench-'));
// Also on Ctrl-C (proc.mjs exits from its signal handler): the origin's private key lives here.
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const running = [];

async function main() {
  const hasWrk = await have('wrk');
  const sqVer = await squidVersion();
  if (!hasWrk || !sqVer) log(`missing ${[!hasWrk && 'wrk', !sqVer && 'squid'].filter(Boolean).join(' and ')}: apt-get install squid-openssl wrk (skipping those columns)`);
  results.machine = {
    nproc: Number((await run('nproc', [])).stdout.trim()), cpu: cpus()[0]?.model, kernel: release(),
    commit: (await run('git', ['-C', ROOT, 'describe', '--always', '--dirty'])).stdout.trim() || null,
    node: process.version, squid: sqVer ?? null, wrk: hasWrk ? /wrk (\S+)/.exec((await run('wrk', ['-v'])).stdout)?.[1] ?? 'wrk' : null,
  };

  const cert = await makeCert(dir);
  const origin = await startOrigin(dir, cert);
  running.push(origin.child);
  const profDir = opt.profile ? join(ROOT, 'bench/results/profile') : undefined;
  if (profDir) {
    rmSync(profDir, { recursive: true, force: true });
    mkdirSync(profDir, { recursive: true });
  }
  const proxy = await startProxy(dir, { cpuProfDir: profDir, workers: opt.workers });
  running.push(proxy.child);
  const squid = sqVer ? await startSquid(dir) : undefined;
  if (squid) running.push(squid.child);
  const proxies = { squid, proxy };
  log(`origin ${ORIGIN_HOST} http:${origin.http} https:${origin.https} hold:${origin.hold}; egress-proxy :${proxy.port}${squid ? `; squid :${squid.port}` : ''}; temp ${dir}`);

  await sleep(1000);
  results.rss = { proxy: { start_kb: rssKB(proxy.child.pid) }, squid: squid ? { start_kb: rssKB(squid.child.pid) } : undefined };

  // Memory first, so the baseline is a fresh process; "after all load" is read at the end.
  if (parts.includes('memory')) {
    const count = await tunnelCount(Number(opt.tunnels));
    if (count < Number(opt.tunnels)) log(`open-file hard limit allows only ${count} tunnels per proxy (ulimit -Hn); using ${count}`);
    results.memory = {};
    for (const [key, p] of Object.entries(proxies)) {
      if (!p) continue;
      log(`memory: ${count} idle CONNECT tunnels through ${p.name}`);
      results.memory[key] = await holdTunnels(p, origin, count, dir);
      if (results.memory[key].failed > 0) log(`  ${results.memory[key].failed} tunnels failed: ${results.memory[key].first_error}`);
    }
  }

  const targetsOf = (suffix, scheme, port) => {
    const url = `${scheme}://${ORIGIN_HOST}:${port}${suffix}`;
    return [['direct', url, undefined], ['squid', url, squid?.port], ['proxy', url, proxy.port]]
      .filter(([k]) => k !== 'squid' || squid);
  };

  // RSS after each phase: shows whether memory comes back, not just where it ends.
  const phaseRss = async (phase) => {
    await sleep(2000);
    results.rss.proxy[`after_${phase}_kb`] = rssKB(proxy.child.pid);
    if (squid) results.rss.squid[`after_${phase}_kb`] = rssKB(squid.child.pid);
  };
  if (parts.includes('memory')) await phaseRss('memory');

  if (parts.includes('small')) {
    if (!hasWrk) log('small: skipped (wrk not installed: apt-get install wrk)');
    else {
      const list = targetsOf('/small', 'http', origin.http).filter(([k]) => !opt.profile || k === 'proxy');
      for (const [key, url, proxyPort] of list) {
        log(`small: ${key} warm-up (3 s)`);
        await wrk({ originUrl: url, proxyPort, seconds: 3, dir });
      }
      // Rounds interleave the targets so a noisy neighbour on a shared VM hits all of them alike.
      const runs = {};
      for (let round = 1; round <= rounds; round++) {
        for (const [key, url, proxyPort] of list) {
          log(`small: ${key} round ${round}/${rounds} (${seconds} s)`);
          const pid = proxies[key]?.child.pid;
          const cpu0 = [cpuMs(origin.child.pid), pid && cpuMs(pid)];
          const { raw, ...r } = await wrk({ originUrl: url, proxyPort, seconds, dir });
          // Share of one core used while measured: ~100% means that single-threaded process was the bottleneck.
          r.origin_cpu_pct = Math.round((cpuMs(origin.child.pid) - cpu0[0]) / (seconds * 10));
          if (pid) r.proxy_cpu_pct = Math.round((cpuMs(pid) - cpu0[1]) / (seconds * 10));
          if (pid) r.proxy_cpu_us_per_req = Math.round(((cpuMs(pid) - cpu0[1]) * 1000) / r.requests);
          if (r.non2xx || r.socket_errors) log(`  ${key}: ${r.non2xx} non-2xx, ${r.socket_errors} socket errors\n${raw}`);
          (runs[key] ??= []).push(r);
        }
      }
      results.small = Object.fromEntries(Object.entries(runs).map(([key, rs]) => [key, {
        ...Object.fromEntries(['rps', 'p50_ms', 'p99_ms', 'origin_cpu_pct', 'proxy_cpu_pct', 'proxy_cpu_us_per_req']
          .filter((f) => rs[0][f] !== undefined).map((f) => [f, median(rs.map((r) => r[f]))])),
        errors: rs.reduce((a, r) => a + r.non2xx + r.socket_errors, 0),
        rounds: rs.map(({ rps, p99_ms }) => ({ rps: Math.round(rps), p99_ms })),
      }]));
      await phaseRss('small');
    }
  }

  for (const [part, scheme, port] of [['connect', 'https', origin.https], ['plain', 'http', origin.http]]) {
    if (!parts.includes(part)) continue;
    const list = targetsOf('/64m', scheme, port);
    for (const [key, url, proxyPort] of list) {
      log(`${part}: ${key} 64 MiB warm-up`);
      await download({ url, proxyPort, cacert: cert.cert });
    }
    const runs = {};
    const cpu = {};
    log(`${part}: ${DOWNLOADS} interleaved rounds of 64 MiB`);
    for (let i = 0; i < DOWNLOADS; i++) {
      for (const [key, url, proxyPort] of list) {
        const pid = proxies[key]?.child.pid;
        const cpu0 = pid && cpuMs(pid);
        (runs[key] ??= []).push(await download({ url, proxyPort, cacert: cert.cert }));
        if (pid) cpu[key] = (cpu[key] ?? 0) + cpuMs(pid) - cpu0;
      }
    }
    // Proxy CPU per 64 MiB: the cost of relaying, independent of wall-clock noise.
    results[part] = Object.fromEntries(Object.entries(runs).map(([key, rs]) => [key,
      { ...summarizeDownloads(rs), proxy_cpu_ms_per_download: cpu[key] === undefined ? undefined : Math.round(cpu[key] / DOWNLOADS) }]));
    await phaseRss(part);
  }

  results.ran_load = parts.some((p) => p !== 'memory');
  await sleep(1000);
  results.rss.proxy.end_kb = rssKB(proxy.child.pid);
  if (squid) results.rss.squid.end_kb = rssKB(squid.child.pid);

  for (const c of running.reverse()) await stop(c);
  report(profDir);
}

function report(profDir) {
  results.targets = targets(results);
  console.log(`\negress-proxy benchmark  ${results.date}`);
  const m = results.machine;
  console.log(`machine: ${m.nproc} cores (${m.cpu}), Linux ${m.kernel}, node ${m.node}, squid ${m.squid ?? 'n/a'}, wrk ${m.wrk ?? 'n/a'}; egress-proxy ${m.commit}, workers ${opt.workers}\n`);
  console.log(table(results));
  for (const [k, v] of Object.entries(results.rss)) {
    if (v) console.log(`RSS ${k} MiB: ${Object.entries(v).map(([p, kb]) => `${p.replace(/_kb$/, '')} ${(kb / 1024).toFixed(1)}`).join(', ')}`);
  }
  console.log(`\ntargets:\n${targetLines(results.targets)}`);
  const outDir = join(ROOT, 'bench/results');
  mkdirSync(outDir, { recursive: true });
  if (profDir) {
    const files = readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile')).sort();
    if (files.length === 0) log('no .cpuprofile written (did the proxy exit cleanly?)');
    else {
      const text = summarize(join(profDir, files.at(-1)));
      writeFileSync(join(outDir, 'profile-summary.txt'), text + '\n');
      console.log(`\n${text}`);
    }
    writeFileSync(join(outDir, 'profiled.json'), JSON.stringify(results, null, 2) + '\n');
    console.log('\n(profiled run: numbers not written to latest.json)');
    return;
  }
  results.markdown = markdown(results);
  writeFileSync(join(outDir, 'latest.json'), JSON.stringify(results, null, 2) + '\n');
  console.log(`\nwritten to bench/results/latest.json`);
}

try {
  await main();
} catch (err) {
  console.error(`bench: failed: ${err.stack ?? err}`);
  // The children's stderr is about to be deleted with the temp dir; show the end of it.
  for (const f of readdirSync(dir, { recursive: true }).filter((n) => String(n).endsWith('stderr'))) {
    const text = readFileSync(join(dir, String(f)), 'utf8').trim();
    if (text) console.error(`--- ${f} (last lines)\n${text.split('\n').slice(-10).join('\n')}`);
  }
  process.exitCode = 1;
} finally {
  // Removes the origin's private key along with everything else.
  rmSync(dir, { recursive: true, force: true });
}
