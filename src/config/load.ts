import { readFileSync } from 'node:fs';
import { availableParallelism, hostname, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { cidr, hostPort } from './fields.js';
import { configSchema, type ProxyConfig } from './schema.js';
import { FileValidationError, parseYamlFile } from './validate.js';

/** Options given on the command line; each wins over its environment variable, which wins over the file. */
export interface StartOverrides {
  config?: string | undefined;
  policies?: string | undefined;
  listen?: string | undefined;
  admin?: string | undefined;
  allowRanges?: string[] | undefined;
  nodeId?: string | undefined;
  logLevel?: string | undefined;
  workers?: string | undefined;
}

/** The environment variables the start command reads, one per option. */
export const ENV = {
  config: 'EGRESS_CONFIG',
  policies: 'EGRESS_POLICIES',
  listen: 'EGRESS_LISTEN',
  admin: 'EGRESS_ADMIN',
  allowRanges: 'EGRESS_ALLOW_RANGES',
  nodeId: 'EGRESS_NODE_ID',
  logLevel: 'EGRESS_LOG_LEVEL',
  workers: 'EGRESS_WORKERS',
} as const;

/** Config after loading: policy directory made absolute, node id filled in, frozen. */
export type LoadedConfig = Readonly<Omit<ProxyConfig, 'workers'> & {
  node_id: string; workers: number; policiesDir: string; configFile: string | undefined; caDir: string; upstreamCaFile: string | undefined;
  /** Where large uploads wait on disk for their DLP verdict (inspection.spool_dir, made absolute). */
  spoolDir: string;
  /** Directory that relative file names in the config are resolved against (the config file's, else the working directory). */
  baseDir: string;
}>;

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

function checkOverride(source: string, value: string, schema: typeof hostPort | typeof cidr): string {
  const r = schema.safeParse(value);
  if (!r.success) {
    throw new FileValidationError([{ file: source, line: 0, col: 0, field: '', message: r.error.issues[0]!.message }]);
  }
  return value;
}

/** Loads the YAML config (if any), applies environment and command-line overrides, validates and freezes. */
export function loadConfig(opts: StartOverrides = {}, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const configFile = opts.config ?? env[ENV.config];
  const baseDir = configFile ? dirname(resolve(configFile)) : process.cwd();
  let parsed: ProxyConfig;
  if (configFile) {
    let text: string;
    try {
      text = readFileSync(configFile, 'utf8');
    } catch (err) {
      throw new FileValidationError([
        { file: configFile, line: 0, col: 0, field: '', message: `cannot read: ${(err as Error).message}` },
      ]);
    }
    parsed = parseYamlFile(configFile, text, configSchema);
  } else {
    parsed = configSchema.parse({});
  }
  const pick = (cli: string | undefined, flag: string, envVar: string): [string, string] | undefined => {
    if (cli !== undefined) return [flag, cli];
    const v = env[envVar];
    return v !== undefined ? [envVar, v] : undefined;
  };
  const listen = pick(opts.listen, '--listen', ENV.listen);
  if (listen) parsed.listen = checkOverride(listen[0], listen[1], hostPort);
  const admin = pick(opts.admin, '--admin', ENV.admin);
  if (admin) parsed.admin = checkOverride(admin[0], admin[1], hostPort);
  const extraRanges = opts.allowRanges?.length
    ? opts.allowRanges.map((r) => checkOverride('--allow-range', r, cidr))
    : (env[ENV.allowRanges] ?? '').split(',').map((s) => s.trim()).filter(Boolean)
        .map((r) => checkOverride(ENV.allowRanges, r, cidr));
  parsed.allow_ranges = [...parsed.allow_ranges, ...extraRanges];
  const nodeId = opts.nodeId ?? env[ENV.nodeId];
  if (nodeId !== undefined) {
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(nodeId)) {
      throw new FileValidationError([{ file: opts.nodeId ? '--node-id' : ENV.nodeId, line: 0, col: 0, field: '', message: 'expected 1-64 of A-Z a-z 0-9 . _ -' }]);
    }
    parsed.node_id = nodeId;
  }
  const level = opts.logLevel ?? env[ENV.logLevel];
  if (level !== undefined) {
    const ok = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
    const found = ok.find((l) => l === level);
    if (!found) {
      throw new FileValidationError([{ file: opts.logLevel ? '--log-level' : ENV.logLevel, line: 0, col: 0, field: '', message: `expected one of ${ok.join(', ')}` }]);
    }
    parsed.log.level = found;
  }
  const workers = pick(opts.workers, '--workers', ENV.workers);
  if (workers) {
    const n = Number(workers[1]);
    if (workers[1] === 'auto') parsed.workers = 'auto';
    else if (Number.isInteger(n) && n >= 1 && n <= 256) parsed.workers = n;
    else throw new FileValidationError([{ file: workers[0], line: 0, col: 0, field: '', message: 'expected a number from 1 to 256, or "auto"' }]);
  }
  const policiesDir = opts.policies ?? env[ENV.policies];
  return deepFreeze({
    ...parsed,
    workers: parsed.workers === 'auto' ? availableParallelism() : parsed.workers,
    node_id: parsed.node_id ?? (hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64) || 'egress'),
    policiesDir: policiesDir ? resolve(policiesDir) : resolve(baseDir, parsed.policies),
    caDir: resolve(baseDir, parsed.inspection.ca_dir),
    upstreamCaFile: parsed.inspection.upstream_ca_file ? resolve(baseDir, parsed.inspection.upstream_ca_file) : undefined,
    spoolDir: parsed.inspection.spool_dir ? resolve(baseDir, parsed.inspection.spool_dir) : join(tmpdir(), `egress-proxy-spool-${process.getuid?.() ?? 'user'}`),
    configFile,
    baseDir,
  });
}
