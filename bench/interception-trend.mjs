// New-name TLS handshakes over time, Squid ssl-bump then egress-proxy, each from a fresh start:
// Squid's certificate helpers keep every minted leaf in an on-disk database and slow down as it
// fills, so its rate depends on how long it has run. See docs/benchmarks.md "TLS interception".
// Needs root (Squid, DNS stub on :53), like bench/interception.mjs.
//   npm run build && node bench/interception-trend.mjs [--windows 8] [--seconds 5] [--concurrency 20]
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startBumpingSquid, startDns, startInterceptingProxy, tlsClient } from './lib/interception.mjs';
import { stop } from './lib/proc.mjs';
import { makeCert, squidVersion, startOrigin } from './lib/servers.mjs';

const { values: opt } = parseArgs({ options: {
  windows: { type: 'string', default: '8' }, seconds: { type: 'string', default: '5' }, concurrency: { type: 'string', default: '20' },
} });
const WINDOWS = Math.min(24, Number(opt.windows));
const SECONDS = Math.min(30, Number(opt.seconds));
const CONC = Math.min(100, Number(opt.concurrency));

const dir = mkdtempSync(join(tmpdir(), 'egress-bench-trend-'));
chmodSync(dir, 0o711); // Squid runs as `proxy` and must reach its files below
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

/** One window of new names through `t`; every name is one no proxy has seen. */
function windowOf(t, origin, w) {
  return tlsClient(dir, { port: origin.https, ca: t.ca, proxy: t }, ['--concurrency', String(CONC), '--mode', 'handshake', '--hosts', 'new',
    '--seconds', String(SECONDS), '--cpu-pid', String(t.child.pid), '--prefix', `${t.name}-w${w}`], SECONDS);
}

const cert = await makeCert(dir, { dnsNames: ['*.bench.test'] });
const origin = await startOrigin(dir, cert);
const dns = await startDns();
const rows = {};
try {
  const starters = [['egress-proxy', () => startInterceptingProxy(join(dir, 'p'), { originCert: cert.cert })]];
  if (await squidVersion()) starters.unshift(['squid', () => startBumpingSquid(dir, { originCert: cert.cert })]);
  else console.error('bench: squid not installed: egress-proxy only');
  for (const [name, startOne] of starters) {
    const t = await startOne();
    try {
      rows[name] = [];
      for (let w = 0; w < WINDOWS; w++) {
        const r = await windowOf(t, origin, w);
        rows[name].push({ per_s: r.per_s, cpu_ms: r.proxy_cpu_ms / r.handshakes, errors: r.errors });
        console.error(`bench: ${name} window ${w + 1}/${WINDOWS}: ${r.per_s.toFixed(0)}/s, ${(r.proxy_cpu_ms / r.handshakes).toFixed(1)} ms CPU each, ${r.errors} errors`);
      }
    } finally {
      await stop(t.child);
    }
  }
} finally {
  await stop(origin.child);
  dns.close();
}
console.log(`\nnew-name handshakes/s (CPU ms each), ${WINDOWS} windows of ${SECONDS} s, c=${CONC}, each proxy from a fresh start`);
for (const [name, list] of Object.entries(rows)) {
  console.log(`${name.padEnd(13)} ${list.map((r) => `${r.per_s.toFixed(0)} (${r.cpu_ms.toFixed(1)})`.padStart(12)).join('')}`);
}
