import type { IncomingMessage, ServerResponse } from 'node:http';
import { unmapV4 } from '../config/fields.js';
import type { ReasonId } from '../errors/reasons.js';
import type { Principal } from '../identity/principal.js';
import type { LiveSnapshot } from '../logging/live-stats.js';
import type { ProxyRuntime } from '../runtime.js';
import { PAGE_CSS, PAGE_HTML, PAGE_ICON, PAGE_JS } from './dashboard-page.js';

/**
 * Where the data route gets its numbers: this process's live view by default. With several
 * workers (or nodes) this is the one function to swap for one that gathers their snapshots and
 * combines them with `mergeSnapshots`.
 */
export type SnapshotSource = (minutes: number) => Promise<LiveSnapshot>;

/** The snapshot of this process only. */
export function localSnapshots(rt: ProxyRuntime): SnapshotSource {
  return (minutes) => Promise.resolve(rt.stats.snapshot(minutes));
}

/** What /ui/data.json answers. */
export interface DashboardData {
  node: string;
  /** Who is looking (the signed-in admin). */
  viewer: string;
  policy: ProxyRuntime['policyStatus'] | null;
  stats: LiveSnapshot;
}

// Scripts, styles and fetches from this origin only; no framing, no inline anything.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
const SECURITY: Readonly<Record<string, string>> = {
  'cache-control': 'no-store', 'x-frame-options': 'DENY', 'x-content-type-options': 'nosniff', 'referrer-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin', 'cross-origin-opener-policy': 'same-origin', 'content-security-policy': CSP,
};

const ASSETS = {
  '/ui': { type: 'text/html; charset=utf-8', body: PAGE_HTML },
  '/ui/': { type: 'text/html; charset=utf-8', body: PAGE_HTML },
  '/ui/app.js': { type: 'text/javascript; charset=utf-8', body: PAGE_JS },
  '/ui/app.css': { type: 'text/css; charset=utf-8', body: PAGE_CSS },
  '/ui/favicon.svg': { type: 'image/svg+xml', body: PAGE_ICON },
} as const satisfies Record<string, { type: string; body: string }>;

const escape = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function send(req: IncomingMessage, res: ServerResponse, status: number, type: string, body: string, extra: Record<string, string> = {}): void {
  for (const [k, v] of Object.entries({ ...SECURITY, ...extra, 'content-type': type, 'content-length': String(Buffer.byteLength(body)) })) res.setHeader(k, v);
  res.writeHead(status);
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** A refusal: an HTML page for the page itself, JSON `{error, message}` for the other routes; the reason also in X-Egress-Reason. */
function refuse(req: IncomingMessage, res: ServerResponse, html: boolean, status: number, reason: ReasonId, text: string, detail = ''): void {
  const headers = { 'x-egress-reason': reason };
  if (!html) return send(req, res, status, 'application/json', JSON.stringify({ error: reason, message: text }) + '\n', headers);
  const page = '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>egress-proxy dashboard: not allowed</title></head><body>' +
    `<h1>Not allowed</h1><p id="message">${escape(text)}</p>${detail}<p>Reason: <code id="reason">${reason}</code></p></body></html>`;
  send(req, res, status, 'text/html; charset=utf-8', page, headers);
}

/**
 * The admin dashboard at /ui on the admin listener: a page, its script and style, and the JSON
 * it polls. Only for signed-in members of `dashboard.admin_groups`: others are sent to sign in
 * (the page) or refused (everything else). Never throws.
 */
export function createDashboard(rt: ProxyRuntime, o: { snapshot?: SnapshotSource } = {}): (req: IncomingMessage, res: ServerResponse) => void {
  const snapshot = o.snapshot ?? localSnapshots(rt);
  const admins = new Set(rt.config.dashboard.admin_groups);
  const isAdmin = (p: Principal): boolean => p.groups.some((g) => admins.has(g));

  const serve = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://admin.invalid');
    const path = url.pathname;
    const isPage = path === '/ui' || path === '/ui/';
    if (req.method !== 'GET' && req.method !== 'HEAD') return refuse(req, res, false, 405, 'method_not_allowed', 'The dashboard only reads.');
    if (!(path in ASSETS) && path !== '/ui/data.json') return send(req, res, 404, 'text/plain; charset=utf-8', 'not found\n');
    const portal = rt.identity.portal;
    if (portal?.principal === undefined) {
      return refuse(req, res, isPage, 403, 'admin_required',
        'The dashboard needs browser sign-in, which is not configured on this proxy: set identity.issuer and identity.sign_in (see docs/identity-sign-in.md), or start it in dev mode.');
    }
    const p = portal.principal(req);
    if (!p) {
      if (isPage) {
        const base = portal.url ?? `http://${rt.config.admin}`;
        res.writeHead(302, { ...SECURITY, location: `${base}/auth/login?rd=${encodeURIComponent(`${base}/ui`)}`, 'content-length': 0 });
        res.end();
        return;
      }
      return refuse(req, res, false, 403, 'auth_required', 'Sign in at /auth/login first.');
    }
    if (!isAdmin(p)) {
      rt.logger.log.info({ event: 'dashboard_refused', reason: 'admin_required', user: p.user, client_ip: ip(req) }, 'dashboard refused: not in an admin group');
      return refuse(req, res, isPage, 403, 'admin_required', 'The dashboard is for members of an admin group (dashboard.admin_groups), and you are in none of them.',
        `<p>Signed in as <b id="user">${escape(p.user ?? p.email ?? '')}</b>. <a href="/auth/">Sign in as someone else</a></p>`);
    }
    if (path !== '/ui/data.json') {
      const a = ASSETS[path as keyof typeof ASSETS];
      return send(req, res, 200, a.type, a.body);
    }
    const m = Number(url.searchParams.get('minutes') ?? '10');
    const data: DashboardData = {
      node: rt.config.node_id,
      viewer: p.user ?? p.email ?? '',
      policy: rt.policyStatus ?? null,
      stats: await snapshot(Number.isInteger(m) && m >= 1 && m <= 60 ? m : 10),
    };
    send(req, res, 200, 'application/json', JSON.stringify(data));
  };

  return (req, res) => {
    serve(req, res).catch((err: unknown) => {
      rt.logger.log.error({ err, event: 'dashboard_failed' }, 'the dashboard failed to answer');
      if (res.headersSent) res.destroy();
      else refuse(req, res, false, 500, 'internal_error', 'The dashboard failed; the error is in the proxy log.');
    });
  };
}

function ip(req: IncomingMessage): string | undefined {
  const a = req.socket.remoteAddress;
  return a === undefined ? undefined : unmapV4(a);
}
