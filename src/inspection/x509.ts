import { createHash, createPublicKey, randomBytes, sign, type KeyObject } from 'node:crypto';
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
  /** Issuer attributes, or the issuing CA's encoded subject Name (see subjectName), copied byte for byte. */
  issuer: forge.pki.CertificateField[] | forge.asn1.Asn1;
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
  const rawIssuer = Array.isArray(spec.issuer) ? undefined : spec.issuer;
  cert.setIssuer(rawIssuer ? [] : (spec.issuer as forge.pki.CertificateField[]));
  cert.setExtensions(spec.extensions as never[]);
  cert.siginfo.algorithmOid = pki.oids.sha256WithRSAEncryption!;
  cert.signatureOid = pki.oids.sha256WithRSAEncryption!;
  const tbs = (pki as unknown as { getTBSCertificate(c: forge.pki.Certificate): forge.asn1.Asn1 }).getTBSCertificate(cert);
  // TBSCertificate: [0] version, serial, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
  if (!isRsa) (tbs.value as forge.asn1.Asn1[])[6] = spki;
  if (rawIssuer) (tbs.value as forge.asn1.Asn1[])[3] = rawIssuer;
  if (issuerKey.asymmetricKeyType === 'ec') return signEcdsa(tbs, issuerKey);
  (cert as unknown as { tbsCertificate: forge.asn1.Asn1 }).tbsCertificate = tbs;
  const der = asn1.toDer(tbs).getBytes();
  cert.signature = sign('sha256', Buffer.from(der, 'binary'), issuerKey).toString('binary');
  return pki.certificateToPem(cert);
}

/** ecdsa-with-SHA256, whose AlgorithmIdentifier has no parameters at all (RFC 5758; strict clients check). */
const ECDSA_SHA256 = (): forge.asn1.Asn1 => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
  asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer('1.2.840.10045.4.3.2').getBytes()),
]);

/**
 * Signs with an EC issuer key. forge writes only RSA signature algorithms (with NULL
 * parameters), so the Certificate is assembled here: a P-256 CA signs in ~0.05 ms where
 * RSA-2048 takes ~0.4 ms, for every host minted.
 */
function signEcdsa(tbs: forge.asn1.Asn1, issuerKey: KeyObject): string {
  (tbs.value as forge.asn1.Asn1[])[2] = ECDSA_SHA256();
  const tbsDer = asn1.toDer(tbs).getBytes();
  const sig = sign('sha256', Buffer.from(tbsDer, 'binary'), issuerKey); // DER-encoded ECDSA-Sig-Value
  const certAsn1 = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
    tbs,
    ECDSA_SHA256(),
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BITSTRING, false, `\0${sig.toString('binary')}`),
  ]);
  const b64 = Buffer.from(asn1.toDer(certAsn1).getBytes(), 'binary').toString('base64');
  return `-----BEGIN CERTIFICATE-----\n${b64.replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END CERTIFICATE-----\n`;
}

const SPKI = new WeakMap<KeyObject, forge.asn1.Asn1>();

// Only its shape matters: it is replaced in the TBS before signing.
const PLACEHOLDER_RSA = pki.setRsaPublicKey(new forge.jsbn.BigInteger('3'), new forge.jsbn.BigInteger('3'));

/** The SubjectKeyIdentifier extension of `key` (SHA-1 of its public key bits, RFC 5280 4.2.1.2 method 1), for RSA and EC keys. */
export function subjectKeyIdentifier(key: KeyObject): unknown {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const spki = asn1.fromDer(forge.util.createBuffer(pub.export({ type: 'spki', format: 'der' }).toString('binary')));
  const bits = ((spki.value as forge.asn1.Asn1[])[1]!.value as string).slice(1); // BIT STRING without its unused-bits byte
  const id = createHash('sha1').update(Buffer.from(bits, 'binary')).digest('binary');
  return { id: '2.5.29.14', critical: false, value: asn1.toDer(asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, id)).getBytes() };
}

/** The subject Name of a certificate (PEM) as it is encoded, to be copied as the issuer of the certificates it signs. */
export function subjectName(certPem: string): forge.asn1.Asn1 {
  const der = Buffer.from(certPem.replace(/-----[^-]+-----|\s+/g, ''), 'base64').toString('binary');
  const tbs = (asn1.fromDer(der).value as forge.asn1.Asn1[])[0]!;
  // TBSCertificate: [0] version, serial, signature, issuer, validity, subject, ...
  return (tbs.value as forge.asn1.Asn1[])[5]!;
}

/** An X.509 NameConstraints extension permitting only the given DNS subtrees (critical). */
export function nameConstraints(permitted: readonly string[]): unknown {
  const subtrees = permitted.map((d) =>
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [asn1.create(asn1.Class.CONTEXT_SPECIFIC, 2, false, d)]),
  );
  const value = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, subtrees)]);
  return { id: '2.5.29.30', critical: true, value: asn1.toDer(value).getBytes() };
}
