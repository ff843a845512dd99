import { describe, expect, it } from 'vitest';
import { AccessRecord, type ExchangeKind } from '../src/logging/access-record.js';
import { ProxyMetrics, type MetricSources } from '../src/logging/metrics.js';
import { parsePrometheus, sumOf } from './helpers/prometheus.js';

const sources: MetricSources = {
  active: () => 0, connections: () => 0, tunnels: () => 0, certificates: () => undefined, policy: () => undefined,
  log: () => undefined, spool: () => ({ bytes: 0, opened: 0, full: 0 }), node: 'n1',
};

function record(kind: ExchangeKind, decision: 'allow' | 'deny', reason: 'allowed' | 'policy_denied', rule: string | undefined, ms: number): AccessRecord {
  const r = new AccessRecord(kind, '127.0.0.1', 4000);
  Object.assign(r, { decision, reason, rule, duration_ms: ms, ttfb_ms: ms / 2 });
  return r;
}

describe('request counters', () => {
  it('count each request under its own labels, however the labels of consecutive requests alternate', async () => {
    const m = new ProxyMetrics(sources, { defaultMetrics: false });
    const a = (): AccessRecord => record('http', 'allow', 'allowed', 'r1', 3);
    const b = (): AccessRecord => record('http', 'deny', 'policy_denied', 'r2', 30);
    const c = (): AccessRecord => record('connect', 'allow', 'allowed', undefined, 300);
    for (const r of [a(), b(), a(), a(), c(), b(), c(), a(), record('http', 'allow', 'allowed', 'r2', 3)]) m.observe(r);
    const f = await parsePrometheus(await m.text());
    const requests = (kind: string, decision: string, reason: string, rule: string): number =>
      sumOf(f, 'egress_proxy_requests_total', { kind, decision, reason, rule });
    expect(requests('http', 'allow', 'allowed', 'r1')).toBe(4);
    expect(requests('http', 'deny', 'policy_denied', 'r2')).toBe(2);
    expect(requests('connect', 'allow', 'allowed', 'none')).toBe(2);
    expect(requests('http', 'allow', 'allowed', 'r2')).toBe(1);
    expect(sumOf(f, 'egress_proxy_requests_total')).toBe(9);
    expect(sumOf(f, 'egress_proxy_request_duration_seconds_count', { kind: 'http' })).toBe(7);
    expect(sumOf(f, 'egress_proxy_request_duration_seconds_count', { kind: 'connect' })).toBe(2);
    expect(sumOf(f, 'egress_proxy_request_duration_seconds_sum', { kind: 'connect' })).toBeCloseTo(0.6);
    expect(sumOf(f, 'egress_proxy_request_duration_seconds_bucket', { kind: 'http', le: '0.005' })).toBe(5);
    expect(sumOf(f, 'egress_proxy_time_to_first_byte_seconds_count', { kind: 'connect' })).toBe(2);
  });
});
