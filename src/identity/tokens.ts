import { createHash } from 'node:crypto';
import {
  createRemoteJWKSet, customFetch, decodeProtectedHeader, jwtVerify,
  type FetchImplementation, type JWTPayload, type JWTVerifyGetKey, type JWTVerifyOptions,
} from 'jose';
import { LRUCache } from 'lru-cache';
import { Agent, fetch } from 'undici';
import { ProxyError } from '../errors/proxy-error.js';
import type { ReasonId } from '../errors/reasons.js';
import type { ProxyRuntime } from '../runtime.js';
import { challenges } from './authenticate.js';
import { discover } from './discovery.js';
import type { Principal, TokenAuthenticator } from './principal.js';
import { parseProxyAuthorization } from './proxy-auth.js';

/** Time allowed for discovery and for one JWKS fetch. */
const FETCH_TIMEOUT_MS = 5000;
/** Keys are re-fetched at least this often, so a key the issuer withdrew stops being trusted. */
const JWKS_MAX_AGE_MS = 10 * 60_000;
const JWS_COMPACT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
const MAX_GROUPS = 256;

/** A token verifier that also owns an HTTP connection pool to the issuer. */
export interface TokenVerifier extends TokenAuthenticator {
  close(): Promise<void>;
}

/** Thrown by the key lookup when the issuer's keys cannot be had (network, timeout, bad JWKS). */
class KeysUnavailable extends Error {}

