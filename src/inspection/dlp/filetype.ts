// A streaming file-type sniffer: magic bytes decide the type from the first bytes; zip, RAR and
// 7z are then followed header by header as they stream (entry names, encryption flags) without
// buffering the body, and OLE2 compound files are searched for their VBA and encryption streams.

export const FILE_KINDS = ['executable', 'archive', 'office_macro', 'encrypted_archive'] as const;
export type FileKind = (typeof FILE_KINDS)[number];

/** What the sniffer concluded: a type name (pe, elf, zip, ooxml, ...) and the kinds it falls in. */
export interface SniffResult {
  type: string;
  kinds: FileKind[];
}

/** Bytes kept to decide the type (PE headers point up to here; tar's magic is at 257). */
const HEAD = 4096;
const ZIP_LOCAL = 0x04034b50;
const ZIP_CENTRAL = 0x02014b50;
const ZIP_END = 0x06054b50;
const OLE2 = Buffer.from('d0cf11e0a1b11ae1', 'hex');
const utf16 = (s: string): Buffer => Buffer.from(s, 'utf16le');
const OLE_VBA = utf16('_VBA_PROJECT');
const OLE_ENCRYPTED = utf16('EncryptedPackage');
const SEVENZ_AES = Buffer.from([0x06, 0xf1, 0x07, 0x01]);

interface Want {
  at: number;
  len: number;
  parse: (b: Buffer) => void;
}

const startsWith = (b: Buffer, sig: number[], at = 0): boolean => sig.every((x, i) => b[at + i] === x);

/** Reads a RAR5 variable-length integer at `o`; returns [value, next offset] or undefined. */
function vint(b: Buffer, o: number): [number, number] | undefined {
  let v = 0;
  for (let shift = 0, i = o; i < b.length && shift < 49; i++, shift += 7) {
    v += (b[i]! & 0x7f) * 2 ** shift;
    if ((b[i]! & 0x80) === 0) return [v, i + 1];
  }
  return undefined;
}

/** Sniffs one stream (a body, or one multipart file). */
export class FileSniffer {
  private readonly maxBytes: number;
  private head: Buffer[] = [];
  private headLen = 0;
  private pos = 0;
  private type: string | undefined;
  private readonly kinds = new Set<FileKind>();
  private want: Want | undefined;
  private acc: Buffer[] = [];
  private accLen = 0;
  /** Zip entries whose size is only in a trailing descriptor: find the next header by signature. */
  private searching = false;
  private searchTail: Buffer = Buffer.alloc(0);
  private oleTail: Buffer = Buffer.alloc(0);
  private names = new Set<string>();
  private entries = 0;

  constructor(opts: { maxBytes?: number } = {}) {
    this.maxBytes = opts.maxBytes ?? 1 << 30;
  }

  /** Feeds the next bytes of the stream. */
  write(chunk: Uint8Array): void {
    if (this.pos >= this.maxBytes) return;
    let buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (this.pos + buf.length > this.maxBytes) buf = buf.subarray(0, this.maxBytes - this.pos);
    const start = this.pos;
    this.pos += buf.length;
    if (this.type === undefined) {
      const take = Math.min(buf.length, HEAD - this.headLen);
      this.head.push(buf.subarray(0, take));
      this.headLen += take;
      if (this.headLen < HEAD) return;
      this.decide(Buffer.concat(this.head));
      this.head = [];
      if (take < buf.length) this.follow(buf.subarray(take), start + take);
      return;
    }
    this.follow(buf, start);
  }

  /** Ends the stream; returns the result. */
  end(): SniffResult {
    if (this.type === undefined) {
      this.decide(Buffer.concat(this.head));
      this.head = [];
    }
    return this.result();
  }

  /** The type and kinds known so far (final after end()); kinds in FILE_KINDS order. */
  result(): SniffResult {
    const kinds = new Set(this.kinds);
    let type = this.type ?? 'unknown';
    if (type === 'zip') {
      const names = this.names;
      if (names.has('[Content_Types].xml')) type = 'ooxml';
      else if (names.has('mimetype') && (names.has('content.xml') || names.has('META-INF/manifest.xml'))) type = 'odf';
      else {
        kinds.add('archive');
        if (names.has('META-INF/MANIFEST.MF')) type = 'jar';
      }
    }
    return { type, kinds: FILE_KINDS.filter((k) => kinds.has(k)) };
  }

  /** Types that later bytes cannot change: a blocking decision can be taken now. */
  get settled(): boolean {
    return this.type !== undefined && !['zip', 'rar', '7z', 'ole2'].includes(this.type);
  }

