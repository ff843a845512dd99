// Summarizes a V8 .cpuprofile: top self-time functions, and self/inclusive time per module.
//   node bench/lib/cpuprofile.mjs file.cpuprofile [top]
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

/** Which package or area a frame belongs to (inclusive time per area answers "how much is pino?"). */
function area(url, name) {
  if (!url) return name.startsWith('(') ? name : '(native)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1];
  if (url.startsWith('node:')) return url.replace(/^node:(internal\/)?/, 'node:').replace(/\/.*$/, '');
  const d = /\/dist\/(.*)$/.exec(url);
  return d ? `dist/${d[1]}` : url;
}

export function summarize(file, top = 25) {
  const p = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map();
  const areaSelf = new Map();
  const areaIncl = new Map();
  let total = 0;
  let idle = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = (p.timeDeltas[i + 1] ?? 0) / 1000; // ms attributed to sample i
    const n = byId.get(p.samples[i]);
    const { functionName, url, lineNumber } = n.callFrame;
    total += dt;
    if (functionName === '(idle)') { idle += dt; continue; }
    const short = url ? url.replace(/^.*\/(node_modules|dist)\//, '$1/').replace(/^file:\/\//, '') : '';
    const key = `${functionName || '(anonymous)'} ${short ? `${short}:${lineNumber + 1}` : ''}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
    const a = area(url, functionName);
    areaSelf.set(a, (areaSelf.get(a) ?? 0) + dt);
    const seen = new Set();
    for (let id = n.id; id !== undefined; id = parent.get(id)) {
      const f = byId.get(id).callFrame;
      if (f.functionName === '(root)') continue;
      seen.add(area(f.url, f.functionName));
    }
    for (const s of seen) areaIncl.set(s, (areaIncl.get(s) ?? 0) + dt);
  }
  const busy = total - idle;
  const pct = (ms) => `${((100 * ms) / busy).toFixed(1)}%`.padStart(6);
  const sorted = (m) => [...m].sort((a, b) => b[1] - a[1]);
  const out = [`profile ${file}`, `  ${(total / 1000).toFixed(1)} s sampled, ${(busy / 1000).toFixed(1)} s busy (percentages of busy time)`, '', '  top self time:'];
  for (const [k, ms] of sorted(self).slice(0, top)) out.push(`  ${pct(ms)}  ${ms.toFixed(0).padStart(6)} ms  ${k}`);
  out.push('', '  by module:      self   inclusive');
  for (const [a, ms] of sorted(areaSelf).slice(0, 20)) out.push(`  ${pct(ms)}  ${pct(areaIncl.get(a) ?? ms)}  ${a}`);
  out.push('', '  largest inclusive (stack contains):');
  for (const [a, ms] of sorted(areaIncl).slice(0, 15)) out.push(`  ${pct(ms)}  ${a}`);
  return out.join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(summarize(process.argv[2], Number(process.argv[3] ?? 25)));
}
