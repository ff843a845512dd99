import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { loadPolicyDir, type CompiledPolicy } from '../../src/policy/load.js';

/** Writes files (relative path → text) into a fresh policy directory and returns its path. */
export function policyDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'egress-pol-'));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  return dir;
}

/** Compiles one policy file's text (plus optional extra files). */
export function compile(text: string, extra: Record<string, string> = {}): CompiledPolicy {
  return loadPolicyDir(policyDir({ 'policy.yaml': text, ...extra }));
}
