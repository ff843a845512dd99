import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileValidationError, parseYamlFile, type FileProblem } from '../config/validate.js';
import { policyFileSchema, type PolicyFile } from './schema.js';
import { PortSet } from './ports.js';

/** The whole policy set, compiled for fast decisions. Immutable: reloads build a new one. */
export interface CompiledPolicy {
  /** Content hash of every file; goes into each access-log line. */
  readonly version: string;
  readonly files: readonly string[];
  readonly defaultAction: 'allow' | 'deny';
  readonly allowRanges: readonly string[];
  readonly connectPorts: PortSet;
  readonly httpPorts: PortSet;
}

/** Compiles already-validated policy files (name → content) into one policy. */
export function compilePolicy(files: ReadonlyArray<{ name: string; text: string; data: PolicyFile }>): CompiledPolicy {
  const hash = createHash('sha256');
  for (const f of files) hash.update(f.name).update('\0').update(f.text).update('\0');
  const defaults = files.filter((f) => f.data.default !== undefined);
  if (defaults.length > 1) {
    throw new FileValidationError(
      defaults.slice(1).map((f) => ({
        file: f.name, line: 1, col: 1, field: 'default',
        message: `"default" is already set in ${defaults[0]!.name}; set it in one file only`,
      })),
    );
  }
  const connect = files.flatMap((f) => f.data.network.connect_ports ?? []);
  const http = files.flatMap((f) => f.data.network.http_ports ?? []);
  return {
    version: hash.digest('hex').slice(0, 12),
    files: files.map((f) => f.name),
    defaultAction: defaults[0]?.data.default ?? 'deny',
    allowRanges: files.flatMap((f) => f.data.network.allow_ranges),
    connectPorts: new PortSet(files.some((f) => f.data.network.connect_ports) ? connect : [443]),
    httpPorts: new PortSet(files.some((f) => f.data.network.http_ports) ? http : [80, 443]),
  };
}

/** Reads, validates and compiles every *.yaml / *.yml file directly in `dir`; all-or-nothing. */
export function loadPolicyDir(dir: string): CompiledPolicy {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => /\.ya?ml$/.test(n)).sort();
  } catch (err) {
    throw new FileValidationError([{ file: dir, line: 0, col: 0, field: '', message: `cannot read policy directory: ${(err as Error).message}` }]);
  }
  if (names.length === 0) {
    throw new FileValidationError([{ file: dir, line: 0, col: 0, field: '', message: 'no policy files (*.yaml) found' }]);
  }
  const problems: FileProblem[] = [];
  const files: Array<{ name: string; text: string; data: PolicyFile }> = [];
  for (const name of names) {
    const path = join(dir, name);
    try {
      const text = readFileSync(path, 'utf8');
      files.push({ name: path, text, data: parseYamlFile(path, text, policyFileSchema) });
    } catch (err) {
      if (err instanceof FileValidationError) problems.push(...err.problems);
      else problems.push({ file: path, line: 0, col: 0, field: '', message: (err as Error).message });
    }
  }
  if (problems.length > 0) throw new FileValidationError(problems);
  return compilePolicy(files);
}
