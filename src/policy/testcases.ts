import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { FileValidationError, parseYamlFile, type FileProblem } from '../config/validate.js';
import type { CompiledPolicy } from './compile.js';
import { decide } from './decide.js';
import { queryFromSpec, requestSpecSchema, type DeviceInventory } from './query.js';

const testFileSchema = z.strictObject({
  version: z.literal('v1'),
  cases: z.array(z.strictObject({
    name: z.string().min(1),
    request: requestSpecSchema,
    expect: z.strictObject({
      action: z.enum(['allow', 'deny']),
      rule: z.string().optional(),
      report: z.array(z.string()).optional().describe('Report-mode rules expected to match.'),
    }),
  })),
});

/** The device inventory file (policies/devices.yaml), if present. */
export const inventorySchema = z.strictObject({
  version: z.literal('v1'),
  devices: z.record(z.string().min(1), z.record(z.string(), z.union([z.string(), z.number(), z.boolean()]))),
});

/** Reads policies/devices.yaml; an absent file is an empty inventory. */
export function loadInventory(dir: string): DeviceInventory {
  for (const name of ['devices.yaml', 'devices.yml']) {
    let text: string;
    try {
      text = readFileSync(join(dir, name), 'utf8');
    } catch {
      continue;
    }
    return parseYamlFile(join(dir, name), text, inventorySchema).devices;
  }
  return {};
}

/** One test case's outcome. */
export interface CaseResult {
  file: string;
  name: string;
  ok: boolean;
  got: string;
  want: string;
}

/** Runs every case in `dir/tests/*.yaml` against `policy`; a missing tests folder is zero cases. */
export function runPolicyTests(policy: CompiledPolicy, dir: string): CaseResult[] {
  const testDir = join(dir, 'tests');
  let names: string[] = [];
  try {
    names = readdirSync(testDir).filter((n) => /\.ya?ml$/.test(n)).sort();
  } catch {
    return [];
  }
  const inventory = loadInventory(dir);
  const results: CaseResult[] = [];
  const problems: FileProblem[] = [];
  for (const n of names) {
    const file = join(testDir, n);
    let data: z.output<typeof testFileSchema>;
    try {
      data = parseYamlFile(file, readFileSync(file, 'utf8'), testFileSchema);
    } catch (err) {
      if (err instanceof FileValidationError) problems.push(...err.problems);
      else throw err;
      continue;
    }
    for (const c of data.cases) {
      const want = `${c.expect.action}${c.expect.rule ? ` by ${c.expect.rule}` : ''}${c.expect.report ? ` reporting ${c.expect.report.join(',')}` : ''}`;
      let got: string;
      let ok: boolean;
      try {
        const d = decide(policy, queryFromSpec(c.request, inventory));
        const reported = d.report.map((r) => r.rule);
        got = `${d.action} by ${d.rule}${reported.length ? ` reporting ${reported.join(',')}` : ''}`;
        ok = d.action === c.expect.action && (c.expect.rule === undefined || c.expect.rule === d.rule)
          && (c.expect.report === undefined || c.expect.report.join(',') === reported.join(','));
      } catch (err) {
        got = `error: ${(err as Error).message}`;
        ok = false;
      }
      results.push({ file, name: c.name, ok, got, want });
    }
  }
  if (problems.length > 0) throw new FileValidationError(problems);
  return results;
}
