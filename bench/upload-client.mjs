// Upload load client for the DLP bench: `--concurrency` kept-alive connections, each POSTing the
// same body back to back for `--seconds`. Its own process so its CPU is measured apart from the
// orchestrator's. Prints one JSON line with the results.
//   node bench/upload-client.mjs --url http://127.0.0.2:PORT/dlp/upload --file body.bin
//     [--proxy 127.0.0.1:3128] [--type application/json] [--seconds 8] [--warmup 1] [--concurrency 8]
// Through a proxy the request line is absolute-form (what a client configured with the proxy sends).
// Uploads started before the deadline are finished and counted; the elapsed time runs until the
// last one ends, so MB/s = bytes sent / elapsed holds no partial uploads.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' }, file: { type: 'string' }, proxy: { type: 'string' }, type: { type: 'string', default: 'application/json' },
    seconds: { type: 'string', default: '8' }, warmup: { type: 'string', default: '0' }, concurrency: { type: 'string', default: '8' },
  },
});
const BODY = readFileSync(opt.file);
const URL_ = new URL(opt.url);
const [proxyHost, proxyPort] = opt.proxy ? opt.proxy.split(':') : [];
const CONC = Math.min(64, Number(opt.concurrency));
const TIMEOUT_MS = 30_000; // per upload: a stuck proxy becomes an error, never a hang
const agent = new http.Agent({ keepAlive: true, maxSockets: CONC });

/** One POST of the body; resolves its status, reason header and duration in ms (rejects on error or timeout). */
function upload() {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = http.request({
      agent, method: 'POST',
      host: opt.proxy ? proxyHost : URL_.hostname, port: opt.proxy ? Number(proxyPort) : Number(URL_.port),
      path: opt.proxy ? URL_.href : URL_.pathname,
      headers: { host: URL_.host, 'content-type': opt.type, 'content-length': BODY.length },
    });
    req.setTimeout(TIMEOUT_MS, () => req.destroy(new Error('upload timeout')));
    req.once('error', reject);
    req.once('response', (res) => {
      res.resume();
      res.once('error', reject);
      res.once('end', () => resolve({ status: res.statusCode, reason: res.headers['x-egress-reason'], ms: performance.now() - t0 }));
    });
    req.end(BODY);
  });
}

/** `CONC` loops until `deadline`; counts completed 200s and everything else as errors. */
async function load(deadline) {
  const out = { uploads: 0, errors: 0, first_error: undefined, ms: [] };
  const loop = async () => {
    while (performance.now() < deadline) {
      try {
        const r = await upload();
        if (r.status === 200) {
          out.uploads++;
          out.ms.push(r.ms);
        } else {
          out.errors++;
          out.first_error ??= `HTTP ${r.status}${r.reason ? ` ${r.reason}` : ''}`;
        }
      } catch (err) {
        out.errors++;
        out.first_error ??= err.message;
      }
    }
  };
  await Promise.all(Array.from({ length: CONC }, loop));
  return out;
}

const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))] : undefined; };

if (Number(opt.warmup) > 0) await load(performance.now() + Number(opt.warmup) * 1000);
const cpu0 = process.cpuUsage();
const t0 = performance.now();
const r = await load(t0 + Math.min(60, Number(opt.seconds)) * 1000);
const seconds = (performance.now() - t0) / 1000;
const cu = process.cpuUsage(cpu0);
const bytes = r.uploads * BODY.length;
process.stdout.write(JSON.stringify({
  event: 'done', uploads: r.uploads, bytes, seconds: Number(seconds.toFixed(3)), mb_s: bytes / 1e6 / seconds,
  upload_p50_ms: pct(r.ms, 50), upload_p99_ms: pct(r.ms, 99), errors: r.errors, first_error: r.first_error,
  client_cpu_pct: Math.round(((cu.user + cu.system) / 1e3 / (seconds * 1000)) * 100),
}) + '\n');
agent.destroy();
