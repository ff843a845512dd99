import { Gauge, Registry } from 'prom-client';
import { processMetrics } from './process-metrics.js';
import { CounterTally, HistogramTally, scrapedCounter, scrapedGauge, type Aggregation } from './tallies.js';
import type { AccessRecord } from './access-record.js';

/** Where the gauges read their values when Prometheus scrapes (nothing is sampled between scrapes). */
export interface MetricSources {
  /** In-flight requests and tunnels. */
  active(): number;
  /** Client connections on the proxy and device listeners. */
  connections(): number;
  tunnels(): number;
  /** Leaf certificates minted and served from the cache (interception on). */
  certificates(): { minted: number; hits: number } | undefined;
  policy(): { version: string; reloads: number; reload_failures: number; errors: readonly string[] } | undefined;
  /** The access-log writer's state. */
  log(): { buffered_bytes: number; dropped_lines: number; refused_requests: number; backlogged: boolean } | undefined;
  /** Uploads held on disk for their DLP verdict: bytes now, bodies so far, bodies the full spool turned away. */
  spool(): { bytes: number; opened: number; full: number };
  /** This node and its reachability as egress (one node until multi-node egress exists). */
  node: string;
}

/** Rule ids come from policy files (admin-defined, bounded); past this many, the rest share one label. */
const MAX_RULES = 500;
/** DLP detector names: built-ins plus custom ones from profiles. */
const MAX_DETECTORS = 200;
const SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
/** `v` as a label value, or 'other' once `seen` holds `max` distinct values (bounded cardinality). */
function bounded(seen: Set<string>, max: number, v: string): string {
  if (seen.has(v)) return v;
  if (seen.size >= max) return 'other';
  seen.add(v);
  return v;
}

const AUTH_REASON = /^(auth_required|identity_unavailable|token_|device_|signin_|signout_)/;

/**
 * The proxy's Prometheus metrics (prom-client). Labels are bounded: kinds, decisions, reason ids
 * and rule ids, never users or hosts (those are in the access log). Per-request work is one
 * map lookup and a few additions (tallies.ts); gauges are read only when scraped.
 */
export class ProxyMetrics {
  readonly registry = new Registry();
  private readonly requests: CounterTally;
  private readonly rules = new Set<string>();
  private readonly bytesUp: { n: number };
  private readonly bytesDown: { n: number };
  private readonly duration: HistogramTally;
  private readonly ttfb: HistogramTally;
  private readonly authFailures: CounterTally;
  private readonly dlp: CounterTally;
  private readonly detectors = new Set<string>();
  // The last request's labels and their tally: consecutive requests mostly share them, and then
  // one comparison per label replaces the rule-set check and the walk down the tally's maps.
  private last: { kind: string; decision: string; reason: string; rule: string | undefined; tally: { n: number } } | undefined;

