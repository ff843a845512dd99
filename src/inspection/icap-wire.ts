import { STATUS_CODES } from 'node:http';

/** Header list in wire order; names keep their case, duplicates stay separate. */
export type HeaderList = [string, string][];

/** The head of an HTTP request as the ICAP server sees it (absolute-form URL). */
export interface HttpRequestHead { method: string; url: string; headers: HeaderList }

/** The head of an HTTP response. */
export interface HttpResponseHead { status: number; reason: string; headers: HeaderList }

/** A parsed ICAP status line and headers; header names are lower-cased, repeats joined with ", ". */
export interface IcapHead { status: number; reason: string; headers: Map<string, string> }

/** Why an ICAP exchange did not produce a verdict. Stable ids: they end up in the access log. */
export type IcapErrorReason = 'icap_timeout' | 'icap_unavailable' | 'icap_protocol' | 'icap_server_error' | 'icap_too_large';

/** An exchange that failed; `retryable` marks a reused keep-alive connection the server had already closed. */
export class IcapFailure extends Error {
  constructor(readonly reason: IcapErrorReason, message: string, readonly retryable = false) {
    super(message);
    this.name = 'IcapFailure';
  }
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Field values: visible ASCII, spaces, tabs and obs-text; never CR, LF or NUL (header injection).
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const URL_CHARS = /^[\x21-\x7e]+$/;
const CRLF = '\r\n';

function checkHeaders(headers: HeaderList): void {
  for (const [n, v] of headers) {
    if (!TOKEN.test(n)) throw new IcapFailure('icap_protocol', `refusing to send header name ${JSON.stringify(n.slice(0, 40))}`);
    if (!FIELD_VALUE.test(v)) throw new IcapFailure('icap_protocol', `refusing to send a CR/LF/NUL in header ${n}`);
  }
}

function headerLines(headers: HeaderList): string {
  return headers.map(([n, v]) => `${n}: ${v}${CRLF}`).join('');
}

/** Serialises an HTTP request head (with its blank line) for encapsulation. */
export function encodeRequestHead(h: HttpRequestHead): Buffer {
  if (!TOKEN.test(h.method)) throw new IcapFailure('icap_protocol', 'refusing to send an invalid HTTP method');
  if (!URL_CHARS.test(h.url)) throw new IcapFailure('icap_protocol', 'refusing to send a URL with spaces or control characters');
  checkHeaders(h.headers);
  return Buffer.from(`${h.method} ${h.url} HTTP/1.1${CRLF}${headerLines(h.headers)}${CRLF}`, 'latin1');
}

/** Serialises an HTTP response head (with its blank line) for encapsulation. */
export function encodeResponseHead(h: { status: number; reason?: string; headers: HeaderList }): Buffer {
  if (!Number.isInteger(h.status) || h.status < 100 || h.status > 999) throw new IcapFailure('icap_protocol', `refusing to send HTTP status ${h.status}`);
  const reason = (h.reason || STATUS_CODES[h.status] || 'Unknown').replace(/[^\t\x20-\x7e]/g, '');
  checkHeaders(h.headers);
  return Buffer.from(`HTTP/1.1 ${h.status} ${reason}${CRLF}${headerLines(h.headers)}${CRLF}`, 'latin1');
}

/**
 * The ICAP request head. `Encapsulated` offsets count bytes from the first encapsulated head:
 * req-hdr at 0, res-hdr after it, then the body (req-body / res-body) or null-body at the end.
 */
export function encodeIcapHead(method: 'REQMOD' | 'RESPMOD' | 'OPTIONS', uri: string, headers: HeaderList, parts: { reqHdr?: Buffer; resHdr?: Buffer; body: boolean }): Buffer {
  checkHeaders(headers);
  const encap: string[] = [];
  let offset = 0;
  if (parts.reqHdr) { encap.push(`req-hdr=${offset}`); offset += parts.reqHdr.length; }
  if (parts.resHdr) { encap.push(`res-hdr=${offset}`); offset += parts.resHdr.length; }
  const bodyName = method === 'RESPMOD' ? 'res-body' : 'req-body';
  encap.push(parts.body ? `${bodyName}=${offset}` : `null-body=${offset}`);
  const all: HeaderList = [...headers, ['Encapsulated', encap.join(', ')]];
  return Buffer.from(`${method} ${uri} ICAP/1.0${CRLF}${headerLines(all)}${CRLF}`, 'latin1');
}

/** One chunk of chunked transfer coding; empty input gives nothing (an empty chunk would end the body). */
export function chunk(data: Buffer): Buffer[] {
  return data.length === 0 ? [] : [Buffer.from(`${data.length.toString(16)}${CRLF}`, 'latin1'), data, Buffer.from(CRLF, 'latin1')];
}

/** The last chunk: `0; ieof` tells the server the preview already held the whole body. */
export function lastChunk(ieof: boolean): Buffer {
  return Buffer.from(ieof ? `0; ieof${CRLF}${CRLF}` : `0${CRLF}${CRLF}`, 'latin1');
}

function splitLines(block: Buffer): string[] {
  const text = block.toString('latin1');
  if (!text.endsWith(CRLF + CRLF)) throw new IcapFailure('icap_protocol', 'head does not end with an empty line');
  return text.slice(0, -4).split(CRLF);
}

function parseFields(lines: string[], what: string): HeaderList {
  const out: HeaderList = [];
  for (const line of lines) {
    if ((line.startsWith(' ') || line.startsWith('\t')) && out.length > 0) {
      // obs-fold: a continuation line belongs to the previous field.
      out[out.length - 1]![1] += ` ${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon) : '';
    if (!TOKEN.test(name)) throw new IcapFailure('icap_protocol', `malformed ${what} header line`);
    const value = line.slice(colon + 1).trim();
    if (!FIELD_VALUE.test(value)) throw new IcapFailure('icap_protocol', `control character in ${what} header ${name}`);
    out.push([name, value]);
  }
  return out;
}

/** Parses an ICAP status line and headers (the block must end with CRLF CRLF). */
export function parseIcapHead(block: Buffer): IcapHead {
  const [statusLine, ...rest] = splitLines(block);
  const m = /^ICAP\/1\.[01] ([1-5]\d\d)(?: ([^\r\n]*))?$/.exec(statusLine ?? '');
  if (!m) throw new IcapFailure('icap_protocol', `not an ICAP status line: ${JSON.stringify((statusLine ?? '').slice(0, 60))}`);
  const headers = new Map<string, string>();
  for (const [n, v] of parseFields(rest, 'ICAP')) {
    const k = n.toLowerCase();
    const prev = headers.get(k);
    headers.set(k, prev === undefined ? v : `${prev}, ${v}`);
  }
  return { status: Number(m[1]), reason: m[2] ?? '', headers };
}

/** Parses an encapsulated HTTP request head. */
export function parseRequestHead(block: Buffer): HttpRequestHead {
  const [line, ...rest] = splitLines(block);
  const m = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP\/\d\.\d$/.exec(line ?? '');
  if (!m) throw new IcapFailure('icap_protocol', 'encapsulated request line is malformed');
  return { method: m[1]!, url: m[2]!, headers: parseFields(rest, 'HTTP') };
}

/** Parses an encapsulated HTTP response head. */
export function parseResponseHead(block: Buffer): HttpResponseHead {
  const [line, ...rest] = splitLines(block);
  const m = /^HTTP\/\d\.\d ([1-9]\d\d)(?: ([^\r\n]*))?$/.exec(line ?? '');
  if (!m) throw new IcapFailure('icap_protocol', 'encapsulated status line is malformed');
  return { status: Number(m[1]), reason: m[2] ?? '', headers: parseFields(rest, 'HTTP') };
}

/** One entry of the Encapsulated header. */
export interface EncapEntry { name: 'req-hdr' | 'res-hdr' | 'req-body' | 'res-body' | 'null-body' | 'opt-body'; offset: number }

/** Parses `Encapsulated:`; offsets must grow, heads come first and exactly one body-ish entry ends the list. */
export function parseEncapsulated(value: string | undefined): EncapEntry[] {
  if (value === undefined) throw new IcapFailure('icap_protocol', 'response has no Encapsulated header');
  const out: EncapEntry[] = [];
  for (const part of value.split(',')) {
    const m = /^\s*(req-hdr|res-hdr|req-body|res-body|null-body|opt-body)=(\d{1,9})\s*$/.exec(part);
    if (!m) throw new IcapFailure('icap_protocol', `bad Encapsulated entry ${JSON.stringify(part.trim().slice(0, 40))}`);
    const entry: EncapEntry = { name: m[1] as EncapEntry['name'], offset: Number(m[2]) };
    const prev = out[out.length - 1];
    if (prev && (entry.offset < prev.offset || !prev.name.endsWith('-hdr'))) throw new IcapFailure('icap_protocol', 'Encapsulated entries are out of order');
    if (!prev && entry.offset !== 0) throw new IcapFailure('icap_protocol', 'Encapsulated does not start at offset 0');
    if (out.some((o) => o.name === entry.name)) throw new IcapFailure('icap_protocol', `Encapsulated names ${entry.name} twice`);
    out.push(entry);
  }
  if (out.length === 0 || out[out.length - 1]!.name.endsWith('-hdr')) throw new IcapFailure('icap_protocol', 'Encapsulated does not end with a body entry');
  return out;
}

/** The value of a header in a list, case-insensitively (first match). */
export function headerValue(headers: HeaderList, name: string): string | undefined {
  const lower = name.toLowerCase();
  return headers.find(([n]) => n.toLowerCase() === lower)?.[1];
}
