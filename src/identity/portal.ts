import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  authorizationCodeGrant, buildAuthorizationUrl, buildEndSessionUrl, calculatePKCECodeChallenge, randomNonce,
  randomPKCECodeVerifier, randomState, type Configuration,
} from 'openid-client';
import type { Logger } from 'pino';
import { unmapV4 } from '../config/fields.js';
import { kIntercepted, type InterceptedTunnel } from '../inspection/intercept.js';
import { PROBE_HOST } from '../listeners/probe.js';
import { parseAbsoluteTarget } from '../listeners/target.js';
import { deviceOf, SESSION_HANDOFF_PATH } from './authenticate.js';
import type { ReasonId } from '../errors/reasons.js';
import type { Principal } from './principal.js';
import type { GroupsRefresher } from './refresh.js';
import { AUTH_COOKIE, readCookie, readSessionClaims, SESSION_COOKIE, siteKey, type ClaimNames, type SessionClaims, type SessionStore } from './sessions.js';

/** Reasons the portal answers with (header X-Egress-Reason and the portal's log lines). */
export type PortalReason = Extract<ReasonId,
  | 'signin_not_started' | 'signin_state_mismatch' | 'signin_refused' | 'signin_failed' | 'signin_claims'
  | 'signout_csrf' | 'identity_unavailable' | 'bad_request' | 'method_not_allowed'>;

const AUTH_TTL_S = 600;
const MAX_RD = 2048;
/** Leaves room for the cookie's name and attributes within the 4 KiB browsers keep. */
const MAX_SESSION_COOKIE = 3800;
/** A site cookie also names its site; past this, browsers may drop it. */
const MAX_SITE_COOKIE = 4000;
/** The bind step's tickets are for the proxy's own name, as reached through the proxy. */
const BIND_SITE = siteKey(PROBE_HOST, 80);

/** Where the portal sends a browser after sign-in so the proxy binds the session to what it sees. */
export function bindUrl(ticket: string): string {
  return `http://${PROBE_HOST}${SESSION_HANDOFF_PATH}?ticket=${ticket}`;
}

/**
 * Where to send the browser after sign-in: an absolute http(s) URL without credentials, at most
 * 2 KiB; anything else (javascript:, //host, relative paths, control characters) gets `fallback`.
 * Any http(s) destination is a legitimate return target: this is a forward proxy.
 */
export function safeReturnTo(rd: string | null | undefined, fallback: string): string {
  if (!rd || rd.length > MAX_RD || !/^https?:\/\/[^/\\]/i.test(rd) || /[\u0000-\u0020\u007f\\]/.test(rd)) return fallback;
  let u: URL;
  try {
    u = new URL(rd);
  } catch {
    return fallback;
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.username !== '' || u.password !== '' || u.hostname === '') return fallback;
  return u.href;
}

/** Would the browser's next CONNECT to this https site be intercepted by the proxy? */
export type Interception = (q: { host: string; port: number; principal: Principal; bound: boolean; clientIp: string | undefined }) => boolean;

/** What the portal needs from sign-in set-up. */
export interface PortalOptions {
  store: SessionStore;
  /** The OIDC client configuration (discovery, retried on failure). */
  oidc: () => Promise<Configuration>;
  /** Public URL of the portal, no trailing slash. */
  portal: string;
  scopes: string[];
  claims: ClaimNames;
  ttlS: number;
  /** Client-address binding after sign-in, seconds (0 = off). */
  ipBindingS: number;
  /** A device (mTLS) listener may carry browsers' requests: the bind step is worth it even without address binding. */
  devices?: boolean | undefined;
  /** Only sites the proxy intercepts can be handed a session cookie (their hand-off never reaches them). */
  intercepts: Interception;
  /** Keeps groups current when `offline_access` is among the scopes. */
  refresher?: GroupsRefresher | undefined;
  log: Logger;
}

class PortalError extends Error {
  constructor(readonly status: number, readonly reason: PortalReason, readonly publicText: string, readonly detail?: string) {
    super(detail ?? publicText);
  }
}

