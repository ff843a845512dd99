import type { IncomingMessage } from 'node:http';

/** Who is asking, as verified credentials established it. Nothing here comes from client headers. */
export interface Principal {
  /** How it was established; "anonymous" when no credential was presented. */
  readonly method: 'anonymous' | 'token' | 'session';
  readonly user?: string | undefined;
  readonly email?: string | undefined;
  readonly groups: readonly string[];
  /** A workload (client-credentials token), rather than a person. */
  readonly service?: string | undefined;
  /** When the credential stops being valid (epoch ms); connections admitted with it end then. */
  readonly expiresAt?: number | undefined;
  /** The sign-in session, so signing out can end the connections it admitted. */
  readonly sessionId?: string | undefined;
}

export const ANONYMOUS: Principal = Object.freeze({ method: 'anonymous', groups: Object.freeze([]) as readonly string[] });

/** The device behind a connection, proven by its mTLS client certificate. */
export interface Device {
  /** From the certificate's URI SAN (e.g. spiffe://acme/device/laptop-7), else its CN. */
  readonly id: string;
  /** SHA-256 fingerprint of the certificate (sessions bind to it). */
  readonly fingerprint: string;
  /** Certificate serial (hex, upper case), checked against the CRL. */
  readonly serial: string;
  /** Certificate end of validity (epoch ms). */
  readonly notAfter: number;
}

/** Who asked: the principal, the device and the device's attributes as policy sees them. */
export interface Asked {
  principal: Principal;
  device: Device | undefined;
  attributes: Record<string, string | number | boolean> | undefined;
}

/** Verifies `Proxy-Authorization` values; throws ProxyError with a token_* reason on a bad one. */
export interface TokenAuthenticator {
  authenticate(header: string): Principal | Promise<Principal>;
}

/** Finds the signed-in user of a request (session cookie or client-address binding). */
export interface SessionLookup {
  forRequest(req: IncomingMessage, clientIp: string | undefined, device: Device | undefined): Principal | undefined;
  /** True once the session was signed out (or otherwise ended) before its expiry. */
  isRevoked(sessionId: string): boolean;
  /** Where a browser signs in, coming back to `returnTo` afterwards. */
  loginUrl(returnTo: string): string;
}

/** Device posture and revocation, from the inventory and the CRL. */
export interface DeviceDirectory {
  /** Posture attributes for policy; undefined when the device is not in the inventory. */
  attributes(id: string): Readonly<Record<string, string | number | boolean>> | undefined;
  isRevoked(serial: string): boolean;
}
