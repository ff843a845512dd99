import { randomBytes } from 'node:crypto';
import type { ProxyRuntime } from '../runtime.js';
import type { DevIdp } from './dev-idp.js';

/** What identity set-up started and must stop (the dev identity provider, timers). */
export interface IdentityHandle {
  /** The issuer in force: the configured one, the dev one, or undefined (no identity provider). */
  issuer: string | undefined;
  devIdp: DevIdp | undefined;
  close(): Promise<void>;
}

/**
 * Wires identity into the runtime: workload tokens and browser sign-in against the issuer (in dev
 * mode an embedded one on loopback), the device directory, and the sweep that ends connections
 * whose credential ended.
 */
export async function setupIdentity(rt: ProxyRuntime, o: { dev: boolean }): Promise<IdentityHandle> {
  const cfg = rt.config.identity;
  let issuer = cfg.issuer;
  let devIdp: DevIdp | undefined;
  if (issuer === undefined && o.dev) {
    // Loaded only in dev mode: the provider and its web framework cost ~20 MB of memory.
    const { startDevIdp } = await import('./dev-idp.js');
    devIdp = await startDevIdp({
      portal: { clientId: cfg.sign_in.client_id, clientSecret: randomBytes(24).toString('hex'), redirectUris: [], postLogoutRedirectUris: [] },
    });
    issuer = devIdp.issuer;
  }
  rt.identity.enabled = issuer !== undefined;
  rt.identity.admitted.start(cfg.revalidate_s * 1000, () => ({ sessions: rt.identity.sessions, devices: rt.identity.devices }), (n) => {
    rt.logger.log.info({ connections: n }, 'ended connections whose credential expired or was revoked');
  });
  return {
    issuer,
    devIdp,
    close: async () => {
      rt.identity.admitted.stop();
      await devIdp?.close();
    },
  };
}
