/**
 * The dashboard's static assets: one HTML page, its style sheet and its script. Nothing inline
 * (the CSP allows scripts and styles from this origin only) and nothing fetched from elsewhere.
 * The script builds every element with createElement / createElementNS and fills it with
 * textContent: names from traffic (hosts, users, rules) never go through an HTML parser.
 */

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>egress-proxy dashboard</title>
<link rel="icon" href="/ui/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/ui/app.css">
<script src="/ui/app.js" defer></script>
</head>
<body>
<header>
  <h1>egress-proxy</h1>
  <span class="meta">node <b id="node">…</b></span>
  <span class="meta">policy <b id="policy-version">…</b></span>
  <label class="meta">window <select id="minutes">
    <option value="1">1 min</option><option value="5">5 min</option><option value="10" selected>10 min</option>
  </select></label>
  <span class="meta" id="updated">loading…</span>
  <span class="spacer"></span>
  <span class="meta">signed in as <b id="viewer"></b> · <a href="/auth/">account</a></span>
</header>
<div id="problem" class="banner" hidden></div>
<main>
  <section class="card wide">
    <h2>Requests per second <small>(last 10 minutes)</small></h2>
    <div class="legend"><span class="key total">all</span><span class="key deny">denied</span><span class="key error">errors</span></div>
    <svg id="rps-chart" class="chart" viewBox="0 0 640 180" role="img" aria-label="requests per second"></svg>
    <p id="totals" class="totals"></p>
  </section>
  <section class="card">
    <h2>Top users and workloads</h2>
    <svg id="top-users" class="bars" role="img" aria-label="top users"></svg>
  </section>
  <section class="card">
    <h2>Top destinations</h2>
    <svg id="top-hosts" class="bars" role="img" aria-label="top destinations"></svg>
  </section>
  <section class="card wide">
    <h2>Recent denies</h2>
    <div class="scroll"><table id="denies"><thead><tr><th>time</th><th>user</th><th>destination</th><th>reason</th><th>rule</th><th>status</th></tr></thead><tbody></tbody></table></div>
  </section>
  <section class="card wide">
    <h2>DLP incidents</h2>
    <div class="scroll"><table id="incidents"><thead><tr><th>time</th><th>user</th><th>destination</th><th>incident</th><th>reason</th><th>findings (masked)</th></tr></thead><tbody></tbody></table></div>
  </section>
  <section class="card">
    <h2>Egress health</h2>
    <table id="nodes"><thead><tr><th>node</th><th>pid</th><th>active</th><th>requests</th><th>upstream / DNS errors</th></tr></thead><tbody></tbody></table>
    <h3>Upstream and DNS errors per minute</h3>
    <svg id="upstream-chart" class="chart small" viewBox="0 0 640 60" role="img" aria-label="upstream errors per minute"></svg>
  </section>
  <section class="card">
    <h2>Policy</h2>
    <dl class="policy">
      <dt>version</dt><dd id="policy-version-full"></dd>
      <dt>loaded</dt><dd id="policy-loaded"></dd>
      <dt>rules</dt><dd id="policy-rules"></dd>
      <dt>files</dt><dd id="policy-files"></dd>
    </dl>
    <div id="policy-errors-box" hidden>
      <p class="bad">The last reload failed (<span id="policy-attempt"></span>); the policy above stays in force:</p>
      <ul id="policy-errors"></ul>
    </div>
  </section>
