import type { Metric, Registry } from 'prom-client';

// prom-client's own Counter and Histogram hash their label object on every call (~1 µs each,
// measured with bench/observability.mjs); per-request metrics are instead tallied in plain
// numbers here and handed to prom-client's registry, exposition and cluster aggregation as
// custom metrics, built only when scraped.

/** One exposed sample, in the form prom-client's registry formats and aggregates. */
interface Value { value: number; labels: Record<string, string | number>; metricName?: string }

/** What a prom-client registry asks of a metric. */
interface Exposed { name: string; help: string; type: 'counter' | 'histogram'; aggregator: 'sum'; get(): Promise<{ name: string; help: string; type: string; aggregator: 'sum'; values: Value[] }> }

function register(registry: Registry, m: Exposed): void {
  registry.registerMetric(m as unknown as Metric);
}

/** A counter keyed by a label set chosen by the caller; `child(...)` is looked up once per label set, then `n++`. */
export class CounterTally {
  private readonly children = new Map<string, { labels: Record<string, string>; n: number }>();

  constructor(registry: Registry, name: string, help: string, private readonly labelNames: readonly string[]) {
    register(registry, {
      name, help, type: 'counter', aggregator: 'sum',
      get: () => Promise.resolve({
        name, help, type: 'counter', aggregator: 'sum',
        values: [...this.children.values()].map((c) => ({ value: c.n, labels: c.labels })),
      }),
    });
  }

  /** The tally for one label set (values in labelNames order), created at first use. */
  child(key: string, values: readonly string[]): { n: number } {
    let c = this.children.get(key);
    if (c === undefined) {
      const labels: Record<string, string> = {};
      this.labelNames.forEach((l, i) => { labels[l] = values[i]!; });
      c = { labels, n: 0 };
      this.children.set(key, c);
    }
    return c;
  }
}

/** A histogram per value of one label (a small fixed set, e.g. the exchange kind). */
export class HistogramTally {
  private readonly series = new Map<string, { counts: Float64Array; sum: number; count: number }>();

  constructor(registry: Registry, name: string, help: string, label: string, private readonly buckets: readonly number[]) {
    register(registry, {
      name, help, type: 'histogram', aggregator: 'sum',
      get: () => {
        const values: Value[] = [];
        for (const [v, s] of this.series) {
          let cumulative = 0;
          buckets.forEach((le, i) => {
            cumulative += s.counts[i]!;
            values.push({ value: cumulative, labels: { [label]: v, le }, metricName: `${name}_bucket` });
          });
          values.push({ value: s.count, labels: { [label]: v, le: '+Inf' }, metricName: `${name}_bucket` });
          values.push({ value: s.sum, labels: { [label]: v }, metricName: `${name}_sum` });
          values.push({ value: s.count, labels: { [label]: v }, metricName: `${name}_count` });
        }
        return Promise.resolve({ name, help, type: 'histogram', aggregator: 'sum', values });
      },
    });
  }

  /** Records one observation for label value `v`. */
  observe(v: string, x: number): void {
    let s = this.series.get(v);
    if (s === undefined) {
      s = { counts: new Float64Array(this.buckets.length), sum: 0, count: 0 };
      this.series.set(v, s);
    }
    s.sum += x;
    s.count++;
    const b = this.buckets;
    for (let i = 0; i < b.length; i++) {
      if (x <= b[i]!) {
        s.counts[i]!++;
        return;
      }
    }
  }
}
