import { createPublicKey, sign, verify, X509Certificate, type KeyObject } from 'node:crypto';
import forge from 'node-forge';

const { asn1 } = forge;
type Asn1 = forge.asn1.Asn1;

/** One parsed CRL: who issued it, when it is current, which serials it revokes. */
export interface Crl {
  /** DER of the issuer Name. */
  issuer: Buffer;
  thisUpdate: Date;
  nextUpdate: Date | undefined;
  /** Revoked serials (hex, upper case, as X509Certificate.serialNumber spells them) and when. */
  revoked: Map<string, Date>;
  /** The CRL's own number (cRLNumber extension), if any. */
  number: bigint | undefined;
  /** The CRL as PEM, one block. */
  pem: string;
}

/** A serial as Node spells it: hex upper case, whole bytes, no sign padding ("0A", "FF01"). */
export function normalizeSerial(text: string): string {
  let hex = text.trim().replace(/^0x/i, '').replace(/:/g, '').toUpperCase();
  if (!/^[0-9A-F]+$/.test(hex)) throw new Error(`not a hexadecimal serial: ${text}`);
  if (hex.length % 2 === 1) hex = `0${hex}`;
  while (hex.length > 2 && hex.startsWith('00')) hex = hex.slice(2);
  return hex;
}

const PEM_BLOCK = /-----BEGIN X509 CRL-----([A-Za-z0-9+/=\s]+?)-----END X509 CRL-----/g;

function time(node: Asn1 | undefined): Date | undefined {
  if (!node || node.tagClass !== asn1.Class.UNIVERSAL) return undefined;
  if (node.type === asn1.Type.UTCTIME) return asn1.utcTimeToDate(node.value as string);
  if (node.type === asn1.Type.GENERALIZEDTIME) return asn1.generalizedTimeToDate(node.value as string);
  return undefined;
}

function children(node: Asn1 | undefined, what: string): Asn1[] {
  if (!node || !Array.isArray(node.value)) throw new Error(`malformed CRL: ${what}`);
  return node.value as Asn1[];
}

const SIG_HASH: Record<string, string | null> = {
  '1.2.840.113549.1.1.11': 'sha256', '1.2.840.113549.1.1.12': 'sha384', '1.2.840.113549.1.1.13': 'sha512',
  '1.2.840.10045.4.3.2': 'sha256', '1.2.840.10045.4.3.3': 'sha384', '1.2.840.10045.4.3.4': 'sha512',
  '1.3.101.112': null,
};

/**
 * Parses every CRL block of a PEM file and checks each one's signature against `issuers` (the
 * device CA bundle): Node has no CRL parser, so this walks TBSCertList (RFC 5280 5.1) with forge's
 * ASN.1 reader. Throws with a reason on anything malformed, unsigned by a listed CA or empty.
 */
export function parseCrlPem(pem: string, issuers: readonly X509Certificate[]): Crl[] {
  const out: Crl[] = [];
  for (const m of pem.matchAll(PEM_BLOCK)) {
    const der = Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
    out.push(parseCrlDer(der, issuers));
  }
  if (out.length === 0) throw new Error('no "-----BEGIN X509 CRL-----" block');
  return out;
}

function parseCrlDer(der: Buffer, issuers: readonly X509Certificate[]): Crl {
  let top: Asn1;
  try {
    // The typings know only the old boolean form; the options object is forge's documented API.
    top = (asn1.fromDer as unknown as (b: forge.util.ByteStringBuffer, o: object) => Asn1)(forge.util.createBuffer(der.toString('binary')), { strict: true, parseAllBytes: true, decodeBitStrings: false });
  } catch (err) {
    throw new Error(`malformed CRL: ${(err as Error).message}`);
  }
  const [tbs, alg, sigBits] = children(top, 'CertificateList');
  if (!tbs || !alg || !sigBits || sigBits.type !== asn1.Type.BITSTRING) throw new Error('malformed CRL: CertificateList');
  const fields = children(tbs, 'TBSCertList');
  let i = 0;
  if (fields[0]?.type === asn1.Type.INTEGER) i++; // version v2
  i++; // signature AlgorithmIdentifier
  const issuerNode = fields[i++];
  if (!issuerNode || issuerNode.type !== asn1.Type.SEQUENCE) throw new Error('malformed CRL: issuer');
  const thisUpdate = time(fields[i++]);
  if (!thisUpdate) throw new Error('malformed CRL: thisUpdate');
  const nextUpdate = time(fields[i]);
  if (nextUpdate) i++;
  const revoked = new Map<string, Date>();
  const list = fields[i];
  if (list && list.tagClass === asn1.Class.UNIVERSAL && list.type === asn1.Type.SEQUENCE) {
    i++;
    for (const entry of children(list, 'revokedCertificates')) {
      const [serial, when] = children(entry, 'revoked entry');
      const date = time(when);
      if (!serial || serial.type !== asn1.Type.INTEGER || !date) throw new Error('malformed CRL: revoked entry');
      revoked.set(normalizeSerial(Buffer.from(serial.value as string, 'binary').toString('hex')), date);
    }
  }
  const number = crlNumber(fields[i]);
  const oid = asn1.derToOid(forge.util.createBuffer(children(alg, 'signatureAlgorithm')[0]?.value as string));
  const tbsDer = Buffer.from(asn1.toDer(tbs).getBytes(), 'binary');
  // The BIT STRING's first byte counts unused bits (always 0 for a signature).
  const sig = Buffer.from((sigBits.value as string).slice(1), 'binary');
  const hash = SIG_HASH[oid];
  if (hash === undefined) throw new Error(`CRL signature algorithm ${oid} is not supported`);
  const issuer = Buffer.from(asn1.toDer(issuerNode).getBytes(), 'binary');
  if (!issuers.some((ca) => verify(hash, tbsDer, ca.publicKey, sig))) throw new Error('CRL is not signed by any certificate of the device CA bundle');
  return { issuer, thisUpdate, nextUpdate, revoked, number, pem: toPem(der) };
}

