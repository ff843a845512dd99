import { ProxyError } from '../errors/proxy-error.js';
import type { Target } from './target.js';
import type { ProxyRuntime } from '../runtime.js';

/**
 * Resolves the destination and checks every address it resolves to; returns the one address
 * that will be dialled. One denied address denies the request: a name that mixes public and
 * internal answers is how DNS rebinding starts.
 */
export function chooseAddress(rt: ProxyRuntime, target: Target): string | Promise<string> {
  if (rt.self.has(target.host, target.port)) throw new ProxyError('proxy_loop', `${target.host}:${target.port}`);
  const resolved = rt.resolver.resolve(target.host);
  // IP literals and cached names answer synchronously: no promise on the common path.
  return Array.isArray(resolved) ? check(rt, target, resolved as readonly string[]) : (resolved as Promise<readonly string[]>).then((a) => check(rt, target, a));
}

function check(rt: ProxyRuntime, target: Target, addresses: readonly string[]): string {
  const guard = rt.current.guard;
  for (const a of addresses) {
    if (rt.self.has(a, target.port)) throw new ProxyError('proxy_loop', `${target.host} -> ${a}:${target.port}`);
    if (guard.check(a) === 'denied') throw new ProxyError('dest_private_address', `${target.host} -> ${a}`);
  }
  return addresses[0]!;
}
