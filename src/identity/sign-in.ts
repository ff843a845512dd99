import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { allowInsecureRequests, ClientSecretBasic, discovery, type Configuration } from 'openid-client';
import { decide } from '../policy/decide.js';
import type { ProxyRuntime } from '../runtime.js';
import type { DevIdp } from './dev-idp.js';
import { Portal, type Interception } from './portal.js';
import { ANONYMOUS } from './principal.js';
import { GroupsRefresher } from './refresh.js';
import { workerSessionSync } from './session-sync.js';
import { loadSessionKey, SessionStore } from './sessions.js';

/** A host only this machine can reach, where plain http is acceptable (dev and tests). */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

function clientSecret(rt: ProxyRuntime): string | undefined {
  const file = rt.config.identity.sign_in.client_secret_file;
  if (file === undefined) return process.env.EGRESS_OIDC_CLIENT_SECRET || undefined;
  const path = resolve(rt.config.baseDir, file);
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new Error(`identity.sign_in.client_secret_file ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  if (text === '') throw new Error(`identity.sign_in.client_secret_file ${path}: the file is empty`);
  return text;
}

/** OIDC discovery, memoised once it succeeds; a failure is retried on demand, at most every 5 s. */
function discoverer(issuer: URL, clientId: string, secret: string): () => Promise<Configuration> {
  let pending: Promise<Configuration> | undefined;
  let failed: { at: number; err: unknown } | undefined;
  const insecure = issuer.protocol === 'http:';
  return () => {
    if (pending) return pending;
    if (failed && Date.now() - failed.at < 5000) return Promise.reject(failed.err);
    pending = discovery(issuer, clientId, undefined, ClientSecretBasic(secret), { timeout: 10, ...(insecure ? { execute: [allowInsecureRequests] } : {}) })
      .catch((err: unknown) => {
        pending = undefined;
        failed = { at: Date.now(), err };
        throw err;
      });
    return pending;
  };
}

/**
 * Predicts whether the browser's next CONNECT to a site will be intercepted, so that a hand-off
 * ticket sent there is answered by the proxy rather than reaching the site. Asked as the CONNECT
 * will be: as the user when an address or device binding will recognise it, else anonymously (an
 * anonymous browser that policy refuses is intercepted to be sent to sign in, or refused outright:
 * either way the ticket stays here). When unsure, no: the browser then goes straight to the page.
 */
function interception(rt: ProxyRuntime): Interception {
  return ({ host, port, principal, bound, clientIp }) => {
    if (!rt.inspection || rt.inspection.autoBypass.has(host)) return false;
    const identity = bound ? principal : ANONYMOUS;
    const d = decide(rt.current.policy, { kind: 'connect', host, port, scheme: 'https', source: clientIp, identity });
    if (d.action === 'allow') return d.modifiers.inspect === true;
    return !bound;
  };
}

/** Environment variable through which the supervisor hands its workers one shared session key. */
export const WORKER_SESSION_KEY = 'EGRESS_WORKER_SESSION_KEY';

/**
 * Browser sign-in against `issuer`: the portal (/auth/ on the admin listener: authorization code
 * with PKCE) and the sessions it creates. Off (undefined) when no client secret is configured.
 */
export async function setupSignIn(rt: ProxyRuntime, issuer: string, devIdp: DevIdp | undefined): Promise<{ close(): void } | undefined> {
  const { sign_in: si, claims } = rt.config.identity;
  const log = rt.logger.log;
  const dev = devIdp !== undefined;
  const clientId = devIdp?.portal?.clientId ?? si.client_id;
  const secret = devIdp?.portal?.clientSecret ?? clientSecret(rt);
  if (secret === undefined) {
    log.info('browser sign-in is off: no client secret (identity.sign_in.client_secret_file or EGRESS_OIDC_CLIENT_SECRET)');
    return undefined;
  }
  const issuerUrl = new URL(issuer);
  if (issuerUrl.protocol !== 'https:' && !(issuerUrl.protocol === 'http:' && isLoopbackHost(issuerUrl.hostname))) {
    throw new Error(`identity.issuer ${issuer}: must be https (http only on loopback)`);
  }
  const portal = (si.portal_url ?? `http://${rt.config.admin}`).replace(/\/+$/, '');
  const portalUrl = new URL(portal);
  if (portalUrl.protocol !== 'https:' && !isLoopbackHost(portalUrl.hostname)) {
    throw new Error(`identity.sign_in.portal_url ${portal}: must be https (browsers keep the __Host- session cookie only from secure origins); plain http works only on loopback`);
  }
  let key: Uint8Array;
  if (si.session_key_file !== undefined) key = loadSessionKey(resolve(rt.config.baseDir, si.session_key_file));
  else if (process.env[WORKER_SESSION_KEY] !== undefined) {
    // Made by the supervisor for its workers (workers > 1 without a key file): they must share it.
    key = new Uint8Array(Buffer.from(process.env[WORKER_SESSION_KEY]!, 'hex'));
  } else {
    key = new Uint8Array(randomBytes(32));
    if (!dev) log.warn('identity.sign_in.session_key_file is not set: sessions are sealed with a key made at start, so they do not survive a restart and other cluster nodes cannot read them');
  }
  const sync = workerSessionSync();
  const store = new SessionStore({ key, ttlS: si.session_ttl_s, ipBindingS: si.ip_binding_s, portal, onEvent: sync?.announce });
  const detach = sync?.attach(store);
  const oidc = discoverer(issuerUrl, clientId, secret);
  // Warm up; a failure here is not fatal (tokens and anonymous traffic go on), sign-in retries it.
  await oidc().catch((err: unknown) => log.warn({ issuer, err: String(err) }, 'identity provider discovery failed; sign-in will retry'));
  // Groups are refreshed only when the admin asked for offline_access (a refresh token) in the scopes.
  const refresher = si.scopes.includes('offline_access') ? new GroupsRefresher({ store, oidc, claims, intervalS: si.groups_refresh_s, log }) : undefined;
  rt.identity.sessions = store;
  // The portal also answers the bind step (Portal.bindHere), which explicit.ts routes to it from the
  // proxy listeners: there the proxy binds the session to the device and address it sees itself.
  rt.identity.portal = new Portal({
    store, oidc, portal, scopes: si.scopes, claims, ttlS: si.session_ttl_s, ipBindingS: si.ip_binding_s,
    devices: rt.config.devices.listen !== undefined || dev, intercepts: interception(rt), refresher, log,
  });
  log.info({ portal: `${portal}/auth/`, client_id: clientId, ip_binding_s: si.ip_binding_s, groups_refresh_s: refresher ? si.groups_refresh_s : 0 }, 'browser sign-in ready');
  return {
    close: () => {
      refresher?.close();
      detach?.();
      store.close();
      rt.identity.portal = undefined;
      rt.identity.sessions = undefined;
    },
  };
}
