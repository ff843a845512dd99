// TLS load client for the interception bench (wrk cannot do CONNECT + TLS). Its own process so its
// CPU is measured apart from the orchestrator. Prints one JSON line with the results.
//   node bench/tls-client.mjs --mode handshake|ttfb|keepalive --port ORIGIN_PORT --ca CA.pem
//     [--proxy 127.0.0.1:3128] [--hosts new|cached] [--prefix h1] [--seconds 10] [--warmup 1] [--concurrency 20]
//     [--probes 200] [--cpu-pid PID]
// Host names are NAME.bench.test; through a proxy the client sends CONNECT NAME:PORT (the proxy
// resolves the name), direct it dials 127.0.0.2 itself. SNI and the checked name are always NAME.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { parseArgs } from 'node:util';
import { cpuMs } from './lib/proc.mjs';

const { values: opt } = parseArgs({
  options: {
    mode: { type: 'string' }, port: { type: 'string' }, ca: { type: 'string' }, proxy: { type: 'string' },
    hosts: { type: 'string', default: 'cached' }, prefix: { type: 'string', default: 'h' },
    seconds: { type: 'string', default: '10' }, warmup: { type: 'string', default: '0' }, 'cpu-pid': { type: 'string' },
    concurrency: { type: 'string', default: '20' }, probes: { type: 'string', default: '200' },
  },
});
const PORT = Number(opt.port);
// Built once: a `ca` option per connection would parse the CA for every handshake (client CPU, not the proxy's).
const CONTEXT = tls.createSecureContext({ ca: readFileSync(opt.ca), minVersion: 'TLSv1.2' });
const [proxyHost, proxyPort] = opt.proxy ? opt.proxy.split(':') : [];
const CONC = Math.min(200, Number(opt.concurrency));
const TIMEOUT_MS = 5000; // per connection step: a stuck proxy becomes an error, never a hang
const CACHED = 'cached.bench.test';
let serial = 0;
const nextName = () => (opt.hosts === 'new' ? `${opt.prefix}-${serial++}.bench.test` : CACHED);

/** Rejects after TIMEOUT_MS and destroys `sock`, so every await below is bounded in time. */
function bounded(sock, promise, what) {
  let t;
  const timer = new Promise((_, reject) => { t = setTimeout(() => { sock.destroy(); reject(new Error(`${what} timeout`)); }, TIMEOUT_MS); });
  return Promise.race([promise, timer]).finally(() => clearTimeout(t));
}

/** TCP (plus CONNECT when proxied) then a full TLS handshake (no session reuse). Returns timings in ms. */
async function open(name) {
  const t0 = performance.now();
  const raw = opt.proxy ? net.connect({ host: proxyHost, port: Number(proxyPort) }) : net.connect({ host: '127.0.0.2', port: PORT });
  raw.setNoDelay(true);
  await bounded(raw, new Promise((resolve, reject) => {
    raw.once('error', reject);
    raw.once('connect', () => {
      if (!opt.proxy) return resolve();
      raw.write(`CONNECT ${name}:${PORT} HTTP/1.1\r\nHost: ${name}:${PORT}\r\n\r\n`);
      let head = '';
      raw.on('data', function onData(d) {
        head += d.toString('latin1');
        if (!head.includes('\r\n\r\n')) return;
        raw.off('data', onData);
        if (/^HTTP\/1\.[01] 200/.test(head)) resolve();
        else reject(new Error(`CONNECT: ${head.split('\r\n')[0]}`));
      });
    });
  }), 'connect').catch((err) => { raw.destroy(); throw err; });
  raw.removeAllListeners('error');
  const tHello = performance.now();
  // servername = the name checked by the default checkServerIdentity; the CA is the proxy's (or the origin's).
  const sock = tls.connect({ socket: raw, servername: name, secureContext: CONTEXT });
  await bounded(sock, new Promise((resolve, reject) => { sock.once('error', reject); sock.once('secureConnect', resolve); }), 'handshake');
  sock.removeAllListeners('error');
  return { sock, t0, handshakeMs: performance.now() - tHello };
}

/** Sends GET /small and reads one complete response (Content-Length framed). Resolves at the last byte. */
function get(sock, name, close) {
  return bounded(sock, new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    let firstByte;
    const onData = (d) => {
      firstByte ??= performance.now();
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = buf.subarray(0, end).toString('latin1');
      const len = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? NaN);
      if (buf.length < end + 4 + len) return;
      done();
      if (!head.startsWith('HTTP/1.1 200')) reject(new Error(`status: ${head.split('\r\n')[0]}`));
      else resolve(firstByte);
    };
    const onEnd = () => { done(); reject(new Error('closed before the response')); };
    const done = () => { sock.off('data', onData); sock.off('end', onEnd); sock.off('error', reject); };
    sock.on('data', onData);
    sock.once('end', onEnd);
    sock.once('error', reject);
    sock.write(`GET /small HTTP/1.1\r\nHost: ${name}:${PORT}\r\n${close ? 'Connection: close\r\n' : ''}\r\n`);
  }), 'response');
}

