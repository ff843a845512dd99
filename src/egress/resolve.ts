import { promises as dns } from 'node:dns';
import { isIP } from 'node:net';
import { LRUCache } from 'lru-cache';
import { ProxyError } from '../errors/proxy-error.js';

/** Resolver settings (from the `dns` section of the config). */
export interface ResolverOptions {
  servers: readonly string[];
  cacheTtlMs: number;
  timeoutMs: number;
}

/**
 * Resolves destination names once, for the address guard and the dialler alike, so the address
 * that is checked is the address that is dialled (no DNS-rebinding window between the two).
 */
export class Resolver {
  private readonly cache: LRUCache<string, readonly string[]>;
  private readonly inflight = new Map<string, Promise<readonly string[]>>();
  private readonly custom: dns.Resolver | undefined;
  private readonly timeoutMs: number;

  constructor(opts: ResolverOptions) {
    this.cache = new LRUCache({ max: 10_000, ttl: opts.cacheTtlMs });
    this.timeoutMs = opts.timeoutMs;
    if (opts.servers.length > 0) {
      this.custom = new dns.Resolver({ timeout: Math.min(opts.timeoutMs, 5000), tries: 2 });
      this.custom.setServers([...opts.servers]);
    }
  }

  /** Every address `host` resolves to (an IP literal resolves to itself). Throws ProxyError dns_failure. */
  resolve(host: string): Promise<readonly string[]> | readonly string[] {
    if (isIP(host) !== 0) return [host];
    const name = host.endsWith('.') ? host.slice(0, -1) : host;
    const hit = this.cache.get(name);
    if (hit) return hit;
    let p = this.inflight.get(name);
    if (!p) {
      p = this.lookup(name).finally(() => this.inflight.delete(name));
      this.inflight.set(name, p);
    }
    return p;
  }

  private async lookup(name: string): Promise<readonly string[]> {
    let addresses: string[];
    try {
      addresses = await withTimeout(this.custom ? this.viaServers(this.custom, name) : this.viaSystem(name), this.timeoutMs);
    } catch (err) {
      throw new ProxyError('dns_failure', `${name}: ${(err as Error).message}`, { cause: err });
    }
    if (addresses.length === 0) throw new ProxyError('dns_failure', `${name}: no addresses`);
    this.cache.set(name, addresses);
    return addresses;
  }

  private async viaSystem(name: string): Promise<string[]> {
    const all = await dns.lookup(name, { all: true, verbatim: true });
    return all.map((a) => a.address);
  }

  private async viaServers(r: dns.Resolver, name: string): Promise<string[]> {
    const [v4, v6] = await Promise.allSettled([r.resolve4(name), r.resolve6(name)]);
    const out = [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
    if (out.length === 0 && v4.status === 'rejected') throw v4.reason;
    return out;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    p.then(
      (v) => { clearTimeout(t); resolve(v); },
      (e: unknown) => { clearTimeout(t); reject(e instanceof Error ? e : new Error(String(e))); },
    );
  });
}
