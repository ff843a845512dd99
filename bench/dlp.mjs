// DLP bench, two parts (see docs/benchmarks.md "DLP"):
//
// scan: the shipped `default` profile (policies/dlp/default.yaml) over a 64 MiB mixed JSON / log /
// prose body, generated deterministically with a few secrets planted in it (bench/lib/dlp-body.mjs).
// Throughput is per core: bytes divided by the CPU time this process spent (user + system), so
// other load on the machine does not count against it. Target: 200 MB/s (10^6 bytes).
//
// upload: concurrent 16 MiB uploads (the same generator, no secrets) through egress-proxy on
// loopback, to a path whose rule applies `dlp: [default]` and to one whose rule applies none,
// plus the same uploads direct to the origin, in interleaved rounds; DLP on both ways: scanned
// on the event loop, and in scan worker threads (a second proxy, `dlp_workers`). Target: uploads
// with DLP on at least 0.7x the rate with DLP off. Also the proxy's CPU per MB and its RSS peak. Before the
// timed runs a smoke check proves the DLP path is taken: a planted card number is refused (403,
// dlp_match), in a small body and 1 MiB before the end of a large one, and the clean body passes.
// Bodies past hold_bytes (8 MiB) wait on disk for their verdict (inspection.spool_bytes);
// `--spool-bytes 0` makes them stream instead, to compare.
//   npm run build && node bench/dlp.mjs [--only scan|upload] [--mib 64] [--runs 5]
//     [--upload-mib 16] [--concurrency 8] [--seconds 8] [--rounds 3] [--type application/json] [--dlp-workers 2] [--spool-bytes N]
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import { median } from './lib/curl.mjs';
import { makeBody, SECRETS } from './lib/dlp-body.mjs';
import { collectMessages, cpuMs, nextMessage, rssKB, run, sleep, start, stop } from './lib/proc.mjs';
import { fmt, ratio, targetLines } from './lib/report.mjs';
import { makeCert, ORIGIN_HOST, startOrigin, startProxy } from './lib/servers.mjs';

const ROOT = resolve(import.meta.dirname, '..');
const { values: opt } = parseArgs({ options: {
  only: { type: 'string' }, mib: { type: 'string', default: '64' }, runs: { type: 'string', default: '5' },
  'upload-mib': { type: 'string', default: '16' }, concurrency: { type: 'string', default: '8' },
  seconds: { type: 'string', default: '8' }, rounds: { type: 'string', default: '3' }, type: { type: 'string', default: 'application/json' },
  'dlp-workers': { type: 'string', default: '2' }, 'spool-bytes': { type: 'string' },
} });
if (opt.only && !['scan', 'upload'].includes(opt.only)) throw new Error('--only must be scan or upload');
const SIZE = Number(opt.mib) << 20;
const RUNS = Math.max(1, Number(opt.runs));
const UPLOAD_SIZE = Number(opt['upload-mib']) << 20;
const CONC = Math.min(64, Number(opt.concurrency));
const SECONDS = Math.min(30, Number(opt.seconds));
const ROUNDS = Math.min(5, Number(opt.rounds));
const WORKERS = Math.min(16, Math.max(1, Number(opt['dlp-workers'])));
const CHUNK = 64 * 1024; // what a socket typically hands over
const log = (msg) => console.error(`bench: ${msg}`);
if (!existsSync(join(ROOT, 'dist/inspection/dlp/scanner.js'))) throw new Error('dist/ missing: run `npm run build` first');
const { loadDlpProfiles } = await import(join(ROOT, 'dist/inspection/dlp/profile.js'));
const { Scanner } = await import(join(ROOT, 'dist/inspection/dlp/scanner.js'));
const { BodyInspector } = await import(join(ROOT, 'dist/inspection/dlp/decode.js'));
const PROFILE_FILE = join(ROOT, 'policies/dlp/default.yaml');
const profile = loadDlpProfiles(join(ROOT, 'policies/dlp')).get('default');

