import type { LoadedConfig } from './config/load.js';
import type { AddressGuard } from './egress/addresses.js';
import type { UpstreamPools } from './egress/pools.js';
import type { Resolver } from './egress/resolve.js';
import type { SelfAddresses } from './egress/self.js';
import type { LiveStats } from './logging/live-stats.js';
import type { ProxyLogger } from './logging/logger.js';
import type { CompiledPolicy } from './policy/load.js';
import type { PolicyStatus } from './policy/reload.js';

/**
 * Everything a request needs, built once at start-up and shared by the listeners. The policy
 * and its address guard are swapped together (never one without the other) on reload.
 */
export interface ProxyRuntime {
  readonly config: LoadedConfig;
  current: { policy: CompiledPolicy; guard: AddressGuard };
  /** The policy in force and the last reload problems, for /policy/status. */
  policyStatus: PolicyStatus | undefined;
  readonly resolver: Resolver;
  readonly upstream: UpstreamPools;
  /** TLS settings for destinations when the admin adds trust anchors (undefined = the system store). */
  readonly upstreamTls: import('node:tls').SecureContext | undefined;
  readonly logger: ProxyLogger;
  /** The live view of finished exchanges behind the admin dashboard (/ui). */
  readonly stats: LiveStats;
  /** Who is asking: token verification, sign-in sessions, device directory, and the connections they admitted. */
  readonly identity: {
    /** An identity provider is configured: anonymous requests that policy denies are asked to authenticate. */
    enabled: boolean;
    tokens: import('./identity/principal.js').TokenAuthenticator | undefined;
    sessions: import('./identity/principal.js').SessionLookup | undefined;
    devices: import('./identity/principal.js').DeviceDirectory | undefined;
    /** The sign-in portal's routes (/auth/...) on the admin listener. */
    portal: {
      handle(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): void;
      /** Answers SESSION_HANDOFF_PATH inside an intercepted connection to `host:port`. */
      handoff?(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse, host: string, port: number): void;
      /** Answers SESSION_HANDOFF_PATH on the proxy's own name (egress-proxy.invalid), reached through the proxy. */
      bindHere?(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): void;
      /** The signed-in user of a request to the admin origin (its session cookie), if any. */
      principal?(req: import('node:http').IncomingMessage): import('./identity/principal.js').Principal | undefined;
      /** The portal's public URL, no trailing slash. */
      readonly url?: string;
    } | undefined;
    admitted: import('./identity/admitted.js').AdmittedConnections;
  };
  readonly self: SelfAddresses;
  /** TLS interception, when a CA is configured: leaf minting, the inner server for decrypted requests, pinning state. */
  inspection: {
    minter: import('./inspection/mint.js').LeafMinter;
    ca: import('./inspection/ca.js').CertAuthority;
    server: import('node:http').Server;
    /** Client handshake refusals by host (certificate pinning shows up here). */
    refusals: Map<string, number>;
    autoBypass: Set<string>;
  } | undefined;
  /** Where uploads are scanned for DLP: worker threads (inspection.dlp_workers) or the event loop. */
  readonly dlpScans: import('./inspection/dlp/scan-pool.js').ScanPool;
  /** Where large uploads wait on disk for their DLP verdict (inspection.spool_*). */
  readonly spool: import('./inspection/spool.js').SpoolDir;
  /** ICAP services (inspection.icap), used by rules whose `dlp` names the `icap` profile. */
  readonly icap: { reqmod: import('./inspection/icap.js').IcapClient | undefined; respmod: import('./inspection/icap.js').IcapClient | undefined };
  /** Our Via entry, e.g. "1.1 egress-1 (egress-proxy)". */
  readonly via: string;
  /** The part of `via` that identifies this node, used to detect loops. */
  readonly viaToken: string;
  /** The proxy listener's bound address as HOST:PORT (known once it listens); the PAC default. */
  listenAddress: string;
  /** In-flight requests and tunnels, for draining on SIGTERM. */
  active: number;
  /** Client connections open on the proxy and device listeners (not the decrypted ones inside tunnels). */
  connections: number;
  /** Prometheus metrics, when metrics.enabled. */
  readonly metrics: import('./logging/metrics.js').ProxyMetrics | undefined;
  /** Client sockets of open tunnels and WebSockets, cut when the drain time runs out. */
  readonly tunnels: Set<import('node:net').Socket>;
  draining: boolean;
}