  private decide(h: Buffer): void {
    const exe = (t: string) => { this.type = t; this.kinds.add('executable'); };
    const arc = (t: string) => { this.type = t; this.kinds.add('archive'); };
    if (h.length >= 64 && h[0] === 0x4d && h[1] === 0x5a) {
      const pe = h.readUInt32LE(0x3c);
      if (pe + 4 <= h.length && h.readUInt32BE(pe) === 0x50450000) return exe('pe');
    }
    if (startsWith(h, [0x7f, 0x45, 0x4c, 0x46])) return exe('elf');
    if (h.length >= 4) {
      const m = h.readUInt32BE(0);
      if (m === 0xfeedface || m === 0xfeedfacf || m === 0xcefaedfe || m === 0xcffaedfe) return exe('macho');
      if (m === 0xcafebabe && h.length >= 8) return exe(h.readUInt32BE(4) < 20 ? 'macho' : 'java_class');
    }
    if (h.length >= 4 && (h.readUInt32LE(0) === ZIP_LOCAL || h.readUInt32LE(0) === 0x08074b50)) {
      this.type = 'zip';
      this.expectZip(h.readUInt32LE(0) === ZIP_LOCAL ? 0 : 4);
    } else if (h.length >= 4 && h.readUInt32LE(0) === ZIP_END) {
      this.type = 'zip';
    } else if (startsWith(h, [0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c])) {
      arc('7z');
      if (h.length >= 32) {
        const off = Number(h.readBigUInt64LE(12));
        const size = Number(h.readBigUInt64LE(20));
        if (off >= 0 && size > 0 && off < 2 ** 40) {
          this.want = { at: 32 + off, len: Math.min(size, 65536), parse: (b) => { if (b.includes(SEVENZ_AES)) this.kinds.add('encrypted_archive'); } };
        }
      }
    } else if (startsWith(h, [0x52, 0x61, 0x72, 0x21, 0x1a, 0x07, 0x01, 0x00])) {
      arc('rar');
      this.expectRar5(8);
    } else if (startsWith(h, [0x52, 0x61, 0x72, 0x21, 0x1a, 0x07, 0x00])) {
      arc('rar');
      this.expectRar4(7);
    } else if (startsWith(h, [0x1f, 0x8b])) arc('gzip');
    else if (startsWith(h, [0x42, 0x5a, 0x68]) && h[3]! >= 0x31 && h[3]! <= 0x39) arc('bzip2');
    else if (startsWith(h, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) arc('xz');
    else if (startsWith(h, [0x28, 0xb5, 0x2f, 0xfd])) arc('zstd');
    else if (h.length >= 262 && h.toString('latin1', 257, 262) === 'ustar') arc('tar');
    else if (h.length >= 8 && h.subarray(0, 8).equals(OLE2)) this.type = 'ole2';
    else this.type = 'unknown';
    this.follow(h, 0);
  }

  /** Feeds bytes at absolute offset `start` to the header walker. */
  private follow(buf: Buffer, start: number): void {
    if (this.type === 'ole2') this.searchOle(buf);
    let off = 0;
    while (off < buf.length) {
      if (this.searching) {
        off = this.searchZip(buf, start, off);
        continue;
      }
      const w = this.want;
      if (!w) return;
      const end = start + buf.length;
      if (w.at >= end) return;
      const need = w.at + this.accLen;
      if (need < start + off) { this.want = undefined; return; } // points backwards: malformed
      const s = need - start;
      const take = Math.min(buf.length - s, w.len - this.accLen);
      this.acc.push(buf.subarray(s, s + take));
      this.accLen += take;
      off = s + take;
      if (this.accLen === w.len) {
        const b = this.acc.length === 1 ? this.acc[0]! : Buffer.concat(this.acc);
        this.acc = [];
        this.accLen = 0;
        this.want = undefined;
        w.parse(b);
      }
    }
  }

  // Zip: local file headers, or central directory entries once the data is over.

  private expectZip(at: number): void {
    if (++this.entries > 100_000) return;
    this.want = { at, len: 30, parse: (b) => this.zipHeader(at, b) };
  }

  private zipHeader(at: number, b: Buffer): void {
    const sig = b.readUInt32LE(0);
    if (sig === ZIP_LOCAL) {
      const flags = b.readUInt16LE(6);
      const method = b.readUInt16LE(8);
      const csize = b.readUInt32LE(18);
      const nlen = b.readUInt16LE(26);
      const elen = b.readUInt16LE(28);
      const next = () => {
        if (flags & 0x08 || csize === 0xffffffff) this.startSearch(at + 30 + nlen + elen);
        else this.expectZip(at + 30 + nlen + elen + csize);
      };
      if (nlen === 0) return next();
      this.want = { at: at + 30, len: nlen, parse: (name) => { this.zipEntry(name.toString('utf8'), flags, method); next(); } };
    } else if (sig === ZIP_CENTRAL) {
      this.want = { at: at + 30, len: 16, parse: (rest) => {
        const h = Buffer.concat([b, rest]);
        const nlen = h.readUInt16LE(28);
        const skip = nlen + h.readUInt16LE(30) + h.readUInt16LE(32);
        if (nlen === 0) return this.expectZip(at + 46 + skip);
        this.want = { at: at + 46, len: nlen, parse: (name) => {
          this.zipEntry(name.toString('utf8'), h.readUInt16LE(8), h.readUInt16LE(10));
          this.expectZip(at + 46 + skip);
        } };
      } };
    } else if (sig === 0x08074b50) {
      // A data descriptor right where a header was expected: resynchronise by signature.
      this.startSearch(at + 4);
    }
  }

  private zipEntry(name: string, flags: number, method: number): void {
    if (this.names.size < 64) this.names.add(name);
    if (flags & 0x01 || method === 99) this.kinds.add('encrypted_archive');
    const lower = name.toLowerCase();
    if (lower.endsWith('vbaproject.bin') || (/^basic\/[^/]+\/[^/]+\.xml$/.test(lower) && !/script-l[bc]\.xml$/.test(lower))) {
      this.kinds.add('office_macro');
    }
  }

  private startSearch(at: number): void {
    this.searching = true;
    this.searchFrom = at;
    this.searchTail = Buffer.alloc(0);
  }

  private searchFrom = 0;

  /** Looks for the next local or central header signature from `off`; returns where to go on. */
  private searchZip(buf: Buffer, start: number, off: number): number {
    off = Math.max(off, this.searchFrom - start);
    if (off >= buf.length) return buf.length;
    const tailLen = this.searchTail.length;
    const hay = tailLen ? Buffer.concat([this.searchTail, buf.subarray(off)]) : buf.subarray(off);
    const hayStart = start + off - tailLen;
    for (let i = hay.indexOf(0x50); i !== -1 && i + 3 < hay.length; i = hay.indexOf(0x50, i + 1)) {
      if (hay[i + 1] !== 0x4b) continue;
      const sig = hay.readUInt32LE(i);
      if (sig === ZIP_LOCAL || sig === ZIP_CENTRAL) {
        this.searching = false;
        const at = hayStart + i;
        this.expectZip(at);
        // The header may begin in the kept tail, before this buffer: replay it.
        if (at < start + off) {
          this.follow(hay.subarray(i, tailLen), at);
        }
        return Math.max(off, at - start);
      }
    }
    this.searchTail = Buffer.from(hay.subarray(Math.max(0, hay.length - 3)));
    return buf.length;
  }

  // RAR 4 and 5: walk block headers, skipping packed data.

  private expectRar5(at: number): void {
    if (++this.entries > 100_000) return;
    this.want = { at, len: 7, parse: (b) => {
      const sz = vint(b, 4);
      if (!sz) return;
      const [size, hdrStart] = sz;
      if (size > 1 << 20 || hdrStart + size < 7) return;
      const total = hdrStart + size;
      if (total === 7) return this.rar5Block(at, b, hdrStart);
      this.want = { at: at + 7, len: total - 7, parse: (rest) => this.rar5Block(at, Buffer.concat([b, rest]), hdrStart) };
    } };
  }

  private rar5Block(at: number, h: Buffer, o: number): void {
    const type = vint(h, o);
    if (!type) return;
    if (type[0] === 4) { this.kinds.add('encrypted_archive'); return; } // headers encrypted
    const flags = vint(h, type[1]);
    if (!flags) return;
    let p = flags[1];
    let extra = 0;
    let data = 0;
    if (flags[0] & 1) { const v = vint(h, p); if (!v) return; [extra, p] = v; }
    if (flags[0] & 2) { const v = vint(h, p); if (!v) return; [data, p] = v; }
    if ((type[0] === 2 || type[0] === 3) && extra > 0) {
      // Extra area records: size, type; type 1 is the file encryption record.
      let r = h.length - extra;
      while (r < h.length) {
        const size = vint(h, r);
        if (!size) break;
        const rtype = vint(h, size[1]);
        if (rtype && rtype[0] === 1) this.kinds.add('encrypted_archive');
        r = size[1] + size[0];
      }
    }
    if (type[0] === 5) return; // end of archive
    this.expectRar5(at + h.length + data);
  }

  private expectRar4(at: number): void {
    if (++this.entries > 100_000) return;
    this.want = { at, len: 7, parse: (b) => {
      const type = b[2]!;
      const flags = b.readUInt16LE(3);
      const size = b.readUInt16LE(5);
      if (type === 0x73 && flags & 0x0080) this.kinds.add('encrypted_archive');
      if (type === 0x74 && flags & 0x0004) this.kinds.add('encrypted_archive');
      if (type === 0x7b || size < 7) return; // end of archive, or garbage
      if (!(flags & 0x8000)) return this.expectRar4(at + size);
      // Blocks with data carry its size in the four bytes after the common header.
      this.want = { at: at + 7, len: 4, parse: (add) => this.expectRar4(at + size + add.readUInt32LE(0)) };
    } };
  }

  // OLE2 compound files (legacy .doc/.xls/.ppt): directory names are stored in UTF-16LE.

  private searchOle(buf: Buffer): void {
    const hay = this.oleTail.length ? Buffer.concat([this.oleTail, buf]) : buf;
    if (hay.includes(OLE_VBA)) this.kinds.add('office_macro');
    if (hay.includes(OLE_ENCRYPTED)) this.kinds.add('encrypted_archive');
    this.oleTail = Buffer.from(hay.subarray(Math.max(0, hay.length - OLE_ENCRYPTED.length)));
  }
}
