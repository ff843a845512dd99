import { execFile } from 'node:child_process';

/** One sample as the Prometheus text parser read it: name (with _bucket/_count/_sum), labels, value. */
export interface PromSample { name: string; labels: Record<string, string>; value: number }
/** One metric family: its name, type and samples. */
export interface PromFamily { name: string; type: string; samples: PromSample[] }

// The Prometheus project's own Python client parses the exposition text (Debian python3-prometheus-client).
const PARSER = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]})
json.dump(out, sys.stdout)
`;

/** Parses Prometheus text exposition format; rejects on any syntax error. */
export function parsePrometheus(text: string): Promise<PromFamily[]> {
  return new Promise((resolve, reject) => {
    const child = execFile('/usr/bin/python3', ['-c', PARSER], { maxBuffer: 32 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`not valid Prometheus text: ${stderr || err.message}`));
      else resolve(JSON.parse(stdout) as PromFamily[]);
    });
    child.stdin!.end(text);
  });
}

/** Sum of the samples named `sample` whose labels include `want`. */
export function sumOf(families: PromFamily[], sample: string, want: Record<string, string> = {}): number {
  let n = 0;
  for (const f of families) {
    for (const s of f.samples) {
      if (s.name === sample && Object.entries(want).every(([k, v]) => s.labels[k] === v)) n += s.value;
    }
  }
  return n;
}
