import { randomBytes } from 'node:crypto';
import type { LoadedConfig } from '../config/load.js';
import type { ProxyRuntime } from '../runtime.js';
import type { DevIdp } from './dev-idp.js';
import { createDeviceDirectory } from './devices.js';
import { setupSignIn } from './sign-in.js';
import { createTokenVerifier } from './tokens.js';

/** Environment variable naming the dev identity provider that a dev-mode supervisor runs for its workers. */
export const DEV_ISSUER = 'EGRESS_DEV_ISSUER';

/** What identity set-up started and must stop (the dev identity provider, timers). */
export interface IdentityHandle {
  /** The issuer in force: the configured one, the dev one, or undefined (no identity provider). */
  issuer: string | undefined;
  devIdp: DevIdp | undefined;
  close(): Promise<void>;
}

/** Starts the dev identity provider on loopback, with the proxy's portal registered as a client. */
export async function startDevIdentityProvider(config: LoadedConfig): Promise<DevIdp> {
  // Loaded only in dev mode: the provider and its web framework cost ~20 MB of memory. Its two
  // start-up warnings (Node 20 is older than it asks for; in-memory storage) are expected of a
  // dev identity provider and would only alarm (docs/identity-sign-in.md says so).
  const { startDevIdp } = await withoutKnownWarnings(() => import('./dev-idp.js'));
  const si = config.identity.sign_in;
  const portal = (si.portal_url ?? `http://${config.admin}`).replace(/\/+$/, '');
  return withoutKnownWarnings(() => startDevIdp({
    accessTokenTtl: 8 * 3600,
    portal: {
      clientId: si.client_id, clientSecret: randomBytes(24).toString('hex'),
      redirectUris: [`${portal}/auth/callback`], postLogoutRedirectUris: [`${portal}/auth/signed-out`],
    },
  }));
}

const KNOWN_DEV_WARNINGS = /^oidc-provider WARNING: (Unsupported runtime|a quick start development-only in-memory adapter)/;

/** Runs `f` with oidc-provider's expected dev-mode warnings kept off the console (others pass). */
async function withoutKnownWarnings<T>(f: () => Promise<T>): Promise<T> {
  const warn = console.warn;
  console.warn = (...args: unknown[]): void => {
    if (typeof args[0] === 'string' && KNOWN_DEV_WARNINGS.test(args[0])) return;
    warn(...args);
  };
  try {
    return await f();
  } finally {
    console.warn = warn;
  }
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
  if (issuer === undefined && o.dev && process.env[DEV_ISSUER] !== undefined) {
    // A worker of a dev-mode supervisor: the supervisor runs the one dev identity provider.
    issuer = process.env[DEV_ISSUER];
  } else if (issuer === undefined && o.dev) {
    devIdp = await startDevIdentityProvider(rt.config);
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
