import { createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { EncryptJWT } from 'jose';
import { LRUCache } from 'lru-cache';
import { unmapV4 } from '../config/fields.js';
import type { Device, Principal, SessionLookup } from './principal.js';

export const SESSION_COOKIE = '__Host-egress-session';
export const AUTH_COOKIE = '__Host-egress-auth';

/** What a sealed value is for: an auth cookie can never be replayed as a session cookie. */
type Purpose = 'session' | 'auth';

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

/**
 * Reads the session key: exactly 32 bytes, given raw, as 64 hex characters or as base64.
 * Anything else is a start-up error, never a silently weaker key.
 */
export function loadSessionKey(file: string): Uint8Array {
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (err) {
    throw new Error(`identity.sign_in.session_key_file ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  if (raw.length === 32) return new Uint8Array(raw);
  const text = raw.toString('latin1').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return new Uint8Array(Buffer.from(text, 'hex'));
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(text)) {
    const b = Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    if (b.length === 32) return new Uint8Array(b);
  }
  throw new Error(`identity.sign_in.session_key_file ${file}: must hold a 32-byte key (32 raw bytes, 64 hex characters or base64); it has ${raw.length} bytes. Make one with: openssl rand -hex 32`);
}

const B64URL = /^[A-Za-z0-9_-]+$/;
const HEADER = Buffer.from(JSON.stringify({ alg: 'dir', enc: 'A256GCM' })).toString('base64url');

/**
 * Opens a compact JWE (dir + A256GCM) synchronously, as the hot path needs. Only the exact header
 * jose writes is accepted (no zip, no other algorithms), so nothing in the token picks how it is read.
 */
function openSealed(value: string, key: Uint8Array, purpose: Purpose, nowS: number): Record<string, unknown> | undefined {
  if (value.length > 4096) return undefined;
  const parts = value.split('.');
  if (parts.length !== 5 || parts[0] !== HEADER || parts[1] !== '') return undefined;
  const [, , ivB, ctB, tagB] = parts as [string, string, string, string, string];
  if (!B64URL.test(ivB) || !B64URL.test(ctB) || !B64URL.test(tagB)) return undefined;
  const iv = Buffer.from(ivB, 'base64url');
  const tag = Buffer.from(tagB, 'base64url');
  if (iv.length !== 12 || tag.length !== 16) return undefined;
  let claims: unknown;
  try {
    const d = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: 16 });
    d.setAAD(Buffer.from(HEADER, 'ascii'));
    d.setAuthTag(tag);
    claims = JSON.parse(Buffer.concat([d.update(Buffer.from(ctB, 'base64url')), d.final()]).toString('utf8'));
  } catch {
    return undefined; // wrong key, tampered, or not ours
  }
  if (typeof claims !== 'object' || claims === null) return undefined;
  const c = claims as Record<string, unknown>;
  if (c.pur !== purpose || typeof c.exp !== 'number' || c.exp <= nowS) return undefined;
  return c;
}

/** Reads one cookie from a Cookie header (the first one of that name wins, as browsers send the most specific first). */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (header === undefined || !header.includes(name)) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
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
}

/**
 * Sign-in sessions: sealed cookies any node with the key can read, plus the in-memory bindings
 * (client address, device certificate) that let plain proxy requests be recognised, and the
 * revocation list of signed-out sessions (this node only, until the shared store exists).
 */
export class SessionStore implements SessionLookup {
  private readonly key: Uint8Array;
  private readonly o: SessionStoreOptions;
  /**
   * Opened session cookies by value, so the hot path decrypts each one once. Values that do not
   * open are not kept: junk cookies cannot push real sessions out.
   */
  private readonly cache = new LRUCache<string, Principal>({ max: 20_000, maxSize: 16 << 20, sizeCalculation: (_p, k) => k.length + 200 });
  private readonly revoked = new Map<string, number>();
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
    const value = await this.seal({ pur: 'session', sid, user: c.user, email: c.email, groups: c.groups }, iat, exp);
    const principal = sessionPrincipal(sid, c, exp * 1000);
    this.cache.set(value, principal);
    return { value, principal };
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

  /** The live session a cookie value stands for (not expired, not signed out), else undefined. */
  open(value: string | undefined, now = Date.now()): Principal | undefined {
    if (value === undefined || value === '') return undefined;
    let p = this.cache.get(value);
    if (p === undefined) {
      const c = openSealed(value, this.key, 'session', now / 1000);
      if (!c || typeof c.sid !== 'string' || typeof c.user !== 'string' || !Array.isArray(c.groups) || typeof c.exp !== 'number') return undefined;
      const groups = (c.groups as unknown[]).filter((g): g is string => typeof g === 'string');
      p = sessionPrincipal(c.sid, { user: c.user, email: typeof c.email === 'string' ? c.email : undefined, groups }, c.exp * 1000);
      this.cache.set(value, p);
    }
    if (p.expiresAt! <= now || this.revoked.has(p.sessionId!)) return undefined;
    return p;
  }

  /** Binds the client address (for ip_binding_s) and the device certificate to a session. */
  bind(p: Principal, clientIp: string | undefined, device: Device | undefined, now = Date.now()): void {
    if (clientIp !== undefined && this.o.ipBindingS > 0) {
      this.byIp.set(unmapV4(clientIp), { principal: p, until: Math.min(now + this.o.ipBindingS * 1000, p.expiresAt!) });
    }
    if (device) this.byDevice.set(device.fingerprint, { principal: p, until: p.expiresAt! });
  }

  /** Ends a session before its expiry: its cookie, address and device bindings stop admitting. */
  revoke(p: Principal): void {
    this.revoked.set(p.sessionId!, p.expiresAt!);
    for (const m of [this.byIp, this.byDevice]) {
      for (const [k, b] of m) if (b.principal.sessionId === p.sessionId) m.delete(k);
    }
  }

  /** A per-session token for the sign-out form, so another site cannot sign the user out. */
  csrfToken(sid: string): string {
    return createHmac('sha256', this.key).update(`csrf:${sid}`).digest('base64url');
  }

  /** The session of a proxied request: its cookie, else its device's binding, else its address's. */
  forRequest(req: IncomingMessage, clientIp: string | undefined, device: Device | undefined): Principal | undefined {
    const now = Date.now();
    const fromCookie = this.open(readCookie(req.headers.cookie, SESSION_COOKIE), now);
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
    return b.principal;
  }

  private seal(payload: Record<string, unknown>, iat: number, exp: number): Promise<string> {
    return new EncryptJWT(payload).setProtectedHeader({ alg: 'dir', enc: 'A256GCM' }).setIssuedAt(iat).setExpirationTime(exp).encrypt(this.key);
  }

  /** Forgets what expired: revocations past the session's own expiry, lapsed bindings. */
  private prune(now = Date.now()): void {
    for (const [sid, exp] of this.revoked) if (exp <= now) this.revoked.delete(sid);
    for (const m of [this.byIp, this.byDevice]) for (const [k, b] of m) if (b.until <= now) m.delete(k);
  }
}

function sessionPrincipal(sid: string, c: SessionClaims, expiresAt: number): Principal {
  return Object.freeze({ method: 'session', user: c.user, email: c.email, groups: Object.freeze([...c.groups]), expiresAt, sessionId: sid });
}
