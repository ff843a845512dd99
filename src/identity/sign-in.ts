import type { ProxyRuntime } from '../runtime.js';
import type { DevIdp } from './dev-idp.js';

/** Browser sign-in (portal routes and sessions) against `issuer`. To be implemented. */
export async function setupSignIn(_rt: ProxyRuntime, _issuer: string, _devIdp: DevIdp | undefined): Promise<{ close(): void } | undefined> {
  return undefined;
}