const escape = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** Cookies only for this origin (`__Host-`), never readable by scripts, not sent on cross-site subrequests. */
function cookie(name: string, value: string, maxAgeS: number): string {
  return `${name}=${value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=${maxAgeS}`;
}

function strEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** A network failure reaching the identity provider, rather than an answer from it. */
function unreachable(err: unknown): boolean {
  const cause = (err as { cause?: { code?: unknown } } | undefined)?.cause;
  const code = (err as { code?: unknown } | undefined)?.code;
  return (typeof cause?.code === 'string' && /^(E[A-Z]+|UND_ERR)/.test(cause.code)) || code === 'OAUTH_TIMEOUT' || (err instanceof TypeError && err.message === 'fetch failed');
}

/** The sign-in portal's routes under /auth/ on the admin listener. */
export class Portal {
  private readonly o: PortalOptions;
  private readonly origin: string;

  constructor(o: PortalOptions) {
    this.o = o;
    this.origin = new URL(o.portal).origin;
  }

  /** The portal's public URL, no trailing slash. */
  get url(): string {
    return this.o.portal;
  }

  /** The signed-in user of a request to the admin origin (its session cookie, not an address binding), if any. */
  principal(req: IncomingMessage): Principal | undefined {
    return this.o.store.open(readCookie(req.headers.cookie, SESSION_COOKIE));
  }

  /** Serves one /auth/ request; never throws. */
  handle(req: IncomingMessage, res: ServerResponse): void {
    this.serve(req, res, this.route(req, res));
  }

  /**
   * Answers SESSION_HANDOFF_PATH inside an intercepted connection to `host:port`: a valid ticket
   * becomes this site's session cookie, then back to the page. Never throws; never goes upstream.
   */
  handoff(req: IncomingMessage, res: ServerResponse, host: string, port: number): void {
    this.serve(req, res, this.redeem(req, res, siteKey(host, port)));
  }

  /**
   * Answers SESSION_HANDOFF_PATH on the proxy's own name, reached through a proxy listener: a
   * valid bind ticket binds its session to this connection's device certificate and client
   * address, as the proxy sees them, then the browser goes on to its page. Never throws.
   */
  bindHere(req: IncomingMessage, res: ServerResponse): void {
    this.serve(req, res, this.bind(req, res));
  }