function codeOf(err: unknown): string | undefined {
  const c = (err as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : undefined;
}

/** Maps a jose verification failure to its reason id. */
function reasonOf(err: unknown): ReasonId {
  if (err instanceof KeysUnavailable) return 'identity_unavailable';
  switch (codeOf(err)) {
    case 'ERR_JWT_EXPIRED':
      return 'token_expired';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED': {
      const { claim, reason } = err as { claim?: string; reason?: string };
      if (reason !== 'check_failed') return 'token_invalid';
      if (claim === 'nbf' || claim === 'iat') return 'token_not_yet_valid';
      if (claim === 'aud') return 'token_audience';
      if (claim === 'iss') return 'token_issuer';
      return 'token_invalid';
    }
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return 'token_algorithm';
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return 'token_signature';
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return 'token_unknown_key';
    default:
      return 'token_invalid';
  }
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/**
 * The principal a verified token stands for. A client-credentials token names its client and no
 * person (RFC 9068 sets sub to the client id there), so it is a workload; anything else is a user.
 */
function principalOf(claims: JWTPayload, names: ProxyRuntime['config']['identity']['claims']): Principal | undefined {
  const service = str(claims[names.service]);
  const user = str(claims[names.user]);
  const email = str(claims[names.email]);
  const raw = claims[names.groups];
  const groups = (Array.isArray(raw) ? raw : typeof raw === 'string' ? [raw] : []).filter((g): g is string => typeof g === 'string' && g !== '').slice(0, MAX_GROUPS);
  const expiresAt = (claims.exp as number) * 1000;
  if (service !== undefined && email === undefined && (user === undefined || user === service)) {
    return Object.freeze({ method: 'token', service, groups: Object.freeze(groups), expiresAt });
  }
  if (user === undefined && email === undefined) return undefined;
  return Object.freeze({ method: 'token', user, email, groups: Object.freeze(groups), expiresAt });
}

/**
 * Verifies workload tokens against `issuer`: OIDC discovery at start (throws if it fails: better
 * not to start than to refuse every workload), then the issuer's JWKS, re-fetched when a token
 * names a key id not seen yet (at most every `jwks_refresh_min_s`: key rotation without letting
 * junk tokens hammer the issuer). Verified tokens are cached by hash until they expire, so the
 * hot path is one SHA-256 and a map lookup.
 */
export async function createTokenVerifier(rt: ProxyRuntime, issuer: string): Promise<TokenVerifier> {
  const cfg = rt.config.identity;
  // Its own pool: the issuer is reached directly, never through a proxy from the environment.
  const agent = new Agent({ connect: { timeout: FETCH_TIMEOUT_MS }, keepAliveTimeout: 30_000 });
  let meta;
  try {
    meta = await discover(issuer, agent, FETCH_TIMEOUT_MS);
  } catch (err) {
    await agent.close();
    throw err;
  }
  const fetchImpl = ((url: string, init: Parameters<typeof fetch>[1]) => fetch(url, { ...init, dispatcher: agent })) as unknown as FetchImplementation;
  const remote = createRemoteJWKSet(new URL(meta.jwks_uri), {
    timeoutDuration: FETCH_TIMEOUT_MS,
    cooldownDuration: cfg.jwks_refresh_min_s * 1000,
    cacheMaxAge: Math.max(JWKS_MAX_AGE_MS, cfg.jwks_refresh_min_s * 1000),
    [customFetch]: fetchImpl,
  });
  let lastWarning = 0;
  const getKey: JWTVerifyGetKey = async (header, token) => {
    try {
      return await remote(header, token);
    } catch (err) {
      const code = codeOf(err);
      if (code === 'ERR_JWKS_NO_MATCHING_KEY' || code === 'ERR_JWKS_MULTIPLE_MATCHING_KEYS') throw err;
      const now = Date.now();
      if (now - lastWarning > cfg.jwks_refresh_min_s * 1000) {
        lastWarning = now;
        rt.logger.log.warn({ jwks_uri: meta.jwks_uri, error: err instanceof Error ? err.message : String(err) }, 'cannot fetch the identity provider keys; token requests get 503 identity_unavailable');
      }
      throw new KeysUnavailable(err instanceof Error ? err.message : 'keys unavailable');
    }
  };
  const algorithms = new Set<string>((cfg.algorithms as readonly string[]).filter((a) => a !== 'none' && !a.startsWith('HS')));
  const options: JWTVerifyOptions = {
    issuer: meta.issuer, audience: cfg.audience, algorithms: [...algorithms], clockTolerance: cfg.clock_skew_s, requiredClaims: ['exp'],
  };
  const realm = cfg.realm;
  const refuse = (reason: ReasonId, detail: string): ProxyError =>
    new ProxyError(reason, detail, reason === 'identity_unavailable' ? undefined : { headers: challenges(realm) });

  const verify = async (token: string): Promise<Principal> => {
    let claims: JWTPayload;
    try {
      claims = await verifyJwt(token, getKey, options);
    } catch (err) {
      throw refuse(reasonOf(err), err instanceof Error ? err.message : 'verification failed');
    }
    // jose checks iat only against a maximum age; a token issued in the future is not valid yet.
    if (typeof claims.iat === 'number' && claims.iat > Date.now() / 1000 + cfg.clock_skew_s) throw refuse('token_not_yet_valid', '"iat" is in the future');
    const principal = principalOf(claims, cfg.claims);
    if (!principal) throw refuse('token_invalid', `no ${cfg.claims.user}, ${cfg.claims.email} or ${cfg.claims.service} claim`);
    return principal;
  };

  const cache = cfg.token_cache_size > 0 ? new LRUCache<string, Principal>({ max: cfg.token_cache_size }) : undefined;
  // Concurrent first uses of one token share one verification.
  const pending = new Map<string, Promise<Principal>>();

  return {
    authenticate(header: string): Principal | Promise<Principal> {
      const cred = parseProxyAuthorization(header);
      if (!('token' in cred)) throw refuse('token_invalid', cred.problem);
      const token = cred.token;
      const key = createHash('sha256').update(token).digest('base64url');
      const hit = cache?.get(key);
      if (hit !== undefined && hit.expiresAt! > Date.now()) return hit;
      const inFlight = pending.get(key);
      if (inFlight) return inFlight;
      // Decided before any key lookup or parsing: "none" and HMAC tokens never reach jose.
      if (!JWS_COMPACT.test(token)) throw refuse('token_invalid', 'not a signed JWT (JWS compact form)');
      let alg: unknown;
      try {
        alg = decodeProtectedHeader(token).alg;
      } catch {
        throw refuse('token_invalid', 'unreadable JWT header');
      }
      if (typeof alg !== 'string') throw refuse('token_invalid', 'no alg in the JWT header');
      if (!algorithms.has(alg)) throw refuse('token_algorithm', `alg ${JSON.stringify(alg.slice(0, 16))} not accepted`);
      const p = verify(token).then((principal) => {
        const ttl = principal.expiresAt! - Date.now();
        if (cache && ttl > 0) cache.set(key, principal, { ttl });
        return principal;
      }).finally(() => pending.delete(key));
      pending.set(key, p);
      return p;
    },
    close: () => agent.close(),
  };
}

/**
 * jwtVerify, plus the case jose leaves to the caller: a token without a key id while the issuer
 * publishes several keys for its algorithm; the key whose signature verifies wins.
 */
async function verifyJwt(token: string, getKey: JWTVerifyGetKey, options: JWTVerifyOptions): Promise<JWTPayload> {
  try {
    return (await jwtVerify(token, getKey, options)).payload;
  } catch (err) {
    if (codeOf(err) !== 'ERR_JWKS_MULTIPLE_MATCHING_KEYS') throw err;
    let last: unknown = err;
    for await (const key of err as AsyncIterable<CryptoKey>) {
      try {
        return (await jwtVerify(token, key, options)).payload;
      } catch (e) {
        last = e;
        if (codeOf(e) !== 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') break;
      }
    }
    throw last;
  }
}
