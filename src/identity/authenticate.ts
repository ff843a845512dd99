import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { ProxyError } from '../errors/proxy-error.js';
import type { ProxyRuntime } from '../runtime.js';
import { ANONYMOUS, type Device, type Principal } from './principal.js';

/** The device proven on a client connection (set by the mTLS listener, carried into intercepted tunnels). */
export const kDevice = Symbol('egress.device');
/** The principal a tunnel was admitted with, carried into the requests decrypted from it. */
export const kPrincipal = Symbol('egress.principal');

/**
 * Reserved path on intercepted sites where the sign-in portal's one-time ticket becomes a session
 * cookie for that site (the request never goes upstream).
 */
export const SESSION_HANDOFF_PATH = '/.well-known/egress-proxy/session';

type Marked = Socket & { [kDevice]?: Device; [kPrincipal]?: Principal };

/** The device behind a client socket, if it presented a verified certificate. */
export function deviceOf(socket: Socket): Device | undefined {
  return (socket as Marked)[kDevice];
}

/** Marks a socket (an intercepted tunnel's decrypted side) with what its tunnel was admitted as. */
export function markSocket(socket: Socket, principal: Principal, device: Device | undefined): void {
  const m = socket as Marked;
  if (principal !== ANONYMOUS) m[kPrincipal] = principal;
  if (device) m[kDevice] = device;
}

/** The Proxy-Authenticate challenges of a 407 from this proxy. */
export function challenges(realm: string): Record<string, string[]> {
  return { 'proxy-authenticate': [`Basic realm="${realm}", charset="UTF-8"`, `Bearer realm="${realm}"`] };
}

/**
 * Establishes who is asking, from verified credentials only: a token in Proxy-Authorization,
 * the principal of the tunnel a decrypted request came through, or a sign-in session; else
 * anonymous. A bad credential is an error (407 with its reason), never a silent downgrade.
 */
export function authenticate(rt: ProxyRuntime, req: IncomingMessage, clientIp: string | undefined): Principal | Promise<Principal> {
  const id = rt.identity;
  const header = req.headers['proxy-authorization'];
  // Without an identity provider, credentials mean nothing here: the request stays anonymous (and
  // the header is still never forwarded).
  if (header !== undefined && id.tokens) return id.tokens.authenticate(header);
  const tunnel = (req.socket as Marked)[kPrincipal];
  if (tunnel) {
    if (tunnel.expiresAt !== undefined && tunnel.expiresAt <= Date.now()) throw new ProxyError('token_expired', 'the tunnel\'s credential expired', { headers: challenges(rt.config.identity.realm) });
    if (tunnel.sessionId !== undefined && id.sessions?.isRevoked(tunnel.sessionId)) throw new ProxyError('auth_required', 'session ended');
    return tunnel;
  }
  return id.sessions?.forRequest(req, clientIp, deviceOf(req.socket)) ?? ANONYMOUS;
}
