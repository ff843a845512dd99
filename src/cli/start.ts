import type { Command } from 'commander';
import cluster from 'node:cluster';
import type { AddressInfo } from 'node:net';
import { ENV, loadConfig } from '../config/load.js';
import { FileValidationError } from '../config/validate.js';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ensureDeviceCa } from '../identity/device-ca.js';
import type { DevIdp } from '../identity/dev-idp.js';
import { DEV_ISSUER, startDevIdentityProvider } from '../identity/setup.js';
import { WORKER_SESSION_KEY } from '../identity/sign-in.js';
import { caFiles, ensureCa, loadCa } from '../inspection/ca.js';
import { loadPolicyDir } from '../policy/load.js';
import { startProxy, type RunningProxy } from '../proxy.js';
import { superviseWorkers } from '../supervisor.js';

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** Exit 2 for a broken policy (the admin's to fix), 1 for anything else that stops start-up. */
function exitOnStartError(policiesDir: string, err: unknown): never {
  if (err instanceof FileValidationError) {
    process.stderr.write(`egress-proxy: invalid policy in ${policiesDir}\n${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`egress-proxy: cannot start: ${(err as Error).message}\n`);
  process.exit(1);
}

interface StartOptions {
  config?: string; policies?: string; listen?: string; admin?: string; allowRange?: string[];
  nodeId?: string; logLevel?: string; workers?: string; dev?: boolean;
}

const hostPort = (a: AddressInfo): string => (a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`);

/** What dev mode prints about identity: a ready workload token and where browsers sign in. */
export interface DevIdentityHints {
  issuer: string;
  service: string;
  token: string;
  tokenCommand: string;
}

/** A ready token for the dev identity provider's sample workload, and how to get a fresh one. */
async function devHints(idp: DevIdp): Promise<DevIdentityHints> {
  const svc = idp.services[0]!;
  return {
    issuer: idp.issuer, service: svc.clientId, token: await idp.serviceToken(svc.clientId),
    tokenCommand: `curl -s -u ${svc.clientId}:${svc.clientSecret} -d grant_type=client_credentials -d scope=proxy -d resource=urn:egress-proxy ${idp.issuer}/token`,
  };
}

function banner(listen: string, admin: string, caFile: string | undefined, id?: DevIdentityHints, devices?: string): string {
  // With an identity provider the shipped policy wants an identity: show the commands with the token.
  const proxy = id ? `http://${id.service}:$TOKEN@${listen}` : `http://${listen}`;
  const cacert = caFile ? `--cacert ${caFile} ` : '';
  return [
    '',
    `egress-proxy is ready. Proxy: http://${listen}   Admin: http://${admin}`,
    '',
    ...(id ? [
      `The shipped policy admits identified clients only (anonymous requests get 407). A workload token`,
      `for "${id.service}" from the dev identity provider at ${id.issuer}, valid 8 h:`,
      `  export TOKEN=${id.token}`,
      `  (a fresh one: TOKEN=$(${id.tokenCommand} | sed 's/.*"access_token":"\\([^"]*\\)".*/\\1/'))`,
      '',
    ] : []),
    'Try it:',
    `  curl ${cacert}-x ${proxy} https://example.com${caFile ? '      (TLS is inspected: trust the CA)' : ''}`,
    `  export HTTPS_PROXY=${proxy} HTTP_PROXY=${proxy} NO_PROXY=localhost,127.0.0.1`,
    `  NODE_USE_ENV_PROXY=1 node -e "fetch('https://example.com').then(r => console.log(r.status))"`,
    `  egress-proxy doctor --proxy ${proxy}`,
    `Browsers: PAC file at http://${admin}/proxy.pac`,
    ...(id ? [`Browsers: sign in at http://${admin}/auth/ (sample users: alice, bob; ada is an admin)`] : []),
    `Metrics: http://${admin}/metrics${id ? `   Dashboard: http://${admin}/ui (sign in as ada)` : ''}`,
    ...(devices ? [
      '',
      `Devices (mTLS): https://${devices}`,
      '  egress-proxy devices issue --id laptop-7      (a device certificate from the dev device CA)',
      `  curl --proxy https://${devices} ${caFile ? `--proxy-cacert ${caFile} ` : ''}--proxy-cert laptop-7.pem --proxy-key laptop-7-key.pem${id ? ` --proxy-user ${id.service}:$TOKEN` : ''} https://example.com`,
    ] : []),
    '',
  ].join('\n');
}

/** `egress-proxy start`: runs the proxy until SIGTERM/SIGINT, then drains. */
export function registerStart(program: Command): void {
  program
    .command('start')
    .description('Run the proxy (explicit listener, device listener when configured, admin listener with the sign-in portal).')
    .option('--config <file>', `YAML config file (env ${ENV.config})`)
    .option('--policies <dir>', `policy directory (env ${ENV.policies}; default: policies/ beside the config)`)
    .option('--listen <host:port>', `explicit proxy listener (env ${ENV.listen}; default 127.0.0.1:3128)`)
    .option('--admin <host:port>', `admin listener: /healthz /readyz /proxy.pac (env ${ENV.admin}; default 127.0.0.1:9090)`)
    .option('--allow-range <cidr>', `allow an internal range denied by default; repeatable (env ${ENV.allowRanges}, comma-separated)`, collect)
    .option('--node-id <id>', `name of this node in logs and Via (env ${ENV.nodeId})`)
    .option('--log-level <level>', `fatal|error|warn|info|debug|trace (env ${ENV.logLevel})`)
    .option('--workers <n>', `proxy processes sharing the listeners, or "auto" for one per core (env ${ENV.workers}; default 1)`)
    .option('--dev', 'dev mode: make the interception and device CAs if missing, run an embedded identity provider on loopback, and print how to try it all')
    .action(async (opts: StartOptions) => {
      let config;
      try {
        config = loadConfig({
          config: opts.config, policies: opts.policies, listen: opts.listen, admin: opts.admin,
          allowRanges: opts.allowRange, nodeId: opts.nodeId, logLevel: opts.logLevel, workers: opts.workers,
        });
      } catch (err) {
        if (err instanceof FileValidationError) {
          process.stderr.write(`egress-proxy: invalid configuration\n${err.message}\n`);
          process.exit(2);
        }
        throw err;
      }
      if (config.workers > 1 && cluster.isPrimary) {
        // Validate once, here, so a broken policy is reported once and no worker is forked; the
        // dev CA is created here too, so workers never race to create it.
        try {
          loadPolicyDir(config.policiesDir);
          if (config.inspection.enabled) (opts.dev ? ensureCa : loadCa)(config.caDir);
          if (opts.dev && config.devices.listen === undefined) ensureDeviceCa(join(config.caDir, 'devices'));
        } catch (err) {
          exitOnStartError(config.policiesDir, err);
        }
        // Workers share one session key (unless the admin gave one) and, in dev mode, one identity provider.
        if (config.identity.sign_in.session_key_file === undefined) process.env[WORKER_SESSION_KEY] = randomBytes(32).toString('hex');
        let hints: DevIdentityHints | undefined;
        if (opts.dev && config.identity.issuer === undefined) {
          const idp = await startDevIdentityProvider(config);
          process.env[DEV_ISSUER] = idp.issuer;
          process.env.EGRESS_OIDC_CLIENT_SECRET = idp.portal!.clientSecret;
          hints = await devHints(idp);
        }
        superviseWorkers(config.workers, (a) => {
          if (opts.dev) process.stderr.write(banner(hostPort(a), config.admin, config.inspection.enabled ? caFiles(config.caDir).cert : undefined, hints));
        });
        return;
      }
      // Handlers go in before start-up: a SIGTERM that arrives while starting (or right after the
      // ready line) is kept and acted on once the proxy runs, instead of killing the process.
      let proxy: RunningProxy | undefined;
      let early: string | undefined;
      // Idempotent: under a supervisor (or systemd's control group) a worker may get the signal twice.
      let stopping = false;
      const stop = (signal: string): void => {
        if (!proxy) {
          early ??= signal;
          return;
        }
        if (stopping) return;
        stopping = true;
        process.stderr.write(`egress-proxy: ${signal} received, draining\n`);
        void proxy.drain().then(() => process.exit(0));
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      try {
        proxy = await startProxy(config, undefined, { dev: opts.dev === true });
      } catch (err) {
        exitOnStartError(config.policiesDir, err);
      }
      const running = proxy;
      if (opts.dev && cluster.isPrimary) {
        const idp = running.identity.devIdp;
        const hints = idp ? await devHints(idp) : undefined;
        const devices = running.deviceAddress ? hostPort(running.deviceAddress) : undefined;
        process.stderr.write(banner(hostPort(running.proxyAddress), hostPort(running.adminAddress), running.runtime.inspection?.ca.certFile, hints, devices));
      }
      process.on('exit', () => running.runtime.logger.flush());
      process.on('SIGHUP', () => {
        running.runtime.logger.reopen(); // after an external logrotate
        void running.reload();
      });
      if (early !== undefined) stop(early);
    });
}
