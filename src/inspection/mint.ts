import { createSecureContext, type SecureContext } from 'node:tls';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { LRUCache } from 'lru-cache';
import forge from 'node-forge';
import type { CertAuthority } from './ca.js';
import { signCertificate, subjectName } from './x509.js';

/** Leaf settings. */
export interface MintOptions {
  validityHours: number;
  cacheSize: number;
}

/** A minted leaf: its PEM, and its own TLS context once the host has come back. */
interface Leaf {
  certPem: string;
  context: SecureContext | undefined;
}

/** The native half of a SecureContext; `setCert` replaces its certificate (Node has used it since 0.x). */
type NativeContext = { setCert?: (pem: string) => void };

/**
 * Mints the certificates the proxy shows to clients it intercepts: one per host, signed by the
 * interception CA, all sharing one ECDSA P-256 key pair (as mitmproxy does) so a new host costs a
 * signature, not a key generation. Leaves are cached; concurrent first requests for a host share
 * one minting.
 *
 * A TLS context of its own costs a host about 0.8 ms (OpenSSL 3 decodes the shared key again for
 * each), ten times the signature. So a host's first handshake borrows one shared context, keyed
 * once, whose certificate is swapped for the host's just before the handshake takes a copy of it;
 * a host that comes back gets its own context.
 */
export class LeafMinter {
  private readonly key: KeyObject;
  private readonly keyPem: string;
  private readonly cache: LRUCache<string, Leaf>;
  private readonly issuer: forge.asn1.Asn1;
  private readonly chain: string;
  private readonly shared: SecureContext;
  private readonly swap: ((pem: string) => void) | undefined;
  /** Number of leaves minted (cache misses), for metrics and tests. */
  minted = 0;
  /** Number of leaves served from the cache. */
  hits = 0;

  constructor(private readonly ca: CertAuthority, private readonly o: MintOptions) {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    this.key = privateKey;
    this.keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    // Reuse within a fraction of the validity, so a cached leaf is never served near its end.
    this.cache = new LRUCache({ max: o.cacheSize, ttl: (o.validityHours * 3_600_000) / 4 });
    // Copied as encoded (forge cannot parse EC certificates, and byte-equal names chain reliably).
    this.issuer = subjectName(ca.certPem);
    // A self-signed root is already in every trusting client's store; sending it costs a parse per
    // leaf (~0.25 ms) and bytes per handshake. An intermediate CA must be sent.
    this.chain = ca.cert.issuer === ca.cert.subject ? '' : ca.certPem;
    this.shared = this.contextOf(this.sign('shared.invalid'));
    const native = (this.shared as SecureContext & { context?: NativeContext }).context;
    // Without the native setter (a future Node), every host gets its own context at once.
    this.swap = typeof native?.setCert === 'function' ? native.setCert.bind(native) : undefined;
  }

  /**
   * The TLS context to show a client asking for `host` (a DNS name or an IP address). Create the
   * TLSSocket with it at once, in the same tick: a first visit's context is the shared one, and
   * the next first visit changes its certificate (a socket copies it when it is created).
   */
  contextFor(host: string): SecureContext {
    const name = host.toLowerCase();
    const cached = this.cache.get(name);
    if (cached) {
      this.hits++;
      return (cached.context ??= this.contextOf(cached.certPem));
    }
    const leaf = this.mint(name);
    if (!this.swap) return (leaf.context = this.contextOf(leaf.certPem));
    this.swap(leaf.certPem + this.chain);
    return this.shared;
  }

  /** The PEM certificate shown for `host` (minted if it is not cached), for tools and tests. */
  certificate(host: string): string {
    const name = host.toLowerCase();
    return (this.cache.get(name) ?? this.mint(name)).certPem;
  }

  /** Signs and caches a leaf; signing is synchronous, so callers in one tick cannot race: the first fills the cache. */
  private mint(name: string): Leaf {
    const leaf: Leaf = { certPem: this.sign(name), context: undefined };
    this.minted++;
    this.cache.set(name, leaf);
    return leaf;
  }

  private contextOf(certPem: string): SecureContext {
    return createSecureContext({ cert: certPem + this.chain, key: this.keyPem, minVersion: 'TLSv1.2' });
  }

  private sign(host: string): string {
    const now = Date.now();
    const ip = isIP(host) !== 0;
    return signCertificate({
      subject: [{ name: 'commonName', value: host.slice(0, 64) }],
      issuer: this.issuer,
      publicKey: this.key,
      notBefore: new Date(now - 3_600_000),
      notAfter: new Date(now + this.o.validityHours * 3_600_000),
      extensions: [
        { name: 'basicConstraints', cA: false },
        { name: 'keyUsage', digitalSignature: true, critical: true },
        { name: 'extKeyUsage', serverAuth: true },
        { name: 'subjectAltName', altNames: [ip ? { type: 7, ip: host } : { type: 2, value: host }] },
      ],
    }, this.ca.key);
  }
}
