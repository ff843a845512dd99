// Compiling a validated profile for the scanner. Apart from the schema (profile.ts), so a scan
// worker can compile without loading the YAML and schema libraries.
import { RE2JS } from 're2js';
import { BUILTIN_IDS, CONFIDENCE, type BuiltinId } from './detectors.js';
import type { FileKind } from './filetype.js';
import type { ProfileSpec } from './profile.js';

export type Level = 1 | 2 | 3;

/** One detector entry of a profile, ready for the scanner. */
export interface CompiledRule {
  name: string;
  kind: 'builtin' | 'regex' | 'keywords';
  builtin?: BuiltinId;
  minConfidence: Level;
  threshold: number;
  count: 'distinct' | 'all';
  action: 'block' | 'alert';
}

/** A custom regex, compiled with RE2 semantics (linear time whatever the pattern). */
export interface CompiledRegex {
  rule: number;
  re: RE2JS;
  /** The pattern has non-ASCII text: match it against UTF-8 bytes rather than the byte-per-char view. */
  utf8: boolean;
  confidence: Level;
}
/** A keyword dictionary, as one literal alternation (no quantifiers, so no backtracking blow-up). */
export interface CompiledKeywords { rule: number; re: RegExp; maxLen: number; confidence: Level }

/** A validated, compiled profile. */
export interface CompiledProfile {
  name: string;
  file: string;
  /** What it was compiled from (plain data): a scan worker compiles the very same. */
  spec: ProfileSpec;
  description?: string;
  rules: CompiledRule[];
  /** For each built-in detector in use, the rules that count its matches. */
  builtins: Map<BuiltinId, number[]>;
  regexes: CompiledRegex[];
  keywords: CompiledKeywords[];
  fileTypes?: { block: ReadonlySet<FileKind>; direction: 'upload' | 'download' | 'both' };
  maxScanBytes: number;
  oversize: 'block' | 'allow';
  undecodable: 'block' | 'allow';
  decode: { base64: boolean; base64MaxBytes: number; maxRatio: number };
}

const DEFAULT_MIN: Record<BuiltinId, Level> = Object.fromEntries(BUILTIN_IDS.map((id) => [id, 2])) as Record<BuiltinId, Level>;

/** UTF-8 bytes of `text` as a latin1 string: the scanner sees bodies one byte per character. */
export function asBytes(text: string): string {
  return Buffer.from(text, 'utf8').toString('latin1');
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
}

/** Compiles one profile; `problem` collects errors (a bad regex) with their field path. */
export function compileProfile(profileName: string, spec: ProfileSpec, file: string,
  problem: (path: (string | number)[], message: string) => void = (p, m) => { throw new Error(`${p.join('.')}: ${m}`); }): CompiledProfile {
  const rules: CompiledRule[] = [];
  const builtins = new Map<BuiltinId, number[]>();
  const regexes: CompiledRegex[] = [];
  const keywords: CompiledKeywords[] = [];
  spec.detectors.forEach((d, i) => {
    const base = { threshold: d.threshold, count: d.count, action: d.action };
    if ('builtin' in d) {
      const idx = rules.push({ ...base, name: d.name ?? d.builtin, kind: 'builtin', builtin: d.builtin,
        minConfidence: d.min_confidence ? CONFIDENCE[d.min_confidence] : DEFAULT_MIN[d.builtin] }) - 1;
      builtins.set(d.builtin, [...(builtins.get(d.builtin) ?? []), idx]);
    } else if ('regex' in d) {
      let re: RE2JS;
      try {
        re = RE2JS.compile(d.regex, d.case_sensitive ? 0 : RE2JS.CASE_INSENSITIVE);
      } catch (err) {
        problem(['profiles', profileName, 'detectors', i, 'regex'], `invalid RE2 pattern: ${(err as Error).message}`);
        return;
      }
      if (re.test('')) {
        problem(['profiles', profileName, 'detectors', i, 'regex'], 'pattern matches the empty string');
        return;
      }
      const idx = rules.push({ ...base, name: d.name, kind: 'regex', minConfidence: 1 }) - 1;
      regexes.push({ rule: idx, re, utf8: /[^\x00-\x7f]/.test(d.regex), confidence: CONFIDENCE[d.confidence] });
    } else {
      const words = [...new Set(d.keywords.map(asBytes))].sort((a, b) => b.length - a.length);
      const alt = words.map(escapeRegExp).join('|');
      const source = d.whole_word ? `(?<![A-Za-z0-9_])(?:${alt})(?![A-Za-z0-9_])` : `(?:${alt})`;
      const idx = rules.push({ ...base, name: d.name, kind: 'keywords', minConfidence: 1 }) - 1;
      keywords.push({ rule: idx, re: new RegExp(source, d.case_sensitive ? 'g' : 'gi'), maxLen: words[0]!.length, confidence: CONFIDENCE[d.confidence] });
    }
  });
  return {
    name: profileName,
    file,
    spec,
    ...(spec.description !== undefined ? { description: spec.description } : {}),
    rules,
    builtins,
    regexes,
    keywords,
    ...(spec.file_types ? { fileTypes: { block: new Set(spec.file_types.block), direction: spec.file_types.direction } } : {}),
    maxScanBytes: spec.max_scan_bytes,
    oversize: spec.oversize,
    undecodable: spec.undecodable,
    decode: { base64: spec.decode.base64, base64MaxBytes: spec.decode.base64_max_bytes, maxRatio: spec.decode.max_ratio },
  };
}

