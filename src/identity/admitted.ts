import type { Socket } from 'node:net';
import type { Device, DeviceDirectory, Principal, SessionLookup } from './principal.js';

interface Admission {
  principal: Principal;
  device: Device | undefined;
}

/**
 * Client connections admitted with a credential that can end (a token's expiry, a session's
 * sign-out, a device certificate's revocation or expiry). A sweep every `intervalMs` cuts the
 * ones whose credential ended, so a long tunnel or kept-alive connection cannot outlive it.
 */
export class AdmittedConnections {
  private readonly live = new Map<Socket, Admission>();
  private timer: NodeJS.Timeout | undefined;

  /** Remembers what `socket` was admitted with (the latest request's credential wins). */
  track(socket: Socket, principal: Principal, device: Device | undefined): void {
    if (principal.expiresAt === undefined && principal.sessionId === undefined && device === undefined) return;
    if (!this.live.has(socket)) socket.once('close', () => this.live.delete(socket));
    this.live.set(socket, { principal, device });
  }

  /** Cuts every connection whose credential has ended; returns how many. */
  sweep(sessions: SessionLookup | undefined, devices: DeviceDirectory | undefined, now = Date.now()): number {
    let cut = 0;
    for (const [socket, a] of this.live) {
      const p = a.principal;
      const ended =
        (p.expiresAt !== undefined && p.expiresAt <= now) ||
        (p.sessionId !== undefined && sessions?.isRevoked(p.sessionId) === true) ||
        (a.device !== undefined && (a.device.notAfter <= now || devices?.isRevoked(a.device.serial) === true));
      if (ended) {
        this.live.delete(socket);
        socket.destroy();
        cut++;
      }
    }
    return cut;
  }

  /** Starts the periodic sweep. */
  start(intervalMs: number, sources: () => { sessions: SessionLookup | undefined; devices: DeviceDirectory | undefined }, onCut: (n: number) => void): void {
    this.timer = setInterval(() => {
      const s = sources();
      const n = this.sweep(s.sessions, s.devices);
      if (n > 0) onCut(n);
    }, intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  get size(): number {
    return this.live.size;
  }
}
