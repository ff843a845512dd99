import type { IncomingMessage, ServerResponse } from 'node:http';
import { ProxyError } from '../errors/proxy-error.js';
import type { ReasonId } from '../errors/reasons.js';
import type { AccessRecord } from '../logging/access-record.js';
import { ICAP_PROFILE } from '../policy/schema.js';
import type { ProxyRuntime } from '../runtime.js';
import type { CompiledProfile } from './dlp/profile.js';
import { mergeVerdicts, type Verdict } from './dlp/tally.js';
import type { IcapClient } from './icap.js';
import { HeldBody, LetGoError } from './held-body.js';
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
 * for the `icap` profile, the ICAP REQMOD service. The body is held until the verdict, so a
 * blocked upload sends the destination nothing: in memory up to `inspection.hold_bytes`, past
 * that on disk (spool.ts), as far as the profiles scan (their largest `max_scan_bytes`, at most
 * `inspection.spool_bytes`). A body larger still streams on as it is scanned: a byte goes
 * upstream only once it is scanned and the scan found nothing to block, and the last ones only
 * after the verdict, so a block cuts the upload before the secret and before the end. Throws
 * ProxyError on a block (or when ICAP fails closed). Whatever is held is let go when `res` closes.
 */
export async function inspectUpload(rt: ProxyRuntime, rec: AccessRecord, req: IncomingMessage, res: ServerResponse, names: readonly string[]): Promise<InspectedBody> {
  const policy = rt.current.policy;
  const profiles = names.filter((n) => n !== ICAP_PROFILE).map((n) => policy.dlp.get(n)).filter((p): p is CompiledProfile => p !== undefined);
  const icap = names.includes(ICAP_PROFILE) ? rt.icap.reqmod : undefined;
  const info = { contentType: req.headers['content-type'], contentEncoding: req.headers['content-encoding'], direction: 'upload' as const };
  const inspectors = profiles.map((p) => rt.dlpScans.inspector(p, info));
  const { hold_bytes: hold, spool_bytes: spoolBytes } = rt.config.inspection;
  // Held (on disk past `hold`) as far as the profiles scan: what lies beyond is not scanned anyway.
  let limit = Math.max(hold, Math.min(spoolBytes, Math.max(0, ...profiles.map((p) => p.maxScanBytes))));
  const body = req[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  // The client going away mid-upload is its doing, not the destination's.
  const next = (): Promise<IteratorResult<Buffer>> => body.next().catch((err: unknown) => {
    throw new ProxyError('client_aborted', `the client stopped sending the body: ${(err as Error).message}`);
  });
  const held = new HeldBody();
  let done = false;
  const feed = async (chunk: Buffer): Promise<void> => {
    for (const i of inspectors) if (!i.write(chunk)) await i.drained();
  };
  const blocked = (): boolean => inspectors.some((i) => i.blocked);
  // A body given up on (the client went away, the destination failed) frees its scan at once.
  const drop = (): void => inspectors.forEach((i) => i.drop());
  // However the exchange ends, the held bytes (and the spool file's share of the disk) go with it.
  res.once('close', () => letGo(held));
  let streaming = false;
  try {
    while (held.size <= limit) {
      const r = await next();
      if (r.done) {
        done = true;
        break;
      }
      const chunk = r.value;
      if (held.size + chunk.length > hold && !held.onDisk) {
        if (icap && !rt.config.inspection.icap.fail_open) throw new ProxyError('icap_too_large', `body over hold_bytes ${hold}`);
        // Too large to send the ICAP service whole, and ICAP fails open: allowed unchecked by it, and the line says so.
        if (icap) rec.icap = 'reqmod:error:icap_too_large:open';
        const file = limit > hold ? await spooled(rt, rt.spool.open(held.size + chunk.length)) : undefined;
        if (file) await spooled(rt, held.spill(file));
        else limit = hold; // no spooling (or the spool is full of other bodies): this one streams
      }
      if (held.onDisk && !held.fitsOnDisk(chunk.length)) {
        rt.spool.full++;
        held.stopSpooling();
        limit = held.size;
      }
      await spooled(rt, held.add(chunk));
      await feed(chunk);
      if (blocked()) break;
    }
    if (done || blocked()) {
      const verdict = mergeVerdicts(await Promise.all(inspectors.map((i) => i.end())));
      judgeVerdict(rec, verdict, rt);
      if (held.onDisk) return held.letOut(Infinity);
      const body = held.whole();
      return icap ? judgeIcap(rec, icap, req, body, rt) : body;
    }
    // Too large to hold: stream on, releasing only what has been scanned.
    held.stopSpooling();
    streaming = true;
  } catch (err) {
    letGo(held);
    throw err;
  } finally {
    if (!streaming) drop();
  }
  return (async function* release(): AsyncGenerator<Buffer> {
    try {
      // Bytes go out only once scanned: after a sync every byte fed is scanned but a short tail,
      // which stays held (UNSCANNED_TAIL covers it in raw bytes, escapes and nesting included).
      for (;;) {
        await Promise.all(inspectors.map((i) => i.sync()));
        if (blocked()) break;
        yield* held.letOut(held.size - UNSCANNED_TAIL);
        const r = await next();
        if (r.done) break;
        await feed(r.value);
        await held.add(r.value);
      }
      const verdict = mergeVerdicts(await Promise.all(inspectors.map((i) => i.end())));
      // Throwing here aborts the upstream request before its last bytes: the upload is never complete.
      judgeVerdict(rec, verdict, rt);
      yield* held.letOut(Infinity);
    } finally {
      drop();
      await held.close();
    }
  })();
}

/** Frees what `held` keeps, in the background (a failing close of its file must not become an unhandled rejection). */
function letGo(held: HeldBody): void {
  held.close().catch(() => undefined);
}

/** Waits for a step of spooling; a disk that fails refuses the upload (dlp_error: fail closed), logged once here. */
async function spooled<T>(rt: ProxyRuntime, step: Promise<T>): Promise<T> {
  try {
    return await step;
  } catch (err) {
    // The client went away (the response closed) while its body was held: no disk at fault.
    if (err instanceof LetGoError) throw new ProxyError('client_aborted', err.message);
    rt.logger.log.error({ err: (err as Error).message, dir: rt.spool.dir }, 'cannot hold an upload on disk; it was refused (dlp_error)');
    throw new ProxyError('dlp_error', 'spool failed', { publicMessage: blockText('dlp_error') });
  }
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
