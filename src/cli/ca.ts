import { resolve } from 'node:path';
import type { Command } from 'commander';
import { caFiles, initCa, loadCa } from '../inspection/ca.js';

const list = (v: string, prev: string[] = []): string[] => [...prev, ...v.split(',').map((x) => x.trim()).filter(Boolean)];

/** How to make clients trust the CA, per platform: one line each. */
function installSteps(certFile: string): string {
  return [
    'Install it as a trusted root on clients that should be inspected:',
    `  macOS:    sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain ${certFile}`,
    `  Windows:  certutil -addstore -f Root ${certFile}`,
    `  Debian/Ubuntu: sudo cp ${certFile} /usr/local/share/ca-certificates/egress-proxy.crt && sudo update-ca-certificates`,
    `  RHEL/Fedora:   sudo cp ${certFile} /etc/pki/ca-trust/source/anchors/ && sudo update-ca-trust`,
    `  Chrome/Chromium on Linux (NSS): certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n egress-proxy -i ${certFile}`,
    `  Firefox:  Settings > Privacy & Security > Certificates > Import (or policies.json "Certificates": {"Install": ["${certFile}"]})`,
    `  Tools:    NODE_EXTRA_CA_CERTS=${certFile}, REQUESTS_CA_BUNDLE / SSL_CERT_FILE (Python), git config http.sslCAInfo, curl --cacert`,
  ].join('\n');
}

/** `egress-proxy ca init|export`: the interception CA. */
export function registerCa(program: Command): void {
  const ca = program.command('ca').description('Create and export the TLS interception CA.');
  ca.command('init')
    .description('Create the interception CA (ca.pem, and ca-key.pem with mode 0600).')
    .option('--dir <dir>', 'where to write it', 'certs')
    .option('--name <cn>', 'the CA common name', 'egress-proxy interception CA')
    .option('--permit <domains>', 'name constraints: only these DNS subtrees, comma-separated (repeatable)', list)
    .option('--days <n>', 'validity in days', '825')
    .option('--key-type <type>', 'ec (ECDSA P-256: cheap to sign each minted certificate) or rsa (RSA-2048, for very old clients)', 'ec')
    .option('--force', 'replace an existing CA (clients must trust the new one)')
    .action((o: { dir: string; name: string; permit?: string[]; days: string; keyType: string; force?: boolean }) => {
      if (o.keyType !== 'ec' && o.keyType !== 'rsa') {
        process.stderr.write('--key-type: expected ec or rsa\n');
        process.exit(2);
      }
      const days = Number(o.days);
      if (!Number.isInteger(days) || days < 1 || days > 3650) {
        process.stderr.write('--days: expected 1 to 3650\n');
        process.exit(2);
      }
      try {
        const created = initCa(resolve(o.dir), { commonName: o.name, permittedDomains: o.permit, validityDays: days, keyType: o.keyType }, o.force === true);
        process.stdout.write(`created ${created.certFile} and ${caFiles(resolve(o.dir)).key} (mode 0600; keep it secret, never commit it)\n` +
          `fingerprint SHA-256 ${created.cert.fingerprint256}\n\n${installSteps(created.certFile)}\n`);
      } catch (err) {
        process.stderr.write(`${(err as Error).message}\n`);
        process.exit(1);
      }
    });
  ca.command('export')
    .description('Print the CA certificate (PEM) and how to install it on clients.')
    .option('--dir <dir>', 'where the CA is', 'certs')
    .option('--pem-only', 'print only the PEM (for scripts)')
    .action((o: { dir: string; pemOnly?: boolean }) => {
      try {
        const c = loadCa(resolve(o.dir));
        process.stdout.write(c.certPem);
        if (!o.pemOnly) process.stderr.write(`\nfingerprint SHA-256 ${c.cert.fingerprint256}, valid until ${c.cert.validTo}\n${installSteps(c.certFile)}\n`);
      } catch (err) {
        process.stderr.write(`${(err as Error).message}\n`);
        process.exit(1);
      }
    });
}
