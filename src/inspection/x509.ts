import { createPublicKey, randomBytes, sign, type KeyObject } from 'node:crypto';
import forge from 'node-forge';

const { pki, asn1 } = forge;

/**
 * X.509 structure comes from node-forge; keys and signatures from Node's native crypto. Forge
 * signs in JavaScript (about 25 ms per RSA-2048 signature here); native signing takes about
 * 0.3 ms, which is what makes minting on the first request to a host cheap (docs/decisions.md).
 */

/** A random positive 128-bit serial number, unique for every certificate. */
export function serialNumber(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f;
  return b.toString('hex');
}

/** What a certificate to be signed contains. */
export interface CertSpec {
  subject: forge.pki.CertificateField[];
  issuer: forge.pki.CertificateField[];
  /** The public key the certificate certifies (RSA or EC). */
  publicKey: KeyObject;
  notBefore: Date;
  notAfter: Date;
  extensions: unknown[];
}

/** Builds and signs a certificate with an RSA issuer key; returns PEM. */
export function signCertificate(spec: CertSpec, issuerKey: KeyObject): string {
  const cert = pki.createCertificate();
  // forge only encodes RSA public keys; put a placeholder in and swap the real SPKI in the TBS below.
  let spki = SPKI.get(spec.publicKey);
  const isRsa = spec.publicKey.asymmetricKeyType === 'rsa';
  if (spki === undefined) {
    // Every leaf certifies the same key: export and parse it once (read-only below, so shareable).
    const pub = spec.publicKey.type === 'private' ? createPublicKey(spec.publicKey) : spec.publicKey;
    spki = asn1.fromDer(forge.util.createBuffer(pub.export({ type: 'spki', format: 'der' }).toString('binary')));
    SPKI.set(spec.publicKey, spki);
  }
  if (isRsa) cert.publicKey = pki.publicKeyFromAsn1(spki);
  else cert.publicKey = PLACEHOLDER_RSA;
  cert.serialNumber = serialNumber();
  cert.validity.notBefore = spec.notBefore;
  cert.validity.notAfter = spec.notAfter;
  cert.setSubject(spec.subject);
  cert.setIssuer(spec.issuer);
  cert.setExtensions(spec.extensions as never[]);
  cert.siginfo.algorithmOid = pki.oids.sha256WithRSAEncryption!;
  cert.signatureOid = pki.oids.sha256WithRSAEncryption!;
  const tbs = (pki as unknown as { getTBSCertificate(c: forge.pki.Certificate): forge.asn1.Asn1 }).getTBSCertificate(cert);
  // TBSCertificate: [0] version, serial, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
  if (!isRsa) (tbs.value as forge.asn1.Asn1[])[6] = spki;
  (cert as unknown as { tbsCertificate: forge.asn1.Asn1 }).tbsCertificate = tbs;
  const der = asn1.toDer(tbs).getBytes();
  cert.signature = sign('sha256', Buffer.from(der, 'binary'), issuerKey).toString('binary');
  return pki.certificateToPem(cert);
}

const SPKI = new WeakMap<KeyObject, forge.asn1.Asn1>();

// Only its shape matters: it is replaced in the TBS before signing.
const PLACEHOLDER_RSA = pki.setRsaPublicKey(new forge.jsbn.BigInteger('3'), new forge.jsbn.BigInteger('3'));

/** An X.509 NameConstraints extension permitting only the given DNS subtrees (critical). */
export function nameConstraints(permitted: readonly string[]): unknown {
  const subtrees = permitted.map((d) =>
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [asn1.create(asn1.Class.CONTEXT_SPECIFIC, 2, false, d)]),
  );
  const value = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, subtrees)]);
  return { id: '2.5.29.30', critical: true, value: asn1.toDer(value).getBytes() };
}
