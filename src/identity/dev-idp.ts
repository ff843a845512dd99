import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import Provider, { type ClientMetadata, type Configuration } from 'oidc-provider';

/** A sample user of the dev identity provider. */
export interface DevUser {
  id: string;
  email: string;
  name: string;
  groups: string[];
}

/** A sample workload client (client-credentials grant). */
export interface DevService {
  clientId: string;
  clientSecret: string;
}

/** Options for the dev identity provider. */
export interface DevIdpOptions {
  host?: string;
  port?: number;
  users?: DevUser[];
  services?: DevService[];
  /** The proxy's sign-in client: its redirect URIs (the portal's callback) and secret. */
  portal?: { clientId: string; clientSecret: string; redirectUris: string[]; postLogoutRedirectUris?: string[] };
  /** The `aud` of workload tokens. */
  audience?: string;
  /** Lifetime of access tokens, seconds. */
  accessTokenTtl?: number;
  /** Signing keys (private JWKs), first one signs; default: one new ES256 key. */
  signingKeys?: JsonWebKey[];
}

/** A running dev identity provider. */
export interface DevIdp {
  issuer: string;
  provider: Provider;
  server: Server;
  users: DevUser[];
  services: DevService[];
  /** The proxy's sign-in client, when one was registered. */
  portal: DevIdpOptions['portal'];
  /** A client-credentials access token (a JWT) for `clientId`. */
  serviceToken(clientId?: string): Promise<string>;
  close(): Promise<void>;
}

export const DEV_USERS: DevUser[] = [
  { id: 'alice', email: 'alice@example.com', name: 'Alice Example', groups: ['eng'] },
  { id: 'bob', email: 'bob@example.com', name: 'Bob Example', groups: ['finance'] },
  // In the default dashboard.admin_groups: the sample admin who can open /ui.
  { id: 'ada', email: 'ada@example.com', name: 'Ada Admin', groups: ['egress-admins', 'eng'] },
];

/** A new ES256 signing key as a private JWK with a kid. */
export function newSigningKey(): JsonWebKey {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'ES256', use: 'sig' } as JsonWebKey;
}

const page = (title: string, body: string): string =>
  `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head><body style="font-family:sans-serif;max-width:28em;margin:3em auto">${body}</body></html>`;

const escape = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/**
 * Starts a real OpenID Provider (oidc-provider) on loopback with sample users and workloads,
 * for dev mode and for tests. Sign-in is a plain form with no password (it is a dev IdP, never
 * exposed beyond loopback); production points the proxy at the company's issuer instead.
 */
export async function startDevIdp(o: DevIdpOptions = {}): Promise<DevIdp> {
  const host = o.host ?? '127.0.0.1';
  const users = o.users ?? DEV_USERS;
  const services = o.services ?? [{ clientId: 'ci-runner', clientSecret: randomBytes(16).toString('hex') }];
  const audience = o.audience ?? 'egress-proxy';
  const server = createServer();
  server.listen(o.port ?? 0, host);
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  const issuer = `http://${host}:${port}`;
  const clients: ClientMetadata[] = services.map((s) => ({
    client_id: s.clientId, client_secret: s.clientSecret, grant_types: ['client_credentials'], response_types: [], redirect_uris: [],
  }));
  if (o.portal) {
    clients.push({
      client_id: o.portal.clientId, client_secret: o.portal.clientSecret, grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'], redirect_uris: o.portal.redirectUris, post_logout_redirect_uris: o.portal.postLogoutRedirectUris ?? [],
    });
  }
  const config: Configuration = {
    clients,
    clientDefaults: { id_token_signed_response_alg: 'ES256' },
    jwks: { keys: (o.signingKeys ?? [newSigningKey()]) as NonNullable<Configuration['jwks']>['keys'] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
    scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true, logoutSource: async (ctx, form) => { ctx.body = page('Sign out', `${form}<p>Signing out…</p><script>document.forms[0].submit()</script>`.replace('<form', '<form id="op.logoutForm"').replace('</form>', '<input type="hidden" name="logout" value="yes"/></form>')); } },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => `urn:${audience}`,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({ scope: 'proxy', audience, accessTokenFormat: 'jwt', accessTokenTTL: o.accessTokenTtl ?? 600, jwt: { sign: { alg: 'ES256' } } }),
      },
    },
    ttl: { AccessToken: o.accessTokenTtl ?? 600, ClientCredentials: o.accessTokenTtl ?? 600, IdToken: 600, Session: 3600, Interaction: 600, Grant: 3600, RefreshToken: 86_400 },
    findAccount: (_ctx, id) => {
      // Looked up live: a user removed from the list (or whose groups change) is seen at once.
      const u = users.find((x) => x.id === id);
      if (!u) return undefined;
      return { accountId: id, claims: () => ({ sub: id, email: u.email, email_verified: true, name: u.name, groups: u.groups }) };
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    renderError: (ctx, out) => { ctx.type = 'html'; ctx.body = page('Error', `<h1>Sign-in error</h1><pre>${escape(JSON.stringify(out))}</pre>`); },
  };
  const provider = new Provider(issuer, config);
  const callback = provider.callback();
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    if (req.url?.startsWith('/interaction/')) void interaction(provider, users, req, res).catch(() => { res.statusCode = 400; res.end('interaction failed'); });
    else void callback(req, res);
  });
  const serviceToken = async (clientId = services[0]!.clientId): Promise<string> => {
    const s = services.find((x) => x.clientId === clientId)!;
    const r = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${s.clientId}:${s.clientSecret}`).toString('base64')}` },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'proxy', resource: `urn:${audience}` }),
    });
    const j = (await r.json()) as { access_token?: string; error?: string; error_description?: string };
    if (!j.access_token) throw new Error(`token request failed: ${j.error ?? r.status} ${j.error_description ?? ''}`);
    return j.access_token;
  };
  return {
    issuer, provider, server, users, services, portal: o.portal, serviceToken,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** The sign-in form: pick a sample user, then the grant is recorded and the flow resumes. */
async function interaction(provider: Provider, users: DevUser[], req: IncomingMessage, res: ServerResponse): Promise<void> {
  const details = await provider.interactionDetails(req, res);
  if (req.method === 'GET') {
    res.setHeader('content-type', 'text/html; charset=utf-8');
    const options = users.map((u) => `<option value="${escape(u.id)}">${escape(u.name)} (${escape(u.groups.join(', '))})</option>`).join('');
    res.end(page('Sign in', `<h1>Dev sign-in</h1><form method="post"><label>User <select name="login" id="login">${options}</select></label> <button id="signin" type="submit">Sign in</button></form>`));
    return;
  }
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const login = new URLSearchParams(Buffer.concat(chunks).toString()).get('login') ?? '';
  if (!users.some((u) => u.id === login)) {
    await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'unknown user' });
    return;
  }
  const params = details.params as { client_id: string; scope?: string };
  const grant = new provider.Grant({ accountId: login, clientId: params.client_id });
  grant.addOIDCScope(params.scope ?? 'openid');
  grant.addOIDCClaims(['email', 'groups', 'name']);
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { login: { accountId: login }, consent: { grantId } }, { mergeWithLastSubmission: false });
}
