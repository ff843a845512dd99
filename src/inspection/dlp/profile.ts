import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { FileValidationError, parseYamlFile, type FileProblem } from '../../config/validate.js';
import { BUILTIN_IDS } from './detectors.js';
import { FILE_KINDS } from './filetype.js';
import { compileProfile, type CompiledProfile } from './compile.js';

const name = z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,63}$/, { message: 'names use a-z 0-9 _ . - (lower case, at most 64)' });
const confidence = z.enum(['low', 'medium', 'high']);
const action = z.enum(['block', 'alert']);
const SIZE = /^(\d+)\s*(B|KiB|MiB|GiB)$/;
const UNITS = { B: 1, KiB: 1024, MiB: 1048576, GiB: 1073741824 } as const;
/** Sizes are bytes, or a string such as "16MiB" so admins need not count zeros. */
const size = (min: number, max: number) => z.union([z.number(), z.string()])
  .transform((v, ctx) => {
    if (typeof v === 'number') return v;
    const m = SIZE.exec(v.trim());
    if (m) return Number(m[1]) * UNITS[m[2] as keyof typeof UNITS];
    ctx.addIssue({ code: 'custom', message: 'expected bytes, or a size such as 512KiB, 16MiB, 1GiB' });
    return z.NEVER;
  })
  .pipe(z.number().int().min(min, { message: `must be at least ${min} bytes` }).max(max, { message: `must be at most ${max} bytes` }));

const common = {
  name: name.optional().describe('Shown in findings and logs; unique within the profile.'),
  threshold: z.number().int().min(1).max(1000).default(1)
    .describe('Act when this many matches are found (distinct values unless count: all).'),
  count: z.enum(['distinct', 'all']).default('distinct')
    .describe('distinct: the same value seen twice counts once; all: every occurrence counts.'),
  action,
};

const builtinDetector = z.strictObject({
  builtin: z.enum(BUILTIN_IDS),
  min_confidence: confidence.optional().describe('Matches below this confidence are ignored (default per detector, see docs/dlp.md).'),
  ...common,
});

const regexDetector = z.strictObject({
  regex: z.string().min(1).max(1000).describe('RE2 syntax (linear time: no backreferences or lookaround).'),
  case_sensitive: z.boolean().default(true),
  confidence: confidence.default('medium'),
  ...common,
  name,
});

const keywordDetector = z.strictObject({
  keywords: z.array(z.string().min(2).max(128)).min(1).max(5000),
  case_sensitive: z.boolean().default(false).describe('false folds ASCII letters only.'),
  whole_word: z.boolean().default(true).describe('Require a non-word character (or the edge) on both sides.'),
  confidence: confidence.default('medium'),
  ...common,
  name,
});

/** One DLP profile: what to look for in bodies, and what to do about it. */
export const profileSchema = z.strictObject({
  description: z.string().optional(),
  detectors: z.array(z.union([builtinDetector, regexDetector, keywordDetector])).default([]),
  file_types: z.strictObject({
    block: z.array(z.enum(FILE_KINDS)).min(1),
    direction: z.enum(['upload', 'download', 'both']).default('upload'),
  }).optional().describe('Block bodies (and multipart files) by content type sniffed from magic bytes.'),
  max_scan_bytes: size(4096, 1073741824).default(16 * 1048576)
    .describe('Decoded bytes scanned per body; the rest is not scanned.'),
  oversize: z.enum(['block', 'allow']).default('allow')
    .describe('A body larger than max_scan_bytes (or a decompression bomb): block, or allow and log dlp_unscanned.'),
  undecodable: z.enum(['block', 'allow']).default('block')
    .describe('A body whose Content-Encoding or multipart framing cannot be decoded.'),
  decode: z.strictObject({
    base64: z.boolean().default(true).describe('Decode runs of 64+ base64 characters and scan the result.'),
    base64_max_bytes: size(1024, 268435456).default(8 * 1048576).describe('Decoded base64 scanned per body.'),
    max_ratio: z.number().int().min(10).max(10000).default(200)
      .describe('Stop decompressing past this output/input ratio (decompression bombs).'),
  }).prefault({}),
}).superRefine((p, ctx) => {
  const seen = new Map<string, number>();
  p.detectors.forEach((d, i) => {
    const n = d.name ?? ('builtin' in d ? d.builtin : '');
    const prev = seen.get(n);
    if (prev !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['detectors', i, 'name'], message: `detector name "${n}" is already used by detectors[${prev}]; give this one a distinct name` });
    } else seen.set(n, i);
  });
});

/** A file under policies/dlp/. Profile names are unique across all files. */
export const dlpFileSchema = z.strictObject({
  version: z.literal('v1').describe('DLP profile language version.'),
  description: z.string().optional(),
  profiles: z.record(name, profileSchema),
}).describe('egress-proxy DLP profiles');

export type DlpFile = z.output<typeof dlpFileSchema>;
export type ProfileSpec = z.output<typeof profileSchema>;
export type { CompiledKeywords, CompiledProfile, CompiledRegex, CompiledRule, Level } from './compile.js';
export { asBytes, compileProfile } from './compile.js';

/** Parses and compiles one profile file's text; throws FileValidationError with file:line:col. */
export function parseDlpFile(file: string, text: string): Map<string, CompiledProfile> {
  const data = parseYamlFile(file, text, dlpFileSchema);
  const problems: FileProblem[] = [];
  const out = new Map<string, CompiledProfile>();
  for (const [n, spec] of Object.entries(data.profiles)) {
    out.set(n, compileProfile(n, spec, file, (path, message) => {
      problems.push(locateProblem(file, text, path, message));
    }));
  }
  if (problems.length > 0) throw new FileValidationError(problems);
  return out;
}

/** Re-runs the YAML locator for a compile-time problem, so it points at the offending value. */
function locateProblem(file: string, text: string, path: (string | number)[], message: string): FileProblem {
  // parseYamlFile locates schema issues; a schema that always fails at `path` reuses that logic.
  const failing = z.any().superRefine((_v, ctx) => { ctx.addIssue({ code: 'custom', path, message }); });
  try {
    parseYamlFile(file, text, failing);
  } catch (err) {
    if (err instanceof FileValidationError && err.problems[0]) return err.problems[0];
  }
  return { file, line: 0, col: 0, field: path.join('.'), message };
}

/**
 * Reads every *.yaml / *.yml in `dir` (policies/dlp) and returns the compiled profiles by name.
 * Throws a FileValidationError listing every problem in every file (duplicate names included).
 */
export function loadDlpProfiles(dir: string): Map<string, CompiledProfile> {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => /\.ya?ml$/.test(n)).sort();
  } catch (err) {
    throw new FileValidationError([{ file: dir, line: 0, col: 0, field: '', message: `cannot read DLP profile directory: ${(err as Error).message}` }]);
  }
  const problems: FileProblem[] = [];
  const all = new Map<string, CompiledProfile>();
  for (const n of names) {
    const path = join(dir, n);
    try {
      const text = readFileSync(path, 'utf8');
      for (const [pn, p] of parseDlpFile(path, text)) {
        const prev = all.get(pn);
        if (prev) problems.push(locateProblem(path, text, ['profiles', pn], `profile "${pn}" is already defined in ${prev.file}`));
        else all.set(pn, p);
      }
    } catch (err) {
      if (err instanceof FileValidationError) problems.push(...err.problems);
      else problems.push({ file: path, line: 0, col: 0, field: '', message: (err as Error).message });
    }
  }
  if (problems.length > 0) throw new FileValidationError(problems);
  return all;
}
