import { parseCidr } from '../config/fields.js';
import type { LoadedConfig } from '../config/load.js';

function v4Mask(prefix: number): string {
  const m = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return [24, 16, 8, 0].map((s) => (m >>> s) & 255).join('.');
}

/** The host of the sign-in portal (portal_url, else the admin listener), when an issuer is configured. */
function portalHost(config: LoadedConfig): string | undefined {
  if (config.identity.issuer === undefined && config.identity.sign_in.portal_url === undefined) return undefined;
  const url = config.identity.sign_in.portal_url ?? `http://${config.admin}`;
  return new URL(url).hostname.replace(/^\[|\]$/g, '').toLowerCase();
}

/**
 * Generates the PAC file: DIRECT for the configured internal domains and networks, this proxy
 * for everything else, and no DIRECT fallback unless the config asks for one (fail closed).
 */
export function renderPac(config: LoadedConfig, listenAddress: string): string {
  const proxy = config.pac.proxy ?? listenAddress;
  const domains = config.pac.direct_domains.map((d) => d.replace(/^\*\./, '.').toLowerCase());
  // Browsers reach the sign-in portal directly: through the proxy it would be refused as the
  // proxy's own address. (The sign-in is then bound to what the proxy sees, in a step through it.)
  const portal = portalHost(config);
  if (portal && !domains.includes(portal)) domains.push(portal);
  const nets = config.pac.direct_cidrs
    .map((c) => parseCidr(c)!)
    .filter((c) => c.family === 'ipv4')
    .map((c) => [c.address, v4Mask(c.prefix)]);
  const target = `PROXY ${proxy}${config.pac.fallback_direct ? '; DIRECT' : ''}`;
  return `// egress-proxy PAC for node ${config.node_id}. Generated; edit the "pac" section of the config instead.
var DIRECT_DOMAINS = ${JSON.stringify(domains)};
var DIRECT_NETS = ${JSON.stringify(nets)};
function FindProxyForURL(url, host) {
  host = host.toLowerCase();
  if (host.charAt(host.length - 1) === '.') host = host.substring(0, host.length - 1);
  for (var i = 0; i < DIRECT_DOMAINS.length; i++) {
    var d = DIRECT_DOMAINS[i];
    if (d.charAt(0) === '.') {
      if (host === d.substring(1) || dnsDomainIs(host, d)) return 'DIRECT';
    } else if (host === d) return 'DIRECT';
  }
  if (/^\\d+\\.\\d+\\.\\d+\\.\\d+$/.test(host)) {
    for (var j = 0; j < DIRECT_NETS.length; j++) {
      if (isInNet(host, DIRECT_NETS[j][0], DIRECT_NETS[j][1])) return 'DIRECT';
    }
  }
  return ${JSON.stringify(target)};
}
`;
}
