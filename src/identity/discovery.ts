import { isIP } from 'node:net';
import { fetch, type Dispatcher } from 'undici';

/** The parts of an OpenID Provider's metadata the token verifier needs. */
export interface IssuerMetadata {
  issuer: string;
  jwks_uri: string;
}

const LOOPBACK_NAMES = new Set(['localhost', '[::1]']);

/** True for https, or http to a loopback host (a local or test IdP): keys are never fetched in the clear over a network. */
export function isSecureUrl(u: URL): boolean {
  if (u.protocol === 'https:') return true;
  if (u.protocol !== 'http:') return false;
  const host = u.hostname.toLowerCase();
  return LOOPBACK_NAMES.has(host) || (isIP(host) === 4 && host.startsWith('127.'));
}

/**
 * OIDC discovery: fetches `${issuer}/.well-known/openid-configuration` through `dispatcher` (its
 * own connection, never through a proxy from the environment) and checks that the document names
 * the same issuer, so a mix-up or a hijacked discovery URL cannot point us at other keys.
 * Throws an Error that says what to fix.
 */
export async function discover(issuer: string, dispatcher: Dispatcher, timeoutMs: number): Promise<IssuerMetadata> {
  let base: URL;
  try {
    base = new URL(issuer);
  } catch {
    throw new Error(`identity.issuer ${JSON.stringify(issuer)} is not a URL`);
  }
  if (!isSecureUrl(base)) throw new Error(`identity.issuer must be https (http only on loopback): ${issuer}`);
  if (base.search !== '' || base.hash !== '') throw new Error(`identity.issuer must not have a query or fragment: ${issuer}`);
  const url = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  let doc: unknown;
  try {
    const res = await fetch(url, { dispatcher, redirect: 'manual', signal: AbortSignal.timeout(timeoutMs), headers: { accept: 'application/json' } });
    if (res.status !== 200) {
      await res.body?.cancel();
      throw new Error(`HTTP ${res.status}`);
    }
    doc = await res.json();
  } catch (err) {
    throw new Error(`OIDC discovery failed for ${issuer} (${url}): ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  if (typeof doc !== 'object' || doc === null) throw new Error(`OIDC discovery for ${issuer}: the document is not a JSON object`);
  const meta = doc as Record<string, unknown>;
  if (meta.issuer !== issuer) {
    throw new Error(`OIDC discovery for ${issuer}: the document names issuer ${JSON.stringify(meta.issuer)}; set identity.issuer to exactly that value`);
  }
  const jwks = meta.jwks_uri;
  if (typeof jwks !== 'string') throw new Error(`OIDC discovery for ${issuer}: no jwks_uri`);
  let jwksUrl: URL;
  try {
    jwksUrl = new URL(jwks);
  } catch {
    throw new Error(`OIDC discovery for ${issuer}: jwks_uri ${JSON.stringify(jwks)} is not a URL`);
  }
  if (!isSecureUrl(jwksUrl)) throw new Error(`OIDC discovery for ${issuer}: jwks_uri must be https (http only on loopback): ${jwks}`);
  return { issuer, jwks_uri: jwksUrl.href };
}
