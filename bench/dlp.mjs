// DLP scan throughput: the shipped `default` profile (policies/dlp/default.yaml) over a 64 MiB
// mixed JSON / log / prose body, generated deterministically with a few secrets planted in it.
// Throughput is per core: bytes divided by the CPU time this process spent (user + system),
// so other load on the machine does not count against it. Target: 200 MB/s (10^6 bytes).
//   npm run build && node bench/dlp.mjs [--mib 64] [--runs 5]
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';

const ROOT = resolve(import.meta.dirname, '..');
const { values: opt } = parseArgs({ options: { mib: { type: 'string', default: '64' }, runs: { type: 'string', default: '5' } } });
const SIZE = Number(opt.mib) << 20;
const RUNS = Math.max(1, Number(opt.runs));
const CHUNK = 64 * 1024; // what a socket typically hands over
if (!existsSync(join(ROOT, 'dist/inspection/dlp/scanner.js'))) throw new Error('dist/ missing: run `npm run build` first');
const { loadDlpProfiles } = await import(join(ROOT, 'dist/inspection/dlp/profile.js'));
const { Scanner } = await import(join(ROOT, 'dist/inspection/dlp/scanner.js'));
const { BodyInspector } = await import(join(ROOT, 'dist/inspection/dlp/decode.js'));
const profile = loadDlpProfiles(join(ROOT, 'policies/dlp')).get('default');

// ---- the body -------------------------------------------------------------------------------
let seed = 20240517;
const rnd = (n) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
const pick = (a) => a[rnd(a.length)];
const hex = (n) => { let s = ''; while (s.length < n) s += rnd(0x7fffffff).toString(16).padStart(8, '0'); return s.slice(0, n); };
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const b64 = (n) => { let s = ''; for (let i = 0; i < n; i++) s += B64[rnd(64)]; return s; };
const WORDS = ('the of and to in is that for it as with was on be by this are from at or an have not which ' +
  'order invoice customer account payment shipping delivery product price total status request response ' +
  'service update report team project meeting review data user system error warning release version').split(' ');
const sentence = (n) => { const w = []; for (let i = 0; i < n; i++) w.push(pick(WORDS)); w[0] = w[0][0].toUpperCase() + w[0].slice(1); return `${w.join(' ')}.`; };
const CITIES = ['Paris', 'Berlin', 'New York', 'São Paulo', 'Tokyo', 'Lagos', 'Zürich'];
function record(i) {
  const o = {
    id: 100000 + i, uuid: `${hex(8)}-${hex(4)}-${hex(4)}-${hex(4)}-${hex(12)}`,
    created_at: new Date(1_700_000_000_000 + i * 997).toISOString(), updated_ms: 1_700_000_000_000 + i * 1013,
    customer: { name: `Customer ${i}`, email: `customer${i % 5000}@example.com`, phone: `+1 415 555 ${String(1000 + (i % 9000))}`, city: pick(CITIES) },
    items: Array.from({ length: 1 + rnd(3) }, (_, k) => ({ sku: `SKU-${rnd(99999)}`, qty: 1 + rnd(5), price: rnd(100000) / 100, line: k })),
    total: rnd(1_000_000) / 100, currency: pick(['EUR', 'USD', 'GBP']), status: pick(['paid', 'pending', 'shipped', 'refunded']),
    etag: hex(40), note: sentence(6 + rnd(10)),
  };
  if (i % 40 === 0) o.attachment = b64(200 + rnd(800));
  return JSON.stringify(o);
}
const logLine = (i) => `${new Date(1_700_000_000_000 + i * 37).toISOString()} ${pick(['INFO', 'INFO', 'WARN', 'DEBUG'])} [req-${hex(12)}] ${pick(['GET', 'POST', 'PUT'])} /api/v1/orders/${100000 + rnd(900000)} ${pick([200, 200, 201, 404, 500])} ${rnd(900)}ms ua="Mozilla/5.0" ip=10.${rnd(255)}.${rnd(255)}.${rnd(255)}`;
// Secrets planted across the body: cards, a key pair, a token, a private key, an IBAN, a JWT.
const SECRETS = [
  'card 4111 1111 1111 1111', 'card 5555555555554444', 'aws_access_key_id=AKIAIOSFODNN7EXAMPLE',
  'aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', 'token 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',
  '-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n-----END RSA PRIVATE KEY-----',
  'IBAN DE89 3704 0044 0532 0130 00', 'ssn 536-22-1234',
  'Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U',
];
function makeBody() {
  const parts = [];
  let n = 0;
  let i = 0;
  const every = Math.floor(SIZE / (SECRETS.length + 1));
  let next = every;
  while (n < SIZE) {
    const kind = i % 10;
    let s = kind < 6 ? record(i) : kind < 9 ? logLine(i) : Array.from({ length: 4 }, () => sentence(8 + rnd(12))).join(' ');
    if (n >= next && next / every <= SECRETS.length) { s += `\n${SECRETS[next / every - 1]}`; next += every; }
    s += '\n';
    parts.push(s);
    n += Buffer.byteLength(s);
    i++;
  }
  return Buffer.from(parts.join('')).subarray(0, SIZE);
}
const body = makeBody();
const gz = gzipSync(body, { level: 6 });

// ---- measurement ----------------------------------------------------------------------------
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
  const median = mbs[Math.floor(mbs.length / 2)];
  const v = res[0].verdict;
  const found = Object.fromEntries(v.findings.map((f) => [f.detector, f.count]));
  return { label, median_mb_s_per_core: Math.round(median), best_mb_s_per_core: Math.round(mbs[mbs.length - 1]), worst_mb_s_per_core: Math.round(mbs[0]),
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

const results = [
  await measure('Scanner, default profile', scanner),
  await measure('BodyInspector, text/plain', inspector('text/plain', false)),
  await measure('BodyInspector, application/json (unescaping)', inspector('application/json', false)),
  await measure('BodyInspector, gzip Content-Encoding (decompression included)', inspector('application/json', true)),
];
const result = {
  machine: { cpu: cpus()[0]?.model, cores: cpus().length, node: process.version },
  body_mib: SIZE / 1048576, gzip_mib: Number((gz.length / 1048576).toFixed(1)), planted_secrets: SECRETS.length, runs: RUNS, results,
};
console.log(JSON.stringify(result, null, 2));
const main = results[0].median_mb_s_per_core;
console.log(`${main >= 200 ? 'PASS' : 'MISS'}  default profile: ${main} MB/s per core (median of ${RUNS}; target >= 200 MB/s) on ${SIZE >> 20} MiB of mixed JSON/text`);
mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(join(ROOT, 'bench/results/dlp.json'), JSON.stringify(result, null, 2) + '\n');
