import { z } from 'zod';
import { cidr, hostPort, millis } from './fields.js';

/** The start-up configuration file (YAML). Every field has a default, so an empty file is valid. */
export const configSchema = z
  .strictObject({
    node_id: z.string().min(1).max(64).regex(/^[A-Za-z0-9._-]+$/).optional()
      .describe('Name of this egress node in logs and the Via header; defaults to the host name.'),
    listen: hostPort.default('127.0.0.1:3128').describe('Explicit proxy listener.'),
    admin: hostPort.default('127.0.0.1:9090').describe('Admin listener: health, readiness, PAC.'),
    metrics: z
      .strictObject({
        enabled: z.boolean().default(true).describe('Serve Prometheus metrics at /metrics on the admin listener.'),
        process: z.boolean().default(true).describe('Include Node.js process metrics (CPU, memory, open files, event-loop use and lag).'),
      })
      .prefault({}),
    workers: z.union([z.number().int().min(1).max(256), z.literal('auto')]).default(1)
      .describe('Proxy processes sharing the listeners; "auto" = one per CPU core. Each is a whole proxy.'),
    policies: z.string().min(1).default('policies').describe('Directory of policy files (relative to this file).'),
    watch_policies: z.boolean().default(true)
      .describe('Reload policy when a file in the policy directory changes. SIGHUP always reloads.'),
    allow_ranges: z.array(cidr).default([])
      .describe('Internal CIDRs the proxy may reach although they are denied by default (as smokescreen allows).'),
    dns: z
      .strictObject({
        servers: z.array(hostPort).default([]).describe('DNS servers to ask (HOST:PORT); empty = the system resolver.'),
        cache_ttl_ms: millis(30_000, 'Longest time an answer is reused'),
        timeout_ms: millis(5_000, 'Time allowed for one resolution'),
      })
      .prefault({}),
    limits: z
      .strictObject({
        max_header_bytes: z.number().int().min(1024).max(1_048_576).default(32_768)
          .describe('Largest request head accepted; larger ones get 431.'),
        max_connections: z.number().int().min(1).max(1_000_000).default(20_000)
          .describe('Concurrent client connections; more get 503 too_many_connections.'),
        headers_timeout_ms: millis(15_000, 'Time a client has to send the request line and headers (slowloris guard)'),
        request_timeout_ms: millis(300_000, 'Time a client has to send a whole request, body included'),
        keep_alive_timeout_ms: millis(5_000, 'How long an idle kept-alive client connection is held'),
        idle_timeout_ms: millis(300_000, 'How long a tunnel or request may see no bytes in either direction'),
        upstream_connect_timeout_ms: millis(10_000, 'Time allowed to connect to the destination'),
        upstream_headers_timeout_ms: millis(60_000, 'Time allowed for the destination to send response headers'),
        drain_timeout_ms: millis(30_000, 'On SIGTERM, how long in-flight requests and tunnels may finish'),
      })
      .prefault({}),
    forwarding: z
      .strictObject({
        x_forwarded_for: z.boolean().default(false)
          .describe('Send X-Forwarded-For upstream. Off by default: the internet should not see internal addresses.'),
        via: z.boolean().default(true).describe('Add a Via header naming this node (also used for loop detection).'),
      })
      .prefault({}),
    pac: z
      .strictObject({
        proxy: hostPort.optional().describe('HOST:PORT that browsers should use; defaults to the listen address.'),
        direct_domains: z.array(z.string().regex(/^\*?\.?[A-Za-z0-9.-]+$/)).default([])
          .describe('Internal domains reached DIRECT (a leading dot or *. means the domain and its subdomains).'),
        direct_cidrs: z.array(cidr).default([]).describe('Internal networks reached DIRECT.'),
        fallback_direct: z.boolean().default(false)
          .describe('Let browsers go DIRECT when the proxy is down. Off: traffic fails closed.'),
      })
      .prefault({}),
    inspection: z
      .strictObject({
        enabled: z.boolean().default(true)
          .describe('TLS interception is available; policy rules decide per request (inspect: true / false).'),
        ca_dir: z.string().min(1).default('certs')
          .describe('Directory of the interception CA (ca.pem, ca-key.pem), relative to this file. Dev mode creates one.'),
        leaf_validity_hours: z.number().int().min(1).max(24 * 30).default(72).describe('Lifetime of minted certificates.'),
        leaf_cache_size: z.number().int().min(1).max(1_000_000).default(10_000),
        upstream_ca_file: z.string().min(1).optional()
          .describe('Extra CA bundle (PEM) trusted for destinations, besides the system store.'),
        auto_bypass_after: z.number().int().min(0).max(1000).default(0)
          .describe('Stop intercepting a host after this many clients refused our certificate (pinning); 0 = never.'),
        preconnect: z.boolean().default(true)
          .describe('Open the verified connection to the destination while the client\'s TLS handshake with the proxy is under way (as Squid server-first does); off: only once the request is known.'),
        dlp_workers: z.number().int().min(0).max(64).default(0)
          .describe('Threads that scan uploads for DLP, so scanning uses other cores and never holds up other requests; 0 = scan on the event loop.'),
        hold_bytes: z.number().int().min(0).max(1 << 30).default(8 << 20)
          .describe('Request bodies up to this size are held in memory until DLP/ICAP decide, so a blocked upload sends nothing.'),
        spool_bytes: z.number().int().min(0).max(1 << 30).default(1 << 30)
          .describe('Past hold_bytes, a body DLP scans is held on disk (encrypted, deleted when done) until its verdict, up to the largest max_scan_bytes of its profiles and at most this; larger ones stream while scanned and are cut on a block. 0 = never spool.'),
        spool_total_bytes: z.number().int().min(0).max(2 ** 44).default(8 * 2 ** 30)
          .describe('Disk all spooled bodies may take together (per worker process); past it, a large body streams while scanned.'),
        spool_dir: z.string().min(1).optional()
          .describe('Directory of spooled bodies, relative to this file; default: a directory in the system temp dir.'),
        icap: z.strictObject({
          reqmod_url: z.string().regex(/^icap:\/\/[^/\s]+\/\S*$/, { message: 'expected icap://host:port/service' }).optional()
            .describe('ICAP REQMOD service for uploads (RFC 3507), used by DLP profiles with `icap: true`.'),
          respmod_url: z.string().regex(/^icap:\/\/[^/\s]+\/\S*$/, { message: 'expected icap://host:port/service' }).optional()
            .describe('ICAP RESPMOD service for downloads.'),
          timeout_ms: millis(5_000, 'Time allowed to connect to the ICAP server and for each of its answers'),
          total_timeout_ms: z.number().int().min(1).max(600_000).optional()
            .describe('Time allowed for a whole ICAP exchange (OPTIONS included); default 3 × timeout_ms.'),
          fail_open: z.boolean().default(false).describe('When the ICAP server is down or slow: true lets traffic through (logged), false refuses it.'),
          preview_bytes: z.number().int().min(0).max(1 << 20).optional().describe('Preview size; default: what the server asks for in OPTIONS.'),
          max_body_bytes: z.number().int().min(1024).max(1 << 30).default(10 << 20).describe('Largest body sent whole to the ICAP server.'),
        }).prefault({}),
      })
      .prefault({}),
    identity: z
      .strictObject({
        issuer: z.url().optional()
          .describe('OIDC issuer (https; http only on loopback). Discovery finds its keys and endpoints. Absent: no identity provider, everyone is anonymous.'),
        audience: z.array(z.string().min(1)).min(1).default(['egress-proxy'])
          .describe('Accepted `aud` values of workload tokens.'),
        algorithms: z.array(z.enum(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'])).min(1)
          .default(['RS256', 'PS256', 'ES256', 'EdDSA'])
          .describe('Token signature algorithms accepted (never none, never HS*).'),
        clock_skew_s: z.number().int().min(0).max(300).default(30).describe('Tolerance on exp / nbf / iat.'),
        jwks_refresh_min_s: z.number().int().min(1).max(3600).default(30)
          .describe('A token with an unknown key id refreshes the issuer keys at most this often (key rotation).'),
        token_cache_size: z.number().int().min(0).max(1_000_000).default(10_000).describe('Verified tokens kept until they expire.'),
        claims: z.strictObject({
          user: z.string().min(1).default('sub').describe('Claim naming a signed-in user.'),
          email: z.string().min(1).default('email'),
          groups: z.string().min(1).default('groups'),
          service: z.string().min(1).default('client_id').describe('Claim naming a workload (client-credentials tokens).'),
        }).prefault({}),
        realm: z.string().min(1).max(64).regex(/^[^"\\]+$/).default('egress-proxy').describe('Realm in Proxy-Authenticate.'),
        revalidate_s: z.number().int().min(1).max(3600).default(60)
          .describe('Open tunnels and kept-alive connections of an expired token, signed-out session or revoked device end within this time.'),
        sign_in: z.strictObject({
          client_id: z.string().min(1).default('egress-proxy').describe('The proxy\'s OIDC client (authorization code + PKCE).'),
          client_secret_file: z.string().min(1).optional().describe('File holding the client secret (or env EGRESS_OIDC_CLIENT_SECRET).'),
          scopes: z.array(z.string().min(1)).default(['openid', 'email', 'profile', 'groups']),
          portal_url: z.url().optional().describe('Public URL of the admin origin serving the sign-in portal; default http://<admin>.'),
          session_ttl_s: z.number().int().min(60).max(30 * 86_400).default(8 * 3600).describe('How long a sign-in lasts.'),
          ip_binding_s: z.number().int().min(0).max(30 * 86_400).default(3600)
            .describe('After sign-in, requests from the same client address are that user\'s for this long (0 = off).'),
          groups_refresh_s: z.number().int().min(60).max(86_400).default(900)
            .describe('With offline_access in scopes: how often a session\'s groups are refreshed at the IdP, seconds.'),
          session_key_file: z.string().min(1).optional()
            .describe('32-byte key sealing sessions, shared by every node of a cluster; dev mode makes one.'),
        }).prefault({}),
      })
      .prefault({}),
    devices: z
      .strictObject({
        listen: hostPort.optional().describe('HTTPS proxy listener that asks for a device certificate (mTLS); dev mode: 127.0.0.1:3129.'),
        ca_file: z.string().min(1).optional().describe('Device CA bundle (PEM) that device certificates must chain to.'),
        crl_file: z.string().min(1).optional().describe('CRL (PEM) of revoked devices, reloaded when it changes.'),
        inventory: z.string().min(1).default('devices.yaml')
          .describe('Device inventory (posture attributes by device id), relative to the policy directory; reloaded on change.'),
        require_certificate: z.boolean().default(false)
          .describe('Refuse clients without a certificate at the TLS handshake; otherwise they are device "unknown".'),
        server_cert_file: z.string().min(1).optional().describe('The listener\'s own certificate; default: minted from the interception CA.'),
        server_key_file: z.string().min(1).optional(),
      })
      .prefault({}),
    dashboard: z
      .strictObject({
        admin_groups: z.array(z.string().min(1)).default(['egress-admins'])
          .describe('Groups (from sign-in) whose members may open the admin dashboard at /ui on the admin listener; empty = nobody.'),
      })
      .prefault({})
      .describe('The admin dashboard (/ui): live traffic, top users and destinations, recent denies and DLP incidents.'),
    log: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
        redact_query: z.boolean().default(true).describe('Replace query strings in logged URLs by "?REDACTED".'),
        stdout: z.boolean().default(true).describe('Write the log to stdout (for containers).'),
        file: z.strictObject({
          path: z.string().min(1).describe('Log file, relative to this file; with workers > 1 each writes its own (access.log -> access-w1.log).'),
          rotate_bytes: z.number().int().min(0).max(2 ** 48).default(100 << 20)
            .describe('Rotate (access.log -> access.log.1 …) before the file would pass this size; 0 = never (rotate externally, then SIGHUP).'),
          keep: z.number().int().min(1).max(1000).default(10).describe('Rotated files kept; the oldest is deleted.'),
        }).optional().describe('Also (or, with stdout: false, only) write the log to a file.'),
        buffer_bytes: z.number().int().min(16_384).max(1 << 30).default(8 << 20)
          .describe('Lines kept in memory per destination while it does not take them (a stalled stdout reader, a full disk).'),
        when_full: z.enum(['fail_closed', 'drop']).default('fail_closed')
          .describe('When that buffer is full: fail_closed refuses new requests (503 log_backlog) until it drains; drop keeps serving and drops lines, counted.'),
        tamper_evident: z.boolean().default(false)
          .describe('Chain lines: each carries "prev", the SHA-256 of the line before; check with `egress-proxy logs verify`.'),
      })
      .refine((l) => l.stdout || l.file !== undefined, { message: 'stdout is false and no file is set: the log would go nowhere', path: ['stdout'] })
      .prefault({}),
  })
  .describe('egress-proxy start-up configuration');

export type ProxyConfig = z.output<typeof configSchema>;
