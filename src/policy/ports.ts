/** A compiled set of ports: a bitmap, so a lookup is one array read. */
export class PortSet {
  private readonly bits = new Uint8Array(65536 / 8);
  readonly text: string;

  constructor(specs: ReadonlyArray<number | string>) {
    for (const spec of specs) {
      const [lo, hi] = typeof spec === 'number' ? [spec, spec] : (spec.split('-').map(Number) as [number, number]);
      for (let p = lo; p <= hi; p++) this.bits[p >> 3]! |= 1 << (p & 7);
    }
    this.text = specs.join(', ');
  }

  /** True when `port` is in the set. */
  has(port: number): boolean {
    return (this.bits[port >> 3]! & (1 << (port & 7))) !== 0;
  }
}
