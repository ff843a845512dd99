import type { ProxyRuntime } from '../runtime.js';
import type { DeviceDirectory } from './principal.js';

/** The device inventory and CRL, reloaded on change. To be implemented. */
export function createDeviceDirectory(_rt: ProxyRuntime): (DeviceDirectory & { close(): void }) | undefined {
  return undefined;
}
