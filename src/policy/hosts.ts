import { domainToASCII } from 'node:url';

/** Lower-case, punycode, no trailing dot: the one spelling every host is compared in. */
export function canonicalHost(host: string): string {
  let h = host.endsWith('.') ? host.slice(0, -1) : host;
  h = h.toLowerCase();
  // Only non-ASCII names need the IDN conversion (it is comparatively slow).
  for (let i = 0; i < h.length; i++) {
    if (h.charCodeAt(i) > 127) return domainToASCII(h) || h;
  }
  return h;
}

/**
 * Host name → app ids, answered by walking the name's suffixes (at most one map lookup per
 * label), so the cost does not grow with the number of domains. Three kinds of entry:
 * exact hosts, `*.domain` (subdomains only), and category domains (the domain and its subdomains).
 */
export class HostIndex {
  private readonly exact = new Map<string, number[]>();
  private readonly subdomains = new Map<string, number[]>();
  private readonly domainAndSub = new Map<string, number[]>();
  size = 0;

  private static add(map: Map<string, number[]>, key: string, app: number): void {
    const list = map.get(key);
    if (!list) map.set(key, [app]);
    else if (!list.includes(app)) list.push(app);
  }

  /** Adds a pattern from an app's `hosts` list: `name` or `*.domain`. */
  addPattern(pattern: string, app: number): void {
    this.size++;
    if (pattern.startsWith('*.')) HostIndex.add(this.subdomains, canonicalHost(pattern.slice(2)), app);
    else HostIndex.add(this.exact, canonicalHost(pattern), app);
  }

  /** Adds a category-list domain: it matches itself and every subdomain (squidGuard semantics). */
  addDomain(domain: string, app: number): void {
    this.size++;
    HostIndex.add(this.domainAndSub, canonicalHost(domain), app);
  }

  /** Every app id the host belongs to (no duplicates; usually zero or one). */
  lookup(host: string, out: number[] = []): number[] {
    const h = canonicalHost(host);
    const push = (list: number[] | undefined): void => {
      if (list) for (const a of list) if (!out.includes(a)) out.push(a);
    };
    push(this.exact.get(h));
    push(this.domainAndSub.get(h));
    let dot = h.indexOf('.');
    while (dot !== -1) {
      const suffix = h.slice(dot + 1);
      push(this.subdomains.get(suffix));
      push(this.domainAndSub.get(suffix));
      dot = h.indexOf('.', dot + 1);
    }
    return out;
  }
}
