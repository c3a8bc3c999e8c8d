// Failed authentications and joins per source address. A source that failed
// `limit` times within `windowMs` is refused (429) before its next credential
// is even looked at, until its oldest failure leaves the window: guessing
// tokens goes at `limit` per window instead of thousands per second.
// Memory is bounded: at most `limit` timestamps per source and `maxSources`
// sources (the least recently failing one is forgotten first).

export interface FailureRateLimitOptions {
  limit: number;
  windowMs: number;
  /** Sources tracked at once; default 10,000. */
  maxSources?: number;
  now?: () => number;
}

/**
 * The key of a source address: IPv4 (and IPv4-mapped IPv6) as is, other IPv6
 * by its /64, the block one host or one customer usually holds whole.
 */
export function sourceKey(address: string | undefined): string {
  if (!address) return "unknown";
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!address.includes(":")) return address;
  const [head = "", tail = ""] = address.toLowerCase().split("%")[0]!.split("::");
  const left = head ? head.split(":") : [];
  const right = address.includes("::") && tail ? tail.split(":") : [];
  const groups = address.includes("::")
    ? [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right]
    : left;
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ""))
    .join(":")}::/64`;
}

export class FailureRateLimit {
  /** Failure times per source, oldest first; the map is ordered by each source's latest failure. */
  private readonly failures = new Map<string, number[]>();
  private readonly limit: number;
  private readonly windowMs: number;
  private readonly maxSources: number;
  private readonly now: () => number;

  constructor(options: FailureRateLimitOptions) {
    this.limit = options.limit;
    this.windowMs = options.windowMs;
    this.maxSources = options.maxSources ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  /** Seconds `source` must wait before its next attempt, or 0 when it may go ahead. */
  retryAfter(source: string): number {
    const times = this.failures.get(source);
    if (!times) return 0;
    const now = this.now();
    this.expire(times, now);
    if (times.length === 0) {
      this.failures.delete(source);
      return 0;
    }
    if (times.length < this.limit) return 0;
    return Math.max(1, Math.ceil((times[0]! + this.windowMs - now) / 1000));
  }

  /** Counts a failure of `source`; returns true when this one used up its allowance. */
  fail(source: string): boolean {
    const now = this.now();
    this.forgetStale(now);
    const times = this.failures.get(source) ?? [];
    this.failures.delete(source);
    this.expire(times, now);
    times.push(now);
    if (times.length > this.limit) times.splice(0, times.length - this.limit);
    this.failures.set(source, times);
    if (this.failures.size > this.maxSources) {
      this.failures.delete(this.failures.keys().next().value!);
    }
    return times.length === this.limit;
  }

  /** Sources tracked now. */
  get size(): number {
    return this.failures.size;
  }

  private expire(times: number[], now: number): void {
    let stale = 0;
    while (stale < times.length && times[stale]! <= now - this.windowMs) stale++;
    if (stale > 0) times.splice(0, stale);
  }

  /** Drops sources whose latest failure left the window; they sit at the front of the map. */
  private forgetStale(now: number): void {
    for (const [source, times] of this.failures) {
      if (times[times.length - 1]! > now - this.windowMs) break;
      this.failures.delete(source);
    }
  }
}
