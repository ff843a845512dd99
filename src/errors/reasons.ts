/**
 * The stable reason ids. Each one appears in the `X-Egress-Reason` header, the block page,
 * the access-log line (`reason`) and, later, the metrics label. Never rename one: admins
 * search their logs and alert on these strings.
 */
export const REASONS = {
  allowed: { status: 0, text: 'Allowed.' },
  policy_denied: { status: 403, text: 'The egress policy does not allow this destination.' },
  port_not_allowed: { status: 403, text: 'The egress policy does not allow this destination port.' },
  dest_private_address: {
    status: 403,
    text: 'The destination resolves to a private, loopback, link-local, metadata or reserved address.',
  },
  proxy_loop: { status: 508, text: 'The request is addressed to this proxy itself.' },
  not_a_proxy_request: {
    status: 400,
    text: 'This port is a forward proxy: send absolute-form requests (GET http://host/path) or CONNECT.',
  },
  bad_request: { status: 400, text: 'The request is malformed.' },
  bad_target: { status: 400, text: 'The request target is not a valid http(s) URL or host:port.' },
  smuggling_rejected: {
    status: 400,
    text: 'The request framing is ambiguous (conflicting Content-Length / Transfer-Encoding).',
  },
  header_too_large: { status: 431, text: 'The request headers are too large.' },
  request_timeout: { status: 408, text: 'The client did not send a complete request in time.' },
  upgrade_not_supported: { status: 400, text: 'Only WebSocket upgrades are supported.' },
  method_not_allowed: { status: 405, text: 'This method is not supported by the proxy.' },
  too_many_connections: { status: 503, text: 'The proxy is at its connection limit; try again shortly.' },
  draining: { status: 503, text: 'The proxy is shutting down.' },
  log_backlog: { status: 503, text: 'The proxy cannot write its access log right now; try again shortly.' },
  dns_failure: { status: 502, text: 'The destination host name could not be resolved.' },
  upstream_refused: { status: 502, text: 'The destination refused the connection.' },
  upstream_reset: { status: 502, text: 'The destination closed the connection unexpectedly.' },
  upstream_unreachable: { status: 502, text: 'The destination is unreachable.' },
  upstream_tls_error: { status: 502, text: 'The destination\'s TLS certificate or handshake failed verification.' },
  upstream_cert_expired: { status: 502, text: 'The destination\'s certificate has expired (or is not yet valid).' },
  upstream_cert_untrusted: { status: 502, text: 'The destination\'s certificate is self-signed or from an unknown authority.' },
  upstream_cert_name_mismatch: { status: 502, text: 'The destination\'s certificate is for another host name.' },
  upstream_cert_revoked: { status: 502, text: 'The destination\'s certificate has been revoked.' },
  not_tls: { status: 403, text: 'Inspection is required here, and the tunnel did not start with TLS.' },
  host_mismatch: { status: 421, text: 'The Host header does not match the TLS server name of this connection.' },
  client_tls_refused: { status: 0, text: 'The client refused the interception certificate (certificate pinning, or the CA is not trusted).' },
  auth_required: { status: 407, text: 'Sign in, or send credentials (Proxy-Authorization: Bearer <token>, or Basic with the token as password).' },
  token_invalid: { status: 407, text: 'The proxy credentials are not a valid token.' },
  token_expired: { status: 407, text: 'The token has expired; get a new one.' },
  token_not_yet_valid: { status: 407, text: 'The token is not valid yet (nbf/iat in the future).' },
  token_audience: { status: 407, text: 'The token was issued for another audience.' },
  token_issuer: { status: 407, text: 'The token was issued by an issuer this proxy does not trust.' },
  token_algorithm: { status: 407, text: 'The token is signed with an algorithm this proxy does not accept.' },
  token_signature: { status: 407, text: 'The token signature does not verify.' },
  token_unknown_key: { status: 407, text: 'The token is signed with a key the issuer does not publish.' },
  identity_unavailable: { status: 503, text: 'The identity provider cannot be reached to check credentials; try again shortly.' },
  signin_not_started: { status: 400, text: 'This sign-in was not started in this browser, or took longer than 10 minutes.' },
  signin_state_mismatch: { status: 400, text: 'The sign-in answer does not belong to the sign-in this browser started.' },
  signin_refused: { status: 403, text: 'The identity provider refused the sign-in.' },
  signin_failed: { status: 502, text: 'The sign-in could not be completed with the identity provider.' },
  signin_claims: { status: 403, text: 'The identity provider did not say who you are, or said too much to keep.' },
  signout_csrf: { status: 403, text: 'Sign-out must come from the portal page itself.' },
  admin_required: { status: 403, text: 'The admin dashboard is for members of an admin group (dashboard.admin_groups).' },
  device_required: { status: 403, text: 'This listener needs a device certificate.' },
  device_cert_expired: { status: 403, text: 'This device\'s certificate has expired.' },
  device_cert_untrusted: { status: 403, text: 'This device\'s certificate is not trusted.' },
  device_revoked: { status: 403, text: 'This device\'s certificate has been revoked.' },
  dlp_match: { status: 403, text: 'The request carries data that must not leave (data-loss prevention).' },
  dlp_file_type: { status: 403, text: 'This type of file may not be transferred here.' },
  dlp_oversize: { status: 413, text: 'The body is too large to be checked for data-loss prevention.' },
  dlp_undecodable: { status: 403, text: 'The body could not be decoded to be checked for data-loss prevention.' },
  dlp_error: { status: 503, text: 'The data-loss check failed, so the request was not sent; try again.' },
  dlp_unscanned: { status: 0, text: 'Allowed, but not (wholly) scanned for data-loss prevention.' },
  icap_blocked: { status: 403, text: 'The content inspection service refused this.' },
  icap_unavailable: { status: 503, text: 'The content inspection service is unavailable; try again shortly.' },
  icap_timeout: { status: 504, text: 'The content inspection service did not answer in time.' },
  icap_protocol: { status: 502, text: 'The content inspection service sent an answer the proxy cannot read.' },
  icap_server_error: { status: 502, text: 'The content inspection service failed.' },
  icap_too_large: { status: 413, text: 'The body is too large for the content inspection service.' },
  upstream_bad_response: { status: 502, text: 'The destination sent a response the proxy cannot forward.' },
  upstream_connect_timeout: { status: 504, text: 'The destination did not accept the connection in time.' },
  upstream_timeout: { status: 504, text: 'The destination did not answer in time.' },
  client_aborted: { status: 499, text: 'The client went away before the request completed.' },
  internal_error: { status: 500, text: 'The proxy failed unexpectedly; the error is in its log.' },
} as const satisfies Record<string, { status: number; text: string }>;

export type ReasonId = keyof typeof REASONS;

/** A refusal (the request was judged and turned away) rather than a failure to carry it out. */
export function isDenial(reason: ReasonId): boolean {
  const s = REASONS[reason].status;
  return s >= 400 && s < 500 && s !== 499 && s !== 408 ? true : s === 508;
}

/** The HTTP status a reason is answered with. */
export function statusOf(reason: ReasonId): number {
  return REASONS[reason].status;
}