// ---- scan: the default profile in-process ------------------------------------------------------
async function scanPart() {
  const body = makeBody(SIZE);
  const gz = gzipSync(body, { level: 6 });
  async function measure(label, once) {
    const res = [];
    for (let r = 0; r < RUNS + 1; r++) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const verdict = await once();
      const wall = (performance.now() - t0) / 1000;
      const cu = process.cpuUsage(c0);
      const cpu = (cu.user + cu.system) / 1e6;
      if (r > 0) res.push({ wall, cpu, verdict }); // the first run warms the JIT up
    }
    const mbs = res.map((x) => body.length / 1e6 / x.cpu).sort((a, b) => a - b);
    const v = res[0].verdict;
    const found = Object.fromEntries(v.findings.map((f) => [f.detector, f.count]));
    return { label, median_mb_s_per_core: Math.round(mbs[Math.floor(mbs.length / 2)]), best_mb_s_per_core: Math.round(mbs[mbs.length - 1]), worst_mb_s_per_core: Math.round(mbs[0]),
      median_wall_mb_s: Math.round(body.length / 1e6 / res.map((x) => x.wall).sort((a, b) => a - b)[Math.floor(res.length / 2)]), action: v.action, found };
  }
  const scanner = () => {
    const s = new Scanner(profile, undefined, { maxBytes: Number.MAX_SAFE_INTEGER });
    for (let o = 0; o < body.length; o += CHUNK) s.write(body.subarray(o, o + CHUNK));
    return s.verdict();
  };
  const inspector = (contentType, encoded) => async () => {
    const insp = new BodyInspector({ ...profile, maxScanBytes: Number.MAX_SAFE_INTEGER }, { contentType, ...(encoded ? { contentEncoding: 'gzip' } : {}), direction: 'upload' });
    const src = encoded ? gz : body;
    for (let o = 0; o < src.length; o += CHUNK) if (!insp.write(src.subarray(o, o + CHUNK))) await insp.drained();
    return insp.end();
  };
  const results = [];
  for (const [label, once] of [
    ['Scanner, default profile', scanner],
    ['BodyInspector, text/plain', inspector('text/plain', false)],
    ['BodyInspector, application/json (unescaping)', inspector('application/json', false)],
    ['BodyInspector, gzip Content-Encoding (decompression included)', inspector('application/json', true)],
  ]) {
    log(`scan: ${label} (${RUNS} runs after a warm-up)`);
    results.push(await measure(label, once));
  }
  return { body_mib: SIZE / 1048576, gzip_mib: Number((gz.length / 1048576).toFixed(1)), planted_secrets: SECRETS.length, runs: RUNS, results };
}

