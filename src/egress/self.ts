import { networkInterfaces } from 'node:os';
import { unmapV4 } from './addresses.js';

/**
 * The addresses and ports the proxy itself listens on. A request that would reach one of them
 * is a loop (the proxy forwarding to itself), refused whatever the policy says.
 */
export class SelfAddresses {
  private readonly exact = new Set<string>();
  /** Every port we listen on: most destinations use none of them, and skip the rest. */
  private readonly ports = new Set<number>();
  private readonly anyPorts = new Set<number>();
  private readonly local = new Set<string>();

  /** Records a bound listener address. A wildcard bind means every local interface address. */
  add(address: string, port: number): void {
    this.ports.add(port);
    if (address === '0.0.0.0' || address === '::') {
      this.anyPorts.add(port);
      if (this.local.size === 0) {
        for (const list of Object.values(networkInterfaces())) {
          for (const i of list ?? []) this.local.add(i.address);
        }
      }
    } else {
      this.exact.add(`${unmapV4(address)}|${port}`);
    }
  }

  /** True when dialling `address`:`port` would reach this proxy. */
  has(address: string, port: number): boolean {
    if (!this.ports.has(port)) return false;
    const a = unmapV4(address);
    if (this.exact.has(`${a}|${port}`)) return true;
    return this.anyPorts.has(port) && (this.local.has(a) || a.startsWith('127.') || a === '::1' || a === '0.0.0.0' || a === '::');
  }
}
