import { LineCounter, isMap, isNode, isPair, isScalar, parseDocument, type Document } from 'yaml';
import type { z } from 'zod';

/** One problem in a config or policy file, located for the admin who has to fix it. */
export interface FileProblem {
  file: string;
  line: number;
  col: number;
  field: string;
  message: string;
}

/** Formats a problem as `file:line:col field: message`, the shape editors and CI annotate. */
export function formatProblem(p: FileProblem): string {
  return `${p.file}:${p.line}:${p.col} ${p.field ? `${p.field}: ` : ''}${p.message}`;
}

/** A file failed to parse or validate; holds every problem found, not just the first. */
export class FileValidationError extends Error {
  readonly problems: FileProblem[];
  constructor(problems: FileProblem[]) {
    super(problems.map(formatProblem).join('\n'));
    this.name = 'FileValidationError';
    this.problems = problems;
  }
}

type Path = ReadonlyArray<PropertyKey>;

function fieldName(path: Path): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join('');
}

/** Edit distance, for "did you mean" on misspelt keys. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

/** The closest of `known` to `key`, if it is close enough to be a typo. */
export function nearest(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const d = distance(key.toLowerCase(), k.toLowerCase());
    if (d < bestD) [best, bestD] = [k, d];
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(key.length / 3)) ? best : undefined;
}

/** Walks a zod schema along a data path to list the keys an object there accepts. */
function keysAt(schema: z.ZodType, path: Path): string[] {
  let s: unknown = schema;
  const unwrap = () => {
    for (;;) {
      const def = (s as { _zod?: { def?: { type?: string; innerType?: unknown; in?: unknown } } })._zod?.def;
      if (def && (def.type === 'optional' || def.type === 'default' || def.type === 'prefault' || def.type === 'nullable')) {
        s = def.innerType;
      } else if (def && def.type === 'pipe') {
        s = def.in;
      } else return;
    }
  };
  for (const p of path) {
    unwrap();
    const def = (s as { _zod: { def: { type: string; shape?: Record<string, unknown>; element?: unknown; valueType?: unknown } } })._zod.def;
    if (def.type === 'object' && typeof p === 'string' && def.shape) s = def.shape[p];
    else if (def.type === 'array') s = def.element;
    else if (def.type === 'record') s = def.valueType;
    else return [];
    if (!s) return [];
  }
  unwrap();
  const def = (s as { _zod: { def: { type: string; shape?: Record<string, unknown> } } })._zod.def;
  return def.type === 'object' && def.shape ? Object.keys(def.shape) : [];
}

function locate(doc: Document, lc: LineCounter, path: Path, key?: string): { line: number; col: number } {
  // Find the deepest node that exists along the path (a missing field points at its parent).
  let node: unknown = doc.contents;
  for (const p of path) {
    if (!isMap(node) && !(isNode(node) && 'items' in node)) break;
    const next = (node as { get: (k: unknown, keepScalar: boolean) => unknown }).get(p, true);
    if (next === undefined) break;
    node = next;
  }
  let offset = isNode(node) && node.range ? node.range[0] : 0;
  if (key !== undefined && isMap(node)) {
    const pair = node.items.find((it) => isPair(it) && isScalar(it.key) && it.key.value === key);
    if (pair && isScalar(pair.key) && pair.key.range) offset = pair.key.range[0];
  }
  const pos = lc.linePos(offset);
  return { line: pos.line, col: pos.col };
}

/**
 * Parses YAML text and validates it against `schema`, returning the typed value or throwing
 * a FileValidationError whose problems name file, line, column and field.
 */
export function parseYamlFile<S extends z.ZodType>(file: string, text: string, schema: S): z.output<S> {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new FileValidationError(
      doc.errors.map((e) => {
        const pos = lc.linePos(e.pos[0]);
        return { file, line: pos.line, col: pos.col, field: '', message: e.message.split('\n')[0]! };
      }),
    );
  }
  const data: unknown = doc.toJS() ?? {};
  const result = schema.safeParse(data);
  if (result.success) return result.data;
  const problems: FileProblem[] = [];
  for (const issue of result.error.issues) {
    if (issue.code === 'unrecognized_keys') {
      const known = keysAt(schema, issue.path);
      for (const key of issue.keys) {
        const hint = nearest(key, known);
        problems.push({
          file,
          ...locate(doc, lc, issue.path, key),
          field: fieldName([...issue.path, key]),
          message: `unknown field${hint ? `; did you mean "${hint}"?` : known.length ? `; expected one of ${known.join(', ')}` : ''}`,
        });
      }
      continue;
    }
    problems.push({ file, ...locate(doc, lc, issue.path), field: fieldName(issue.path), message: issue.message });
  }
  throw new FileValidationError(problems);
}
