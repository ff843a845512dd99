// 64 MiB downloads with curl: direct, or through a proxy (https => CONNECT, http => absolute-form GET).
import { run } from './proc.mjs';

const SIZE = 64 * 1024 * 1024;

/** One 64 MiB download; throws unless it was a complete 200. */
export async function download({ url, proxyPort, cacert }) {
  const args = ['-s', '-o', '/dev/null', '--max-time', '60', '-w', '%{http_code} %{size_download} %{time_total} %{speed_download}'];
  if (cacert) args.push('--cacert', cacert);
  args.push(...(proxyPort ? ['-x', `http://127.0.0.1:${proxyPort}`] : ['--noproxy', '*']), url);
  const r = await run('curl', args, { timeoutMs: 70_000 });
  const [code, size, seconds, speed] = r.stdout.trim().split(' ').map(Number);
  if (r.code !== 0 || code !== 200 || size !== SIZE) {
    throw new Error(`curl ${url}${proxyPort ? ` via :${proxyPort}` : ''}: exit ${r.code}, HTTP ${code}, ${size} bytes ${r.stderr}`);
  }
  return { seconds, mbps: speed / 1e6 };
}

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Measured downloads per target (after one unmeasured warm-up each). */
export const DOWNLOADS = 5;

/** Median MB/s (10^6 bytes per second) and seconds of a list of downloads. */
export function summarizeDownloads(list) {
  return { mbps: median(list.map((r) => r.mbps)), seconds: median(list.map((r) => r.seconds)), runs: list.map((r) => Math.round(r.mbps)) };
}