function crlNumber(exts: Asn1 | undefined): bigint | undefined {
  if (!exts || exts.tagClass !== asn1.Class.CONTEXT_SPECIFIC || exts.type !== 0) return undefined;
  for (const ext of children(children(exts, 'crlExtensions')[0], 'crlExtensions')) {
    const [id, ...rest] = children(ext, 'extension');
    if (asn1.derToOid(forge.util.createBuffer(id?.value as string)) !== '2.5.29.20') continue;
    const octets = rest[rest.length - 1];
    const n = asn1.fromDer(forge.util.createBuffer(octets?.value as string));
    return BigInt(`0x${Buffer.from(n.value as string, 'binary').toString('hex') || '0'}`);
  }
  return undefined;
}

const seq = (v: Asn1[]): Asn1 => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, v);
const int = (hex: string): Asn1 => {
  // A positive INTEGER: a leading zero byte when the high bit is set.
  const b = Buffer.from(hex.length % 2 ? `0${hex}` : hex, 'hex');
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, (b[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b).toString('binary'));
};
// UTCTime until 2049, GeneralizedTime from 2050 (RFC 5280 5.1.2.4).
const utc = (d: Date): Asn1 => d.getUTCFullYear() < 2050
  ? asn1.create(asn1.Class.UNIVERSAL, asn1.Type.UTCTIME, false, asn1.dateToUtcTime(d))
  : asn1.create(asn1.Class.UNIVERSAL, asn1.Type.GENERALIZEDTIME, false, asn1.dateToGeneralizedTime(d));
const toPem = (der: Buffer): string => `-----BEGIN X509 CRL-----\n${der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END X509 CRL-----\n`;
const oidNode = (oid: string): Asn1 => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(oid).getBytes());

/** What a new CRL says. */
export interface CrlSpec {
  revoked: ReadonlyMap<string, Date>;
  number: bigint;
  thisUpdate: Date;
  nextUpdate: Date;
}

/** Builds and signs a v2 CRL (PEM) for `ca`, whose private key is `key` (RSA or EC). */
export function buildCrl(ca: X509Certificate, key: KeyObject, spec: CrlSpec): string {
  const type = createPublicKey(key).asymmetricKeyType;
  const algOid = type === 'rsa' ? '1.2.840.113549.1.1.11' : type === 'ec' ? '1.2.840.10045.4.3.2' : undefined;
  if (!algOid) throw new Error(`cannot sign a CRL with a ${String(type)} key`);
  // RSA AlgorithmIdentifiers carry an explicit NULL parameter; ECDSA ones carry none.
  const algorithm = seq(type === 'rsa' ? [oidNode(algOid), asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, '')] : [oidNode(algOid)]);
  const certTbs = children(children(asn1.fromDer(forge.util.createBuffer(ca.raw.toString('binary'))), 'certificate')[0], 'TBSCertificate');
  // TBSCertificate: [0] version, serial, signature, issuer, validity, subject, ...
  const subject = certTbs[certTbs[0]?.tagClass === asn1.Class.CONTEXT_SPECIFIC ? 5 : 4]!;
  const fields: Asn1[] = [int('01'), algorithm, subject, utc(spec.thisUpdate), utc(spec.nextUpdate)];
  // An empty list is left out altogether (RFC 5280 5.1.2.6).
  if (spec.revoked.size > 0) fields.push(seq([...spec.revoked].map(([serial, when]) => seq([int(serial), utc(when)]))));
  const numberExt = seq([oidNode('2.5.29.20'), asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, asn1.toDer(int(spec.number.toString(16))).getBytes())]);
  fields.push(asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [seq([numberExt])]));
  const tbs = seq(fields);
  const tbsDer = Buffer.from(asn1.toDer(tbs).getBytes(), 'binary');
  const signature = sign('sha256', tbsDer, key);
  const bits = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BITSTRING, false, `\x00${signature.toString('binary')}`);
  const der = Buffer.from(asn1.toDer(seq([tbs, algorithm, bits])).getBytes(), 'binary');
  return toPem(der);
}
