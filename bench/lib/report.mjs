// The comparison table and the targets.
import { median } from './curl.mjs';

export const fmt = (v, digits = 0) => (v === undefined || v === null || Number.isNaN(v) ? '-' : v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }));
export const ratio = (a, b) => (a != null && b ? a / b : undefined);
const MiB = (kb) => (kb == null ? undefined : kb / 1024);

/** Rows of [label, direct, squid, proxy, digits]; ratios are computed from them. */
export function rows(r) {
  const s = r.small ?? {};
  const m = r.memory ?? {};
  return [
    ['small 100 B req/s (c=50)', s.direct?.rps, s.squid?.rps, s.proxy?.rps, 0],
    ['small p99 latency ms', s.direct?.p99_ms, s.squid?.p99_ms, s.proxy?.p99_ms, 2],
    ['small p50 latency ms', s.direct?.p50_ms, s.squid?.p50_ms, s.proxy?.p50_ms, 2],
    ['small: proxy process CPU % (1 core = 100)', undefined, s.squid?.proxy_cpu_pct, s.proxy?.proxy_cpu_pct, 0],
    ['small: proxy CPU us per request', undefined, s.squid?.proxy_cpu_us_per_req, s.proxy?.proxy_cpu_us_per_req, 0],
    ['CONNECT 64 MiB MB/s', r.connect?.direct?.mbps, r.connect?.squid?.mbps, r.connect?.proxy?.mbps, 0],
    ['plain HTTP 64 MiB MB/s', r.plain?.direct?.mbps, r.plain?.squid?.mbps, r.plain?.proxy?.mbps, 0],
    ['CONNECT: proxy CPU ms per 64 MiB', undefined, r.connect?.squid?.proxy_cpu_ms_per_download, r.connect?.proxy?.proxy_cpu_ms_per_download, 0],
    ['plain: proxy CPU ms per 64 MiB', undefined, r.plain?.squid?.proxy_cpu_ms_per_download, r.plain?.proxy?.proxy_cpu_ms_per_download, 0],
    [`KB per idle tunnel (${m.proxy?.tunnels ?? m.squid?.tunnels ?? '-'} held)`, undefined, m.squid?.kb_per_tunnel, m.proxy?.kb_per_tunnel, 1],
    ['RSS idle at start MiB', undefined, MiB(r.rss?.squid?.start_kb), MiB(r.rss?.proxy?.start_kb), 1],
    ['RSS with tunnels MiB', undefined, MiB(m.squid?.rss_with_kb), MiB(m.proxy?.rss_with_kb), 1],
    ['RSS after tunnels closed MiB', undefined, MiB(m.squid?.rss_after_close_kb), MiB(m.proxy?.rss_after_close_kb), 1],
    ['RSS after all load MiB', undefined, MiB(r.rss?.squid?.end_kb), MiB(r.rss?.proxy?.end_kb), 1],
  ];
}

/** `list` defaults to the main bench's rows; other benches pass their own [label, direct, squid, proxy, digits]. */
export function table(r, list = rows(r)) {
  const head = ['', 'direct', 'squid', 'egress-proxy', 'proxy/direct', 'proxy/squid', 'squid/direct'];
  const body = list.map(([label, d, sq, p, digits]) => [label, fmt(d, digits), fmt(sq, digits), fmt(p, digits),
    fmt(ratio(p, d), 2), fmt(ratio(p, sq), 2), fmt(ratio(sq, d), 2)]);
  const widths = head.map((_, i) => Math.max(...[head, ...body].map((row) => row[i].length)));
  const line = (row) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(head), ...body.map(line)].join('\n');
}

/** Same table as Markdown, for docs/benchmarks.md. */
export function markdown(r, list = rows(r)) {
  const head = ['', 'direct', 'Squid', 'egress-proxy', 'proxy/direct', 'proxy/Squid', 'Squid/direct'];
  const body = list.map(([label, d, sq, p, digits]) => [label, fmt(d, digits), fmt(sq, digits), fmt(p, digits),
    fmt(ratio(p, d), 2), fmt(ratio(p, sq), 2), fmt(ratio(sq, d), 2)]);
  return [head, head.map((_, i) => (i === 0 ? '---' : '---:')), ...body].map((row) => `| ${row.join(' | ')} |`).join('\n');
}

/** The targets: value, goal, and PASS / MISS (or n/a when a part was skipped). */
export function targets(r) {
  const s = r.small ?? {};
  const check = (name, value, goal, ok) => ({ name, value, goal, status: value == null ? 'n/a' : ok ? 'PASS' : 'MISS' });
  const rpsRatio = ratio(s.proxy?.rps, s.squid?.rps);
  const connect = ratio(r.connect?.proxy?.mbps, r.connect?.direct?.mbps);
  const plain = ratio(r.plain?.proxy?.mbps, r.plain?.direct?.mbps);
  const kb = r.memory?.proxy?.kb_per_tunnel;
  const end = r.ran_load ? MiB(r.rss?.proxy?.end_kb) : undefined;
  return [
    check('small req/s >= 1.5x Squid', rpsRatio && `${fmt(rpsRatio, 2)}x`, '>= 1.5x', rpsRatio >= 1.5),
    check('small p99 <= Squid p99', s.proxy?.p99_ms != null && s.squid?.p99_ms != null ? `${fmt(s.proxy.p99_ms, 2)} ms vs ${fmt(s.squid.p99_ms, 2)} ms` : undefined,
      '<= Squid', s.proxy?.p99_ms <= s.squid?.p99_ms),
    check('CONNECT 64 MiB >= 0.9x direct', connect && `${fmt(connect, 2)}x`, '>= 0.9x', connect >= 0.9),
    check('plain HTTP 64 MiB >= 0.5x direct', plain && `${fmt(plain, 2)}x`, '>= 0.5x', plain >= 0.5),
    check(`<= 30 KB per idle tunnel (${r.memory?.proxy?.tunnels ?? '-'} held)`, kb != null ? `${fmt(kb, 1)} KB` : undefined, '<= 30 KB', kb <= 30),
    check('RSS after the load <= 80 MiB', end != null ? `${fmt(end, 1)} MiB` : undefined, '<= 80 MiB', end <= 80),
  ];
}

export function targetLines(list) {
  const w = Math.max(...list.map((t) => t.name.length));
  return list.map((t) => `  ${t.status.padEnd(4)}  ${t.name.padEnd(w)}  ${t.value ?? '(not measured)'}`).join('\n');
}

/**
 * A 95% interval for the median of `values` (bootstrap, 2,000 resamples, a fixed seed so the
 * same rounds always give the same interval): how far a run's rounds let its median be trusted.
 */
export function medianInterval(values) {
  let seed = 0x2545f491;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const meds = [];
  for (let i = 0; i < 2000; i++) meds.push(median(Array.from(values, () => values[Math.floor(rand() * values.length)])));
  meds.sort((a, b) => a - b);
  return [meds[50], meds[1949]];
}
