/** A body as callers hand it over: whole, streamed, or absent. */
export type BodyInput = Buffer | Uint8Array | AsyncIterable<Buffer | Uint8Array> | null;

/**
 * The original body, handed back so the caller can still forward it after the ICAP verdict
 * (a 204 means "use your own copy"): a Buffer when it was read whole, otherwise an iterable
 * that yields the bytes already read and then the rest of the caller's stream.
 */
export type OriginalBody = Buffer | AsyncIterable<Buffer> | null;

/** What was read of a body, bounded by `max`. */
export interface CollectedBody {
  /** The bytes read: the whole body when `complete`, else at least the first `max + 1` bytes. */
  bytes: Buffer | null;
  /** False when the body is larger than `max` and only its beginning was read. */
  complete: boolean;
  original: OriginalBody;
}

function asBuffer(b: Buffer | Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/** Reads at most a little over `max` bytes of `body`; the rest stays unread in the caller's stream. */
export async function collectBody(body: BodyInput, max: number): Promise<CollectedBody> {
  if (body === null) return { bytes: null, complete: true, original: null };
  if (body instanceof Uint8Array) {
    const b = asBuffer(body);
    return { bytes: b, complete: b.length <= max, original: b };
  }
  const it = body[Symbol.asyncIterator]();
  const parts: Buffer[] = [];
  let total = 0;
  while (total <= max) {
    const r = await it.next();
    if (r.done) {
      const whole = Buffer.concat(parts, total);
      return { bytes: whole, complete: true, original: whole };
    }
    const b = asBuffer(r.value);
    parts.push(b);
    total += b.length;
  }
  const head = Buffer.concat(parts, total);
  return { bytes: head, complete: false, original: replay(head, it) };
}

async function* replay(head: Buffer, rest: AsyncIterator<Buffer | Uint8Array>): AsyncGenerator<Buffer> {
  yield head;
  for (;;) {
    const r = await rest.next();
    if (r.done) return;
    yield asBuffer(r.value);
  }
}
