import { Pool, type Dispatcher } from 'undici';

/** Settings shared by every upstream pool (undici Pool options, connect options included). */
export type PoolOptions = Pool.Options;

/** One request for a pool: undici's options with the origin as a string and the TLS server name. */
export type UpstreamRequest = Dispatcher.DispatchOptions & { origin: string; servername?: string | undefined };

/**
 * Kept-alive upstream connections, one pool per (origin address, TLS server name). undici's
 * Agent keys pools by origin alone and, when a request names another server, closes the
 * connection and dials again; many names share one address behind CDNs, so interleaved names
 * would keep tearing connections down. A pool is dropped once its last connection closes.
 */
export class UpstreamPools {
  private readonly pools = new Map<string, { pool: Pool; connected: number }>();
  private closed = false;

  constructor(private readonly options: PoolOptions) {}

  /** Sends one request on a pooled connection to `opts.origin` speaking to `opts.servername`. */
  dispatch(opts: UpstreamRequest, handler: Dispatcher.DispatchHandler): boolean {
    const key = opts.servername === undefined ? opts.origin : `${opts.origin} ${opts.servername}`;
    let entry = this.pools.get(key);
    if (entry === undefined) {
      const connect = { ...this.options.connect, ...(opts.servername === undefined ? {} : { servername: opts.servername }) };
      const pool = new Pool(opts.origin, { ...this.options, connect });
      const e = { pool, connected: 0 };
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
    return entry.pool.dispatch(opts, handler);
  }

  /** Number of pools, for tests and status. */
  get size(): number {
    return this.pools.size;
  }

  /** Closes every pool once its requests finish. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.pools.values()].map((e) => e.pool.close().catch(() => undefined)));
    this.pools.clear();
  }
}
