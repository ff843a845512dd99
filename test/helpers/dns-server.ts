import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import dnsPacket from 'dns-packet';

/** A real UDP DNS server on loopback answering A/AAAA from a fixed table (NXDOMAIN otherwise). */
export interface TestDns {
  address: string;
  close(): void;
}

/** Starts the test resolver. `records` maps a name to the addresses it resolves to. */
export async function startDns(records: Record<string, string[]>): Promise<TestDns> {
  const sock: Socket = createSocket('udp4');
  sock.on('message', (msg, rinfo) => {
    let query: dnsPacket.Packet;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const q = query.questions?.[0];
    if (!q) return;
    const addrs = records[q.name.toLowerCase()];
    const answers = (addrs ?? [])
      .filter((a) => (q.type === 'A' ? !a.includes(':') : q.type === 'AAAA' ? a.includes(':') : false))
      .map((data) => ({ type: q.type as 'A' | 'AAAA', name: q.name, ttl: 30, class: 'IN' as const, data }));
    const reply = dnsPacket.encode({
      type: 'response',
      id: query.id,
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (addrs ? 0 : 3), // rcode 3 = NXDOMAIN
      questions: query.questions,
      answers,
    });
    sock.send(reply, rinfo.port, rinfo.address);
  });
  sock.bind(0, '127.0.0.1');
  await once(sock, 'listening');
  return { address: `127.0.0.1:${sock.address().port}`, close: () => sock.close() };
}
