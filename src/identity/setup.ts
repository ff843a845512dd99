import { randomBytes } from 'node:crypto';
import type { ProxyRuntime } from '../runtime.js';
import type { DevIdp } from './dev-idp.js';
import { createDeviceDirectory } from './devices.js';
import { setupSignIn } from './sign-in.js';
import { createTokenVerifier } from './tokens.js';

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
    const portal = (cfg.sign_in.portal_url ?? `http://${rt.config.admin}`).replace(/\/+$/, '');
    devIdp = await startDevIdp({
      accessTokenTtl: 8 * 3600,
      portal: {
        clientId: cfg.sign_in.client_id, clientSecret: randomBytes(24).toString('hex'),
        redirectUris: [`${portal}/auth/callback`], postLogoutRedirectUris: [`${portal}/auth/signed-out`],
      },
    });
    issuer = devIdp.issuer;
  }
  rt.identity.enabled = issuer !== undefined;
  const tokens = issuer !== undefined ? await createTokenVerifier(rt, issuer) : undefined;
  rt.identity.tokens = tokens;
  const signIn = issuer !== undefined ? await setupSignIn(rt, issuer, devIdp) : undefined;
  const devices = createDeviceDirectory(rt);
  rt.identity.devices = devices;
  rt.identity.admitted.start(cfg.revalidate_s * 1000, () => ({ sessions: rt.identity.sessions, devices: rt.identity.devices }), (n) => {
    rt.logger.log.info({ connections: n }, 'ended connections whose credential expired or was revoked');
  });
  return {
    issuer,
    devIdp,
    close: async () => {
      rt.identity.admitted.stop();
      signIn?.close();
      devices?.close();
      await tokens?.close();
      await devIdp?.close();
    },
  };
}
