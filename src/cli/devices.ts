import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import type { Command } from 'commander';
import { buildCrl, normalizeSerial, parseCrlPem } from '../identity/crl.js';
import { deviceCaFiles, ensureDeviceCa, issueDeviceCert, loadDeviceCa, writeKey } from '../identity/device-ca.js';
import { DEV_DEVICE_LISTEN } from '../listeners/mtls.js';

function fail(message: string, code = 1): never {
  process.stderr.write(`${message}\n`);
  process.exit(code);
}

function days(text: string, flag: string, max: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > max) fail(`${flag}: expected 1 to ${max}`, 2);
  return n;
}

/** A path as typed back to the user: relative to the working directory when under it. */
function shown(p: string): string {
  const r = relative(process.cwd(), p);
  return r.startsWith('..') ? p : `./${r}`;
}

/** `egress-proxy devices issue|revoke`: dev device certificates and their CRL. */
export function registerDevices(program: Command): void {
  const devices = program.command('devices').description('Issue and revoke device (mTLS client) certificates with the dev device CA.');
  devices.command('issue')
    .description('Issue a device certificate (P-256 key, URI SAN spiffe://egress-proxy.dev/device/<id>) signed by the dev device CA, created if missing.')
    .requiredOption('--id <id>', 'device id (letters, digits, ".", "_", "-"), as in the inventory (devices.yaml)')
    .option('--dir <dir>', 'the device CA directory (device-ca.pem, device-ca-key.pem, device-crl.pem)', 'certs/devices')
    .option('--days <n>', 'validity in days', '30')
    .option('--out <dir>', 'where to write <id>.pem and <id>-key.pem', '.')
    .option('--force', 'overwrite an existing certificate and key')
    .action((o: { id: string; dir: string; days: string; out: string; force?: boolean }) => {
      const validity = days(o.days, '--days', 825);
      const certFile = resolve(o.out, `${o.id}.pem`);
      const keyFile = resolve(o.out, `${o.id}-key.pem`);
      try {
        if (!o.force && (existsSync(certFile) || existsSync(keyFile))) throw new Error(`${shown(certFile)} or ${shown(keyFile)} exists; pass --force to replace it`);
        const { ca, created } = ensureDeviceCa(resolve(o.dir));
        const issued = issueDeviceCert(ca, o.id, { days: validity });
        writeKey(keyFile, issued.keyPem);
        writeFileSync(certFile, issued.certPem, { mode: 0o644 });
        // In dev mode the listener's own certificate comes from the interception CA, next to this directory.
        const proxyCa = join(dirname(resolve(o.dir)), 'ca.pem');
        process.stdout.write([
          `issued a certificate for device ${o.id}: serial ${issued.cert.serialNumber}, valid until ${issued.cert.validTo}`,
          `  certificate: ${shown(certFile)}`,
          `  key:         ${shown(keyFile)} (mode 0600; keep it on the device, never commit it)`,
          `  device CA:   ${shown(ca.certFile)}${created ? ' (created)' : ''}`,
          '',
          `Try it against a dev proxy (egress-proxy start --dev listens for devices on ${DEV_DEVICE_LISTEN}):`,
          `  curl --proxy https://${DEV_DEVICE_LISTEN} --proxy-cacert ${shown(proxyCa)} --proxy-cert ${shown(certFile)} --proxy-key ${shown(keyFile)} https://example.com/`,
          `Give it posture in the policy directory's devices.yaml under "${o.id}"; revoke it with: egress-proxy devices revoke --cert ${shown(certFile)}`,
          '',
        ].join('\n'));
      } catch (err) {
        fail((err as Error).message);
      }
    });
  devices.command('revoke')
    .description('Add a certificate to the dev device CRL (device-crl.pem, signed by the device CA); a running proxy reloads it.')
    .option('--serial <hex>', 'serial number of the certificate (hex, colons allowed)')
    .option('--cert <file>', 'the certificate to revoke (PEM)')
    .option('--dir <dir>', 'the device CA directory', 'certs/devices')
    .option('--crl-days <n>', 'the CRL is current for this many days (every device is refused once it is out of date)', '365')
    .action((o: { serial?: string; cert?: string; dir: string; crlDays: string }) => {
      if ((o.serial === undefined) === (o.cert === undefined)) fail('give exactly one of --serial or --cert', 2);
      const validity = days(o.crlDays, '--crl-days', 3650);
      try {
        const serial = o.cert !== undefined ? new X509Certificate(readFileSync(o.cert)).serialNumber : normalizeSerial(o.serial!);
        const ca = loadDeviceCa(resolve(o.dir));
        const file = deviceCaFiles(resolve(o.dir)).crl;
        const revoked = new Map<string, Date>();
        let number = 0n;
        if (existsSync(file)) {
          for (const crl of parseCrlPem(readFileSync(file, 'utf8'), [ca.cert])) {
            for (const [s, d] of crl.revoked) revoked.set(s, d);
            if (crl.number !== undefined && crl.number > number) number = crl.number;
          }
        }
        const already = revoked.has(serial);
        if (!already) revoked.set(serial, new Date());
        const now = Date.now();
        const nextUpdate = new Date(now + validity * 86_400_000);
        writeFileSync(file, buildCrl(ca.cert, ca.key, { revoked, number: number + 1n, thisUpdate: new Date(now - 60_000), nextUpdate }), { mode: 0o644 });
        process.stdout.write([
          `${already ? 'already revoked' : 'revoked'}: serial ${serial}`,
          `  CRL: ${shown(file)} (${revoked.size} revoked, current until ${nextUpdate.toISOString()})`,
          'A running proxy reloads it within a second and ends that device\'s open connections',
          '(dev mode uses this file; otherwise point devices.crl_file at it).',
          '',
        ].join('\n'));
      } catch (err) {
        fail((err as Error).message);
      }
    });
}
