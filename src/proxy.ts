import cluster from 'node:cluster';
import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { createSecureContext, rootCertificates } from 'node:tls';
import { ensureCa, loadCa } from './inspection/ca.js';
import { LeafMinter } from './inspection/mint.js';
import { parseHostPort } from './config/fields.js';
import type { LoadedConfig } from './config/load.js';
import { UpstreamPools } from './egress/pools.js';
import { IcapClient } from './inspection/icap.js';
import { ScanPool } from './inspection/dlp/scan-pool.js';
import { SpoolDir } from './inspection/spool.js';
import { AdmittedConnections } from './identity/admitted.js';
import { setupIdentity, type IdentityHandle } from './identity/setup.js';
import { AddressGuard } from './egress/addresses.js';
import { Resolver } from './egress/resolve.js';
import { SelfAddresses } from './egress/self.js';
import { createAdminServer } from './listeners/admin.js';
import { createExplicitServer } from './listeners/explicit.js';
import { startDeviceListener } from './listeners/mtls.js';
import { observeAccess } from './logging/access-record.js';
import { LiveStats } from './logging/live-stats.js';
import { answerLiveRequests } from './logging/live-cluster.js';
import { createLogger, loggerOptions, type ProxyLogger } from './logging/logger.js';
import { ProxyMetrics } from './logging/metrics.js';
import { shareWithSupervisor } from './logging/metrics-cluster.js';
import { loadPolicyDir } from './policy/load.js';
import { PolicyReloader } from './policy/reload.js';
import type { ProxyRuntime } from './runtime.js';

/** A started proxy: where it listens, and how to stop it. */
export interface RunningProxy {
  runtime: ProxyRuntime;
  proxyAddress: AddressInfo;
  adminAddress: AddressInfo;
  /** The device (mTLS) listener's address, when it runs. */
  deviceAddress?: AddressInfo;
  /** The identity provider in force (configured or dev) and what identity set-up started. */
  identity: IdentityHandle;
  /** Stops accepting, lets in-flight work finish up to the drain timeout, then closes everything. */
  drain(): Promise<void>;
  /** Reloads the policy directory now (what SIGHUP does); resolves true when a new policy is in force. */
  reload(): Promise<boolean>;
}

async function listen(server: Server, hostPort: string): Promise<AddressInfo> {
  const { host, port } = parseHostPort(hostPort)!;
  server.listen({ host, port, backlog: 2048 });
  await once(server, 'listening');
  return server.address() as AddressInfo;
}

/** ICAP clients for the configured services (none when not configured). */
function icapClients(config: LoadedConfig): ProxyRuntime['icap'] {
  const i = config.inspection.icap;
  const make = (url: string | undefined): IcapClient | undefined =>
    url === undefined ? undefined : new IcapClient({
      url, timeoutMs: i.timeout_ms, failOpen: i.fail_open, maxBodyBytes: i.max_body_bytes,
      ...(i.preview_bytes !== undefined ? { previewBytes: i.preview_bytes } : {}),
      ...(i.total_timeout_ms !== undefined ? { totalTimeoutMs: i.total_timeout_ms } : {}),
    });
  return { reqmod: make(i.reqmod_url), respmod: make(i.respmod_url) };
}

