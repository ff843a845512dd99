import { createHmac, randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { LRUCache } from 'lru-cache';
import { unmapV4 } from '../config/fields.js';
import { kIntercepted, type InterceptedTunnel } from '../inspection/intercept.js';
import type { Device, Principal, SessionLookup } from './principal.js';
import { openSealed, readCookie, seal } from './seal.js';

export { loadSessionKey, readCookie } from './seal.js';

export const SESSION_COOKIE = '__Host-egress-session';
export const AUTH_COOKIE = '__Host-egress-auth';

/** How long a hand-off ticket (portal to intercepted site) can be redeemed, seconds. */
export const TICKET_TTL_S = 60;
/** A ticket carries a return URL (up to 2 KiB) and the session's claims (up to ~3.8 KiB), sealed. */
const MAX_TICKET = 12_288;

/** The sign-in in progress, sealed in the short-lived auth cookie. */
export interface AuthState {
  state: string;
  nonce: string;
  verifier: string;
  /** Where to go after sign-in (already validated). */
  rd: string;
}

/** The claims a session carries. */
export interface SessionClaims {
  user: string;
  email: string | undefined;
  groups: string[];
}

/** Names of the ID token claims that make a session (identity.claims). */
export interface ClaimNames {
  user: string;
  email: string;
  groups: string;
}

/**
 * Reads the configured claims of an ID token; undefined when the user claim is missing. An email
 * the IdP marks unverified is left out; groups are strings only, without duplicates.
 */
export function readSessionClaims(claims: Record<string, unknown> | undefined, names: ClaimNames): SessionClaims | undefined {
  const user = claims?.[names.user];
  if (typeof user !== 'string' || user === '' || user.length > 256) return undefined;
  const mail = claims?.[names.email];
  const email = typeof mail === 'string' && mail.length <= 256 && claims?.email_verified !== false ? mail : undefined;
  const raw = claims?.[names.groups];
  const list = typeof raw === 'string' ? [raw] : Array.isArray(raw) ? raw : [];
  const groups = [...new Set(list.filter((g): g is string => typeof g === 'string' && g !== '' && g.length <= 256))];
  return { user, email, groups };
}

/** How a site is named in tickets and site cookies: `host:port`, IPv6 in brackets, lower case. */
export function siteKey(host: string, port: number): string {
  const h = host.toLowerCase();
  return `${h.includes(':') ? `[${h}]` : h}:${port}`;
}

/** The site of the intercepted connection a request came through, if it did. */
export function siteOf(socket: Socket): string | undefined {
  const t = (socket as Socket & { [kIntercepted]?: InterceptedTunnel })[kIntercepted];
  return t ? siteKey(t.host, t.port) : undefined;
}

/** A used-up ticket: the session it carries (as sealed in it) and where to go next. */
export interface ClaimedTicket {
  principal: Principal;
  rd: string;
}

/** A redeemed hand-off ticket: the site cookie to set and where to go next. */
export interface Redeemed {
  principal: Principal;
  /** The sealed session, bound to the ticket's site. */
  cookie: string;
  /** Seconds the cookie should live (what is left of the session). */
  maxAgeS: number;
  rd: string;
}

/** An opened session cookie: whose, and the site it is bound to (undefined: the portal's own cookie). */
interface Opened {
  principal: Principal;
  site: string | undefined;
}

/** Claims refreshed at the IdP during a session, replacing those sealed in its cookies. */
interface Override {
  email: string | undefined;
  groups: string[];
  /** The session's expiry (epoch ms): forgotten then. */
  until: number;
  /** The last principal derived from a sealed one, so the hot path allocates once per change. */
  memo?: { from: Principal; to: Principal };
}

interface Binding {
  principal: Principal;
  /** Epoch ms after which the binding no longer admits requests. */
  until: number;
}

/** Options of the session store. */
export interface SessionStoreOptions {
  key: Uint8Array;
  ttlS: number;
  /** Client-address binding after sign-in, seconds (0 = off). */
  ipBindingS: number;
  /** Public URL of the portal (no trailing slash). */
  portal: string;
  /** Told of every change to the in-memory state, so other workers can apply it (see session-sync.ts). */
  onEvent?: ((e: SessionEvent) => void) | undefined;
}

/** A change to a store's in-memory state, as shared between the workers of one node. */
export type SessionEvent =
  | { op: 'bind'; map: 'ip' | 'device'; key: string; principal: Principal; until: number }
  | { op: 'revoke'; sid: string; until: number }
  | { op: 'update'; sid: string; email: string | undefined; groups: string[]; until: number }
  | { op: 'ticket'; jti: string; until: number };

/**
 * Sign-in sessions: sealed cookies any node with the key can read (the portal's own, and one per
 * intercepted site, bound to that site), plus the in-memory bindings (client address, device
 * certificate) that let plain proxy requests be recognised, the revocation list of signed-out
 * sessions, the used hand-off tickets and the refreshed claims (this node only, until the shared
 * store exists).
 */
export class SessionStore implements SessionLookup {
  private readonly key: Uint8Array;
  private readonly o: SessionStoreOptions;
  /**
   * Opened session cookies by value, so the hot path decrypts each one once. Values that do not
   * open are not kept: junk cookies cannot push real sessions out.
   */
  private readonly cache = new LRUCache<string, Opened>({ max: 20_000, maxSize: 16 << 20, sizeCalculation: (_p, k) => k.length + 200 });
  private readonly revoked = new Map<string, number>();
  /** Redeemed ticket ids, until the ticket would have expired anyway (single use). */
  private readonly usedTickets = new Map<string, number>();
  private readonly overrides = new Map<string, Override>();
  private readonly byIp = new Map<string, Binding>();
  private readonly byDevice = new Map<string, Binding>();
  private readonly timer: NodeJS.Timeout;

  constructor(o: SessionStoreOptions) {
    this.o = o;
    this.key = o.key;
    this.timer = setInterval(() => this.prune(), 60_000);
    this.timer.unref();
  }

  /** Mints a new session (a fresh id every time: no fixation) and its sealed cookie value. */
  async create(c: SessionClaims, now = Date.now()): Promise<{ value: string; principal: Principal }> {
    const sid = randomBytes(18).toString('base64url');
    const iat = Math.floor(now / 1000);
    const exp = iat + this.o.ttlS;
    const principal = sessionPrincipal(sid, c, exp * 1000);
    const value = await this.sealSession(principal, undefined, iat);
    return { value, principal };
  }

  /**
   * A one-time ticket that hands `p` to `site` (see siteKey): an intercepted site, which then
   * returns to `rd` (already validated, on that site), or the proxy's own name for the bind step
   * (portal.ts). It lives TICKET_TTL_S seconds.
   */
  sealTicket(p: Principal, site: string, rd: string, now = Date.now()): Promise<string> {
    const iat = Math.floor(now / 1000);
    return this.seal({
      pur: 'ticket', jti: randomBytes(12).toString('base64url'), site, rd,
      sid: p.sessionId, user: p.user, email: p.email, groups: p.groups, sexp: Math.floor(p.expiresAt! / 1000),
    }, iat, iat + TICKET_TTL_S);
  }

  /**
   * Uses up a ticket at `site`: sealed by us, not expired, for this very site, with a return URL
   * `returnOk` accepts, never used before, and its session still live. Returns the session (as
   * sealed in the ticket) and the return URL, or why not (for the log only). A refused ticket is
   * not used up.
   */
  claimTicket(value: string | null, site: string, returnOk: (rd: string) => boolean, now = Date.now()): ClaimedTicket | { refused: string } {
    if (value === null || value === '') return { refused: 'no ticket' };
    const c = openSealed(value, this.key, 'ticket', now / 1000, MAX_TICKET);
    if (!c) return { refused: 'ticket tampered, expired or not a ticket' };
    if (typeof c.jti !== 'string' || typeof c.site !== 'string' || typeof c.rd !== 'string' || typeof c.sid !== 'string' ||
      typeof c.user !== 'string' || typeof c.sexp !== 'number' || !Array.isArray(c.groups)) return { refused: 'ticket malformed' };
    if (c.site !== site) return { refused: `ticket for ${c.site.slice(0, 300)}` };
    if (!returnOk(c.rd)) return { refused: 'return URL not on this site' };
    if (this.usedTickets.has(c.jti)) return { refused: 'ticket already used' };
    const p = sessionPrincipal(c.sid, { user: c.user, email: typeof c.email === 'string' ? c.email : undefined, groups: strings(c.groups) }, c.sexp * 1000);
    if (p.expiresAt! <= now || this.revoked.has(c.sid)) return { refused: 'session ended' };
    this.usedTickets.set(c.jti, (c.exp as number) * 1000);
    this.o.onEvent?.({ op: 'ticket', jti: c.jti, until: (c.exp as number) * 1000 });
    return { principal: p, rd: c.rd };
  }

  /** Redeems a hand-off ticket at the intercepted site `site` (see claimTicket): the site cookie to set. */
  async redeemTicket(value: string | null, site: string, returnOk: (rd: string) => boolean, now = Date.now()): Promise<Redeemed | { refused: string }> {
    const r = this.claimTicket(value, site, returnOk, now);
    if ('refused' in r) return r;
    const p = r.principal;
    const cookie = await this.sealSession(p, site, Math.floor(now / 1000));
    return { principal: this.current(p), cookie, maxAgeS: Math.max(1, Math.floor((p.expiresAt! - now) / 1000)), rd: r.rd };
  }

  /** Seals the state of a sign-in in progress for `ttlS` seconds. */
  sealAuth(a: AuthState, ttlS: number, now = Date.now()): Promise<string> {
    const iat = Math.floor(now / 1000);
    return this.seal({ pur: 'auth', ...a }, iat, iat + ttlS);
  }

  /** Opens an auth cookie; undefined when absent, tampered, expired or not an auth cookie. */
  openAuth(value: string | undefined, now = Date.now()): AuthState | undefined {
    if (value === undefined) return undefined;
    const c = openSealed(value, this.key, 'auth', now / 1000);
    if (!c || typeof c.state !== 'string' || typeof c.nonce !== 'string' || typeof c.verifier !== 'string' || typeof c.rd !== 'string') return undefined;
    return { state: c.state, nonce: c.nonce, verifier: c.verifier, rd: c.rd };
  }

  /**
   * The live session a cookie value stands for (not expired, not signed out), else undefined.
   * `site` is where the cookie was presented (undefined: the portal, or a request not inside an
   * intercepted connection): a site cookie counts only on its own site, the portal's anywhere.
   */
  open(value: string | undefined, site?: string, now = Date.now()): Principal | undefined {
    if (value === undefined || value === '') return undefined;
    let o = this.cache.get(value);
    if (o === undefined) {
      const c = openSealed(value, this.key, 'session', now / 1000);
      if (!c || typeof c.sid !== 'string' || typeof c.user !== 'string' || !Array.isArray(c.groups) || typeof c.exp !== 'number') return undefined;
      if (c.site !== undefined && typeof c.site !== 'string') return undefined;
      const p = sessionPrincipal(c.sid, { user: c.user, email: typeof c.email === 'string' ? c.email : undefined, groups: strings(c.groups) }, c.exp * 1000);
      o = { principal: p, site: c.site as string | undefined };
      this.cache.set(value, o);
    }
    if (o.site !== undefined && o.site !== site) return undefined;
    const p = o.principal;
    if (p.expiresAt! <= now || this.revoked.has(p.sessionId!)) return undefined;
    return this.current(p);
  }

  /** Replaces a live session's email and groups with fresher ones from the IdP (cookies keep the old, this node knows better). */
  update(sid: string, c: { email: string | undefined; groups: string[] }, expiresAt: number): void {
    if (this.revoked.has(sid)) return;
    this.overrides.set(sid, { email: c.email, groups: [...c.groups], until: expiresAt });
    this.o.onEvent?.({ op: 'update', sid, email: c.email, groups: [...c.groups], until: expiresAt });
  }

  /** Binds the client address (for ip_binding_s) and the device certificate to a session. */
  bind(p: Principal, clientIp: string | undefined, device: Device | undefined, now = Date.now()): void {
    if (clientIp !== undefined && this.o.ipBindingS > 0) {
      const b = { principal: p, until: Math.min(now + this.o.ipBindingS * 1000, p.expiresAt!) };
      this.byIp.set(unmapV4(clientIp), b);
      this.o.onEvent?.({ op: 'bind', map: 'ip', key: unmapV4(clientIp), ...b });
    }
    if (device) {
      this.byDevice.set(device.fingerprint, { principal: p, until: p.expiresAt! });
      this.o.onEvent?.({ op: 'bind', map: 'device', key: device.fingerprint, principal: p, until: p.expiresAt! });
    }
  }

  /** Applies a change made by another worker (never re-announced). */
  apply(e: SessionEvent): void {
    switch (e.op) {
      case 'bind':
        (e.map === 'ip' ? this.byIp : this.byDevice).set(e.key, { principal: e.principal, until: e.until });
        return;
      case 'revoke':
        this.forget(e.sid, e.until);
        return;
      case 'update':
        if (!this.revoked.has(e.sid)) this.overrides.set(e.sid, { email: e.email, groups: e.groups, until: e.until });
        return;
      case 'ticket':
        this.usedTickets.set(e.jti, e.until);
    }
  }

  /** Ends a session before its expiry: its cookies, address and device bindings stop admitting. */
  revoke(p: Principal): void {
    this.revokeId(p.sessionId!, p.expiresAt!);
  }

  /** Ends session `sid` (which would have expired at `expiresAt`, epoch ms). */
  revokeId(sid: string, expiresAt: number): void {
    this.forget(sid, expiresAt);
    this.o.onEvent?.({ op: 'revoke', sid, until: expiresAt });
  }

  private forget(sid: string, expiresAt: number): void {
    this.revoked.set(sid, expiresAt);
    this.overrides.delete(sid);
    for (const m of [this.byIp, this.byDevice]) {
      for (const [k, b] of m) if (b.principal.sessionId === sid) m.delete(k);
    }
  }

  /** A per-session token for the sign-out form, so another site cannot sign the user out. */
  csrfToken(sid: string): string {
    return createHmac('sha256', this.key).update(`csrf:${sid}`).digest('base64url');
  }

  /** The session of a proxied request: its cookie, else its device's binding, else its address's. */
  forRequest(req: IncomingMessage, clientIp: string | undefined, device: Device | undefined): Principal | undefined {
    const now = Date.now();
    const cookie = readCookie(req.headers.cookie, SESSION_COOKIE);
    const fromCookie = cookie === undefined ? undefined : this.open(cookie, siteOf(req.socket), now);
    if (fromCookie) return fromCookie;
    if (device) {
      const b = this.live(this.byDevice, device.fingerprint, now);
      if (b) return b;
    }
    if (clientIp !== undefined && this.o.ipBindingS > 0) return this.live(this.byIp, unmapV4(clientIp), now);
    return undefined;
  }

  /** True once signed out on this node (until the session would have expired anyway). */
  isRevoked(sessionId: string): boolean {
    return this.revoked.has(sessionId);
  }

  /** The portal's sign-in start, returning to `returnTo`. */
  loginUrl(returnTo: string): string {
    return `${this.o.portal}/auth/login?rd=${encodeURIComponent(returnTo)}`;
  }

  /** Stops the pruning timer. */
  close(): void {
    clearInterval(this.timer);
  }

  private live(m: Map<string, Binding>, k: string, now: number): Principal | undefined {
    const b = m.get(k);
    if (!b) return undefined;
    if (b.until <= now || this.revoked.has(b.principal.sessionId!)) {
      m.delete(k);
      return undefined;
    }
    return this.current(b.principal);
  }

  /** The principal with the claims refreshed at the IdP, if any. */
  private current(p: Principal): Principal {
    const o = this.overrides.get(p.sessionId!);
    if (!o) return p;
    if (o.memo?.from !== p) o.memo = { from: p, to: sessionPrincipal(p.sessionId!, { user: p.user!, email: o.email, groups: o.groups }, p.expiresAt!) };
    return o.memo.to;
  }

  /** Seals a session cookie (for the portal when `site` is undefined, else for that site only) and remembers it opened. */
  private async sealSession(p: Principal, site: string | undefined, iat: number): Promise<string> {
    const value = await this.seal({ pur: 'session', sid: p.sessionId, user: p.user, email: p.email, groups: p.groups, ...(site === undefined ? {} : { site }) },
      iat, Math.floor(p.expiresAt! / 1000));
    this.cache.set(value, { principal: p, site });
    return value;
  }

  private seal(payload: Record<string, unknown>, iat: number, exp: number): Promise<string> {
    return seal(payload, this.key, iat, exp);
  }

  /** Forgets what expired: revocations past the session's own expiry, lapsed bindings. */
  private prune(now = Date.now()): void {
    for (const [sid, exp] of this.revoked) if (exp <= now) this.revoked.delete(sid);
    for (const [jti, exp] of this.usedTickets) if (exp <= now) this.usedTickets.delete(jti);
    for (const [sid, o] of this.overrides) if (o.until <= now) this.overrides.delete(sid);
    for (const m of [this.byIp, this.byDevice]) for (const [k, b] of m) if (b.until <= now) m.delete(k);
  }
}

function strings(list: unknown[]): string[] {
  return list.filter((g): g is string => typeof g === 'string');
}

function sessionPrincipal(sid: string, c: SessionClaims, expiresAt: number): Principal {
  return Object.freeze({ method: 'session', user: c.user, email: c.email, groups: Object.freeze([...c.groups]), expiresAt, sessionId: sid });
}
