import type { IncomingMessage } from 'node:http';
import { ProxyError } from '../errors/proxy-error.js';
import type { ReasonId } from '../errors/reasons.js';
import type { AccessRecord } from '../logging/access-record.js';
import { ICAP_PROFILE } from '../policy/schema.js';
import type { ProxyRuntime } from '../runtime.js';
import type { CompiledProfile } from './dlp/profile.js';
import { mergeVerdicts, type Verdict } from './dlp/tally.js';
import type { IcapClient } from './icap.js';
import { incidentId } from './incident.js';


/**
 * Raw bytes a streamed upload keeps back after a sync: a scanner's held-back tail (MAX_MATCH, 1 KiB
 * of decoded text) at up to 6 raw bytes each (JSON \u escapes), a nested base64 scanner's own tail,
 * partial escapes and multipart boundaries; generously rounded up.
 */
const UNSCANNED_TAIL = 32 * 1024;

/** What goes upstream after inspection: the held body, the held part then the rest, or nothing. */
export type InspectedBody = Buffer | AsyncIterable<Buffer> | null;

/** Writes what DLP found into the access record: detector names, counts and masked samples only. */
function record(rec: AccessRecord, v: Verdict, incident: string | undefined): void {
  const parts = v.findings.filter((f) => f.count > 0).map((f) => `${f.detector}:${f.count}${f.samples.length ? `[${f.samples.join('|')}]` : ''}${f.triggered ? `:${f.action}` : ''}`);
  for (const f of v.files) parts.push(`file:${f.kinds.join('+') || f.type}${f.part?.filename ? `(${f.part.filename})` : ''}${f.blocked ? ':block' : ''}`);
  if (parts.length > 0) rec.dlp = parts.join(',');
  if (v.reason === 'dlp_unscanned' || v.truncated) rec.dlp_unscanned = true;
  rec.incident = incident;
}

/**
 * Inspects a request body before any byte of it goes upstream, with the rule's DLP profiles and,
 * for the `icap` profile, the ICAP REQMOD service. Bodies up to `inspection.hold_bytes` are held
 * whole until the verdict, so a blocked upload sends the destination nothing. Larger bodies
 * stream on as they are scanned: a byte goes upstream only once it is scanned and the scan
 * found nothing to block, and the last ones only after the verdict, so a block cuts the upload
 * before the secret and before the end. Throws ProxyError on a block (or when ICAP fails closed).
 */