</main>
</body>
</html>
`;

/** A small icon, so browsers do not ask the admin listener for /favicon.ico. */
export const PAGE_ICON = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#111827"/>' +
  '<path d="M3 12 L6 7 L9 9 L13 4" fill="none" stroke="#60a5fa" stroke-width="2"/></svg>';

export const PAGE_CSS = `
:root { --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --total: #2563eb; --deny: #d97706; --error: #dc2626; --bar: #60a5fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: #f9fafb; }
header { display: flex; flex-wrap: wrap; gap: 1em; align-items: baseline; padding: .6em 1.2em; background: #111827; color: #f9fafb; }
header h1 { font-size: 1.1em; margin: 0; }
header a { color: #93c5fd; }
.meta { color: #d1d5db; }
.meta b { color: #f9fafb; font-weight: 600; }
.spacer { flex: 1; }
.banner { margin: 1em 1.2em 0; padding: .6em 1em; border-radius: 6px; background: #fee2e2; color: #7f1d1d; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 1em; padding: 1em 1.2em; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: .8em 1em; min-width: 0; }
.card.wide { grid-column: 1 / -1; }
h2 { font-size: 1em; margin: 0 0 .5em; }
h2 small { color: var(--muted); font-weight: normal; }
h3 { font-size: .9em; margin: 1em 0 .3em; color: var(--muted); }
.chart { width: 100%; height: 180px; display: block; }
.chart.small { height: 60px; }
.grid { stroke: var(--line); stroke-width: 1; }
.axis { fill: var(--muted); font-size: 11px; }
.line { fill: none; stroke-width: 1.5; vector-effect: non-scaling-stroke; }
.line.total { stroke: var(--total); }
.line.deny { stroke: var(--deny); }
.line.error { stroke: var(--error); }
.legend { color: var(--muted); font-size: .85em; }
.key { margin-right: 1em; }
.key::before { content: ""; display: inline-block; width: 1.2em; height: 3px; margin-right: .3em; vertical-align: middle; }
.key.total::before { background: var(--total); }
.key.deny::before { background: var(--deny); }
.key.error::before { background: var(--error); }
.scroll { max-height: 24em; overflow-y: auto; }
.totals { color: var(--muted); margin: .3em 0 0; }
.bars { width: 100%; display: block; }
.bars rect { fill: var(--bar); }
.bars .other rect { fill: #d1d5db; }
.bars text { font-size: 12px; fill: var(--fg); }
.bars .other text.label { fill: var(--muted); font-style: italic; }
.upstream-bar { fill: var(--error); }
.empty { fill: var(--muted); font-size: 12px; }
table { width: 100%; border-collapse: collapse; font-size: .9em; }
th, td { text-align: left; padding: .25em .5em; border-bottom: 1px solid var(--line); overflow-wrap: anywhere; }
th { color: var(--muted); font-weight: 600; }
code { font-size: .95em; background: #f3f4f6; padding: 0 .25em; border-radius: 3px; }
td.none { color: var(--muted); font-style: italic; }
dl.policy { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; margin: 0; }
dl.policy dt { color: var(--muted); }
dl.policy dd { margin: 0; overflow-wrap: anywhere; }
.bad { color: var(--error); }
`;

/** The page script: polls /ui/data.json and redraws; every value from traffic is set as text. */
export const PAGE_JS = String.raw`'use strict';
(() => {
  const SVG = 'http://www.w3.org/2000/svg';
  const REFRESH_MS = 4000;
  const $ = (id) => document.getElementById(id);
  const clear = (n) => { while (n.firstChild) n.removeChild(n.firstChild); };
  const html = (tag, text, cls) => {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  };
  const svg = (tag, attrs, text) => {
    const e = document.createElementNS(SVG, tag);
    for (const k of Object.keys(attrs || {})) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = String(text);
    return e;
  };
  const short = (s, n) => (s.length > n ? s.slice(0, n - 1) + '…' : s);
  const time = (ms) => new Date(ms).toLocaleTimeString();
  // Drawn at the element's own width, so text is never stretched.
  const widthOf = (box, min) => Math.max(min, Math.round(box.getBoundingClientRect().width) || 640);

  function drawRps(rps) {
    const box = $('rps-chart');
    clear(box);
    const W = widthOf(box, 320), H = 180, L = 40, T = 8, B = 20;
    box.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    const n = rps.allow.length;
    const total = rps.allow.map((v, i) => v + rps.deny[i] + rps.error[i]);
    const peak = total.reduce((a, b) => Math.max(a, b), 0);
    const max = Math.max(1, peak);
    box.setAttribute('data-max', String(peak));
    for (let g = 0; g <= 4; g++) {
      const y = T + (H - T - B) * g / 4;
      box.appendChild(svg('line', { x1: L, x2: W, y1: y, y2: y, class: 'grid' }));
      box.appendChild(svg('text', { x: L - 4, y: y + 4, 'text-anchor': 'end', class: 'axis' }, Math.round(max * (4 - g) / 4 * 10) / 10));
    }
    box.appendChild(svg('text', { x: L, y: H - 4, class: 'axis' }, '-10 min'));
    box.appendChild(svg('text', { x: W, y: H - 4, 'text-anchor': 'end', class: 'axis' }, 'now'));
    const line = (vals, cls) => {
      let d = '';
      for (let i = 0; i < n; i++) {
        const x = L + (W - L) * i / (n - 1);
        const y = T + (H - T - B) * (1 - vals[i] / max);
        d += (i === 0 ? 'M' : 'L') + x.toFixed(1) + ',' + y.toFixed(1);
      }
      box.appendChild(svg('path', { d, class: 'line ' + cls, id: 'rps-' + cls }));
    };
    line(total, 'total');
    line(rps.deny, 'deny');
    line(rps.error, 'error');
  }

  function drawBars(id, list) {
    const box = $(id);
    clear(box);
    const rows = list.items.map((it) => ({ name: it[0], count: it[1], other: false }));
    if (list.other > 0) rows.push({ name: '(other)', count: list.other, other: true });
    const W = widthOf(box, 320), ROW = 22, COUNT = 60;
    const LABEL = Math.min(230, Math.round(W * 0.4));
    const h = Math.max(ROW, rows.length * ROW);
    box.setAttribute('viewBox', '0 0 ' + W + ' ' + h);
    box.style.height = h + 'px';
    if (rows.length === 0) {
      box.appendChild(svg('text', { x: 4, y: 15, class: 'empty' }, 'no traffic in this window'));
      return;
    }
    const max = rows.reduce((a, r) => Math.max(a, r.count), 1);
    rows.forEach((r, i) => {
      const g = svg('g', { transform: 'translate(0,' + i * ROW + ')', class: r.other ? 'row other' : 'row', 'data-name': r.name, 'data-count': r.count });
      g.appendChild(svg('title', {}, r.name + ': ' + r.count));
      g.appendChild(svg('text', { x: LABEL - 6, y: 15, 'text-anchor': 'end', class: 'label' }, short(r.name, Math.floor(LABEL / 7))));
      const w = Math.max(2, (W - LABEL - COUNT) * r.count / max);
      g.appendChild(svg('rect', { x: LABEL, y: 3, width: w.toFixed(1), height: ROW - 6, rx: 2 }));
      g.appendChild(svg('text', { x: LABEL + w + 4, y: 15, class: 'count' }, r.count));
      box.appendChild(g);
    });
  }

  function fillTable(id, rows, cells) {
    const body = $(id).tBodies[0];
    clear(body);
    if (rows.length === 0) {
      const tr = html('tr');
      const td = html('td', 'none yet', 'none');
      td.colSpan = $(id).tHead.rows[0].cells.length;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    for (const r of rows) {
      const tr = html('tr');
      for (const c of cells(r)) {
        const td = html('td');
        if (c && typeof c === 'object') td.appendChild(c);
        else td.textContent = c === undefined || c === null ? '' : String(c);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  function drawUpstream(perMinute) {
    const box = $('upstream-chart');
    clear(box);
    const W = widthOf(box, 200), H = 60, n = perMinute.length;
    box.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    const max = perMinute.reduce((a, b) => Math.max(a, b), 0);
    if (max === 0) {
      box.appendChild(svg('text', { x: 4, y: 34, class: 'empty' }, 'no upstream or DNS errors'));
      return;
    }
    const bw = W / n;
    perMinute.forEach((v, i) => {
      const h = (H - 4) * v / max;
      const r = svg('rect', { x: (i * bw + 1).toFixed(1), y: (H - h).toFixed(1), width: Math.max(1, bw - 2).toFixed(1), height: h.toFixed(1), class: 'upstream-bar' });
      r.appendChild(svg('title', {}, v + ' errors'));
      box.appendChild(r);
    });
  }

  let last;
  function render(d) {
    last = d;
    const s = d.stats;
    $('node').textContent = d.node;
    $('viewer').textContent = d.viewer;
    const p = d.policy || {};
    $('policy-version').textContent = p.version ? short(p.version, 12) : 'unknown';
    $('policy-version-full').textContent = p.version || 'unknown';
    $('policy-loaded').textContent = p.loaded_at || '';
    $('policy-rules').textContent = p.rules === undefined ? '' : String(p.rules);
    $('policy-files').textContent = (p.files || []).join(', ');
    const errors = p.errors || [];
    $('policy-errors-box').hidden = errors.length === 0;
    $('policy-attempt').textContent = p.last_attempt_at || '';
    const ul = $('policy-errors');
    clear(ul);
    for (const e of errors) ul.appendChild(html('li', e));
    drawRps(s.rps);
    $('totals').textContent = 'In the last ' + s.minutes + ' min: ' + s.totals.allow + ' allowed, ' + s.totals.deny + ' denied, ' + s.totals.error + ' errors.';
    drawBars('top-users', s.top_users);
    drawBars('top-hosts', s.top_hosts);
    fillTable('denies', s.recent_denies, (r) => [time(r.t), r.user, r.host, html('code', r.reason), r.rule, r.status]);
    fillTable('incidents', s.recent_incidents, (r) => [time(r.t), r.user, r.host, html('code', r.incident), html('code', r.reason), r.dlp]);
    fillTable('nodes', s.nodes, (r) => {
      const errs = Object.keys(r.upstream_errors).sort().map((k) => k + ': ' + r.upstream_errors[k]);
      return [r.node, r.pid, r.active, r.requests, errs.length === 0 ? 'none' : errs.join(', ')];
    });
    drawUpstream(s.upstream_per_minute);
    $('updated').textContent = 'updated ' + time(s.at);
    $('problem').hidden = true;
    document.body.setAttribute('data-loaded', String(s.at));
  }

  function problem(text, link) {
    const box = $('problem');
    clear(box);
    box.appendChild(document.createTextNode(text + ' '));
    if (link) {
      const a = html('a', 'Sign in again');
      a.href = '/auth/login?rd=' + encodeURIComponent(location.origin + '/ui');
      box.appendChild(a);
    }
    box.hidden = false;
  }

  let busy = false;
  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const r = await fetch('/ui/data.json?minutes=' + encodeURIComponent($('minutes').value), { cache: 'no-store', credentials: 'same-origin' });
      if (r.ok) render(await r.json());
      else {
        const reason = r.headers.get('x-egress-reason') || String(r.status);
        problem('Cannot refresh (' + reason + ').', reason === 'auth_required');
      }
    } catch (e) {
      problem('Cannot reach the proxy: ' + (e && e.message ? e.message : String(e)), false);
    } finally {
      busy = false;
    }
  }

  $('minutes').addEventListener('change', () => void refresh());
  window.addEventListener('resize', () => { if (last) render(last); });
  void refresh();
  setInterval(() => { if (!document.hidden) void refresh(); }, REFRESH_MS);
})();
`;
