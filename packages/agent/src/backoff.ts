// Reconnect delays: full jitter below a ceiling, so a fleet of agents that
// lost their server at the same moment does not return in step. The ceiling
// is half the time spent failing so far (at least the base, at most the
// cap), not a doubling per attempt: however the jitter fell, the first dial
// after an outage ends comes within half the outage's length (a 3 s outage
// costs at most 1.5 s more), while a long outage still backs off to the cap.

export interface BackoffOptions {
  /** Smallest ceiling in ms. Default 250. */
  baseMs?: number;
  /** Largest ceiling in ms. Default 30000. */
  capMs?: number;
  random?: () => number;
  /** The clock, in ms. */
  now?: () => number;
}

/** The ceiling as a share of the time spent failing. */
const SHARE = 0.5;

export class Backoff {
  private since: number | undefined;
  private readonly base: number;
  private readonly cap: number;
  private readonly random: () => number;
  private readonly now: () => number;

  constructor(options: BackoffOptions = {}) {
    this.base = options.baseMs ?? 250;
    this.cap = options.capMs ?? 30_000;
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
  }

  /** The next delay: uniform in [0, min(cap, max(base, half the time since the first failure))). */
  next(): number {
    const now = this.now();
    this.since ??= now;
    const ceiling = Math.min(this.cap, Math.max(this.base, (now - this.since) * SHARE));
    return Math.floor(this.random() * ceiling);
  }

  /** A dial succeeded: the next failure starts over. */
  reset(): void {
    this.since = undefined;
  }
}

/** Default of --reconnect-spread: the window over which agents told to go away dial again. */
export const DEFAULT_RECONNECT_SPREAD_MS = 3_000;

/** A delay uniform in [0, spreadMs): when one agent of many dials again after a go-away. */
export function spreadDelay(spreadMs: number, random: () => number = Math.random): number {
  return Math.floor(random() * spreadMs);
}