export async function inspectUpload(rt: ProxyRuntime, rec: AccessRecord, req: IncomingMessage, names: readonly string[]): Promise<InspectedBody> {
  const policy = rt.current.policy;
  const profiles = names.filter((n) => n !== ICAP_PROFILE).map((n) => policy.dlp.get(n)).filter((p): p is CompiledProfile => p !== undefined);
  const icap = names.includes(ICAP_PROFILE) ? rt.icap.reqmod : undefined;
  const info = { contentType: req.headers['content-type'], contentEncoding: req.headers['content-encoding'], direction: 'upload' as const };
  const inspectors = profiles.map((p) => rt.dlpScans.inspector(p, info));
  const hold = rt.config.inspection.hold_bytes;
  const it = req[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const held: Buffer[] = [];
  let size = 0;
  let done = false;
  const feed = async (chunk: Buffer): Promise<void> => {
    for (const i of inspectors) if (!i.write(chunk)) await i.drained();
  };
  const blocked = (): boolean => inspectors.some((i) => i.blocked);
  // A body given up on (the client went away, the destination failed) frees its scan at once.
  const drop = (): void => inspectors.forEach((i) => i.drop());
  let streaming = false;
  try {
    while (size <= hold) {
      const r = await it.next();
      if (r.done) {
        done = true;
        break;
      }
      held.push(r.value);
      size += r.value.length;
      await feed(r.value);
      if (blocked()) break;
    }
    if (done || blocked()) {
      const verdict = mergeVerdicts(await Promise.all(inspectors.map((i) => i.end())));
      judgeVerdict(rec, verdict, rt);
      const body = held.length === 0 ? null : held.length === 1 ? held[0]! : Buffer.concat(held, size);
      return icap ? judgeIcap(rec, icap, req, body, rt) : body;
    }
    // Too large to hold: stream on, releasing only what has been scanned.
    if (icap && !rt.config.inspection.icap.fail_open) throw new ProxyError('icap_too_large', `body over hold_bytes ${hold}`);
    streaming = true;
  } finally {
    if (!streaming) drop();
  }
  return (async function* release(): AsyncGenerator<Buffer> {
    try {
      // Bytes go out only once scanned: after a sync every byte fed is scanned but a short tail,
      // which stays here (UNSCANNED_TAIL covers it in raw bytes, escapes and nesting included).
      const waiting = held;
      let fed = size;
      let out = 0;
      for (;;) {
        await Promise.all(inspectors.map((i) => i.sync()));
        if (blocked()) break;
        while (waiting.length > 0 && out + waiting[0]!.length <= fed - UNSCANNED_TAIL) {
          const c = waiting.shift()!;
          out += c.length;
          yield c;
        }
        const r = await it.next();
        if (r.done) break;
        await feed(r.value);
        waiting.push(r.value);
        fed += r.value.length;
      }
      const verdict = mergeVerdicts(await Promise.all(inspectors.map((i) => i.end())));
      // Throwing here aborts the upstream request before its last bytes: the upload is never complete.
      judgeVerdict(rec, verdict, rt);
      for (const c of waiting) yield c;
    } finally {
      drop();
    }
  })();
}

/** Applies a verdict: a block throws (with an incident id), an alert is logged at warn level. */
function judgeVerdict(rec: AccessRecord, v: Verdict, rt: ProxyRuntime): void {
  const incident = v.action === 'allow' ? undefined : incidentId();
  record(rec, v, incident);
  if (v.action === 'alert') {
    rt.logger.log.warn({ incident, dlp: rec.dlp, url: rec.url, user: rec.user ?? rec.service, client_ip: rec.client_ip }, 'DLP alert: the request was allowed');
  }
  if (v.action === 'block') {
    const reason: ReasonId = v.reason ?? 'dlp_match';
    throw new ProxyError(reason, rec.dlp, { publicMessage: `${blockText(reason)} Incident ${incident}.` });
  }
}

function blockText(reason: ReasonId): string {
  switch (reason) {
    case 'dlp_file_type': return 'This type of file may not be uploaded here.';
    case 'dlp_oversize': return 'The upload is too large to be checked, and unchecked uploads are not allowed here.';
    case 'dlp_undecodable': return 'The upload could not be checked, and unchecked uploads are not allowed here.';
    case 'dlp_error': return 'The upload could not be checked just now; try again.';
    default: return 'The upload carries data that must not leave the organisation.';
  }
}

/** Asks the ICAP REQMOD service about a held body; a block or (failing closed) an error throws. */
async function judgeIcap(rec: AccessRecord, icap: IcapClient, req: IncomingMessage, body: Buffer | null, rt: ProxyRuntime): Promise<InspectedBody> {
  const headers: [string, string][] = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
  const v = await icap.reqmod({ method: req.method ?? 'POST', url: rec.url ?? '', headers }, body, { clientIp: rec.client_ip, user: rec.user ?? rec.service, groups: rec.groups?.split(',') });
  rec.icap = `reqmod:${v.kind}`;
  switch (v.kind) {
    case 'unmodified':
      return body;
    case 'modified-request':
      // The service rewrote the body (e.g. redacted it); its head is not taken: the proxy owns the head.
      return v.body;
    case 'blocked': {
      const incident = incidentId();
      rec.incident = incident;
      throw new ProxyError('icap_blocked', `ICAP ${v.head.status}`, { publicMessage: `The content inspection service refused this upload. Incident ${incident}.` });
    }
    case 'error':
      rt.logger.log.warn({ icap: v.reason, detail: v.detail, fail_open: v.failOpen, url: rec.url }, 'ICAP service failed');
      if (v.failOpen) {
        rec.icap = `reqmod:error:${v.reason}:open`;
        return body;
      }
      throw new ProxyError(v.reason as ReasonId, v.detail);
    default:
      return body;
  }
}
