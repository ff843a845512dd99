// wrk runs and output parsing for the small-request test.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from './proc.mjs';

/** wrk prints latencies as 812.00us / 1.23ms / 1.05s / 1.00m; returns milliseconds. */
export function toMs(text) {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  if (!m) return undefined;
  return Number(m[1]) * { us: 0.001, ms: 1, s: 1000, m: 60_000 }[m[2]];
}

export function parseWrk(out) {
  const num = (re) => { const m = re.exec(out); return m ? Number(m[1]) : 0; };
  const pct = (p) => toMs(new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(out)?.[1] ?? '');
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    rps: num(/^Requests\/sec:\s+([\d.]+)/m),
    requests: num(/^\s+(\d+) requests in/m),
    p50_ms: pct(50),
    p99_ms: pct(99),
    // A proxy answering fast 502s would look great on req/s alone, so errors are always reported.
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/),
    socket_errors: sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
  };
}

/**
 * GET `originUrl` with wrk, directly or through `proxyPort`. Through a proxy the request line must
 * be absolute-form, which wrk only does via a Lua script overriding wrk.path (and Host).
 */
export async function wrk({ originUrl, proxyPort, seconds, conns = 50, threads = 2, dir }) {
  const args = [`-t${threads}`, `-c${conns}`, `-d${seconds}s`, '--latency', '--timeout', '5s'];
  let target = originUrl;
  if (proxyPort) {
    const script = join(dir, `wrk-proxy-${proxyPort}.lua`);
    writeFileSync(script, `wrk.path = "${originUrl}"\nwrk.headers["Host"] = "${new URL(originUrl).host}"\n`);
    args.push('-s', script);
    target = `http://127.0.0.1:${proxyPort}`;
  }
  const r = await run('wrk', [...args, target], { timeoutMs: (seconds + 30) * 1000 });
  if (r.code !== 0) throw new Error(`wrk failed (${r.code}): ${r.stderr || r.stdout}`);
  return { ...parseWrk(r.stdout), raw: r.stdout };
}
