import { generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadCaPair, type CertAuthority } from '../inspection/ca.js';
import { signCertificate, subjectName } from '../inspection/x509.js';

/** The trust domain of device certificates issued by the dev device CA. */
export const DEV_TRUST_DOMAIN = 'egress-proxy.dev';

/** A device CA: its certificate and private key (the same shape as the interception CA). */
export type DeviceCa = CertAuthority;

/** Files of a device CA directory: the CA (public), its key (0600) and the CRL it signs. */
export const deviceCaFiles = (dir: string): { cert: string; key: string; crl: string } => ({
  cert: join(dir, 'device-ca.pem'), key: join(dir, 'device-ca-key.pem'), crl: join(dir, 'device-crl.pem'),
});

/** Loads the device CA of `dir`, with a clear error when it is missing or the key does not match. */
export function loadDeviceCa(dir: string): DeviceCa {
  const f = deviceCaFiles(dir);
  return loadCaPair(f.cert, f.key, `no device CA in ${dir} (device-ca.pem, device-ca-key.pem)`);
}

/** Loads the device CA of `dir`, creating one first if there is none (dev mode, `devices issue`). */
export function ensureDeviceCa(dir: string): { ca: DeviceCa; created: boolean } {
  const f = deviceCaFiles(dir);
  if (existsSync(f.cert) && existsSync(f.key)) return { ca: loadDeviceCa(dir), created: false };
  mkdirSync(dir, { recursive: true });
  // RSA-2048 (an ECDSA device CA works as well: certificates and CRLs are signed with either).
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  // A unique name: leaves carry no key identifiers, so two dev CAs in one bundle must differ by name.
  const name = [{ name: 'commonName', value: `egress-proxy dev device CA ${randomBytes(4).toString('hex')}` }, { name: 'organizationName', value: 'egress-proxy' }];
  const now = Date.now();
  const certPem = signCertificate({
    subject: name, issuer: name, publicKey, notBefore: new Date(now - 3_600_000), notAfter: new Date(now + 825 * 86_400_000),
    extensions: [
      { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
      { name: 'subjectKeyIdentifier' },
    ],
  }, privateKey);
  writeKey(f.key, privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
  writeFileSync(f.cert, certPem, { mode: 0o644 });
  return { ca: loadDeviceCa(dir), created: true };
}

/** Writes a private key readable by its owner only, from the first byte. */
export function writeKey(file: string, pem: string): void {
  writeFileSync(file, pem, { mode: 0o600 });
  chmodSync(file, 0o600);
}

/** A device id usable as a SPIFFE path segment and a file name. */
export const DEVICE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** A freshly issued device certificate and its key (PEM). */
export interface IssuedDevice {
  certPem: string;
  keyPem: string;
  cert: X509Certificate;
}

/**
 * Issues a device certificate: a P-256 key, CN and URI SAN spiffe://<trust domain>/device/<id>,
 * clientAuth only. `notBefore`/`notAfter` default to now-1h / now+days (tests pass past dates).
 */
export function issueDeviceCert(ca: DeviceCa, id: string, o: { days?: number; notBefore?: Date; notAfter?: Date; trustDomain?: string } = {}): IssuedDevice {
  if (!DEVICE_ID.test(id)) throw new Error(`device id "${id}": use 1-64 letters, digits, ".", "_" or "-"`);
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Date.now();
  const certPem = signCertificate({
    subject: [{ name: 'commonName', value: id }],
    issuer: subjectName(ca.certPem),
    publicKey: privateKey,
    notBefore: o.notBefore ?? new Date(now - 3_600_000),
    notAfter: o.notAfter ?? new Date(now + (o.days ?? 30) * 86_400_000),
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', clientAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 6, value: `spiffe://${o.trustDomain ?? DEV_TRUST_DOMAIN}/device/${id}` }] },
    ],
  }, ca.key);
  return { certPem, keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), cert: new X509Certificate(certPem) };
}
