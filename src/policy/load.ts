import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileValidationError, parseYamlFile, type FileProblem } from '../config/validate.js';
import { compileFiles, type CompiledPolicy, type LoadedFile } from './compile.js';
import { policyFileSchema } from './schema.js';

export type { CompiledPolicy } from './compile.js';

/** Reads a squidGuard/UT1 `domains` file: one domain per line, # comments and blanks ignored. */
export function readDomainList(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line && line.charCodeAt(0) !== 35 /* # */) out.push(line);
  }
  return out;
}

/**
 * Reads, validates and compiles every *.yaml / *.yml file directly in `dir`, plus the category
 * lists the apps name (`dir/categories/<name>/domains`); all or nothing. The version is a hash
 * of every file that went in, category lists included.
 */
export function loadPolicyDir(dir: string): CompiledPolicy {
  let names: string[];
  try {
    // devices.yaml is the device inventory (attributes by device id), not a policy file.
    names = readdirSync(dir).filter((n) => /\.ya?ml$/.test(n) && !/^devices\.ya?ml$/.test(n)).sort();
  } catch (err) {
    throw new FileValidationError([{ file: dir, line: 0, col: 0, field: '', message: `cannot read policy directory: ${(err as Error).message}` }]);
  }
  if (names.length === 0) {
    throw new FileValidationError([{ file: dir, line: 0, col: 0, field: '', message: 'no policy files (*.yaml) found' }]);
  }
  const problems: FileProblem[] = [];
  const files: LoadedFile[] = [];
  const hash = createHash('sha256');
  for (const name of names) {
    const path = join(dir, name);
    try {
      const text = readFileSync(path, 'utf8');
      hash.update(name).update('\0').update(text).update('\0');
      files.push({ name: path, text, data: parseYamlFile(path, text, policyFileSchema) });
    } catch (err) {
      if (err instanceof FileValidationError) problems.push(...err.problems);
      else problems.push({ file: path, line: 0, col: 0, field: '', message: (err as Error).message });
    }
  }
  if (problems.length > 0) throw new FileValidationError(problems);
  const readCategory = (category: string): string[] | undefined => {
    try {
      const text = readFileSync(join(dir, 'categories', category, 'domains'), 'utf8');
      hash.update(`categories/${category}`).update('\0').update(text).update('\0');
      return readDomainList(text);
    } catch {
      return undefined;
    }
  };
  const result = compileFiles(files, '', readCategory);
  if ('problems' in result) throw new FileValidationError(result.problems);
  // The hash is finished only now, once every category list that was read is in it.
  return { ...result.policy, version: hash.digest('hex').slice(0, 12) };
}
