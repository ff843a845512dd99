import { ProxyError } from '../errors/proxy-error.js';
import type { Target } from '../listeners/target.js';
import type { ProxyRuntime } from '../runtime.js';

/**
 * Resolves the destination and checks every address it resolves to; returns the one address
 * that will be dialled. One denied address denies the request: a name that mixes public and
 * internal answers is how DNS rebinding starts.
 */
export async function chooseAddress(rt: ProxyRuntime, target: Target): Promise<string> {
  if (rt.self.has(target.host, target.port)) throw new ProxyError('proxy_loop', `${target.host}:${target.port}`);
  const resolved = rt.resolver.resolve(target.host);
  const addresses = Array.isArray(resolved) ? (resolved as readonly string[]) : await resolved;
  const guard = rt.current.guard;
  for (const a of addresses) {
    if (rt.self.has(a, target.port)) throw new ProxyError('proxy_loop', `${target.host} -> ${a}:${target.port}`);
    if (guard.check(a) === 'denied') throw new ProxyError('dest_private_address', `${target.host} -> ${a}`);
  }
  return addresses[0]!;
}
