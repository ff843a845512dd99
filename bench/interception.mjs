// TLS interception bench: direct HTTPS vs Squid ssl-bump vs egress-proxy inspection, in one run,
// on loopback. See docs/benchmarks.md "TLS interception". Needs root (Squid, DNS stub on :53).
//   node bench/interception.mjs [--seconds 8] [--rounds 2] [--concurrency 20] [--probes 150]
//     [--origin-trust file|env] [--squid-bump server-first|client-first]
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { median } from './lib/curl.mjs';
import { startBumpingSquid, startDns, startInterceptingProxy, tlsClient } from './lib/interception.mjs';
import { collectMessages, freePort, nextMessage, run, start, stop } from './lib/proc.mjs';
import { fmt, markdown, ratio, table, targetLines } from './lib/report.mjs';
import { makeCert, ROOT, squidVersion, startOrigin } from './lib/servers.mjs';

const { values: opt } = parseArgs({ options: {
  seconds: { type: 'string', default: '8' }, rounds: { type: 'string', default: '2' },
  concurrency: { type: 'string', default: '20' }, probes: { type: 'string', default: '150' },
  'origin-trust': { type: 'string', default: 'file' }, 'squid-bump': { type: 'string', default: 'server-first' },
} });
if (!['file', 'env'].includes(opt['origin-trust'])) throw new Error('--origin-trust must be file or env');
if (!['server-first', 'client-first'].includes(opt['squid-bump'])) throw new Error('--squid-bump must be server-first or client-first');
const SECONDS = Math.min(30, Number(opt.seconds));
const ROUNDS = Math.min(3, Number(opt.rounds));
const CONC = Math.min(100, Number(opt.concurrency));
const PROBES = Math.min(500, Number(opt.probes));
const log = (msg) => console.error(`bench: ${msg}`);

const dir = mkdtempSync(join(tmpdir(), 'egress-bench-tls-'));
// Squid runs as `proxy` and must reach its files below; traverse only, no listing.
chmodSync(dir, 0o711);
// Also on Ctrl-C (proc.mjs exits from its signal handler): private keys live here.
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const results = { date: new Date().toISOString(), seconds: SECONDS, rounds: ROUNDS, concurrency: CONC,
  origin_trust: opt['origin-trust'], squid_bump: opt['squid-bump'] };
let dns;
let serial = 0;

/** Runs bench/tls-client.mjs once and returns its result line (throws if it fails or hangs). */
function client(target, args, timeLimitS) {
  return tlsClient(dir, target, ['--concurrency', String(CONC), ...args], timeLimitS);
}

/** One measured client run after a 1 s warm-up; the client also reads the proxy's CPU (with its helpers). */
async function measured(target, args, seconds = SECONDS) {
  const pid = target.proxy?.child.pid;
  const r = await client(target, [...args, '--seconds', String(seconds), '--warmup', '1', ...(pid ? ['--cpu-pid', String(pid)] : [])], seconds + 1);
  if (r.errors) log(`  ${target.key}: ${r.errors} errors, first: ${r.first_error}`);
  return r;
}