/** One whole new connection: connect, handshake, one request, close. Returns {ttfbMs, handshakeMs}. */
async function oneShot(name) {
  let sock;
  try {
    const o = await open(name);
    sock = o.sock;
    const firstByte = await get(sock, name, true);
    return { ttfbMs: firstByte - o.t0, handshakeMs: o.handshakeMs };
  } finally {
    sock?.destroy();
  }
}

const pct = (sorted, p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : null);
const errors = { count: 0, first: undefined };
const fail = (err) => { errors.count++; errors.first ??= err.message; };

async function handshakes(seconds) {
  const deadline = performance.now() + seconds * 1000;
  const ttfb = [];
  const worker = async () => {
    while (performance.now() < deadline) {
      try { ttfb.push((await oneShot(nextName())).ttfbMs); } catch (err) { fail(err); }
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: CONC }, worker));
  const secs = (performance.now() - start) / 1000;
  ttfb.sort((a, b) => a - b);
  return { handshakes: ttfb.length, per_s: ttfb.length / secs, ttfb_p50_ms: pct(ttfb, 50), ttfb_p99_ms: pct(ttfb, 99) };
}

/**
 * One connection at a time, alternating a never-seen name and the cached one, so noise hits both
 * alike. Every name here resolves to the same origin, so a proxy pooling upstream connections per
 * address (egress-proxy) reconnects when the name changes: an unmeasured cached request first
 * restores the warm upstream a cached real site would have.
 */
async function ttfbProbes(seconds) {
  const probes = Math.min(2000, Number(opt.probes));
  const deadline = performance.now() + seconds * 1000;
  const r = { new: { ttfb: [], hs: [] }, cached: { ttfb: [], hs: [] } };
  for (let i = 0; i < probes && performance.now() < deadline; i++) {
    for (const kind of ['new', 'warm', 'cached']) {
      try {
        const o = await oneShot(kind === 'new' ? `${opt.prefix}-${serial++}.bench.test` : CACHED);
        if (kind === 'warm') continue;
        r[kind].ttfb.push(o.ttfbMs);
        r[kind].hs.push(o.handshakeMs);
      } catch (err) { fail(err); }
    }
  }
  const p50 = (xs) => pct(xs.sort((a, b) => a - b), 50);
  return {
    probes: r.new.ttfb.length,
    new_ttfb_p50_ms: p50(r.new.ttfb), cached_ttfb_p50_ms: p50(r.cached.ttfb),
    new_handshake_p50_ms: p50(r.new.hs), cached_handshake_p50_ms: p50(r.cached.hs),
  };
}

/** CONC connections opened once, then back-to-back keep-alive GETs on each until the deadline. */
async function keepalive(seconds) {
  const socks = [];
  try {
    for (let i = 0; i < CONC; i++) socks.push((await open(CACHED)).sock);
    const lat = [];
    const deadline = performance.now() + seconds * 1000;
    const start = performance.now();
    await Promise.all(socks.map(async (sock) => {
      while (performance.now() < deadline) {
        const t = performance.now();
        try { await get(sock, CACHED, false); } catch (err) { fail(err); return; }
        lat.push(performance.now() - t);
      }
    }));
    const secs = (performance.now() - start) / 1000;
    lat.sort((a, b) => a - b);
    return { requests: lat.length, rps: lat.length / secs, p50_ms: pct(lat, 50), p99_ms: pct(lat, 99) };
  } finally {
    for (const s of socks) s.destroy();
  }
}

const modes = { handshake: handshakes, ttfb: ttfbProbes, keepalive };
if (!modes[opt.mode]) throw new Error(`--mode must be one of ${Object.keys(modes).join('|')}`);
// Unmeasured warm-up: leaves, DNS answers and the proxy's upstream pool as a busy proxy has them.
if (Number(opt.warmup) > 0) {
  await modes[opt.mode](Math.min(10, Number(opt.warmup)));
  Object.assign(errors, { count: 0, first: undefined });
}
const pid = opt['cpu-pid'] && Number(opt['cpu-pid']);
const proxyCpu0 = pid && cpuMs(pid);
const cpu0 = process.cpuUsage();
const t0 = performance.now();
const result = await modes[opt.mode](Math.min(60, Number(opt.seconds)));
const cpu = process.cpuUsage(cpu0);
// Share of one core the client used: near 100% means the client, not the proxy, set the pace.
result.client_cpu_pct = Math.round(((cpu.user + cpu.system) / 1000 / (performance.now() - t0)) * 100);
// The proxy's CPU (with its helper processes) during the measured part only.
if (pid) result.proxy_cpu_ms = cpuMs(pid) - proxyCpu0;
process.stdout.write(JSON.stringify({ event: 'done', mode: opt.mode, errors: errors.count, first_error: errors.first, ...result }) + '\n');
process.exit(0);
