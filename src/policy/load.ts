import { createHash, type Hash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { FileValidationError, parseYamlFile, type FileProblem } from '../config/validate.js';
import { compileFiles, type CategoryList, type CompiledPolicy, type LoadedFile } from './compile.js';
import { ICAP_PROFILE, policyFileSchema } from './schema.js';
import { loadDlpProfiles, type CompiledProfile } from '../inspection/dlp/profile.js';

export type { CompiledPolicy } from './compile.js';

/** Reads a squidGuard/UT1 `domains` or `urls` file: one entry per line, # comments and blanks ignored. */
export function readDomainList(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line && line.charCodeAt(0) !== 35 /* # */) out.push(line);
  }
  return out;
}

/**
 * Reads and validates every *.yaml / *.yml file directly in `dir` (not devices.yaml, the device
 * inventory). Throws a FileValidationError listing every problem in every file.
 */
export function readPolicyFiles(dir: string): LoadedFile[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => /\.ya?ml$/.test(n) && !/^devices\.ya?ml$/.test(n)).sort();
  } catch (err) {
    throw new FileValidationError([{ file: dir, line: 0, col: 0, field: '', message: `cannot read policy directory: ${(err as Error).message}` }]);
  }
  if (names.length === 0) {
    throw new FileValidationError([{ file: dir, line: 0, col: 0, field: '', message: 'no policy files (*.yaml) found' }]);
  }
  const problems: FileProblem[] = [];
  const files: LoadedFile[] = [];
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
  return files;
}

/**
 * Compiles validated files with the category lists the apps name (`dir/categories/<name>/domains`).
 * The version is a hash of every file that went in, category lists included.
 */
export function compilePolicyDir(dir: string, files: readonly LoadedFile[]): CompiledPolicy {
  const hash = createHash('sha256');
  for (const f of files) hash.update(f.name.slice(dir.length)).update('\0').update(f.text).update('\0');
  const categoriesDir = join(dir, files.find((f) => f.data.categories_dir !== undefined)?.data.categories_dir ?? 'categories');
  const readList = (category: string, kind: 'domains' | 'urls'): string[] | undefined => {
    try {
      const text = readFileSync(join(categoriesDir, category, kind), 'utf8');
      hash.update(`categories/${category}/${kind}`).update('\0').update(text).update('\0');
      return readDomainList(text);
    } catch {
      return undefined;
    }
  };
  const readCategory = (category: string): CategoryList | undefined => {
    // A name with a path separator would read outside the categories directory.
    if (category.includes('/') || category.includes('\\') || category.startsWith('.')) return undefined;
    const domains = readList(category, 'domains');
    const urls = readList(category, 'urls');
    return domains || urls ? { domains: domains ?? [], urls: urls ?? [] } : undefined;
  };
  const result = compileFiles(files, '', readCategory);
  if ('problems' in result) throw new FileValidationError(result.problems);
  const dlp = loadProfilesWithPolicy(dir, files, hash);
  // The hash is finished only now, once every category list and DLP profile that was read is in it.
  return { ...result.policy, dlp, version: hash.digest('hex').slice(0, 12) };
}

/**
 * The DLP profiles in `dir/dlp/*.yaml`, checked against the rules that name them: a rule naming
 * a profile that does not exist is an error of the policy, like an unknown app. `icap` is the
 * reserved name of the configured ICAP service.
 */
function loadProfilesWithPolicy(dir: string, files: readonly LoadedFile[], hash: Hash): Map<string, CompiledProfile> {
  const dlpDir = join(dir, 'dlp');
  const profiles = existsSync(dlpDir) ? loadDlpProfiles(dlpDir) : new Map<string, CompiledProfile>();
  for (const p of profiles.values()) hash.update(`dlp/${p.name}`).update('\0').update(readFileSync(p.file, 'utf8')).update('\0');
  const problems: FileProblem[] = [];
  for (const f of files) {
    (f.data.rules ?? []).forEach((r, i) => {
      for (const name of r.dlp ?? []) {
        if (name !== ICAP_PROFILE && !profiles.has(name)) {
          problems.push({ file: f.name, line: 0, col: 0, field: `rules[${i}].dlp`, message: `rule ${r.id}: no DLP profile "${name}" in ${dlpDir} (known: ${[...profiles.keys(), ICAP_PROFILE].join(', ')})` });
        }
      }
    });
  }
  if (problems.length > 0) throw new FileValidationError(problems);
  return profiles;
}

/** Reads, validates and compiles a policy directory, synchronously (start-up and the CLI). */
export function loadPolicyDir(dir: string): CompiledPolicy {
  return compilePolicyDir(dir, readPolicyFiles(dir));
}

/**
 * The same, with reading and validation (YAML parsing is most of the cost of a large policy) in
 * a worker thread, so a reload does not stall requests; only the compile runs here.
 */
export async function loadPolicyDirOffThread(dir: string): Promise<CompiledPolicy> {
  const script = new URL('./read-worker.js', import.meta.url);
  // Running from TypeScript sources (the test runner) there is no compiled worker: load here.
  if (!existsSync(script)) return loadPolicyDir(dir);
  const worker = new Worker(script, { workerData: { dir } });
  const reply = await new Promise<{ files?: LoadedFile[]; problems?: FileProblem[]; error?: string }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`policy reader exited with code ${code}`)));
  }).finally(() => void worker.terminate());
  if (reply.problems) throw new FileValidationError(reply.problems);
  if (reply.error || !reply.files) throw new Error(reply.error ?? 'policy reader sent nothing');
  return compilePolicyDir(dir, reply.files);
}