async function main() {
  const sqVer = await squidVersion();
  results.machine = { nproc: cpus().length, cpu: cpus()[0]?.model, node: process.version, squid: sqVer ?? null,
    commit: (await run('git', ['-C', ROOT, 'describe', '--always', '--dirty'])).stdout.trim() || null };
  // One origin cert for every *.bench.test name: upstream, both proxies verify it against the SNI.
  const cert = await makeCert(dir, { dnsNames: ['*.bench.test'] });
  const origin = await startOrigin(dir, cert);
  dns = await startDns();
  const proxy = await startInterceptingProxy(dir, { originCert: cert.cert, trust: opt['origin-trust'] });
  let squid;
  if (!sqVer) log('squid not installed (apt-get install squid-openssl): egress-proxy vs direct only');
  else {
    try {
      squid = await startBumpingSquid(dir, { originCert: cert.cert, mode: opt['squid-bump'] });
    } catch (err) {
      log(`Squid ssl-bump did not start, reporting egress-proxy vs direct only: ${err.message}`);
    }
  }
  // The floor for kept-alive requests: the least a Node.js interceptor does (bench/minimal-interceptor.mjs).
  const floorPort = await freePort();
  const floorChild = start('node', [join(ROOT, 'bench/minimal-interceptor.mjs'), String(floorPort), cert.cert, cert.key, cert.cert],
    { stdout: 'pipe', stderr: join(dir, 'floor.stderr') });
  collectMessages(floorChild);
  await nextMessage(floorChild, (m) => m.event === 'ready', 15_000);
  const floor = { key: 'floor', port: origin.https, ca: cert.cert, proxy: { port: floorPort, child: floorChild } };
  const targets = [
    { key: 'direct', port: origin.https, ca: cert.cert },
    squid && { key: 'squid', port: origin.https, ca: squid.ca, proxy: squid },
    { key: 'proxy', port: origin.https, ca: proxy.ca, proxy },
  ].filter(Boolean);
  log(`origin 127.0.0.2:${origin.https}; egress-proxy :${proxy.port}${squid ? `; squid :${squid.port}` : ''}; temp ${dir}`);

  // Smoke test: each path works before anything is timed (a proxy answering errors fast would look good).
  for (const t of [...targets, floor]) {
    const r = await client(t, ['--mode', 'handshake', '--hosts', 'cached', '--seconds', '1'], 1);
    if (r.handshakes === 0) throw new Error(`${t.key}: no request succeeded: ${r.first_error}`);
  }

  // Rounds interleave the targets so a noisy neighbour on a shared VM hits all of them alike.
  const runs = {};
  const phases = [['new', ['--mode', 'handshake', '--hosts', 'new']], ['cached', ['--mode', 'handshake', '--hosts', 'cached']], ['keepalive', ['--mode', 'keepalive']]];
  for (const [phase, args] of phases) {
    for (let round = 1; round <= ROUNDS; round++) {
      for (const t of phase === 'keepalive' ? [...targets, floor] : targets) {
        log(`${phase}: ${t.key} round ${round}/${ROUNDS} (${SECONDS} s, c=${CONC})`);
        // A fresh prefix per run: every "new" name is one no proxy has seen.
        ((runs[phase] ??= {})[t.key] ??= []).push(await measured(t, [...args, '--prefix', `n${serial++}`]));
      }
    }
  }
  // Sequential probes: one connection at a time, alternating never-seen and cached names.
  runs.ttfb = {};
  for (const t of targets) {
    log(`ttfb: ${t.key}, ${PROBES} new + ${PROBES} cached names, one connection at a time`);
    runs.ttfb[t.key] = [await measured(t, ['--mode', 'ttfb', '--probes', String(PROBES), '--prefix', `p${serial++}`], 40)];
  }
  results.dns_queries = dns.stats.queries;
  for (const t of [floor, ...targets].reverse()) if (t.proxy) await stop(t.proxy.child);
  await stop(origin.child);
  summarize(runs);
}

/** Medians over rounds; every round kept in the JSON. */
function summarize(runs) {
  const med = (list, f) => (list?.length ? median(list.map(f)) : undefined);
  for (const [phase, byKey] of Object.entries(runs)) {
    results[phase] = Object.fromEntries(Object.entries(byKey).map(([key, rs]) => {
      const fields = Object.keys(rs[0]).filter((f) => typeof rs[0][f] === 'number' && f !== 'errors');
      const out = Object.fromEntries(fields.map((f) => [f, med(rs, (r) => r[f])]));
      const count = rs[0].handshakes !== undefined ? 'handshakes' : rs[0].requests !== undefined ? 'requests' : undefined;
      // CPU per unit of work: steadier than rates on a shared VM.
      if (count && out.proxy_cpu_ms !== undefined) out.proxy_cpu_us_per_op = med(rs, (r) => (r.proxy_cpu_ms * 1000) / r[count]);
      return [key, { ...out, errors: rs.reduce((a, r) => a + r.errors, 0), first_error: rs.find((r) => r.first_error)?.first_error, rounds: rs }];
    }));
  }
}

