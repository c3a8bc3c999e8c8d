/**
 * The pings this end has sent and not yet seen answered, and the round trips
 * their pongs measured. A peer may answer only the latest of several pings it
 * read (PROTOCOL.md), so a pong for value N answers every earlier ping too;
 * the sample is taken from the ping the pong names.
 */

/** Whether ping value `a` was sent at or after `b`, in serial-number order (values wrap at 2^32). */
export function serialAtOrAfter(a: number, b: number): boolean {
  return (a - b) >>> 0 < 0x80000000;
}

/** Older unanswered pings are forgotten: a later pong answers them anyway. */
const MAX_OUTSTANDING = 32;
/** Samples kept for the largest recent round trip, which bounds how long a probe waits. */
const RECENT_SAMPLES = 8;

export class Pings {
  /** Smoothed round trip in ms (RFC 6298 weights); undefined before the first pong. */
  smoothed: number | undefined;
  private value = 0;
  private readonly outstanding: Array<{ value: number; sentAt: number }> = [];
  private readonly recent: number[] = [];

  /** Records a ping sent at `now`; returns the value to send. */
  next(now: number): number {
    this.value = (this.value + 1) >>> 0;
    this.outstanding.push({ value: this.value, sentAt: now });
    if (this.outstanding.length > MAX_OUTSTANDING) this.outstanding.shift();
    return this.value;
  }

  /** When the newest unanswered ping was sent; undefined when all are answered. */
  get newestSentAt(): number | undefined {
    return this.outstanding.at(-1)?.sentAt;
  }

  /** Largest round trip among the last few samples; undefined before the first pong. */
  get largestRecent(): number | undefined {
    return this.recent.length === 0 ? undefined : Math.max(...this.recent);
  }

  /** True while the ping sent with `value` has not been answered. */
  pending(value: number): boolean {
    return this.outstanding.some((p) => p.value === value);
  }

  /** A pong for `value` arrived at `now`: the round trip it measures, or undefined if it names no unanswered ping. */
  answer(value: number, now: number): number | undefined {
    const index = this.outstanding.findIndex((p) => p.value === value);
    if (index < 0) return undefined;
    const sample = now - this.outstanding[index]!.sentAt;
    this.outstanding.splice(0, index + 1);
    this.smoothed = this.smoothed === undefined ? sample : this.smoothed * 0.875 + sample * 0.125;
    this.recent.push(sample);
    if (this.recent.length > RECENT_SAMPLES) this.recent.shift();
    return sample;
  }
}
