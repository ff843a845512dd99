/** A parsed, normalised destination. `host` is lower-case, IDN in punycode, IPv6 without brackets. */
export interface Target {
  scheme: 'http' | 'https' | 'ws' | 'wss';
  host: string;
  port: number;
  /** Origin-form path with query, as sent upstream. */
  path: string;
  /** Host header value to send upstream (host plus a non-default port). */
  hostHeader: string;
}
