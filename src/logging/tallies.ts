import { Counter, Gauge, type Metric, type Registry } from 'prom-client';

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

type Tally = { labels: Record<string, string>; n: number };
type Level = Map<string, Level | Tally>;

/** A counter per label set; `child(...)` walks one small map per label (no key string built), then `n++`. */
export class CounterTally {
  private readonly root: Level = new Map();
  private readonly all: Tally[] = [];

  constructor(registry: Registry, name: string, help: string, private readonly labelNames: readonly string[]) {
    register(registry, {
      name, help, type: 'counter', aggregator: 'sum',
      get: () => Promise.resolve({ name, help, type: 'counter', aggregator: 'sum', values: this.all.map((c) => ({ value: c.n, labels: c.labels })) }),
    });
  }

  /** The tally for one label set (values in labelNames order, as many as there are labels), created at first use. */
  child(a: string, b?: string, c?: string, d?: string): { n: number } {
    const last = this.labelNames.length - 1;
    let level = this.root;
    for (let i = 0; i < last; i++) {
      const v = i === 0 ? a : i === 1 ? b! : c!;
      let next = level.get(v) as Level | undefined;
      if (next === undefined) {
        next = new Map();
        level.set(v, next);
      }
      level = next;
    }
    const v = last === 0 ? a : last === 1 ? b! : last === 2 ? c! : d!;
    let t = level.get(v) as Tally | undefined;
    if (t === undefined) {
      const values = [a, b, c, d];
      const labels: Record<string, string> = {};
      this.labelNames.forEach((l, i) => { labels[l] = values[i]!; });
      t = { labels, n: 0 };
      level.set(v, t);
      this.all.push(t);
    }
    return t;
  }
}

/** A histogram per value of one label (a small fixed set, e.g. the exchange kind). */
export class HistogramTally {
  private readonly series = new Map<string, { counts: Float64Array; sum: number; count: number }>();
  // The last label value's series: consecutive observations mostly share it.
  private lastLabel: string | undefined;
  private lastSeries: { counts: Float64Array; sum: number; count: number } | undefined;

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
    let s = v === this.lastLabel ? this.lastSeries : this.series.get(v);
    if (s === undefined) {
      s = { counts: new Float64Array(this.buckets.length), sum: 0, count: 0 };
      this.series.set(v, s);
    }
    this.lastLabel = v;
    this.lastSeries = s;
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

/** How the supervisor combines one series over its workers: summed unless every worker holds the same figure. */
export type Aggregation = 'sum' | 'max' | 'min';

/** A gauge that reads its value only when scraped (undefined: no sample). */
export function scrapedGauge(registry: Registry, name: string, help: string, read: () => number | undefined, aggregator: Aggregation = 'sum'): void {
  new Gauge({ name, help, registers: [registry], aggregator, collect() { const v = read(); if (v !== undefined) this.set(v); } });
}

/** A counter for a running total kept elsewhere (minter, reloader, log writer, the process), brought up to date when scraped. */
export function scrapedCounter(registry: Registry, name: string, help: string, read: () => number | undefined, aggregator: Aggregation = 'sum'): void {
  let seen = 0;
  new Counter({
    name, help, registers: [registry], aggregator,
    collect() {
      const v = read();
      if (v !== undefined && v > seen) {
        this.inc(v - seen);
        seen = v;
      }
    },
  });
}
