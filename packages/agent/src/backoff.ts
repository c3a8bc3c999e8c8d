// Reconnect delays: exponential with full jitter and a cap, so a fleet of
// agents that lost their server at the same moment does not return in step.

export interface BackoffOptions {
  /** First ceiling in ms. Default 500. */
  baseMs?: number;
  /** Largest ceiling in ms. Default 30000. */
  capMs?: number;
  random?: () => number;
}

export class Backoff {
  private attempt = 0;
  private readonly base: number;
  private readonly cap: number;
  private readonly random: () => number;

  constructor(options: BackoffOptions = {}) {
    this.base = options.baseMs ?? 500;
    this.cap = options.capMs ?? 30_000;
    this.random = options.random ?? Math.random;
  }

  /** The next delay: uniform in [0, min(cap, base · 2^attempt)). */
  next(): number {
    const ceiling = Math.min(this.cap, this.base * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.floor(this.random() * ceiling);
  }

  reset(): void {
    this.attempt = 0;
  }
}
