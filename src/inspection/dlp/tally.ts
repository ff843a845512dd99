import { CONFIDENCE_NAME, maskBuiltin, type BuiltinId, type Confidence } from './detectors.js';
import type { CompiledProfile } from './profile.js';
import type { FileKind } from './filetype.js';

/** What one detector entry of the profile found in a body. Samples are masked. */
export interface Finding {
  /** The entry's name (the built-in id unless renamed). */
  detector: string;
  type: BuiltinId | 'regex' | 'keywords';
  /** Matches at or above the entry's confidence: distinct values, or all (count: all). */
  count: number;
  /** Every match at or above the entry's confidence, repeats included. */
  occurrences: number;
  /** The highest confidence among the counted matches. */
  confidence: Confidence;
  /** Up to three masked examples, never the value in clear. */
  samples: string[];
  threshold: number;
  action: 'block' | 'alert';
  /** count reached threshold: this entry's action applies. */
  triggered: boolean;
}

/** A body (or multipart file) whose sniffed type the profile lists. */
export interface FileFinding {
  /** The multipart field and file name, when it came from a form part. */
  part?: { field: string; filename?: string };
  type: string;
  kinds: FileKind[];
  blocked: boolean;
}

/** Why part of a body went unscanned. */
export type Unscanned = 'oversize' | 'decompression_ratio' | 'undecodable';

/** Stable reason ids for access logs and block pages (see docs/dlp.md). */
export type DlpReason = 'dlp_match' | 'dlp_file_type' | 'dlp_oversize' | 'dlp_undecodable' | 'dlp_error' | 'dlp_unscanned';

/** The outcome of inspecting one body. */
export interface Verdict {
  action: 'allow' | 'alert' | 'block';
  /** Why the action was taken; dlp_unscanned marks an allowed body that was not fully scanned. */
  reason?: DlpReason;
  findings: Finding[];
  files: FileFinding[];
  /** Decoded bytes the scanner saw (base64 blocks it decoded not included). */
  scannedBytes: number;
  /** Scanning stopped early (max_scan_bytes, decompression ratio, or a body it could not decode). */
  truncated: boolean;
  unscanned?: Unscanned;
  /** Log detail for an undecodable body (never body content). */
  error?: string;
}

const SAMPLES = 3;
/** Distinct values remembered per entry; past this every new value counts as distinct. */
const DISTINCT_CAP = 1024;