function rows(r) {
  const v = (phase, f) => ['direct', 'squid', 'proxy'].map((k) => r[phase]?.[k]?.[f]);
  const mint = (k) => (r.ttfb?.[k] ? r.ttfb[k].new_ttfb_p50_ms - r.ttfb[k].cached_ttfb_p50_ms : undefined);
  const hsMint = (k) => (r.ttfb?.[k] ? r.ttfb[k].new_handshake_p50_ms - r.ttfb[k].cached_handshake_p50_ms : undefined);
  return [
    [`new TLS handshakes/s, new name each (c=${CONC})`, ...v('new', 'per_s'), 0],
    [`TLS handshakes/s, cached name (c=${CONC})`, ...v('cached', 'per_s'), 0],
    ['  proxy CPU µs per new-name handshake', ...v('new', 'proxy_cpu_us_per_op'), 0],
    ['  proxy CPU µs per cached-name handshake', ...v('cached', 'proxy_cpu_us_per_op'), 0],
    ['first-hit TTFB p50 ms (new name, 1 at a time)', ...v('ttfb', 'new_ttfb_p50_ms'), 2],
    ['cached TTFB p50 ms (1 at a time)', ...v('ttfb', 'cached_ttfb_p50_ms'), 2],
    // Direct has nothing to mint: its difference would only be noise, and its ratios meaningless.
    ['  first-hit − cached TTFB (minting estimate) ms', undefined, mint('squid'), mint('proxy'), 2],
    ['  first-hit − cached TLS handshake p50 ms', undefined, hsMint('squid'), hsMint('proxy'), 2],
    [`kept-alive req/s (c=${CONC}, 100 B GETs)`, ...v('keepalive', 'rps'), 0],
    ['kept-alive p99 ms', ...v('keepalive', 'p99_ms'), 2],
    ['kept-alive p50 ms', ...v('keepalive', 'p50_ms'), 2],
    ['  proxy CPU µs per kept-alive request', ...v('keepalive', 'proxy_cpu_us_per_op'), 0],
    // In the egress-proxy column, so its ratios read floor/direct and floor/Squid.
    ['floor: minimal Node interceptor kept-alive req/s', r.keepalive?.direct?.rps, r.keepalive?.squid?.rps, r.keepalive?.floor?.rps, 0],
    ['  floor CPU µs per kept-alive request', undefined, r.keepalive?.squid?.proxy_cpu_us_per_op, r.keepalive?.floor?.proxy_cpu_us_per_op, 0],
  ];
}

function targets(r) {
  const check = (name, value, goal, ok) => ({ name, value, goal, status: value == null ? 'n/a' : ok ? 'PASS' : 'MISS' });
  const hs = ratio(r.new?.proxy?.per_s, r.new?.squid?.per_s);
  const ka = ratio(r.keepalive?.proxy?.rps, r.keepalive?.squid?.rps);
  const mint = r.ttfb?.proxy ? r.ttfb.proxy.new_ttfb_p50_ms - r.ttfb.proxy.cached_ttfb_p50_ms : undefined;
  return [
    check('new intercepted handshakes/s >= 2x Squid ssl-bump', hs && `${fmt(hs, 2)}x`, '>= 2x', hs >= 2),
    // The floor shows what any Node.js interceptor could reach here, without policy, log or minting.
    check('kept-alive intercepted req/s >= 1.5x Squid', ka && `${fmt(ka, 2)}x (minimal Node interceptor: ${fmt(ratio(r.keepalive?.floor?.rps, r.keepalive?.squid?.rps), 2)}x)`, '>= 1.5x', ka >= 1.5),
    check('first-hit minting < 5 ms p50 (first-hit − cached TTFB)', mint != null ? `${fmt(mint, 2)} ms` : undefined, '< 5 ms', mint < 5),
  ];
}

function report() {
  const m = results.machine;
  results.targets = targets(results);
  const list = rows(results);
  console.log(`\nTLS interception bench  ${results.date}`);
  console.log(`machine: ${m.nproc} cores (${m.cpu}), node ${m.node}, squid ${m.squid ?? 'n/a'}; egress-proxy ${m.commit}; ` +
    `${ROUNDS} round(s) x ${SECONDS} s, medians;\n  origin trusted via ${opt['origin-trust'] === 'file' ? 'upstream_ca_file' : 'NODE_EXTRA_CA_CERTS'}; Squid ssl-bump ${opt['squid-bump']}\n`);
  console.log(table(results, list));
  const cpu = ['new', 'cached', 'keepalive'].map((p) => `${p} ${Object.entries(results[p] ?? {}).map(([k, x]) => `${k} ${x.client_cpu_pct}%`).join(' ')}`);
  console.log(`\nclient CPU (one core = 100%): ${cpu.join('; ')}`);
  console.log(`\ntargets:\n${targetLines(results.targets)}`);
  results.markdown = markdown(results, list);
  const out = join(ROOT, 'bench/results');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'interception.json'), JSON.stringify(results, null, 2) + '\n');
  console.log('\nwritten to bench/results/interception.json');
}

try {
  await main();
  report();
} catch (err) {
  console.error(`bench: failed: ${err.stack ?? err}`);
  // Children's logs are about to be deleted with the temp dir; show their ends.
  for (const f of readdirSync(dir, { recursive: true }).filter((n) => /(stderr|cache\.log)$/.test(String(n)))) {
    const text = readFileSync(join(dir, String(f)), 'utf8').trim();
    if (text) console.error(`--- ${f} (last lines)\n${text.split('\n').slice(-10).join('\n')}`);
  }
  process.exitCode = 1;
} finally {
  dns?.close();
  rmSync(dir, { recursive: true, force: true });
}