  private serve(req: IncomingMessage, res: ServerResponse, work: Promise<void>): void {
    work.catch((err: unknown) => {
      const pe = err instanceof PortalError ? err : new PortalError(500, 'signin_failed', 'The sign-in portal failed unexpectedly.', String(err));
      const level = pe.status >= 500 ? 'error' : 'warn';
      this.o.log[level]({ event: 'sign_in_failed', reason: pe.reason, client_ip: clientIp(req), detail: pe.detail }, 'sign-in portal refused a request');
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const again = pe.reason.startsWith('signin_') && pe.reason !== 'signin_refused' ? `<p><a href="${escape(this.o.portal)}/auth/login">Sign in again</a></p>` : '';
      this.page(res, pe.status, 'Sign-in problem', `<h1>Sign-in problem</h1><p>${escape(pe.publicText)}</p>${again}`, { 'x-egress-reason': pe.reason });
    });
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.origin);
    const route = `${req.method} ${url.pathname}`;
    switch (route) {
      case 'GET /auth/login': return this.login(req, url, res);
      case 'GET /auth/callback': return this.callback(req, url, res);
      case 'GET /auth/': return this.home(req, res);
      case 'POST /auth/logout': return this.logout(req, res);
      case 'GET /auth/signed-out':
        return this.page(res, 200, 'Signed out', '<h1>Signed out</h1><p>You are signed out of the egress proxy.</p><p><a href="/auth/login">Sign in again</a></p>');
      default:
        if (['/auth/login', '/auth/callback', '/auth/', '/auth/logout', '/auth/signed-out'].includes(url.pathname)) {
          throw new PortalError(405, 'method_not_allowed', 'Method not allowed.');
        }
        this.page(res, 404, 'Not found', '<h1>Not found</h1>');
    }
  }

  /**
   * Starts a sign-in: state, nonce and PKCE verifier sealed in a cookie for this browser, then off
   * to the IdP. A browser with a live portal session skips the IdP: straight on to `rd`.
   */
  private async login(req: IncomingMessage, url: URL, res: ServerResponse): Promise<void> {
    const rd = safeReturnTo(url.searchParams.get('rd'), `${this.o.portal}/auth/`);
    const current = this.o.store.open(readCookie(req.headers.cookie, SESSION_COOKIE));
    if (current) return this.proceed(req, res, current, rd, []);
    const cfg = await this.config();
    const verifier = randomPKCECodeVerifier();
    const state = randomState();
    const nonce = randomNonce();
    const sealed = await this.o.store.sealAuth({ state, nonce, verifier, rd }, AUTH_TTL_S);
    const to = buildAuthorizationUrl(cfg, {
      redirect_uri: `${this.o.portal}/auth/callback`, scope: this.o.scopes.join(' '), state, nonce,
      code_challenge: await calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
      // oidc-provider (and others) issue a refresh token for offline_access only after consent.
      ...(this.o.refresher ? { prompt: 'consent' } : {}),
    });
    this.redirect(res, 302, to.href, [cookie(AUTH_COOKIE, sealed, AUTH_TTL_S)]);
  }

  /** Finishes a sign-in: the state must match this browser's auth cookie (no login CSRF), then the code is exchanged. */
  private async callback(req: IncomingMessage, url: URL, res: ServerResponse): Promise<void> {
    const auth = this.o.store.openAuth(readCookie(req.headers.cookie, AUTH_COOKIE));
    if (!auth) throw new PortalError(400, 'signin_not_started', 'This sign-in was not started in this browser, or took longer than 10 minutes.');
    if (!strEqual(url.searchParams.get('state') ?? '', auth.state)) {
      throw new PortalError(400, 'signin_state_mismatch', 'This sign-in answer does not belong to the sign-in this browser started.');
    }
    const idpError = url.searchParams.get('error');
    if (idpError !== null) {
      throw new PortalError(403, 'signin_refused', 'The identity provider did not sign you in.', `${idpError.slice(0, 64)}: ${(url.searchParams.get('error_description') ?? '').slice(0, 200)}`);
    }
    const cfg = await this.config();
    const current = new URL(`${this.o.portal}/auth/callback${url.search}`);
    let claims: Record<string, unknown> | undefined;
    let refreshToken: string | undefined;
    try {
      const tokens = await authorizationCodeGrant(cfg, current, { pkceCodeVerifier: auth.verifier, expectedState: auth.state, expectedNonce: auth.nonce, idTokenExpected: true });
      claims = tokens.claims();
      refreshToken = tokens.refresh_token;
    } catch (err) {
      if (unreachable(err)) throw new PortalError(503, 'identity_unavailable', 'The identity provider cannot be reached; try again shortly.', String(err));
      throw new PortalError(502, 'signin_failed', 'The identity provider\'s answer could not be verified.', String(err));
    }
    const c = this.sessionClaims(claims);
    const old = this.o.store.open(readCookie(req.headers.cookie, SESSION_COOKIE));
    const { value, principal } = await this.o.store.create(c);
    if (value.length > MAX_SESSION_COOKIE) {
      throw new PortalError(403, 'signin_claims', 'Your account has too many groups for a session; ask the identity team to limit the groups claim sent to the proxy.', `${c.groups.length} groups`);
    }
    // The previous session of this browser ends: one browser, one session.
    if (old) this.end(old);
    if (refreshToken !== undefined) this.o.refresher?.add(principal.sessionId!, refreshToken, principal.user!, principal.expiresAt!);
    this.o.log.info({ event: 'sign_in', user: principal.user, groups: principal.groups.join(','), session: principal.sessionId, client_ip: clientIp(req) }, 'signed in');
    await this.proceed(req, res, principal, safeReturnTo(auth.rd, `${this.o.portal}/auth/`), [cookie(AUTH_COOKIE, '', 0), cookie(SESSION_COOKIE, value, this.o.ttlS)]);
  }

  /**
   * After sign-in (or at a login with a live session): binds the address and device the portal
   * sees (a fallback, for browsers that do not come back through the proxy), then, when the
   * browser is on its way to a page through the proxy, sends it through the bind step on the
   * proxy's own name, where the proxy binds what it sees itself; otherwise on to the page.
   */
  private async proceed(req: IncomingMessage, res: ServerResponse, p: Principal, rd: string, cookies: string[]): Promise<void> {
    const ip = clientIp(req);
    const device = deviceOf(req.socket);
    this.o.store.bind(p, ip, device);
    if (this.bindStep(rd)) {
      const ticket = await this.o.store.sealTicket(p, BIND_SITE, rd);
      return this.redirect(res, 302, bindUrl(ticket), cookies);
    }
    return this.onward(res, p, rd, cookies, ip, this.o.ipBindingS > 0 || device !== undefined);
  }

  /**
   * Is the bind step worth a redirect? Only on the way to a page elsewhere (which the proxy sent
   * the browser from, so the browser reaches it through the proxy; a sign-in started at the portal
   * itself keeps working for a browser without one), and only when the proxy could bind something.
   */
  private bindStep(rd: string): boolean {
    return new URL(rd).origin !== this.origin && (this.o.ipBindingS > 0 || this.o.devices === true);
  }

  /**
   * Sends the browser on to `rd`, as `p` recognised by `bound` (an address or device binding) from
   * `ip`. An https page on a site the proxy will intercept first goes through the hand-off there,
   * which sets that site's session cookie; any other page relies on the bindings, and without one
   * a plain http page gets an explanation instead of a loop.
   */
  private async onward(res: ServerResponse, p: Principal, rd: string, cookies: string[], ip: string | undefined, bound: boolean, extra: Record<string, string> = {}): Promise<void> {
    const u = new URL(rd);
    if (u.origin === this.origin) return this.redirect(res, 302, rd, cookies, extra);
    if (u.protocol === 'https:') {
      const t = parseAbsoluteTarget(rd);
      if (this.o.intercepts({ host: t.host, port: t.port, principal: p, bound, clientIp: ip })) {
        const ticket = await this.o.store.sealTicket(p, siteKey(t.host, t.port), rd);
        return this.redirect(res, 302, `https://${u.host}${SESSION_HANDOFF_PATH}?ticket=${ticket}`, cookies, extra);
      }
    }
    if (u.protocol === 'http:' && !bound) {
      // Nothing would recognise the page's requests: a redirect would only come back here, in a loop.
      res.setHeader('set-cookie', cookies);
      return this.page(res, 200, 'Signed in', `<h1>Signed in</h1><p>You are signed in as <b id="user">${escape(p.user ?? '')}</b>, but ` +
        `<a href="${escape(rd)}">${escape(rd.slice(0, 200))}</a> is a plain <code>http</code> page, and this proxy recognises those only by ` +
        'your address, which it is set not to do. Use the https address of the site, or a token.</p>');
    }
    this.redirect(res, 302, rd, cookies, extra);
  }

  /** The bind step on the proxy's own name: ticket in, bindings made as the proxy sees this connection, on to the page. */
  private async bind(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let site: string;
    let path: string;
    try {
      const t = parseAbsoluteTarget(req.url ?? '');
      site = siteKey(t.host, t.port);
      path = new URL(req.url!).pathname;
    } catch {
      throw new PortalError(400, 'bad_request', 'Not a request for this proxy\'s sign-in step.', 'bind step without an absolute URL');
    }
    if (path !== SESSION_HANDOFF_PATH) return this.page(res, 404, 'Not found', '<h1>Not found</h1>');
    if (req.method !== 'GET') throw new PortalError(405, 'method_not_allowed', 'Method not allowed.');
    const ticket = new URL(req.url!).searchParams.get('ticket');
    // The return URL was checked when the ticket was sealed; the check here keeps the redirect safe whatever happens.
    const r = this.o.store.claimTicket(ticket, site, (rd) => safeReturnTo(rd, '') === rd);
    if ('refused' in r) {
      throw new PortalError(400, 'signin_not_started', 'This sign-in link was already used, is more than a minute old, or is not for this proxy.', `bind on ${site}: ${r.refused}`);
    }
    const ip = clientIp(req);
    const device = deviceOf(req.socket);
    this.o.store.bind(r.principal, ip, device);
    const addressBound = ip !== undefined && this.o.ipBindingS > 0;
    this.o.log.info({
      event: 'session_bound', user: r.principal.user, session: r.principal.sessionId, device_id: device?.id, client_ip: ip, address_bound: addressBound,
    }, 'sign-in bound to what the proxy sees');
    // The ticket is in this page's URL: the next page is not told it.
    return this.onward(res, r.principal, r.rd, [], ip, addressBound || device !== undefined, { 'referrer-policy': 'no-referrer' });
  }

  /** The hand-off on an intercepted site: ticket in, site cookie out, back to the page. */
  private async redeem(req: IncomingMessage, res: ServerResponse, site: string): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://handoff.invalid');
    if (url.pathname !== SESSION_HANDOFF_PATH) return this.page(res, 404, 'Not found', '<h1>Not found</h1>');
    if (req.method !== 'GET') throw new PortalError(405, 'method_not_allowed', 'Method not allowed.');
    const bad = (detail: string): PortalError =>
      new PortalError(400, 'signin_not_started', 'This sign-in link is not for this site, was already used, or is more than a minute old.', `hand-off on ${site}: ${detail}`);
    const r = await this.o.store.redeemTicket(url.searchParams.get('ticket'), site, (rd) => onSite(rd, site));
    if ('refused' in r) throw bad(r.refused);
    if (r.cookie.length > MAX_SITE_COOKIE) {
      throw new PortalError(403, 'signin_claims', 'Your account has too many groups for a session; ask the identity team to limit the groups claim sent to the proxy.', `site cookie of ${r.cookie.length} characters`);
    }
    this.o.log.info({ event: 'session_handoff', user: r.principal.user, session: r.principal.sessionId, site, client_ip: tunnelIp(req) }, 'session cookie set on an intercepted site');
    res.writeHead(302, { ...this.headers(), 'referrer-policy': 'no-referrer', location: r.rd, 'set-cookie': cookie(SESSION_COOKIE, r.cookie, r.maxAgeS), 'content-length': 0 });
    res.end();
  }

  /** Reads the ID token claims configured in identity.claims; an unverified email is left out. */
  private sessionClaims(claims: Record<string, unknown> | undefined): SessionClaims {
    const c = readSessionClaims(claims, this.o.claims);
    if (!c) throw new PortalError(403, 'signin_claims', 'The identity provider did not say who you are.', `claim ${this.o.claims.user} missing or not a string`);
    return c;
  }

  /** Ends a session here: cookies, bindings, connections (at the next sweep) and its refresh token. */
  private end(p: Principal): void {
    this.o.store.revoke(p);
    this.o.refresher?.forget(p.sessionId!);
  }

  /** Who you are signed in as, with a sign-out button. */
  private home(req: IncomingMessage, res: ServerResponse): void {
    const p = this.o.store.open(readCookie(req.headers.cookie, SESSION_COOKIE));
    if (!p) {
      this.page(res, 200, 'Not signed in', '<h1>Not signed in</h1><p><a href="/auth/login">Sign in</a></p>');
      return;
    }
    const until = new Date(p.expiresAt!).toISOString();
    this.page(res, 200, 'Signed in', `<h1>Signed in</h1><p>As <b id="user">${escape(p.user ?? '')}</b>` +
      `${p.email ? ` (<span id="email">${escape(p.email)}</span>)` : ''}, groups <span id="groups">${escape(p.groups.join(', ') || 'none')}</span>, until ${until}.</p>` +
      `<form method="post" action="/auth/logout"><input type="hidden" name="csrf" value="${this.o.store.csrfToken(p.sessionId!)}">` +
      '<button id="signout" type="submit">Sign out</button></form>');
  }

  /** Signs out: CSRF-checked, the session and its bindings end, then the IdP's own sign-out if it has one. */
  private async logout(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== this.origin) throw new PortalError(403, 'signout_csrf', 'Sign out from the portal page.', `origin ${origin.slice(0, 200)}`);
    const form = new URLSearchParams(await readBody(req));
    const p = this.o.store.open(readCookie(req.headers.cookie, SESSION_COOKIE));
    const clear = [cookie(SESSION_COOKIE, '', 0)];
    if (!p) {
      this.redirect(res, 303, '/auth/signed-out', clear);
      return;
    }
    if (!strEqual(form.get('csrf') ?? '', this.o.store.csrfToken(p.sessionId!))) throw new PortalError(403, 'signout_csrf', 'Sign out from the portal page.', 'csrf token mismatch');
    this.end(p);
    this.o.log.info({ event: 'sign_out', user: p.user, session: p.sessionId, client_ip: clientIp(req) }, 'signed out');
    const done = `${this.o.portal}/auth/signed-out`;
    let to = done;
    try {
      const cfg = await this.o.oidc();
      if (cfg.serverMetadata().end_session_endpoint) to = buildEndSessionUrl(cfg, { post_logout_redirect_uri: done }).href;
    } catch {
      // The IdP is unreachable: the proxy session has ended all the same.
    }
    this.redirect(res, 303, to, clear);
  }

  private async config(): Promise<Configuration> {
    try {
      return await this.o.oidc();
    } catch (err) {
      throw new PortalError(503, 'identity_unavailable', 'The identity provider cannot be reached; try again shortly.', String(err));
    }
  }

  private headers(): Record<string, string> {
    return {
      'cache-control': 'no-store', 'referrer-policy': 'same-origin', 'x-frame-options': 'DENY', 'x-content-type-options': 'nosniff',
      'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    };
  }

  private page(res: ServerResponse, status: number, title: string, body: string, extra: Record<string, string> = {}): void {
    const html = `<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head>` +
      `<body style="font-family:sans-serif;max-width:32em;margin:3em auto">${body}</body></html>`;
    // Set one by one, not passed to writeHead, so the proxy listener can read X-Egress-Reason back for its access line.
    const headers = { ...this.headers(), ...extra, 'content-type': 'text/html; charset=utf-8', 'content-length': String(Buffer.byteLength(html)) };
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    res.writeHead(status);
    res.end(html);
  }

  private redirect(res: ServerResponse, status: number, location: string, cookies: string[], extra: Record<string, string> = {}): void {
    res.writeHead(status, { ...this.headers(), ...extra, location, 'set-cookie': cookies, 'content-length': 0 });
    res.end();
  }
}

/** Is `rd` a valid return URL on https `site` (the hand-off never sends a browser elsewhere)? */
function onSite(rd: string, site: string): boolean {
  if (safeReturnTo(rd, '') !== rd) return false;
  try {
    const t = parseAbsoluteTarget(rd);
    return t.scheme === 'https' && siteKey(t.host, t.port) === site;
  } catch {
    return false;
  }
}

/** The client's own address behind an intercepted connection. */
function tunnelIp(req: IncomingMessage): string | undefined {
  const t = (req.socket as IncomingMessage['socket'] & { [kIntercepted]?: InterceptedTunnel })[kIntercepted];
  const a = t?.clientIp ?? req.socket.remoteAddress;
  return a === undefined ? undefined : unmapV4(a);
}

function clientIp(req: IncomingMessage): string | undefined {
  const a = req.socket.remoteAddress;
  return a === undefined ? undefined : unmapV4(a);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > 4096) throw new PortalError(400, 'bad_request', 'The form is too large.');
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}
