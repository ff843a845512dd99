import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { FileSniffer, type SniffResult } from '../src/inspection/dlp/filetype.js';
import { ole2, ooxml, pe, rar4, rar5, sevenZip, zip } from './fixtures/dlp/archives.js';

/** Sniffs `bytes` fed in chunks of `size` (1 = byte by byte). */
function sniff(bytes: Buffer, size = 65536): SniffResult {
  const s = new FileSniffer();
  for (let i = 0; i < bytes.length; i += size) s.write(bytes.subarray(i, i + size));
  const r = s.end();
  return { type: r.type, kinds: [...r.kinds].sort() };
}

/** The same answer whatever the chunking. */
function sniffAll(bytes: Buffer): SniffResult {
  const r = sniff(bytes);
  for (const size of [1, 7, 4096]) expect(sniff(bytes, size), `chunks of ${size}`).toEqual(r);
  return r;
}

const nodeBinary = readFileSync(process.execPath).subarray(0, 1 << 20);

describe('file-type sniffer (magic bytes, not names)', () => {
  it('executables: ELF (this node binary), PE, Mach-O, Java class', () => {
    expect(sniffAll(nodeBinary)).toEqual({ type: 'elf', kinds: ['executable'] });
    expect(sniffAll(pe())).toEqual({ type: 'pe', kinds: ['executable'] });
    expect(sniffAll(Buffer.concat([Buffer.from('cffaedfe07000001', 'hex'), Buffer.alloc(64)]))).toEqual({ type: 'macho', kinds: ['executable'] });
    expect(sniffAll(Buffer.concat([Buffer.from('cafebabe00000002', 'hex'), Buffer.alloc(64)]))).toEqual({ type: 'macho', kinds: ['executable'] });
    expect(sniffAll(Buffer.concat([Buffer.from('cafebabe00000034', 'hex'), Buffer.alloc(64)]))).toEqual({ type: 'java_class', kinds: ['executable'] });
  });

  it('text that merely starts like a header is not an executable', () => {
    expect(sniffAll(Buffer.from(`MZ is a nice name for a ${'cat '.repeat(40)}`))).toEqual({ type: 'unknown', kinds: [] });
    expect(sniffAll(Buffer.from('{"json": true}'))).toEqual({ type: 'unknown', kinds: [] });
    expect(sniffAll(Buffer.alloc(0))).toEqual({ type: 'unknown', kinds: [] });
  });

  it('archives: zip, gzip, bzip2, xz, zstd, tar (made by the real tar), 7z, rar', () => {
    expect(sniffAll(zip([{ name: 'a.txt', data: 'hello' }]))).toEqual({ type: 'zip', kinds: ['archive'] });
    expect(sniffAll(gzipSync('hello'))).toEqual({ type: 'gzip', kinds: ['archive'] });
    expect(sniffAll(Buffer.concat([Buffer.from('BZh9'), Buffer.alloc(40)]))).toEqual({ type: 'bzip2', kinds: ['archive'] });
    expect(sniffAll(Buffer.from('fd377a585a000004e6d6b446', 'hex'))).toEqual({ type: 'xz', kinds: ['archive'] });
    expect(sniffAll(Buffer.from('28b52ffd2400', 'hex'))).toEqual({ type: 'zstd', kinds: ['archive'] });
    const dir = mkdtempSync(join(tmpdir(), 'dlp-tar-'));
    writeFileSync(join(dir, 'notes.txt'), 'tarred text');
    const tar = execFileSync('tar', ['-C', dir, '-cf', '-', 'notes.txt']);
    expect(sniffAll(tar)).toEqual({ type: 'tar', kinds: ['archive'] });
    expect(sniffAll(sevenZip(false))).toEqual({ type: '7z', kinds: ['archive'] });
    expect(sniffAll(rar5('plain'))).toEqual({ type: 'rar', kinds: ['archive'] });
    expect(sniffAll(rar4(false))).toEqual({ type: 'rar', kinds: ['archive'] });
  });

  it('encrypted archives: zip entries with the encryption flag, 7zAES headers, RAR 4 and 5', () => {
    expect(sniffAll(zip([{ name: 'a.txt', data: 'x' }, { name: 'secret.txt', data: 'y', encrypted: true }])))
      .toEqual({ type: 'zip', kinds: ['archive', 'encrypted_archive'] });
    expect(sniffAll(sevenZip(true))).toEqual({ type: '7z', kinds: ['archive', 'encrypted_archive'] });
    expect(sniffAll(rar5('encrypted_headers'))).toEqual({ type: 'rar', kinds: ['archive', 'encrypted_archive'] });
    expect(sniffAll(rar5('encrypted_file'))).toEqual({ type: 'rar', kinds: ['archive', 'encrypted_archive'] });
    expect(sniffAll(rar4(true))).toEqual({ type: 'rar', kinds: ['archive', 'encrypted_archive'] });
  });

  it('office documents: OOXML is a document, with vbaProject.bin it carries macros', () => {
    expect(sniffAll(ooxml(false))).toEqual({ type: 'ooxml', kinds: [] });
    expect(sniffAll(ooxml(true))).toEqual({ type: 'ooxml', kinds: ['office_macro'] });
    // The macro entry far into the stream, after data-descriptor entries (sizes unknown up front).
    expect(sniffAll(ooxml(true, 20_000))).toEqual({ type: 'ooxml', kinds: ['office_macro'] });
    expect(sniffAll(ole2(['Root Entry', 'WordDocument', 'Macros', 'VBA', '_VBA_PROJECT']))).toEqual({ type: 'ole2', kinds: ['office_macro'] });
    expect(sniffAll(ole2(['Root Entry', 'WordDocument']))).toEqual({ type: 'ole2', kinds: [] });
    expect(sniffAll(ole2(['Root Entry', 'EncryptionInfo', 'EncryptedPackage']))).toEqual({ type: 'ole2', kinds: ['encrypted_archive'] });
  });

  it('a zip written by a streaming writer (python zipfile to a pipe: data descriptors)', () => {
    const script = [
      'import sys, zipfile',
      'out = sys.stdout.buffer',
      'class W:',
      '    def write(self, b): out.write(b); return len(b)',
      '    def flush(self): out.flush()',
      'with zipfile.ZipFile(W(), "w", zipfile.ZIP_DEFLATED) as z:',
      '    z.writestr("[Content_Types].xml", "<Types/>")',
      '    z.writestr("xl/workbook.xml", "<workbook/>" * 5000)',
      '    z.writestr("xl/vbaProject.bin", bytes(range(256)) * 8)',
    ].join('\n');
    const xlsm = execFileSync('python3', ['-c', script]);
    expect(xlsm.readUInt32LE(0)).toBe(0x04034b50);
    expect(sniffAll(xlsm)).toEqual({ type: 'ooxml', kinds: ['office_macro'] });
  });

  it('settles executables from the first bytes', () => {
    const s = new FileSniffer();
    s.write(nodeBinary.subarray(0, 4096));
    expect(s.settled).toBe(true);
    expect(s.result().kinds).toEqual(['executable']);
    const z = new FileSniffer();
    z.write(zip([{ name: 'a', data: 'b' }]).subarray(0, 10));
    expect(z.settled).toBe(false);
  });

  it('survives malformed headers (offsets pointing backwards or past the end)', () => {
    const bad = zip([{ name: 'a.txt', data: 'hello' }]);
    bad.writeUInt32LE(0xfffffff0, 18); // compressed size: far past the end
    expect(sniffAll(bad)).toEqual({ type: 'zip', kinds: ['archive'] });
    const rar = rar5('plain');
    rar[12] = 0xff; // a broken vint
    expect(sniffAll(rar).type).toBe('rar');
    const sz = sevenZip(true);
    sz.writeBigUInt64LE(2n ** 62n, 12);
    expect(sniffAll(sz)).toEqual({ type: '7z', kinds: ['archive'] });
  });
});