/** Loads policy, builds the runtime and starts both listeners. Throws if policy is invalid. */
export async function startProxy(config: LoadedConfig, logger?: ProxyLogger, options: { dev?: boolean } = {}): Promise<RunningProxy> {
  const policy = loadPolicyDir(config.policiesDir);
  const lg = logger ?? createLogger(loggerOptions(config, cluster.isWorker ? cluster.worker?.id : undefined));
  // Destinations are verified against the system store, plus the admin's extra bundle if any.
  // The trust store is built once: a `ca` list given per connection costs ~20 ms each (bench/interception.mjs).
  const ca = config.upstreamCaFile ? [...rootCertificates, readFileSync(config.upstreamCaFile, 'utf8')] : undefined;
  const upstreamTls = ca ? createSecureContext({ ca, minVersion: 'TLSv1.2' }) : undefined;
  const upstream = new UpstreamPools({
    connect: {
      timeout: config.limits.upstream_connect_timeout_ms, rejectUnauthorized: true, minVersion: 'TLSv1.2',
      ...(upstreamTls ? { secureContext: upstreamTls } : {}),
    },
    headersTimeout: config.limits.upstream_headers_timeout_ms,
    bodyTimeout: config.limits.idle_timeout_ms,
    keepAliveTimeout: 4_000,
    pipelining: 1,
  });
  const rt: ProxyRuntime = {
    config,
    current: { policy, guard: new AddressGuard([...config.allow_ranges, ...policy.allowRanges]) },
    policyStatus: undefined,
    resolver: new Resolver({ servers: config.dns.servers, cacheTtlMs: config.dns.cache_ttl_ms, timeoutMs: config.dns.timeout_ms }),
    upstream,
    upstreamTls,
    logger: lg,
    // Reads rt.active only when a snapshot is taken, long after rt exists.
    stats: new LiveStats({ node: config.node_id, active: () => rt.active }),
    icap: icapClients(config),
    dlpScans: new ScanPool(config.inspection.dlp_workers, (err) => lg.log.error({ err: err.message }, 'DLP scan worker failed; its uploads were refused (dlp_error)')),
    spool: new SpoolDir(config.spoolDir, config.inspection.spool_total_bytes),
    identity: { enabled: false, tokens: undefined, sessions: undefined, devices: undefined, portal: undefined, admitted: new AdmittedConnections() },
    self: new SelfAddresses(),
    via: `1.1 ${config.node_id} (egress-proxy)`,
    viaToken: `${config.node_id} (egress-proxy)`,
    listenAddress: config.listen,
    active: 0,
    connections: 0,
    // Sources are read only when Prometheus scrapes, long after rt exists.
    metrics: config.metrics.enabled ? new ProxyMetrics({
      active: () => rt.active,
      connections: () => rt.connections,
      tunnels: () => rt.tunnels.size,
      certificates: () => rt.inspection && { minted: rt.inspection.minter.minted, hits: rt.inspection.minter.hits },
      policy: () => rt.policyStatus,
      log: () => ({ ...rt.logger.stats(), backlogged: rt.logger.backlogged }),
      spool: () => ({ bytes: rt.spool.used, opened: rt.spool.opened, full: rt.spool.full }),
      node: config.node_id,
    }, { defaultMetrics: config.metrics.process }) : undefined,
    tunnels: new Set(),
    inspection: undefined,
    draining: false,
  };
  if (config.inspection.enabled) {
    const { ca: authority, created } = options.dev ? ensureCa(config.caDir) : { ca: loadCa(config.caDir), created: false };
    if (created) lg.log.info({ ca: authority.certFile }, 'created a new interception CA; trust its certificate on clients (egress-proxy ca export)');
    rt.inspection = {
      ca: authority,
      minter: new LeafMinter(authority, { validityHours: config.inspection.leaf_validity_hours, cacheSize: config.inspection.leaf_cache_size }),
      server: createExplicitServer(rt),
      refusals: new Map(),
      autoBypass: new Set(),
    };
  }
  // The exchange's end time, taken once for its line, saves the live view a clock read.
  observeAccess(lg, (r) => rt.stats.add(r, r.endedAt));
  answerLiveRequests(rt.stats);
  if (rt.metrics) {
    observeAccess(lg, rt.metrics.observe);
    shareWithSupervisor(rt.metrics.registry);
  }
  const identity = await setupIdentity(rt, { dev: options.dev === true });
  const reloader = new PolicyReloader(rt);
  const proxyServer = createExplicitServer(rt);
  const adminServer = createAdminServer(rt);
  const proxyAddress = await listen(proxyServer, config.listen).catch(async (err: unknown) => {
    await rt.dlpScans.close();
    throw err;
  });
  let adminAddress: AddressInfo;
  try {
    adminAddress = await listen(adminServer, config.admin);
  } catch (err) {
    proxyServer.close();
    await rt.dlpScans.close();
    throw err;
  }
  let devices;
  try {
    devices = await startDeviceListener(rt, { dev: options.dev === true });
  } catch (err) {
    proxyServer.close();
    adminServer.close();
    await identity.close();
    await rt.dlpScans.close();
    throw err;
  }
  if (devices) rt.self.add(devices.address.address, devices.address.port);
  rt.listenAddress = proxyAddress.family === 'IPv6' ? `[${proxyAddress.address}]:${proxyAddress.port}` : `${proxyAddress.address}:${proxyAddress.port}`;
  rt.self.add(proxyAddress.address, proxyAddress.port);
  rt.self.add(adminAddress.address, adminAddress.port);
  if (config.watch_policies) reloader.watch();
  if (config.inspection.spool_bytes > 0) {
    // Said now rather than at the first large upload (which is refused with dlp_error until it is mended).
    try {
      rt.spool.prepare();
    } catch (err) {
      lg.log.error({ err: (err as Error).message }, 'uploads past inspection.hold_bytes cannot be held on disk; DLP will refuse them (dlp_error)');
    }
  }
  lg.log.info({ listen: proxyAddress, admin: adminAddress, devices: devices?.address, policy_version: policy.version, policy_files: policy.files }, 'egress-proxy ready');
  lg.flush(); // whoever waits for "ready" should not wait for a full block

  let draining: Promise<void> | undefined;
  const drain = (): Promise<void> =>
    (draining ??= (async () => {
      rt.draining = true;
      reloader.close();
      lg.log.info({ active: rt.active, drain_timeout_ms: config.limits.drain_timeout_ms }, 'draining');
      proxyServer.close();
      proxyServer.closeIdleConnections();
      rt.inspection?.server.closeIdleConnections();
      devices?.stopAccepting();
      devices?.closeIdle();
      const deadline = Date.now() + config.limits.drain_timeout_ms;
      while (rt.active > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
        proxyServer.closeIdleConnections();
        rt.inspection?.server.closeIdleConnections();
        devices?.closeIdle();
      }
      if (rt.active > 0) lg.log.warn({ active: rt.active }, 'drain timeout reached; closing what is left');
      proxyServer.closeAllConnections();
      rt.inspection?.server.closeAllConnections();
      devices?.closeAll();
      for (const s of rt.tunnels) s.destroy();
      adminServer.close();
      adminServer.closeAllConnections();
      await upstream.close().catch(() => undefined);
      await identity.close();
      rt.icap.reqmod?.close();
      rt.icap.respmod?.close();
      await rt.dlpScans.close();
      lg.log.info('stopped');
      // Every line out before exit, however slow the reader; bounded so a dead one cannot hold the exit.
      await lg.flushed(5_000);
      // Never silently: a destination still stalled at exit loses what it did not take.
      const left = lg.stats().buffered_bytes;
      if (left > 0) process.stderr.write(`egress-proxy: ALERT ${left} bytes of log lines could not be written before exit (the log destination stalled)\n`);
    })());
  return { runtime: rt, proxyAddress, adminAddress, deviceAddress: devices?.address, identity, drain, reload: () => reloader.reload('SIGHUP') };
}
