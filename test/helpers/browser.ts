import { chromium, type Browser } from 'playwright-core';

/**
 * Headless Debian Chromium (never a downloaded browser) whose traffic goes through `proxyUrl`.
 * Only 127.0.0.1 resolves directly (portal, IdP); every other name goes to the proxy, which
 * resolves it with the test's own DNS: nothing can leave loopback.
 */
export function launchThroughProxy(proxyUrl: string, extraArgs: string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable', `--proxy-server=${proxyUrl}`,
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1', ...extraArgs],
  });
}
