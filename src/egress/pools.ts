import type { Socket } from 'node:net';
import { buildConnector, Pool, type Dispatcher } from 'undici';

/** How long a connection opened ahead of its request waits for it before it is closed. */
const WARM_MS = 10_000;

/** Address (without IPv6 brackets, as undici passes it), port and server name of a connection. */
const warmKey = (ip: string, port: string, servername: string | null | undefined): string => `${ip}:${port} ${servername ?? ''}`;

/** Settings shared by every upstream pool (undici Pool options, connect options included). */
export type PoolOptions = Pool.Options;

/** One request for a pool: undici's options with the origin as a string and the TLS server name. */
export type UpstreamRequest = Dispatcher.DispatchOptions & { origin: string; servername?: string | undefined };

/** What a request learns of the pool that carries it. */
export interface PoolInfo {
  /** The local address its connections leave from (undefined before the first one), for the access log's egress_ip. */
  readonly source: string | undefined;
}

interface PoolEntry extends PoolInfo {
  pool: Pool;
  connected: number;
  source: string | undefined;
}

/** A connection opened ahead: `sock` once connected; `taker` when a pool claimed it first. */
interface Warm {
  sock?: Socket;
  taker?: (sock: Socket | undefined) => void;
}

const poolKey = (origin: string, servername: string | undefined): string => (servername === undefined ? origin : `${origin} ${servername}`);

/**
 * Kept-alive upstream connections, one pool per (origin address, TLS server name). undici's
 * Agent keys pools by origin alone and, when a request names another server, closes the
 * connection and dials again; many names share one address behind CDNs, so interleaved names
 * would keep tearing connections down. A pool is dropped once its last connection closes.
 */
export class UpstreamPools {
  private readonly pools = new Map<string, PoolEntry>();
  /**
   * Connections opened ahead of their request (see preconnect), by address, port and server
   * name: still connecting (a pool that needs it waits for it rather than dialling twice) or ready.
   */
  private readonly warm = new Map<string, Warm>();
  private readonly dial: buildConnector.connector;
  private closed = false;

  constructor(private readonly options: PoolOptions) {
    // One connector (one TLS session cache) for every pool and for connections opened ahead.
    this.dial = buildConnector((options.connect ?? {}) as buildConnector.BuildOptions);
  }

  /** Pools dial through here: a connection opened ahead for this destination is used first. */
  private readonly connect: buildConnector.connector = (opts, cb) => {
    const key = warmKey(opts.hostname, opts.port, opts.servername);
    const w = this.warm.get(key);
    if (w === undefined) return this.dial(opts, cb);
    this.warm.delete(key);
    if (w.sock === undefined) {
      // Still connecting: take it when it is ready, or dial afresh if it fails.
      w.taker = (sock) => (sock ? cb(null, sock) : this.dial(opts, cb));
      return;
    }
    if (w.sock.destroyed || w.sock.readyState !== 'open') return this.dial(opts, cb);
    w.sock.setTimeout(0);
    // Asynchronously, as a fresh connection would be: undici's client expects that.
    const sock = w.sock;
    queueMicrotask(() => cb(null, sock));
  };

  /**
   * Opens (and verifies, for TLS) a connection to `ip:port` for `servername` before its request
   * exists, so it overlaps with work that comes first (the client's TLS handshake on an
   * intercepted tunnel). The address must already have passed the address guard. Skipped when a
   * pool for the destination already holds connections; unused, it is closed after 10 s.
   */
  preconnect(ip: string, port: number, servername: string | undefined): void {
    const origin = `https://${ip.includes(':') ? `[${ip}]` : ip}:${port}`;
    if (this.closed || (this.pools.get(poolKey(origin, servername))?.connected ?? 0) > 0) return;
    const key = warmKey(ip, String(port), servername);
    if (this.warm.has(key)) return;
    const w: Warm = {};
    this.warm.set(key, w);
    this.dial({ hostname: ip, host: ip, protocol: 'https:', port: String(port), ...(servername === undefined ? {} : { servername }) }, (err, sock) => {
      const ok = err === null && sock !== null && !this.closed;
      if (w.taker) return w.taker(ok ? sock : undefined);
      if (!ok) {
        sock?.destroy();
        if (this.warm.get(key) === w) this.warm.delete(key);
        return;
      }
      w.sock = sock;
      sock.setTimeout(WARM_MS, () => sock.destroy());
      sock.once('close', () => { if (this.warm.get(key) === w) this.warm.delete(key); });
    });
  }

  /** Sends one request on a pooled connection to `opts.origin` speaking to `opts.servername`; returns that pool. */
  dispatch(opts: UpstreamRequest, handler: Dispatcher.DispatchHandler): PoolInfo {
    const key = poolKey(opts.origin, opts.servername);
    let entry = this.pools.get(key);
    if (entry === undefined) {
      // The source address of the pool's connections, for the access log's egress_ip.
      const connect: buildConnector.connector = (o, cb) => this.connect(o, (err, sock) => {
        if (sock) e.source = sock.localAddress;
        (cb as (err: Error | null, sock: Socket | null) => void)(err, sock);
      });
      const pool = new Pool(opts.origin, { ...this.options, connect });
      const e: PoolEntry = { pool, connected: 0, source: undefined };
      const release = (): void => {
        if (e.connected > 0 || this.pools.get(key) !== e) return;
        this.pools.delete(key);
        void pool.close().catch(() => undefined);
      };
      pool.on('connect', () => { e.connected++; });
      pool.on('disconnect', () => { e.connected--; release(); });
      pool.on('connectionError', release);
      this.pools.set(key, e);
      entry = e;
    }
    entry.pool.dispatch(opts, handler);
    return entry;
  }

  /** Closes every pool once its requests finish. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.warm.values()) w.sock?.destroy();
    this.warm.clear();
    await Promise.all([...this.pools.values()].map((e) => e.pool.close().catch(() => undefined)));
    this.pools.clear();
  }
}
