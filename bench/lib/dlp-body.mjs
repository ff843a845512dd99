// The DLP benches' body: mixed JSON API records, log lines and prose with some base64
// attachments, generated deterministically (same seed, same bytes) so runs compare.
// `secrets` are planted at even intervals; pass [] for a body with none of them.

// Secrets planted across the body: cards, a key pair, a token, a private key, an IBAN, a JWT.
export const SECRETS = [
  'card 4111 1111 1111 1111', 'card 5555555555554444', 'aws_access_key_id=AKIAIOSFODNN7EXAMPLE',
  'aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', 'token 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',
  '-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n-----END RSA PRIVATE KEY-----',
  'IBAN DE89 3704 0044 0532 0130 00', 'ssn 536-22-1234',
  'Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U',
];

const WORDS = ('the of and to in is that for it as with was on be by this are from at or an have not which ' +
  'order invoice customer account payment shipping delivery product price total status request response ' +
  'service update report team project meeting review data user system error warning release version').split(' ');
const CITIES = ['Paris', 'Berlin', 'New York', 'São Paulo', 'Tokyo', 'Lagos', 'Zürich'];
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** `size` bytes of body; the seed restarts at every call, so the same arguments give the same bytes. */
export function makeBody(size, { secrets = SECRETS } = {}) {
  let seed = 20240517;
  const rnd = (n) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  const pick = (a) => a[rnd(a.length)];
  const hex = (n) => { let s = ''; while (s.length < n) s += rnd(0x7fffffff).toString(16).padStart(8, '0'); return s.slice(0, n); };
  const b64 = (n) => { let s = ''; for (let i = 0; i < n; i++) s += B64[rnd(64)]; return s; };
  const sentence = (n) => { const w = []; for (let i = 0; i < n; i++) w.push(pick(WORDS)); w[0] = w[0][0].toUpperCase() + w[0].slice(1); return `${w.join(' ')}.`; };
  function record(i) {
    const o = {
      id: 100000 + i, uuid: `${hex(8)}-${hex(4)}-${hex(4)}-${hex(4)}-${hex(12)}`,
      created_at: new Date(1_700_000_000_000 + i * 997).toISOString(), updated_ms: 1_700_000_000_000 + i * 1013,
      customer: { name: `Customer ${i}`, email: `customer${i % 5000}@example.com`, phone: `+1 415 555 ${String(1000 + (i % 9000))}`, city: pick(CITIES) },
      items: Array.from({ length: 1 + rnd(3) }, (_, k) => ({ sku: `SKU-${rnd(99999)}`, qty: 1 + rnd(5), price: rnd(100000) / 100, line: k })),
      total: rnd(1_000_000) / 100, currency: pick(['EUR', 'USD', 'GBP']), status: pick(['paid', 'pending', 'shipped', 'refunded']),
      etag: hex(40), note: sentence(6 + rnd(10)),
    };
    if (i % 40 === 0) o.attachment = b64(200 + rnd(800));
    return JSON.stringify(o);
  }
  const logLine = (i) => `${new Date(1_700_000_000_000 + i * 37).toISOString()} ${pick(['INFO', 'INFO', 'WARN', 'DEBUG'])} [req-${hex(12)}] ${pick(['GET', 'POST', 'PUT'])} /api/v1/orders/${100000 + rnd(900000)} ${pick([200, 200, 201, 404, 500])} ${rnd(900)}ms ua="Mozilla/5.0" ip=10.${rnd(255)}.${rnd(255)}.${rnd(255)}`;

  const parts = [];
  let n = 0;
  let i = 0;
  const every = Math.floor(size / (secrets.length + 1));
  let next = every;
  while (n < size) {
    const kind = i % 10;
    let s = kind < 6 ? record(i) : kind < 9 ? logLine(i) : Array.from({ length: 4 }, () => sentence(8 + rnd(12))).join(' ');
    if (n >= next && next / every <= secrets.length) { s += `\n${secrets[next / every - 1]}`; next += every; }
    s += '\n';
    parts.push(s);
    n += Buffer.byteLength(s);
    i++;
  }
  return Buffer.from(parts.join('')).subarray(0, size);
}