/** 32-bit FNV-1a: distinct counting without keeping the values. */
function fnv(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Counters for one body, shared by every scanner and decoder working on it. */
export class Tally {
  private readonly count: number[];
  private readonly occ: number[];
  private readonly best: number[];
  private readonly samples: string[][];
  private readonly seen: Set<number>[];
  private readonly triggered: boolean[];
  /** Some block entry reached its threshold. */
  blocked = false;
  /** Called once, as soon as blocked becomes true (the request path may abort early). */
  onBlock: (() => void) | undefined;

  constructor(readonly profile: CompiledProfile) {
    const n = profile.rules.length;
    this.count = new Array<number>(n).fill(0);
    this.occ = new Array<number>(n).fill(0);
    this.best = new Array<number>(n).fill(0);
    this.samples = Array.from({ length: n }, () => []);
    this.seen = Array.from({ length: n }, () => new Set<number>());
    this.triggered = new Array<boolean>(n).fill(false);
  }

  /** A validated built-in match. */
  builtin(id: BuiltinId, value: string, conf: number): void {
    const rules = this.profile.builtins.get(id);
    if (!rules) return;
    for (const r of rules) {
      if (conf < this.profile.rules[r]!.minConfidence) continue;
      this.rule(r, value, id, conf);
    }
  }

  /** A match for entry `r`; `mask` is the built-in whose masking applies, or the sample itself. */
  rule(r: number, value: string, mask: BuiltinId | { sample: string }, conf: number): void {
    const rule = this.profile.rules[r]!;
    this.occ[r]!++;
    if (rule.count === 'all') this.count[r]!++;
    else {
      const seen = this.seen[r]!;
      const h = fnv(value);
      if (!seen.has(h)) {
        this.count[r]!++;
        if (seen.size < DISTINCT_CAP) seen.add(h);
      }
    }
    if (conf > this.best[r]!) this.best[r] = conf;
    const samples = this.samples[r]!;
    if (samples.length < SAMPLES) {
      const masked = typeof mask === 'string' ? maskBuiltin(mask, value) : mask.sample;
      if (!samples.includes(masked)) samples.push(masked);
    }
    if (!this.triggered[r] && this.count[r]! >= rule.threshold) {
      this.triggered[r] = true;
      if (rule.action === 'block' && !this.blocked) {
        this.blocked = true;
        this.onBlock?.();
      }
    }
  }

  /** Every entry that matched at least once, in profile order. */
  findings(): Finding[] {
    const out: Finding[] = [];
    this.profile.rules.forEach((rule, r) => {
      if (this.occ[r] === 0) return;
      out.push({
        detector: rule.name,
        type: rule.builtin ?? (rule.kind as 'regex' | 'keywords'),
        count: this.count[r]!,
        occurrences: this.occ[r]!,
        confidence: CONFIDENCE_NAME[this.best[r]!] as Confidence,
        samples: [...this.samples[r]!],
        threshold: rule.threshold,
        action: rule.action,
        triggered: this.triggered[r]!,
      });
    });
    return out;
  }

  /** Combines matches, file types and unscanned parts into the body's verdict. */
  verdict(parts: { files: FileFinding[]; scannedBytes: number; truncated: boolean; unscanned?: Unscanned; error?: string }): Verdict {
    const findings = this.findings();
    const p = this.profile;
    let action: Verdict['action'] = 'allow';
    let reason: DlpReason | undefined;
    if (this.blocked) [action, reason] = ['block', 'dlp_match'];
    else if (parts.files.some((f) => f.blocked)) [action, reason] = ['block', 'dlp_file_type'];
    else if (parts.unscanned === 'undecodable' && p.undecodable === 'block') [action, reason] = ['block', 'dlp_undecodable'];
    else if (parts.unscanned && parts.unscanned !== 'undecodable' && p.oversize === 'block') [action, reason] = ['block', 'dlp_oversize'];
    else if (findings.some((f) => f.triggered)) [action, reason] = ['alert', 'dlp_match'];
    else if (parts.unscanned) reason = 'dlp_unscanned';
    return {
      action,
      ...(reason ? { reason } : {}),
      findings,
      files: parts.files,
      scannedBytes: parts.scannedBytes,
      truncated: parts.truncated,
      ...(parts.unscanned ? { unscanned: parts.unscanned } : {}),
      ...(parts.error ? { error: parts.error } : {}),
    };
  }
}

const RANK = { allow: 0, alert: 1, block: 2 } as const;

/** One verdict for a body inspected with several profiles (a rule with `dlp: [a, b]`). */
export function mergeVerdicts(verdicts: readonly Verdict[]): Verdict {
  if (verdicts.length === 1) return verdicts[0]!;
  let top: Verdict | undefined;
  for (const v of verdicts) if (!top || RANK[v.action] > RANK[top.action] || (!top.reason && v.reason)) top = v;
  const unscanned = verdicts.find((v) => v.unscanned)?.unscanned;
  const error = verdicts.find((v) => v.error)?.error;
  return {
    action: top?.action ?? 'allow',
    ...(top?.reason ? { reason: top.reason } : {}),
    findings: verdicts.flatMap((v) => v.findings),
    files: verdicts.flatMap((v) => v.files),
    scannedBytes: Math.max(0, ...verdicts.map((v) => v.scannedBytes)),
    truncated: verdicts.some((v) => v.truncated),
    ...(unscanned ? { unscanned } : {}),
    ...(error ? { error } : {}),
  };
}
