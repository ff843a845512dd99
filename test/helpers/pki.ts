import forge from 'node-forge';

/** A PEM certificate and key. */
export interface Pem { cert: string; key: string }

let serial = 1;
function nextSerial(): string {
  return (serial++).toString(16).padStart(2, '0');
}

function keyPair(): forge.pki.rsa.KeyPair {
  return forge.pki.rsa.generateKeyPair({ bits: 2048, e: 0x10001 });
}

/** A certificate valid from a minute ago for a day, for `keys`, not yet signed. */
function draft(keys: forge.pki.rsa.KeyPair, commonName: string, validDays = 1): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = nextSerial();
  // A negative validDays makes a certificate that expired that many days ago.
  cert.validity.notBefore = new Date(Date.now() - (validDays < 0 ? -validDays * 2 : 0) * 86_400_000 - 60_000);
  cert.validity.notAfter = new Date(Date.now() + validDays * 86_400_000);
  cert.setSubject([{ name: 'commonName', value: commonName }]);
  return cert;
}

/** A throw-away CA for tests (minted at test time; no key material is committed). */
export function makeCa(name = 'egress-proxy test CA'): Pem & { forgeCert: forge.pki.Certificate; forgeKey: forge.pki.rsa.PrivateKey } {
  const keys = keyPair();
  const cert = draft(keys, name);
  cert.setIssuer(cert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
  ]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  return {
    cert: forge.pki.certificateToPem(cert),
    key: forge.pki.privateKeyToPem(keys.privateKey),
    forgeCert: cert,
    forgeKey: keys.privateKey,
  };
}

/** A server certificate for the given DNS names and IPs, signed by `ca`. */
export function makeLeaf(ca: ReturnType<typeof makeCa>, names: string[], ips: string[] = [], validDays = 1): Pem {
  const keys = keyPair();
  const cert = draft(keys, names[0] ?? ips[0] ?? 'leaf', validDays);
  cert.setIssuer(ca.forgeCert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [...names.map((value) => ({ type: 2, value })), ...ips.map((ip) => ({ type: 7, ip }))] },
  ]);
  cert.sign(ca.forgeKey, forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: forge.pki.privateKeyToPem(keys.privateKey) };
}
