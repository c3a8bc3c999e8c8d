/**
 * Fails a silently dead session fast. A blackholed connection (a NAT or load
 * balancer that dropped its mapping) stays up while nothing crosses it, and
 * the dead-peer timeout alone would keep a request waiting for tens of
 * seconds. So when this end sends something the peer should answer (a stream
 * open, or data: the answer is an ACK, credit, a response) and hears nothing
 * at all for the probe delay, it pings at once; if still nothing arrives
 * within the probe timeout, the peer is declared dead.
 *
 * Any inbound message counts as an answer: a peer whose pong waits behind its
 * own queued data is still sending that data. Both delays grow with the round
 * trips the session measured, so a slow or queued path is not taken for a
 * dead one. An idle session sends nothing that needs an answer and so costs
 * no probes; a healthy busy one hears from its peer well within the delay.
 */

export interface ProbeHost {
  /** performance.now() of the last message received. */
  lastInbound(): number;
  /** Smoothed and largest recent ping round trips, undefined before the first pong. */
  rtt(): { smoothed: number | undefined; largestRecent: number | undefined };
  /** Sends a ping now. */
  ping(): void;
  /** Ends the session: the peer is dead. */
  dead(message: string): void;
}

/** The delays scale with the path: this many smoothed round trips at least. */
const RTT_MULTIPLE = 4;
/** And a probe waits at least this many of the largest recent round trips (queues included). */
const LARGEST_RTT_MULTIPLE = 2;

export class LivenessProbe {
  /** When the oldest send still waiting for any answer went out. */
  private unansweredSince: number | undefined;
  /** When the latest such send went out. */
  private latestSend = 0;
  private probeSentAt: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private confirming: NodeJS.Immediate | undefined;
  private stopped = false;

  /** `delay` 0 disables probing. */
  constructor(
    private readonly host: ProbeHost,
    private readonly delay: number,
    private readonly timeout: number,
  ) {}

  /** This end sent (or is about to send) something the peer should answer. Cheap: called for every write. */
  expectAnswer(): void {
    if (this.delay === 0 || this.stopped) return;
    const now = performance.now();
    this.latestSend = now;
    const since = this.unansweredSince;
    if (since !== undefined && since > this.host.lastInbound()) return;
    this.unansweredSince = now;
    if (this.timer === undefined && this.confirming === undefined) this.arm(this.probeDelay());
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.confirming !== undefined) clearImmediate(this.confirming);
    this.timer = undefined;
    this.confirming = undefined;
  }

  /** Probe after this long without an answer. */
  probeDelay(): number {
    const { smoothed } = this.host.rtt();
    return Math.max(this.delay, RTT_MULTIPLE * (smoothed ?? 0));
  }

  /** Declare the peer dead this long after a probe that nothing followed. */
  probeTimeout(): number {
    const { smoothed, largestRecent } = this.host.rtt();
    return Math.max(
      this.timeout,
      RTT_MULTIPLE * (smoothed ?? 0),
      LARGEST_RTT_MULTIPLE * (largestRecent ?? 0),
    );
  }

  private arm(ms: number): void {
    this.timer = setTimeout(() => this.check(), Math.max(1, Math.ceil(ms)));
    this.timer.unref();
  }

  /** `confirmed`: input that was waiting when the deadline passed has since been read. */
  private readonly check = (confirmed?: boolean): void => {
    this.timer = undefined;
    this.confirming = undefined;
    if (this.stopped) return;
    const now = performance.now();
    const heard = this.host.lastInbound();
    if (this.probeSentAt !== undefined) {
      const waited = now - this.probeSentAt;
      if (heard < this.probeSentAt) {
        const limit = this.probeTimeout();
        if (waited >= limit && confirmed !== true) {
          // Timers run before I/O: if our own event loop was busy, the answer may sit unread in the
          // socket. Look again once pending input had its turn (setImmediate runs after the poll phase).
          this.confirming = setImmediate(this.check, true);
        } else if (waited >= limit) {
          this.host.dead(`nothing heard from the peer ${Math.round(waited)} ms after a probe ping`);
        } else {
          this.arm(limit - waited);
        }
        return;
      }
      this.probeSentAt = undefined;
    }
    let since = this.unansweredSince;
    if (since === undefined || heard >= since) {
      // Answered; but something sent after that answer may still wait for its own.
      since = this.latestSend > heard ? this.latestSend : undefined;
      this.unansweredSince = since;
      if (since === undefined) return;
    }
    const waited = now - since;
    const delay = this.probeDelay();
    if (waited < delay) {
      this.arm(delay - waited);
      return;
    }
    this.probeSentAt = now;
    this.host.ping();
    this.arm(this.probeTimeout());
  };
}
