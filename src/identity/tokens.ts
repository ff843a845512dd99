import type { ProxyRuntime } from '../runtime.js';
import type { TokenAuthenticator } from './principal.js';

/** Verifies workload tokens against `issuer` (OIDC discovery, JWKS). To be implemented. */
export async function createTokenVerifier(_rt: ProxyRuntime, _issuer: string): Promise<TokenAuthenticator | undefined> {
  return undefined;
}
