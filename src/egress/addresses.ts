import { BlockList, isIP } from 'node:net';
import { parseCidr, unmapV4 } from '../config/fields.js';

export { unmapV4 };

/**
 * Ranges the proxy never dials unless an admin allows them: anything that is not the public
 * internet. Cloud metadata (169.254.169.254, fd00:ec2::254) falls in link-local and ULA.
 */
export const DENIED_BY_DEFAULT: readonly string[] = [
  '0.0.0.0/8', // "this network"
  '10.0.0.0/8',
  '100.64.0.0/10', // carrier-grade NAT
  '127.0.0.0/8',
  '169.254.0.0/16', // link-local, cloud metadata
  '172.16.0.0/12',
  '192.0.0.0/24', // IETF protocol assignments
  '192.0.2.0/24', // documentation
  '192.88.99.0/24', // 6to4 relay
  '192.168.0.0/16',
  '198.18.0.0/15', // benchmarking
  '198.51.100.0/24',
  '203.0.113.0/24',
  '224.0.0.0/4', // multicast
  '240.0.0.0/4', // reserved, broadcast
  '::/96', // unspecified, loopback, IPv4-compatible
  '64:ff9b::/96', // NAT64: would reach an IPv4 address we cannot see
  '64:ff9b:1::/48',
  '100::/64', // discard
  '2001::/23', // IETF assignments (Teredo included)
  '2001:db8::/32', // documentation
  '2002::/16', // 6to4: embeds an IPv4 address
  'fc00::/7', // unique local
  'fe80::/10', // link-local
  'fec0::/10', // site-local (deprecated)
  'ff00::/8', // multicast
];

function addRange(list: BlockList, range: string): void {
  const c = parseCidr(range);
  if (!c) throw new Error(`invalid CIDR: ${range}`);
  list.addSubnet(c.address, c.prefix, c.family);
}

/** The verdict on one resolved address. */
export type AddressVerdict = 'public' | 'allowed_internal' | 'denied';

/** Classifies resolved addresses: public, internal but allowed by policy/config, or denied. */
export class AddressGuard {
  private readonly denied = new BlockList();
  private readonly allowed = new BlockList();
  // BlockList.check builds SocketAddress objects each call; destinations repeat, verdicts do not change.
  private readonly verdicts = new Map<string, AddressVerdict>();

  constructor(allowRanges: readonly string[]) {
    for (const r of DENIED_BY_DEFAULT) addRange(this.denied, r);
    for (const r of allowRanges) addRange(this.allowed, r);
  }

  /** Classifies one IP address (v4, v6 or v4-mapped v6). Anything unparseable is denied. */
  check(address: string): AddressVerdict {
    let v = this.verdicts.get(address);
    if (v === undefined) {
      v = this.classify(address);
      if (this.verdicts.size >= 65_536) this.verdicts.clear();
      this.verdicts.set(address, v);
    }
    return v;
  }

  private classify(address: string): AddressVerdict {
    const a = unmapV4(address);
    const v = isIP(a);
    if (v === 0) return 'denied';
    const family = v === 4 ? 'ipv4' : 'ipv6';
    if (this.allowed.check(a, family)) return 'allowed_internal';
    return this.denied.check(a, family) ? 'denied' : 'public';
  }
}
