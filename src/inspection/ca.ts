import { createPrivateKey, generateKeyPairSync, X509Certificate, type KeyObject } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { nameConstraints, signCertificate, subjectKeyIdentifier } from './x509.js';

/** The interception CA: its public certificate and its private key. */
export interface CertAuthority {
  certPem: string;
  cert: X509Certificate;
  key: KeyObject;
  certFile: string;
}

/** Where the CA lives in a directory: the public certificate, and the key (mode 0600, git-ignored). */
export const caFiles = (dir: string): { cert: string; key: string } => ({ cert: join(dir, 'ca.pem'), key: join(dir, 'ca-key.pem') });

/** Options for a new CA. */
export interface CaOptions {
  commonName?: string | undefined;
  /** DNS subtrees the CA may vouch for (NameConstraints); empty means any name. */
  permittedDomains?: readonly string[] | undefined;
  validityDays?: number | undefined;
  /** ECDSA P-256 (default: every minted leaf costs a cheap signature) or RSA-2048 (for old clients). */
  keyType?: 'ec' | 'rsa' | undefined;
}

/** Creates a new CA in `dir`; refuses to overwrite one unless `force`. */
export function initCa(dir: string, o: CaOptions = {}, force = false): CertAuthority {
  const files = caFiles(dir);
  if (!force && (existsSync(files.cert) || existsSync(files.key))) {
    throw new Error(`a CA already exists in ${dir} (ca.pem / ca-key.pem); remove it first`);
  }
  mkdirSync(dir, { recursive: true });
  const { privateKey, publicKey } = o.keyType === 'rsa'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const name = [{ name: 'commonName', value: o.commonName ?? 'egress-proxy interception CA' }, { name: 'organizationName', value: 'egress-proxy' }];
  const now = Date.now();
  const extensions: unknown[] = [
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    subjectKeyIdentifier(publicKey),
  ];
  if (o.permittedDomains?.length) extensions.push(nameConstraints(o.permittedDomains));
  const certPem = signCertificate({
    subject: name, issuer: name, publicKey,
    notBefore: new Date(now - 3_600_000), notAfter: new Date(now + (o.validityDays ?? 825) * 86_400_000), extensions,
  }, privateKey);
  // Key first, private from the first byte: the file is never readable by others, even briefly.
  writeFileSync(files.key, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  chmodSync(files.key, 0o600);
  writeFileSync(files.cert, certPem, { mode: 0o644 });
  return loadCa(dir);
}

/** Loads the CA from `dir`, with a clear error when it is missing or the key does not match. */
export function loadCa(dir: string): CertAuthority {
  const files = caFiles(dir);
  return loadCaPair(files.cert, files.key, `no CA in ${dir}: run \`egress-proxy ca init --dir ${dir}\``);
}

/** Loads a CA certificate and its key, checking both exist, belong together and make a CA. */
export function loadCaPair(certFile: string, keyFile: string, missing: string): CertAuthority {
  if (!existsSync(certFile) || !existsSync(keyFile)) throw new Error(missing);
  const certPem = readFileSync(certFile, 'utf8');
  const cert = new X509Certificate(certPem);
  const key = createPrivateKey(readFileSync(keyFile));
  if (!cert.checkPrivateKey(key)) throw new Error(`${keyFile} does not belong to ${certFile}`);
  if (!cert.ca) throw new Error(`${certFile} is not a CA certificate`);
  return { certPem, cert, key, certFile };
}

/** Loads the CA, creating one first if there is none (dev mode). */
export function ensureCa(dir: string): { ca: CertAuthority; created: boolean } {
  const files = caFiles(dir);
  if (existsSync(files.cert) && existsSync(files.key)) return { ca: loadCa(dir), created: false };
  return { ca: initCa(dir), created: true };
}
