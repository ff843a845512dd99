import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';

/** A loopback port free right now (for a listener whose address must be known before it starts, e.g. an OIDC redirect URI). */
export async function freePort(): Promise<number> {
  const s = createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address() as AddressInfo;
  s.close();
  await once(s, 'close');
  return port;
}
