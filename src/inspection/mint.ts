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

/** What a minted leaf is: its TLS context and PEM (PEM kept for tests and for `ca` tooling). */
export interface Leaf {
  context: SecureContext;
  certPem: string;
}

/**
 * Mints the certificates the proxy shows to clients it intercepts: one per host, signed by the
 * interception CA, all sharing one ECDSA P-256 key pair (as mitmproxy does) so a new host costs a
 * signature, not a key generation. Leaves are cached; concurrent first requests for a host share
 * one minting.
 */
export class LeafMinter {
  private readonly key: KeyObject;
  private readonly keyPem: string;
  private readonly cache: LRUCache<string, Leaf>;
  private readonly issuer: forge.asn1.Asn1;
  private readonly chain: string;
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
  }

  /** The leaf for `host` (a DNS name or an IP address), from cache or freshly signed. */
  get(host: string): Leaf {
    const key = host.toLowerCase();
    let leaf = this.cache.get(key);
    if (leaf) this.hits++;
    else {
      // Signing is synchronous, so callers in the same tick cannot race: the first one fills the cache.
      leaf = this.mint(key);
      this.cache.set(key, leaf);
    }
    return leaf;
  }

  private mint(host: string): Leaf {
    const now = Date.now();
    const ip = isIP(host) !== 0;
    const certPem = signCertificate({
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
    this.minted++;
    return { certPem, context: createSecureContext({ cert: certPem + this.chain, key: this.keyPem, minVersion: 'TLSv1.2' }) };
  }
}
