import type { ReasonId } from './reasons.js';

/** A failure on the request path, carrying the stable reason id that the client, the log and metrics see. */
export class ProxyError extends Error {
  readonly reason: ReasonId;
  /** Extra text for the log only (never shown to the client: it may name internal addresses). */
  readonly detail: string | undefined;
  /** The policy rule that refused, shown on the block page. */
  readonly rule: string | undefined;
  /** The admin's message for the block page (a deny rule's `message`). */
  readonly publicMessage: string | undefined;
  /** Extra response headers (a 407's Proxy-Authenticate challenges, a sign-in redirect's Location). */
  readonly headers: Readonly<Record<string, string | string[]>> | undefined;

  constructor(reason: ReasonId, detail?: string, options?: { cause?: unknown; rule?: string | undefined; publicMessage?: string | undefined; headers?: Record<string, string | string[]> | undefined }) {
    super(detail ? `${reason}: ${detail}` : reason, options);
    this.name = 'ProxyError';
    this.reason = reason;
    this.detail = detail;
    this.rule = options?.rule;
    this.publicMessage = options?.publicMessage;
    this.headers = options?.headers;
  }
}

/** Narrows an unknown thrown value to something with Node's `code`. */
export function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}

/** Maps a socket or undici error met while reaching the destination to a reason id. */
export function upstreamReason(err: unknown): ReasonId {
  if (err instanceof ProxyError) return err.reason;
  switch (errorCode(err)) {
    case 'ECONNREFUSED':
      return 'upstream_refused';
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
      return 'upstream_reset';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
      return 'upstream_unreachable';
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'ETIMEDOUT':
    case 'ERR_SOCKET_CONNECTION_TIMEOUT':
      return 'upstream_connect_timeout';
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      return 'upstream_timeout';
    case 'UND_ERR_INFO':
    case 'HPE_INVALID_CONSTANT':
    case 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH':
    case 'UND_ERR_RES_EXCEEDED_MAX_SIZE':
      return 'upstream_bad_response';
    case 'UND_ERR_ABORTED':
    case 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH':
      return 'client_aborted';
    case 'CERT_HAS_EXPIRED':
    case 'CERT_NOT_YET_VALID':
      return 'upstream_cert_expired';
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
      return 'upstream_cert_untrusted';
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
    case 'HOSTNAME_MISMATCH':
      return 'upstream_cert_name_mismatch';
    case 'CERT_REVOKED':
      return 'upstream_cert_revoked';
    case 'UND_ERR_SOCKET_TLS':
    case 'ERR_SSL_WRONG_VERSION_NUMBER':
    case 'ERR_SSL_UNSUPPORTED_PROTOCOL':
    case 'EPROTO':
      return 'upstream_tls_error';
    default:
      return 'internal_error';
  }
}