// ---- upload: through the proxy, DLP on vs off, and direct --------------------------------------
/** The proxy's peak RSS since it started (VmHWM), KiB. */
function hwmKB(pid) {
  try {
    return Number(/^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
  } catch {
    return undefined;
  }
}

/** One curl POST of `file`; returns the status and the X-Egress-Reason header. */
async function post(url, file, proxyPort, type) {
  const r = await run('curl', ['-s', '-o', '/dev/null', '-D', '-', '--max-time', '30', '-H', `content-type: ${type}`, '-H', 'Expect:',
    '--data-binary', `@${file}`, '-w', '\nstatus=%{http_code}', ...(proxyPort ? ['-x', `http://127.0.0.1:${proxyPort}`] : ['--noproxy', '*']), url], { timeoutMs: 40_000 });
  return { code: Number(/status=(\d+)/.exec(r.stdout)?.[1] ?? 0), reason: /^x-egress-reason:\s*(\S+)/im.exec(r.stdout)?.[1], exit: r.code };
}

async function uploadPart() {
  const dir = mkdtempSync(join(tmpdir(), 'egress-bench-dlp-'));
  // Also on Ctrl-C (proc.mjs exits from its signal handler): the origin's private key lives here.
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  const running = [];
  try {
    const type = opt.type;
    const body = makeBody(UPLOAD_SIZE, { secrets: [] });
    const file = join(dir, 'clean.bin');
    writeFileSync(file, body);
    // What the proxy's DLP will conclude on this body: the same profile and decoders, here.
    const insp = new BodyInspector(profile, { contentType: type, direction: 'upload' });
    for (let o = 0; o < body.length; o += CHUNK) if (!insp.write(body.subarray(o, o + CHUNK))) await insp.drained();
    const v = await insp.end();
    const verdict = { action: v.action, reason: v.reason, scanned_bytes: v.scannedBytes, truncated: v.truncated,
      found: Object.fromEntries(v.findings.filter((f) => f.count > 0).map((f) => [f.detector, f.count])) };
    if (v.action === 'block' || v.truncated) throw new Error(`the clean body is not clean or not fully scanned: ${JSON.stringify(verdict)}`);
    // A card near the end: past hold_bytes (8 MiB), so the body is held on disk (or, with --spool-bytes 0, streams and the block cuts it late).
    const card = '\ncard 4111 1111 1111 1111\n';
    const late = Buffer.from(body);
    late.write(card, UPLOAD_SIZE - (1 << 20), 'latin1');
    const lateFile = join(dir, 'card-late.bin');
    writeFileSync(lateFile, late);
    const smallFile = join(dir, 'card-small.bin');
    writeFileSync(smallFile, `{"order":1,"note":"pay with${card.trim()}"}\n`);

    const cert = await makeCert(dir);
    const origin = await startOrigin(dir, cert);
    running.push(origin.child);
    const startDlpProxy = (workers = 0) => startProxy(dir, {
      inspection: `{enabled: false, dlp_workers: ${workers}${opt['spool-bytes'] === undefined ? '' : `, spool_bytes: ${Number(opt['spool-bytes'])}`}}`,
      policyLines: [
        'rules:',
        '  - id: bench-dlp', '    action: allow', '    dlp: [default]', '    when: { paths: ["/dlp/"] }',
        '  - id: bench-plain', '    action: allow', '    when: { paths: ["/plain/"] }',
      ],
      dlpFiles: [PROFILE_FILE],
    });
    const proxy = await startDlpProxy();
    running.push(proxy.child);
    const wproxy = await startDlpProxy(WORKERS);
    running.push(wproxy.child);
    const base = `http://${ORIGIN_HOST}:${origin.http}`;
    log(`upload: origin ${base}; egress-proxy :${proxy.port}, with ${WORKERS} scan workers :${wproxy.port}; ${UPLOAD_SIZE >> 20} MiB ${type} body; spool_bytes ${opt['spool-bytes'] ?? 'default'}; temp ${dir}`);
    const uploads = async () => {
      await sleep(300); // lets the origin see an aborted upload close
      origin.child.stdin.write('uploads\n');
      return nextMessage(origin.child, (m) => m.event === 'uploads', 5000);
    };

    // Smoke check, for each proxy: the DLP path is really taken (and the other one really is not).
    const smoke = {};
    for (const [name, p] of [['event loop', proxy], ['scan workers', wproxy]]) {
      const u0 = await uploads();
      const sm = {
        small_card_dlp: await post(`${base}/dlp/upload`, smallFile, p.port, type),
        late_card_dlp: await post(`${base}/dlp/upload`, lateFile, p.port, type),
        clean_dlp: await post(`${base}/dlp/upload`, file, p.port, type),
        late_card_plain: await post(`${base}/plain/upload`, lateFile, p.port, type),
      };
      const u1 = await uploads();
      sm.origin = { complete: u1.complete - u0.complete, aborted: u1.aborted - u0.aborted, bytes: u1.bytes - u0.bytes };
      const blocked = (r) => r.code === 403 && r.reason === 'dlp_match';
      const problems = [
        !blocked(sm.small_card_dlp) && `card in a small body via /dlp: ${JSON.stringify(sm.small_card_dlp)}, want 403 dlp_match`,
        !blocked(sm.late_card_dlp) && `card 1 MiB before the end via /dlp: ${JSON.stringify(sm.late_card_dlp)}, want 403 dlp_match`,
        sm.clean_dlp.code !== 200 && `clean body via /dlp: ${JSON.stringify(sm.clean_dlp)}, want 200`,
        sm.late_card_plain.code !== 200 && `card via /plain (no DLP): ${JSON.stringify(sm.late_card_plain)}, want 200`,
        // Only the two allowed uploads may reach the origin whole.
        (sm.origin.complete !== 2 || sm.origin.bytes !== 2 * UPLOAD_SIZE) && `origin received ${JSON.stringify(sm.origin)}, want 2 complete uploads`,
      ].filter(Boolean);
      if (problems.length > 0) throw new Error(`smoke check (${name}) failed:\n  ${problems.join('\n  ')}`);
      log(`upload: smoke check (${name}) passed (cards refused with 403 dlp_match; clean body 200; origin got ${sm.origin.complete} whole uploads, ${sm.origin.aborted} cut)`);
      smoke[name] = sm;
    }

    const targets = [
      { key: 'direct', url: `${base}/plain/upload` },
      { key: 'off', url: `${base}/plain/upload`, proxy },
      { key: 'on', url: `${base}/dlp/upload`, proxy },
      { key: 'workers', url: `${base}/dlp/upload`, proxy: wproxy },
    ];
    const client = async (t, seconds, warmup = 0) => {
      const c = start('node', [join(ROOT, 'bench/upload-client.mjs'), '--url', t.url, '--file', file, '--type', type,
        '--concurrency', String(CONC), '--seconds', String(seconds), '--warmup', String(warmup), ...(t.proxy ? ['--proxy', `127.0.0.1:${t.proxy.port}`] : [])],
      { stdout: 'pipe', stderr: join(dir, 'client.stderr') });
      try {
        collectMessages(c);
        return await nextMessage(c, (m) => m.event === 'done', (seconds + warmup + 90) * 1000);
      } finally {
        await stop(c, 2000);
      }
    };
    const rssIdle = rssKB(proxy.child.pid);
    for (const t of targets) {
      log(`upload: ${t.key} warm-up (2 s)`);
      await client(t, 2);
    }
    const runs = {};
    for (let round = 1; round <= ROUNDS; round++) {
      for (const t of targets) {
        log(`upload: ${t.key} round ${round}/${ROUNDS} (${SECONDS} s, c=${CONC})`);
        const pid = (t.proxy ?? proxy).child.pid;
        const cpu0 = { proxy: cpuMs(pid), origin: cpuMs(origin.child.pid) };
        const r = await client(t, SECONDS);
        const proxyMs = cpuMs(pid) - cpu0.proxy;
        r.origin_cpu_pct = Math.round((cpuMs(origin.child.pid) - cpu0.origin) / (r.seconds * 10));
        if (t.proxy) Object.assign(r, { proxy_cpu_pct: Math.round(proxyMs / (r.seconds * 10)), proxy_cpu_ms_per_mb: proxyMs / (r.bytes / 1e6) });
        if (r.errors) log(`  ${t.key}: ${r.errors} errors, first: ${r.first_error}`);
        (runs[t.key] ??= []).push(r);
      }
    }
    const rssEnd = rssKB(proxy.child.pid);
    const hwm = hwmKB(proxy.child.pid);
    await stop(proxy.child);
    await stop(wproxy.child);

    // Memory: a fresh proxy per case, since V8 keeps a heap grown by earlier runs (the interleaved
    // proxy above ends near its all-time peak whatever ran last). RSS sampled every 50 ms.
    const memory = {};
    for (const t of targets.filter((x) => x.proxy)) {
      const p = await startDlpProxy(t.key === 'workers' ? WORKERS : 0);
      running.push(p.child);
      await sleep(1000);
      const startKb = rssKB(p.child.pid);
      let peak = 0;
      const sampler = setInterval(() => { peak = Math.max(peak, rssKB(p.child.pid) ?? 0); }, 50);
      log(`upload: memory, ${t.key}, fresh proxy (${SECONDS} s, c=${CONC})`);
      const r = await client({ ...t, proxy: p }, SECONDS);
      clearInterval(sampler);
      await sleep(1000);
      memory[t.key] = { start_kb: startKb, peak_kb: peak, after_kb: rssKB(p.child.pid), hwm_kb: hwmKB(p.child.pid), mb_s: r.mb_s, errors: r.errors };
      await stop(p.child);
    }
    for (const c of running.reverse()) await stop(c);
    const byKey = Object.fromEntries(Object.entries(runs).map(([key, rs]) => [key, {
      ...Object.fromEntries(['mb_s', 'upload_p50_ms', 'upload_p99_ms', 'client_cpu_pct', 'origin_cpu_pct', 'proxy_cpu_pct', 'proxy_cpu_ms_per_mb']
        .filter((f) => rs[0][f] !== undefined).map((f) => [f, median(rs.map((r) => r[f]))])),
      errors: rs.reduce((a, r) => a + r.errors, 0), first_error: rs.find((r) => r.first_error)?.first_error,
      rounds: rs.map(({ mb_s, uploads, seconds, proxy_cpu_pct }) => ({ mb_s: Math.round(mb_s), uploads, seconds, proxy_cpu_pct })),
    }]));
    return { body_mib: UPLOAD_SIZE / 1048576, content_type: type, concurrency: CONC, seconds: SECONDS, rounds: ROUNDS, spool_bytes: opt['spool-bytes'] ?? 'default',
      clean_body_verdict: verdict, smoke, ...byKey, memory, interleaved_proxy_rss: { idle_kb: rssIdle, end_kb: rssEnd, hwm_kb: hwm } };
  } catch (err) {
    // The children's stderr is about to be deleted with the temp dir; show the end of it.
    for (const f of readdirSync(dir, { recursive: true }).filter((n) => String(n).endsWith('stderr'))) {
      const text = readFileSync(join(dir, String(f)), 'utf8').trim();
      if (text) console.error(`--- ${f} (last lines)\n${text.split('\n').slice(-10).join('\n')}`);
    }
    throw err;
  } finally {
    for (const c of running) await stop(c);
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- report ------------------------------------------------------------------------------------
const MiB = (kb) => (kb == null ? undefined : kb / 1024);
function uploadRows(u) {
  // One value per proxy case: DLP off, DLP on, DLP on in scan workers.
  const of = (f) => [u.off, u.on, u.workers].map((x) => x?.[f]);
  const mem = (f) => ['off', 'on', 'workers'].map((k) => MiB(f(u.memory?.[k] ?? {})));
  return [
    [`upload MB/s (c=${u.concurrency}, ${u.body_mib} MiB bodies)`, u.direct?.mb_s, ...of('mb_s'), 0],
    ['upload p50 ms (one body)', u.direct?.upload_p50_ms, ...of('upload_p50_ms'), 0],
    ['upload p99 ms (one body)', u.direct?.upload_p99_ms, ...of('upload_p99_ms'), 0],
    ['proxy CPU ms per MB', undefined, ...of('proxy_cpu_ms_per_mb'), 2],
    ['proxy CPU % (1 core = 100)', undefined, ...of('proxy_cpu_pct'), 0],
    ['client CPU %', u.direct?.client_cpu_pct, ...of('client_cpu_pct'), 0],
    ['origin CPU %', u.direct?.origin_cpu_pct, ...of('origin_cpu_pct'), 0],
    ['proxy RSS at start MiB (fresh process)', undefined, ...mem((m) => m.start_kb), 1],
    ['proxy RSS peak under load MiB (fresh process, VmHWM)', undefined, ...mem((m) => m.hwm_kb ?? m.peak_kb), 1],
    ['proxy RSS 1 s after load MiB (fresh process)', undefined, ...mem((m) => m.after_kb), 1],
  ];
}
const HEAD = ['', 'direct', 'proxy, DLP off', 'proxy, DLP on', `DLP on, ${WORKERS} scan workers`, 'on/off', 'workers/off', 'off/direct'];
const cells = ([label, d, off, on, w, digits]) => [label, fmt(d, digits), fmt(off, digits), fmt(on, digits), fmt(w, digits), fmt(ratio(on, off), 2), fmt(ratio(w, off), 2), fmt(ratio(off, d), 2)];
function uploadTable(list) {
  const body = list.map(cells);
  const widths = HEAD.map((_, i) => Math.max(...[HEAD, ...body].map((row) => row[i].length)));
  const line = (row) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(HEAD), ...body.map(line)].join('\n');
}
const md = (head, body) => [head, head.map((_, i) => (i === 0 ? '---' : '---:')), ...body].map((row) => `| ${row.join(' | ')} |`).join('\n');

function targets(r) {
  const check = (name, value, goal, ok) => ({ name, value, goal, status: value == null ? 'n/a' : ok ? 'PASS' : 'MISS' });
  const scan = r.scan?.results[0]?.median_mb_s_per_core;
  const up = ratio(r.upload?.on?.mb_s, r.upload?.off?.mb_s);
  const upw = ratio(r.upload?.workers?.mb_s, r.upload?.off?.mb_s);
  // Judged on the better of the two ways to run DLP: both are the product, configured.
  const best = Math.max(up ?? 0, upw ?? 0);
  return [
    check('DLP scan, default profile >= 200 MB/s per core', scan != null ? `${scan} MB/s` : undefined, '>= 200 MB/s', scan >= 200),
    check('uploads with DLP on >= 0.7x DLP off', up && `${fmt(up, 2)}x on the event loop, ${fmt(upw, 2)}x with ${WORKERS} scan workers`, '>= 0.7x', best >= 0.7),
  ];
}

const result = { date: new Date().toISOString() };
result.machine = { cpu: cpus()[0]?.model, cores: cpus().length, node: process.version,
  commit: (await run('git', ['-C', ROOT, 'describe', '--always', '--dirty'])).stdout.trim() || null };
try {
  if (opt.only !== 'upload') result.scan = await scanPart();
  if (opt.only !== 'scan') result.upload = await uploadPart();
} catch (err) {
  console.error(`bench: failed: ${err.stack ?? err}`);
  process.exit(1);
}
result.targets = targets(result);
const m = result.machine;
console.log(`\nDLP bench  ${result.date}`);
console.log(`machine: ${m.cores} cores (${m.cpu}), node ${m.node}; egress-proxy ${m.commit}\n`);
const mdParts = [];
if (result.scan) {
  const s = result.scan;
  console.log(`scan: ${s.body_mib} MiB mixed JSON/text (${s.planted_secrets} planted secrets; gzip ${s.gzip_mib} MiB), median of ${s.runs} runs, MB/s per core (wall MB/s)`);
  for (const x of s.results) console.log(`  ${x.label.padEnd(64)} ${String(x.median_mb_s_per_core).padStart(5)}  (${x.worst_mb_s_per_core}-${x.best_mb_s_per_core}; wall ${x.median_wall_mb_s})  ${x.action}`);
  mdParts.push(md(['scan, default profile', 'MB/s per core (median)', 'range', 'wall MB/s'],
    s.results.map((x) => [x.label, fmt(x.median_mb_s_per_core), `${x.worst_mb_s_per_core}–${x.best_mb_s_per_core}`, fmt(x.median_wall_mb_s)])));
}
if (result.upload) {
  const u = result.upload;
  const v = u.clean_body_verdict;
  console.log(`\nupload: ${u.body_mib} MiB ${u.content_type}, c=${u.concurrency}, ${u.rounds} interleaved rounds x ${u.seconds} s, medians; spool_bytes ${u.spool_bytes}`);
  console.log(`clean body verdict (in-process, default profile): ${v.action}${v.reason ? ` (${v.reason})` : ''}, ${v.scanned_bytes} bytes scanned, found ${JSON.stringify(v.found)}`);
  console.log(uploadTable(uploadRows(u)));
  const rss = u.interleaved_proxy_rss;
  console.log(`interleaved proxy RSS MiB: before the timed uploads ${fmt(MiB(rss.idle_kb), 1)}, after ${fmt(MiB(rss.end_kb), 1)}, peak since start (VmHWM) ${fmt(MiB(rss.hwm_kb), 1)}`);
  for (const k of ['direct', 'off', 'on', 'workers']) if (u[k]?.errors) console.log(`  ${k}: ${u[k].errors} errors, first: ${u[k].first_error}`);
  mdParts.push(md(HEAD.map((h, i) => (i === 0 ? '' : h)), uploadRows(u).map(cells)));
}
console.log(`\ntargets:\n${targetLines(result.targets)}`);
result.markdown = mdParts.join('\n\n');
mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(join(ROOT, 'bench/results/dlp.json'), JSON.stringify(result, null, 2) + '\n');
console.log('\nwritten to bench/results/dlp.json');
