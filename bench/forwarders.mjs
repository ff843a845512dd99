// Forwarding library alone: the same minimal forward proxy written with undici, http-proxy and
// node:http, same origin, same wrk load (100-byte responses, 50 connections). Not part of
// `npm run bench`; see docs/benchmarks.md#forwarders.
//   node bench/forwarders.mjs [--seconds 10] [--rounds 3]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { median } from './lib/curl.mjs';
import { cpuMs, freePort, start, waitListening } from './lib/proc.mjs';
import { makeCert, ORIGIN_HOST, ROOT, startOrigin, stop } from './lib/servers.mjs';
import { wrk } from './lib/wrk.mjs';

const { values: opt } = parseArgs({ options: { seconds: { type: 'string', default: '10' }, rounds: { type: 'string', default: '3' } } });
const seconds = Math.min(60, Number(opt.seconds));
const rounds = Math.min(5, Number(opt.rounds));
const STYLES = ['undici', 'http-proxy', 'node-http'];
const dir = mkdtempSync(join(tmpdir(), 'egress-fwd-'));
// Also on Ctrl-C (proc.mjs exits from its signal handler): the origin's private key lives here.
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
try {
  const origin = await startOrigin(dir, await makeCert(dir));
  const url = `http://${ORIGIN_HOST}:${origin.http}/small`;
  const runs = {};
  for (let round = 1; round <= rounds; round++) {
    for (const style of STYLES) {
      const port = await freePort();
      const child = start('node', [join(ROOT, 'bench/minimal-forwarder.mjs'), String(port), style], { stderr: join(dir, `${style}.stderr`) });
      await waitListening('127.0.0.1', port, { child });
      await wrk({ originUrl: url, proxyPort: port, seconds: 3, dir });
      const cpu0 = cpuMs(child.pid);
      const r = await wrk({ originUrl: url, proxyPort: port, seconds, dir });
      const us = ((cpuMs(child.pid) - cpu0) * 1000) / r.requests;
      console.error(`forwarders: ${style} round ${round}: ${Math.round(r.rps)} req/s, p99 ${r.p99_ms} ms, ${Math.round(us)} us CPU/request, ${r.non2xx + r.socket_errors} errors`);
      (runs[style] ??= []).push({ ...r, us });
      await stop(child);
    }
  }
  await stop(origin.child);
  console.log(`\n| forwarder (median of ${rounds} x ${seconds} s) | req/s | p99 ms | CPU us/request | errors |\n|---|---:|---:|---:|---:|`);
  for (const [style, rs] of Object.entries(runs)) {
    const m = (f) => median(rs.map((r) => r[f]));
    console.log(`| ${style} | ${Math.round(m('rps')).toLocaleString('en-US')} | ${m('p99_ms').toFixed(2)} | ${Math.round(m('us'))} | ${rs.reduce((a, r) => a + r.non2xx + r.socket_errors, 0)} |`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
