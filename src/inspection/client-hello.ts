/** What the first TLS record says, as far as the proxy needs it. */
export type HelloPeek =
  | { kind: 'tls'; sni: string | undefined }
  | { kind: 'not-tls' }
  | { kind: 'need-more' };

/**
 * Reads the server name from a TLS ClientHello without consuming it, so the proxy can decide
 * bypass or interception before showing any certificate. Returns need-more until the whole
 * first handshake record is buffered (bounded by the caller).
 */
export function peekClientHello(buf: Buffer): HelloPeek {
  if (buf.length < 1) return { kind: 'need-more' };
  if (buf[0] !== 0x16) return { kind: 'not-tls' }; // handshake record
  if (buf.length < 5) return { kind: 'need-more' };
  const recLen = buf.readUInt16BE(3);
  if (buf.length < 5 + recLen) return { kind: 'need-more' };
  let p = 5;
  const end = 5 + recLen;
  if (buf[p] !== 0x01) return { kind: 'not-tls' }; // ClientHello
  p += 4; // type + 3-byte length
  p += 2 + 32; // client version, random
  if (p >= end) return { kind: 'tls', sni: undefined };
  p += 1 + buf[p]!; // session id
  if (p + 2 > end) return { kind: 'tls', sni: undefined };
  p += 2 + buf.readUInt16BE(p); // cipher suites
  if (p + 1 > end) return { kind: 'tls', sni: undefined };
  p += 1 + buf[p]!; // compression methods
  if (p + 2 > end) return { kind: 'tls', sni: undefined };
  const extEnd = Math.min(end, p + 2 + buf.readUInt16BE(p));
  p += 2;
  while (p + 4 <= extEnd) {
    const type = buf.readUInt16BE(p);
    const len = buf.readUInt16BE(p + 2);
    p += 4;
    if (type === 0 && p + 5 <= extEnd) {
      // server_name: list length, then entries of (type, length, name); type 0 = host_name
      let q = p + 2;
      const listEnd = Math.min(p + len, extEnd);
      while (q + 3 <= listEnd) {
        const nameType = buf[q]!;
        const nameLen = buf.readUInt16BE(q + 1);
        q += 3;
        if (nameType === 0 && q + nameLen <= listEnd) return { kind: 'tls', sni: buf.toString('latin1', q, q + nameLen).toLowerCase() };
        q += nameLen;
      }
    }
    p += len;
  }
  return { kind: 'tls', sni: undefined };
}