  constructor(sources: MetricSources, o: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (o.defaultMetrics !== false) processMetrics(this.registry);
    const reg = this.registry;
    this.requests = new CounterTally(reg, 'egress_proxy_requests_total', 'Finished HTTP requests and tunnels, by kind, decision, reason id and rule id.', ['kind', 'decision', 'reason', 'rule']);
    const bytes = new CounterTally(reg, 'egress_proxy_bytes_total', 'Bytes relayed: up = client to destination, down = destination to client.', ['direction']);
    this.bytesUp = bytes.child('up');
    this.bytesDown = bytes.child('down');
    this.duration = new HistogramTally(reg, 'egress_proxy_request_duration_seconds', 'From request head to the end of the exchange.', 'kind', SECONDS);
    this.ttfb = new HistogramTally(reg, 'egress_proxy_time_to_first_byte_seconds', 'From request head to the response head (or a tunnel\'s 200, or a refusal).', 'kind', SECONDS);
    this.authFailures = new CounterTally(reg, 'egress_proxy_auth_failures_total', 'Requests refused for identity: missing or bad credentials, devices, sign-in.', ['reason']);
    this.dlp = new CounterTally(reg, 'egress_proxy_dlp_incidents_total', 'Requests with DLP findings or file-type verdicts, by detector and action.', ['detector', 'action']);
    // With workers, the supervisor sums each series over the workers unless told otherwise (same policy in each: max).
    const gauge = (name: string, help: string, read: () => number | undefined, agg?: Aggregation): void => scrapedGauge(reg, name, help, read, agg);
    const cumulative = (name: string, help: string, read: () => number | undefined, agg?: Aggregation): void => scrapedCounter(reg, name, help, read, agg);
    gauge('egress_proxy_active_requests', 'Requests and tunnels in flight.', () => sources.active());
    gauge('egress_proxy_active_connections', 'Client connections open on the proxy and device listeners.', () => sources.connections());
    gauge('egress_proxy_active_tunnels', 'Open CONNECT tunnels and WebSockets.', () => sources.tunnels());
    cumulative('egress_proxy_certificates_minted_total', 'Interception leaf certificates minted (cache misses).', () => sources.certificates()?.minted);
    cumulative('egress_proxy_certificate_cache_hits_total', 'Interception leaf certificates served from the cache.', () => sources.certificates()?.hits);
    cumulative('egress_proxy_policy_reloads_total', 'Policy reloads that took effect.', () => sources.policy()?.reloads, 'max');
    cumulative('egress_proxy_policy_reload_failures_total', 'Policy reloads that failed (the last good policy stayed in force).', () => sources.policy()?.reload_failures, 'max');
    gauge('egress_proxy_policy_errors', 'Problems of the last failed reload (0 once a reload succeeds).', () => sources.policy()?.errors.length, 'max');
    new Gauge({
      name: 'egress_proxy_policy_info', help: 'The policy version in force (value 1).', labelNames: ['version'], registers, aggregator: 'max',
      collect() { this.reset(); const v = sources.policy()?.version; if (v) this.labels(v).set(1); },
    });
    new Gauge({
      name: 'egress_proxy_egress_node_up', help: 'Egress nodes this proxy can send through and whether they are up (1) or not (0).', labelNames: ['node'], registers, aggregator: 'min',
      collect() { this.labels(sources.node).set(1); },
    });
    gauge('egress_proxy_log_buffered_bytes', 'Access-log bytes waiting for the log destination.', () => sources.log()?.buffered_bytes);
    gauge('egress_proxy_log_backlogged', '1 while the log destination is too slow and new requests are refused (log.when_full: fail_closed).', () => {
      const l = sources.log();
      return l === undefined ? undefined : l.backlogged ? 1 : 0;
    }, 'max');
    gauge('egress_proxy_upload_spool_bytes', 'Bytes of uploads held on disk for their DLP verdict now.', () => sources.spool().bytes);
    cumulative('egress_proxy_upload_spooled_total', 'Uploads held on disk for their DLP verdict (past inspection.hold_bytes).', () => sources.spool().opened);
    cumulative('egress_proxy_upload_spool_full_total', 'Uploads that streamed instead of waiting on disk: the spool was full (inspection.spool_total_bytes).', () => sources.spool().full);
    cumulative('egress_proxy_logs_dropped_total', 'Access-log lines dropped (log.when_full: drop).', () => sources.log()?.dropped_lines);
    cumulative('egress_proxy_log_refused_requests_total', 'Requests refused because the access log was backlogged (log.when_full: fail_closed).', () => sources.log()?.refused_requests);
  }

  /** Counts one finished request or tunnel (an access observer: cheap, never throws). */
  readonly observe = (rec: AccessRecord): void => {
    const l = this.last;
    if (l !== undefined && l.kind === rec.kind && l.decision === rec.decision && l.reason === rec.reason && l.rule === rec.rule) l.tally.n++;
    else this.count(rec);
    this.bytesUp.n += rec.bytes_in;
    this.bytesDown.n += rec.bytes_out;
    this.duration.observe(rec.kind, rec.duration_ms / 1000);
    if (rec.ttfb_ms !== undefined) this.ttfb.observe(rec.kind, rec.ttfb_ms / 1000);
    if (rec.decision === 'deny' && AUTH_REASON.test(rec.reason)) this.authFailures.child(rec.reason).n++;
    if (rec.dlp !== undefined) this.countDlp(rec.dlp);
  };

  /** Counts `rec` under its labels, walking the tally's maps, and remembers them as the last. */
  private count(rec: AccessRecord): void {
    const tally = this.requests.child(rec.kind, rec.decision, rec.reason, bounded(this.rules, MAX_RULES, rec.rule ?? 'none'));
    tally.n++;
    this.last = { kind: rec.kind, decision: rec.decision, reason: rec.reason, rule: rec.rule, tally };
  }

  /** The exposition text for GET /metrics. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** `dlp` is `detector:count[samples][:action]` or `file:kinds(name)[:block]`, comma-separated outside brackets. */
  private countDlp(dlp: string): void {
    let depth = 0;
    let start = 0;
    for (let i = 0; i <= dlp.length; i++) {
      const ch = dlp[i];
      if (ch === '[' || ch === '(') depth++;
      else if (ch === ']' || ch === ')') depth--;
      else if ((ch === ',' && depth === 0) || i === dlp.length) {
        // Samples and file names (in brackets) may hold anything; only the bare fields count.
        const item = dlp.slice(start, i).replace(/\[[^\]]*\]|\([^)]*\)/g, '');
        start = i + 1;
        const fields = item.split(':');
        if (fields[0] === undefined || fields[0] === '') continue;
        const action = fields.length > 2 ? fields[fields.length - 1]! : 'found';
        this.dlp.child(bounded(this.detectors, MAX_DETECTORS, fields[0]), action).n++;
      }
    }
  }
}
