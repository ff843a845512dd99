const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(tz: string): Intl.DateTimeFormat {
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: tz, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    formatters.set(tz, f);
  }
  return f;
}

/** True when `tz` is a time zone this runtime knows (checked at load, so decisions never throw). */
export function validTimeZone(tz: string): boolean {
  try {
    formatter(tz);
    return true;
  } catch {
    return false;
  }
}

/** A weekly window in a time zone; `from` after `to` crosses midnight (22:00-06:00). */
export class TimeWindow {
  private readonly days: Set<string> | undefined;
  private readonly from: number;
  private readonly to: number;

  constructor(spec: { days?: string[] | undefined; from?: string | undefined; to?: string | undefined; tz: string }, readonly tz = spec.tz) {
    this.days = spec.days ? new Set(spec.days) : undefined;
    const minutes = (t: string | undefined, d: number): number => (t ? Number(t.slice(0, 2)) * 60 + Number(t.slice(3)) : d);
    this.from = minutes(spec.from, 0);
    this.to = minutes(spec.to, 24 * 60);
  }

  /** Why `at` is outside the window, or undefined when it is inside. */
  check(at: Date): string | undefined {
    const parts = formatter(this.tz).formatToParts(at);
    let wd = '';
    let hh = 0;
    let mm = 0;
    for (const p of parts) {
      if (p.type === 'weekday') wd = p.value.toLowerCase();
      else if (p.type === 'hour') hh = Number(p.value);
      else if (p.type === 'minute') mm = Number(p.value);
    }
    const now = hh * 60 + mm;
    const crosses = this.from > this.to;
    const inside = crosses ? now >= this.from || now < this.to : now >= this.from && now < this.to;
    // A window that crosses midnight belongs to the day it started on.
    const day = crosses && now < this.to ? DAYS[(DAYS.indexOf(wd as (typeof DAYS)[number]) + 6) % 7]! : wd;
    if (this.days && !this.days.has(day)) return `${day} is not in ${[...this.days].join(',')} (${this.tz})`;
    if (!inside) return `${String(hh).padStart(2, '0')}:${String(mm).padStart(2, '0')} ${this.tz} is outside the window`;
    return undefined;
  }
}
