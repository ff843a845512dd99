import type { ResponseCheck, ResponseVerdict } from '../egress/forward-http.js';
import { ProxyError } from '../errors/proxy-error.js';
import type { ReasonId } from '../errors/reasons.js';
import type { AccessRecord } from '../logging/access-record.js';
import { ICAP_PROFILE } from '../policy/schema.js';
import type { ProxyRuntime } from '../runtime.js';
import { FileSniffer, type FileKind } from './dlp/filetype.js';
import type { IcapClient } from './icap.js';
import { incidentId } from './incident.js';

/**
 * The response check a rule's DLP profiles ask for: file types refused on download (by magic
 * bytes, as the body streams) and, with the `icap` profile, the ICAP RESPMOD service. Undefined
 * when the rule needs neither.
 */
export function responseCheck(rt: ProxyRuntime, rec: AccessRecord, names: readonly string[] | undefined): ResponseCheck | undefined {
  if (!names || names.length === 0) return undefined;
  const blocked = new Set<FileKind>();
  for (const n of names) {
    const ft = rt.current.policy.dlp.get(n)?.fileTypes;
    if (ft && ft.direction !== 'upload') for (const k of ft.block) blocked.add(k);
  }
  const icap = names.includes(ICAP_PROFILE) ? rt.icap.respmod : undefined;
  if (blocked.size === 0 && !icap) return undefined;
  return new DownloadCheck(rt, rec, blocked, icap);
}

class DownloadCheck implements ResponseCheck {
  private readonly sniffer: FileSniffer | undefined;
  private status = 0;
  private headers: [string, string][] = [];
  readonly holdBytes: number;

  constructor(private readonly rt: ProxyRuntime, private readonly rec: AccessRecord, private readonly blocked: ReadonlySet<FileKind>, private readonly icap: IcapClient | undefined) {
    this.sniffer = blocked.size > 0 ? new FileSniffer() : undefined;
    this.holdBytes = icap ? Math.min(rt.config.inspection.hold_bytes, rt.config.inspection.icap.max_body_bytes) : 0;
  }

  begin(status: number, headers: Record<string, string | string[]>): boolean {
    this.status = status;
    for (const [k, v] of Object.entries(headers)) for (const one of Array.isArray(v) ? v : [v]) this.headers.push([k, one]);
    return status !== 204 && status !== 304;
  }

  chunk(c: Buffer): ProxyError | undefined {
    if (!this.sniffer) return undefined;
    this.sniffer.write(c);
    return this.judgeType(false);
  }

  private judgeType(final: boolean): ProxyError | undefined {
    const r = final ? this.sniffer!.end() : this.sniffer!.result();
    const hit = r.kinds.filter((k) => this.blocked.has(k));
    if (hit.length === 0) return undefined;
    const incident = incidentId();
    this.rec.dlp = `file:${r.kinds.join('+')}(${r.type}):block`;
    this.rec.incident = incident;
    return new ProxyError('dlp_file_type', this.rec.dlp, { publicMessage: `This type of file (${hit.join(', ')}) may not be downloaded here. Incident ${incident}.` });
  }

  async finish(held: readonly Buffer[], complete: boolean): Promise<ResponseVerdict> {
    if (this.sniffer && complete) {
      const err = this.judgeType(true);
      if (err) return { error: err };
    }
    if (!this.icap) return {};
    if (!complete) return this.icapFailure('icap_too_large', `response over ${this.holdBytes} bytes`, this.rt.config.inspection.icap.fail_open);
    const body = Buffer.concat(held as Buffer[]);
    const v = await this.icap.respmod({ method: this.rec.method ?? 'GET', url: this.rec.url ?? '', headers: [] }, { status: this.status, headers: this.headers }, body,
      { clientIp: this.rec.client_ip, user: this.rec.user ?? this.rec.service, groups: this.rec.groups?.split(',') });
    this.noteIcap(v.kind);
    switch (v.kind) {
      case 'unmodified':
        return {};
      case 'blocked':
      case 'modified-response': {
        // The service answers in the destination's place (a block page, or a cleaned body).
        if (v.kind === 'blocked') this.rec.incident = incidentId();
        const headers = v.head.headers.flatMap(([k, val]) => [k, val]);
        return { replace: { status: v.head.status, headers, body: v.body ?? Buffer.alloc(0) } };
      }
      case 'error':
        return this.icapFailure(v.reason as ReasonId, v.detail, v.failOpen);
      default:
        return {};
    }
  }

  /** Adds the RESPMOD outcome to the record, after the REQMOD one if there was one. */
  private noteIcap(what: string): void {
    this.rec.icap = this.rec.icap === undefined ? `respmod:${what}` : `${this.rec.icap},respmod:${what}`;
  }

  private icapFailure(reason: ReasonId, detail: string, failOpen: boolean): ResponseVerdict {
    this.rt.logger.log.warn({ icap: reason, detail, fail_open: failOpen, url: this.rec.url }, 'ICAP service failed on a response');
    if (failOpen) {
      this.noteIcap(`error:${reason}:open`);
      return {};
    }
    return { error: new ProxyError(reason, detail) };
  }
}
