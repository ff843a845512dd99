import { refreshTokenGrant, ResponseBodyError, tokenRevocation, type Configuration } from 'openid-client';
import type { Logger } from 'pino';
import { readSessionClaims, type ClaimNames, type SessionStore } from './sessions.js';

/** Refreshes run at most this many at a time, so a crowd of sessions does not flood the IdP. */
const PARALLEL = 8;

interface Entry {
  /** The refresh token: only here, in memory; never in a cookie, never logged. */
  token: string;
  user: string;
  expiresAt: number;
  next: number;
}

/** Options of the refresher. */
export interface RefresherOptions {
  store: SessionStore;
  oidc: () => Promise<Configuration>;
  claims: ClaimNames;
  intervalS: number;
  log: Logger;
}

/**
 * Keeps sessions' groups current: every `intervalS` each session's refresh token is redeemed at
 * the IdP and the new ID token's email and groups replace the session's (SessionStore.update).
 * An IdP that refuses the refresh (invalid_grant: the user was disabled, the grant revoked) ends
 * the session; an IdP that cannot be reached or fails otherwise leaves it as it was until the next
 * round (the groups are then as old as the last success, at worst as old as the sign-in).
 */
export class GroupsRefresher {
  private readonly o: RefresherOptions;
  private readonly entries = new Map<string, Entry>();
  private readonly timer: NodeJS.Timeout;
  private running: Promise<void> | undefined;

  constructor(o: RefresherOptions) {
    this.o = o;
    this.timer = setInterval(() => void this.tick(), Math.min(o.intervalS, 30) * 1000);
    this.timer.unref();
  }

  /** Starts refreshing session `sid` with `token` until the session expires or is forgotten. */
  add(sid: string, token: string, user: string, expiresAt: number, now = Date.now()): void {
    this.entries.set(sid, { token, user, expiresAt, next: now + this.o.intervalS * 1000 });
  }

  /** Stops refreshing `sid` and tells the IdP its refresh token is no longer needed (best effort). */
  forget(sid: string): void {
    const e = this.entries.get(sid);
    if (!e) return;
    this.entries.delete(sid);
    void this.o.oidc().then((cfg) => tokenRevocation(cfg, e.token, { token_type_hint: 'refresh_token' })).catch(() => undefined);
  }

  /** Refreshes every session that is due; one round at a time. */
  tick(now = Date.now()): Promise<void> {
    this.running ??= this.round(now).finally(() => { this.running = undefined; });
    return this.running;
  }

  /** Stops the timer (the tokens are dropped with the process). */
  close(): void {
    clearInterval(this.timer);
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  private async round(now: number): Promise<void> {
    const due: Array<[string, Entry]> = [];
    for (const [sid, e] of this.entries) {
      if (e.expiresAt <= now || this.o.store.isRevoked(sid)) this.entries.delete(sid);
      else if (e.next <= now) due.push([sid, e]);
    }
    if (due.length === 0) return;
    let cfg: Configuration;
    try {
      cfg = await this.o.oidc();
    } catch (err) {
      this.o.log.warn({ event: 'session_refresh_failed', sessions: due.length, err: String(err) }, 'identity provider unreachable; session groups not refreshed this round');
      return;
    }
    const work = due.values();
    const worker = async (): Promise<void> => {
      for (const [sid, e] of work) await this.refresh(cfg, sid, e);
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL, due.length) }, worker));
  }

  private async refresh(cfg: Configuration, sid: string, e: Entry): Promise<void> {
    e.next = Date.now() + this.o.intervalS * 1000;
    let claims: Record<string, unknown> | undefined;
    try {
      const tokens = await refreshTokenGrant(cfg, e.token);
      if (tokens.refresh_token) e.token = tokens.refresh_token; // rotated
      claims = tokens.claims();
    } catch (err) {
      if (err instanceof ResponseBodyError && err.error === 'invalid_grant') {
        this.end(sid, e, `the identity provider refused the refresh (${err.error})`);
        return;
      }
      this.o.log.warn({ event: 'session_refresh_failed', session: sid, user: e.user, err: errText(err) }, 'session groups not refreshed; kept until the next round');
      return;
    }
    if (this.entries.get(sid) !== e || this.o.store.isRevoked(sid)) return; // signed out meanwhile
    if (claims === undefined) {
      this.o.log.warn({ event: 'session_refresh_failed', session: sid, user: e.user, err: 'no ID token in the refresh answer' }, 'session groups not refreshed; kept until the next round');
      return;
    }
    const c = readSessionClaims(claims, this.o.claims);
    if (!c || c.user !== e.user) {
      this.end(sid, e, 'the refreshed ID token names another user, or none');
      return;
    }
    this.o.store.update(sid, c, e.expiresAt);
    this.o.log.info({ event: 'session_refresh', session: sid, user: e.user, groups: c.groups.join(',') }, 'session groups refreshed');
  }

  private end(sid: string, e: Entry, why: string): void {
    this.entries.delete(sid);
    this.o.store.revokeId(sid, e.expiresAt);
    this.o.log.warn({ event: 'session_ended', session: sid, user: e.user, reason: why }, 'session ended at refresh');
  }
}

/** An error's message without anything a token endpoint may echo back. */
function errText(err: unknown): string {
  if (err instanceof ResponseBodyError) return `${err.error}: ${(err.error_description ?? '').slice(0, 200)}`;
  return String(err).slice(0, 300);
}
