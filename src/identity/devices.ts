import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile, type Stats } from 'node:fs';
import { resolve } from 'node:path';
import { parseYamlFile } from '../config/validate.js';
import type { DeviceInventory } from '../policy/query.js';
import { inventorySchema } from '../policy/testcases.js';
import type { ProxyRuntime } from '../runtime.js';
import { parseCrlPem, type Crl } from './crl.js';
import type { Device, DeviceDirectory } from './principal.js';

/** How often watched files are polled: polling sees editors' atomic renames and files created later. */
const POLL_MS = 500;

const SPIFFE_DEVICE = /^spiffe:\/\/[^/]+\/device\/([^/]+)$/;

/** The URIs among a certificate's subject alternative names (Node quotes values with special characters). */
function uriSans(san: string | undefined): string[] {
  const out: string[] = [];
  for (const m of (san ?? '').matchAll(/(?:^|, )([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)/g)) {
    if (m[1] !== 'URI') continue;
    const v = m[2]!;
    out.push(v.startsWith('"') ? (JSON.parse(v) as string) : v);
  }
  return out;
}

function commonName(subject: string): string | undefined {
  const line = subject.split('\n').find((l) => l.startsWith('CN='));
  if (!line) return undefined;
  const v = line.slice(3);
  return v.startsWith('"') ? (JSON.parse(v) as string) : v;
}

/**
 * The device a verified client certificate proves. Its id: the name in a URI SAN of the form
 * spiffe://<trust-domain>/device/<name>; else the first URI SAN as a whole; else the subject CN.
 * Undefined when the certificate names no device at all.
 */
export function deviceFromCertificate(cert: X509Certificate): Device | undefined {
  const uris = uriSans(cert.subjectAltName);
  const spiffe = uris.map((u) => SPIFFE_DEVICE.exec(u)?.[1]).find((n) => n !== undefined);
  const id = spiffe ?? uris[0] ?? commonName(cert.subject);
  if (id === undefined || id === '') return undefined;
  return {
    id,
    fingerprint: createHash('sha256').update(cert.raw).digest('hex'),
    serial: cert.serialNumber.toUpperCase(),
    notAfter: Date.parse(cert.validTo),
  };
}

/** A CRL source the mTLS listener follows: the PEM blocks in force, and a call on every change. */
export interface CrlFeed {
  /** The CRLs in force (PEM, one per block), or undefined when no CRL is configured. */
  crlPems(): string[] | undefined;
  onCrlChange(fn: () => void): void;
}

/**
 * The device inventory (policy directory, `devices.inventory`) and the CRL (`devices.crl_file`),
 * each reloaded when its file changes. A broken change keeps the last good content in force and
 * logs the problem; a CRL change ends the open connections of newly revoked devices at once.
 */
export class FileDeviceDirectory implements DeviceDirectory, CrlFeed {
  private inventory: DeviceInventory = {};
  private crls: Crl[] | undefined;
  private revoked = new Set<string>();
  private readonly listeners: Array<() => void> = [];
  private readonly watched: Array<[string, (cur: Stats, prev: Stats) => void]> = [];
  private crlFile: string | undefined;

  constructor(private readonly rt: ProxyRuntime, readonly inventoryFile: string) {
    this.loadInventory(true);
    this.watch(inventoryFile, () => this.loadInventory(false));
  }

  attributes(id: string): Readonly<Record<string, string | number | boolean>> | undefined {
    return Object.hasOwn(this.inventory, id) ? this.inventory[id] : undefined;
  }

  isRevoked(serial: string): boolean {
    return this.revoked.has(serial);
  }

  crlPems(): string[] | undefined {
    return this.crls?.map((c) => c.pem);
  }

  onCrlChange(fn: () => void): void {
    this.listeners.push(fn);
  }

  /**
   * Follows the CRL in `file`, whose signatures must come from one of `cas` (PEM bundle). At
   * start a missing or broken file is an error, unless `optional` (dev mode: no CRL until the
   * first `devices revoke`).
   */
  useCrl(file: string, cas: string, optional = false): void {
    if (this.crlFile !== undefined) return;
    this.crlFile = file;
    const issuers = splitPem(cas).map((p) => new X509Certificate(p));
    let text: string | undefined;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if (!optional) throw new Error(`devices.crl_file ${file}: ${(err as Error).message}`);
    }
    if (text !== undefined) this.setCrl(parseCrlPem(text, issuers).map((c) => this.checked(c, file)));
    this.watch(file, () => this.reloadCrl(file, issuers));
  }

  close(): void {
    for (const [file, fn] of this.watched) unwatchFile(file, fn);
    this.watched.length = 0;
  }

  private watch(file: string, reload: () => void): void {
    const fn = (cur: Stats, prev: Stats): void => {
      if (cur.mtimeMs !== prev.mtimeMs || cur.size !== prev.size || cur.ino !== prev.ino) reload();
    };
    watchFile(file, { interval: POLL_MS, persistent: false }, fn);
    this.watched.push([file, fn]);
  }

  private loadInventory(first: boolean): void {
    const file = this.inventoryFile;
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.rt.logger.log.error({ file, err: (err as Error).message }, 'device inventory unreadable; keeping the last good one');
        return;
      }
      // No inventory: every device is unknown to policy (only its id is known).
      if (!first) this.rt.logger.log.warn({ file }, 'device inventory removed; devices now have no attributes');
      this.inventory = {};
      return;
    }
    try {
      this.inventory = parseYamlFile(file, text, inventorySchema).devices;
      if (!first) this.rt.logger.log.info({ file, devices: Object.keys(this.inventory).length }, 'device inventory reloaded');
    } catch (err) {
      // FileValidationError's message is one `file:line:col field: problem` per line.
      this.rt.logger.log.error({ file, errors: (err as Error).message.split('\n') }, 'device inventory invalid; keeping the last good one');
    }
  }

  private reloadCrl(file: string, issuers: X509Certificate[]): void {
    try {
      this.setCrl(parseCrlPem(readFileSync(file, 'utf8'), issuers).map((c) => this.checked(c, file)));
    } catch (err) {
      this.rt.logger.log.error({ file, err: (err as Error).message }, 'device CRL not reloaded; keeping the last good one');
      return;
    }
    this.rt.logger.log.info({ file, revoked: this.revoked.size }, 'device CRL reloaded');
    for (const fn of this.listeners) fn();
    const id = this.rt.identity;
    const n = id.admitted.sweep(id.sessions, id.devices);
    if (n > 0) this.rt.logger.log.info({ connections: n }, 'ended connections of revoked devices');
  }

  private checked(crl: Crl, file: string): Crl {
    // TLS verification refuses every device once a CRL is past its nextUpdate: say so loudly.
    if (crl.nextUpdate && crl.nextUpdate.getTime() < Date.now()) {
      this.rt.logger.log.error({ file, next_update: crl.nextUpdate.toISOString() }, 'device CRL is out of date: every device certificate from its CA is refused until it is renewed');
    }
    return crl;
  }

  private setCrl(crls: Crl[]): void {
    this.crls = crls;
    this.revoked = new Set(crls.flatMap((c) => [...c.revoked.keys()]));
  }
}

/** The PEM certificate blocks of a bundle. */
export function splitPem(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
}

/**
 * Creates the device directory: the inventory, and the CRL when `devices.crl_file` is set (a
 * missing or broken CRL at start is an error: start-up fails rather than admit revoked devices).
 */
export function createDeviceDirectory(rt: ProxyRuntime): FileDeviceDirectory {
  const cfg = rt.config.devices;
  const dir = new FileDeviceDirectory(rt, resolve(rt.config.policiesDir, cfg.inventory));
  if (cfg.crl_file !== undefined) {
    try {
      if (cfg.ca_file === undefined) throw new Error('devices.crl_file needs devices.ca_file (the CA that signs it)');
      dir.useCrl(resolve(rt.config.baseDir, cfg.crl_file), readFileSync(resolve(rt.config.baseDir, cfg.ca_file), 'utf8'));
    } catch (err) {
      dir.close();
      throw err;
    }
  }
  return dir;
}
