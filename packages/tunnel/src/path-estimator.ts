/**
 * What a session knows about its path, learned from pings: the peer answers
 * a ping only after it processed every frame sent before it, so a pong proves
 * delivery of all data written before its ping. From that come a delivery
 * rate (max filter over the last rounds), the minimum RTT (min filter over
 * 10 s: the moments the queue was empty) and their product, the
 * bandwidth-delay product. The session caps the data it keeps in flight near
 * twice that (so the standing queue is about one RTT), as BBR does with its
 * congestion window, and sizes new streams' receive windows from it.
 *
 * The peer answers only the latest ping it saw, so a pong for value N also
 * acknowledges every ping sent before N: every ping the session sends must be
 * recorded here, in order, whoever sent it.
 *
 * Phases: startup grows the cap by STARTUP_GAIN per round trip until the
 * delivery rate stops growing (by a quarter, three rounds in a row); steady
 * keeps it at GAIN × BDP. When the min RTT was not confirmed for
 * MIN_RTT_WINDOW_MS (a standing queue hides the empty path), probe-rtt caps
 * in-flight at half the BDP until a ping sent with about that little in
 * flight comes back (or PROBE_RTT_MAX_MS passed); its RTT becomes the new
 * minimum.
 *
 * A carried estimate (a previous session's over the same path, path-estimate.ts)
 * lets a new session skip startup. Its receive rate sizes new streams' windows at
 * once (a window is memory the peer may fill, not a queue on the path). Its send
 * rate, which sets how much goes out unproven, is trusted only once the session's
 * first pong shows about the same min RTT (within CARRIED_RTT_RATIO: otherwise it
 * is another path and the whole estimate is dropped); it then counts as one rate
 * sample that ages out like the others, and steady's GAIN applies. It is dropped
 * as soon as a ping sent after that took, or has been out, longer than
 * QUEUE_RTT_FACTOR min RTTs (a queue grows: the path is slower than carried), and
 * startup resumes from what the session measured itself: pings sent while it
 * was in use each add what was in flight over their RTT plus one min RTT as a
 * sample, a lower bound of the rate the path showed (first-round samples alone
 * are far below it). Until that signal, a
 * wrong carried rate can put up to one cap (GAIN carried BDPs) in front of a
 * slower bottleneck once; the kernel's socket buffers bound it further.
 */

import type { PathEstimate } from "./path-estimate.js";
import { serialAtOrAfter } from "./pings.js";

/** How long a min-RTT sample stays valid without being matched (BBR's 10 s). */
export const MIN_RTT_WINDOW_MS = 10_000;
/**
 * The least RTT the estimates use. On loopback the wire takes microseconds but
 * two event loops' turns, TLS and the socket buffers between them (rounds of
 * 10 to 30 ms under load were seen on loopback) set how much must be in
 * flight to keep both busy.
 */
export const PIPELINE_MS = 10;
/** Longest probe-rtt lasts; its first sample after that is taken whatever was in flight. */
const PROBE_RTT_MAX_MS = 500;
/** Rate samples the max filter keeps (about as many round trips while data flows). */
const RATE_SAMPLES = 10;
export const STARTUP_GAIN = 4;
export const GAIN = 2;
/** The cap never goes below this, so startup and tiny links still move data. */
export const CAP_FLOOR = 32 * 1024;
/**
 * How far past the cap a stream with only a small write queued (a request, a
 * small response) may go: it need not wait for the next pong behind a bulk
 * stream. Bounded, so many small streams cannot build a queue.
 */
export const SMALL_ALLOWANCE = 64 * 1024;
/** The cap before the first delivery sample. */
export const INITIAL_CAP = 1024 * 1024;
/** Delivery probes kept unanswered at most (see probeDue). */
const PROBES_IN_FLIGHT = 4;
/** Data bytes moved (either way) since the last ping that make a probe worth sending. */
const PROBE_MIN = 16 * 1024;
/** A frame carries what the path moves in this long (see frameSize). */
const FRAME_MS = 4;
const FRAME_MIN = 16 * 1024;
/** Pings remembered while unanswered; beyond that the oldest are forgotten. */
const SENT_LIMIT = 64;
/** A carried estimate applies only if the first measured min RTT is within this factor of its own (loaded hosts add to a first RTT). */
export const CARRIED_RTT_RATIO = 3;
/** A ping slower than this many min RTTs (plus PIPELINE_MS) while a carried rate is in use drops it. */
export const QUEUE_RTT_FACTOR = 2.5;

interface SentPing {
  value: number;
  sentAt: number;
  /** Data bytes written when the ping was queued. */
  written: number;
  /** Data bytes received when the ping was queued. */
  received: number;
  /** `delivered` and the time it was last raised, when the ping was queued. */
  delivered: number;
  intervalStart: number;
  /** Data bytes in flight (written, unproven) then. */
  inflight: number;
  /** Whether the cap, not the application, limited what was in flight then. */
  capLimited: boolean;
  /** Whether a carried send rate was in use then (see pongReceived). */
  carrying: boolean;
}

/** What a pong ended: one round, from its first ping to now. */
export interface Round {
  /** The min RTT the windows should use (never below PIPELINE_MS). */
  minRtt: number;
  /** Whether the rate of what arrives is still growing (windows may grow faster). */
  startup: boolean;
}

export type Phase = "startup" | "steady" | "probe-rtt";

/**
 * Max filter over the last RATE_SAMPLES samples, and a carried sample that
 * counts until RATE_SAMPLES measured ones followed it (or it is dropped).
 */
class MaxFilter {
  private readonly samples: number[] = [];
  private measured = 0;
  private carriedSample = 0;
  private sinceCarried = 0;
  max = 0;

  /** The filter's max over what the session measured itself. */
  get measuredMax(): number {
    return this.measured;
  }

  get carried(): number {
    return this.carriedSample;
  }

  set carried(sample: number) {
    this.carriedSample = sample;
    this.sinceCarried = 0;
    this.max = Math.max(this.measured, sample);
  }

  add(sample: number): void {
    this.samples.push(sample);
    if (this.samples.length > RATE_SAMPLES) this.samples.shift();
    this.measured = Math.max(...this.samples);
    if (this.carriedSample > 0 && ++this.sinceCarried >= RATE_SAMPLES) this.carriedSample = 0;
    this.max = Math.max(this.measured, this.carriedSample);
  }
}

export class PathEstimator {
  /** Data bytes proven delivered: written before an answered ping. */
  delivered = 0;
  /** Smallest RTT seen in the current window, ms; Infinity before the first pong. */
  minRtt = Number.POSITIVE_INFINITY;
  phase: Phase = "startup";
  private minRttAt = 0;
  private probeRttSince = 0;
  private readonly sendRate = new MaxFilter();
  private readonly recvRate = new MaxFilter();
  private intervalStart: number;
  private readonly sendGrowth = new GrowthCheck();
  private readonly recvGrowth = new GrowthCheck();
  private readonly sent: SentPing[] = [];
  /** Whether the cap held back a stream with data since the last ping (see noteCapBlocked). */
  private capBlocked = false;
  /** Data bytes written and received as of the last ping. */
  private probedWritten = 0;
  private probedReceived = 0;
  /** A carried estimate whose send rate waits for the first pong's check. */
  private pendingCarried: PathEstimate | undefined;
  /** When the carried send rate came into use; -1 while none is. */
  private carriedSince = -1;

  /** `carried` must be sanitized (sanitizePathEstimate). */
  constructor(now: number, carried?: PathEstimate) {
    this.intervalStart = now;
    if (carried !== undefined) {
      this.pendingCarried = carried;
      this.recvRate.carried = carried.receiveRate;
    }
  }

  /** Whether a carried send rate is in use (adopted, not yet aged out or dropped). */
  get carrying(): boolean {
    return this.carriedSince >= 0 && this.sendRate.carried > 0;
  }

  /** What this session would hand a later one; undefined before the first pong. */
  get estimate(): PathEstimate | undefined {
    if (!Number.isFinite(this.minRtt)) return undefined;
    return { sendRate: this.rate, receiveRate: this.receiveRate, minRtt: this.minRtt };
  }

  /** True while a ping is unanswered. */
  get outstanding(): boolean {
    return this.sent.length > 0;
  }

  /** Delivery rate toward the peer, bytes per ms (max filter); 0 before a sample. */
  get rate(): number {
    return this.sendRate.max;
  }

  /** Bytes per ms that arrived from the peer (max filter); 0 before a sample. */
  get receiveRate(): number {
    return this.recvRate.max;
  }

  /** Min RTT as the estimates use it, ms (before the first pong a carried one's, or PIPELINE_MS). */
  get effectiveMinRtt(): number {
    const rtt = Number.isFinite(this.minRtt) ? this.minRtt : (this.pendingCarried?.minRtt ?? 0);
    return Math.max(rtt, PIPELINE_MS);
  }

  /** Bandwidth-delay product toward the peer, bytes; 0 before a rate sample. */
  get bdp(): number {
    return this.rate * this.effectiveMinRtt;
  }

  /** Bandwidth-delay product of what the peer sends us, bytes. */
  get receiveBdp(): number {
    return this.receiveRate * this.effectiveMinRtt;
  }

  /** Most data bytes the session should keep written but unproven. */
  get cap(): number {
    if (this.rate === 0) return INITIAL_CAP;
    if (this.phase === "startup") return Math.max(CAP_FLOOR, STARTUP_GAIN * this.bdp);
    if (this.phase === "probe-rtt") return Math.max(CAP_FLOOR, this.bdp / 2);
    return Math.max(CAP_FLOOR, GAIN * this.bdp);
  }

  /** Whether another data frame may go out with `written` data bytes written so far. */
  allows(written: number): boolean {
    return written - this.delivered < this.cap;
  }

  /** Whether a small write may still go out (within SMALL_ALLOWANCE past the cap). */
  allowsSmall(written: number): boolean {
    return written - this.delivered < this.cap + SMALL_ALLOWANCE;
  }

  /**
   * Whether to send a delivery probe now. One when none is out and at least
   * PROBE_MIN moved either way since the last ping (small exchanges leave far
   * less than any cap in flight); while data flows, one per quarter of the cap
   * written, at most PROBES_IN_FLIGHT, so the cap reopens in quarters and new
   * bytes reach the bottleneck before the last ones drained (one probe per round
   * trip would leave the link idle a round trip after every capful).
   */
  probeDue(written: number, received: number): boolean {
    const sinceWritten = written - this.probedWritten;
    if (this.sent.length === 0) return sinceWritten + received - this.probedReceived >= PROBE_MIN;
    return this.sent.length < PROBES_IN_FLIGHT && sinceWritten >= this.cap / 4;
  }

  /** Nothing worth measuring in flight and no ping out: a burst starting now should be preceded by a ping. */
  idle(written: number): boolean {
    return this.sent.length === 0 && written - this.delivered < PROBE_MIN;
  }

  /**
   * Data payload per frame: what the path moves in FRAME_MS (so a small
   * response waits behind at most that much of a bulk stream's frame), at
   * least FRAME_MIN, at most `max`.
   */
  frameSize(max: number): number {
    if (this.rate === 0) return max;
    return Math.min(max, Math.max(FRAME_MIN, Math.floor(this.rate * FRAME_MS)));
  }

  /**
   * The cap, not the application or the peer's credit, held back a stream
   * that had data to send. Only rounds in which this happened tell whether
   * the path is full (BBR ignores app-limited rounds the same way); a fill
   * level of in-flight cannot tell, since a peer's window just under the cap
   * looks the same.
   */
  noteCapBlocked(): void {
    this.capBlocked = true;
  }

  /** Data was written while nothing was in flight: a delivery interval starts now. */
  noteIdleWrite(now: number): void {
    this.intervalStart = now;
  }

  /** Records a ping just queued (any ping: keepalive, probe, ping()). */
  pingSent(value: number, written: number, received: number, now: number): void {
    this.probedWritten = written;
    this.probedReceived = received;
    if (this.sent.length >= SENT_LIMIT) this.sent.shift();
    this.sent.push({
      value,
      sentAt: now,
      written,
      received,
      delivered: this.delivered,
      intervalStart: this.intervalStart,
      inflight: written - this.delivered,
      capLimited: this.capBlocked,
      carrying: this.carrying,
    });
    this.capBlocked = false;
  }

  /**
   * A pong arrived with `value`. Returns the round it ended, or undefined if
   * it answers no ping recorded here (a stale or foreign value).
   */
  pongReceived(value: number, received: number, now: number): Round | undefined {
    // A value after the newest ping is for a ping never sent: crediting it would mark unsent data delivered.
    const newest = this.sent.at(-1);
    if (newest === undefined || !serialAtOrAfter(newest.value, value)) return undefined;
    // Serial-number order: `value` covers every recorded ping at or before it.
    let last = -1;
    for (let i = 0; i < this.sent.length; i++) {
      if (serialAtOrAfter(value, this.sent[i]!.value)) last = i;
    }
    if (last < 0) return undefined;
    const first = this.sent[0]!;
    const acked = this.sent[last]!;
    this.sent.splice(0, last + 1);

    this.sampleRtt(acked, now);
    this.checkCarried(acked, now);
    // What was in flight behind a carried rate arrived by now. Part of it may have arrived up to
    // a min RTT before the ping went (its proof was still on the way back), so over the RTT plus
    // one min RTT it is a lower bound of the path's rate (exact with no queue at a cap of 2 BDP).
    // Where the carried rate was wrong (or was just dropped) it is the session's first sample of
    // the real one, where the usual sample of a first round is far lower.
    if (acked.carrying && acked.inflight > 0) {
      this.sendRate.add(acked.inflight / (now - acked.sentAt + this.effectiveMinRtt));
    }
    const elapsed = now - first.sentAt;
    if (elapsed > 0 && received > first.received) {
      this.recvRate.add((received - first.received) / elapsed);
      this.recvGrowth.check(this.recvRate.measuredMax);
    }
    if (acked.written > this.delivered) {
      const interval = now - acked.intervalStart;
      const rate = interval > 0 ? (acked.written - acked.delivered) / interval : 0;
      if (acked.capLimited || rate > this.sendRate.measuredMax) this.sendRate.add(rate);
      // Only rounds the cap limited tell whether the path is full (BBR ignores app-limited ones):
      // while the peer's window or the application limits, a larger cap adds no queue.
      if (acked.capLimited && !this.sendGrowth.check(this.sendRate.measuredMax) && this.phase === "startup") {
        this.phase = "steady";
      }
      this.delivered = acked.written;
      this.intervalStart = now;
    }
    return { minRtt: this.effectiveMinRtt, startup: this.recvGrowth.growing };
  }

  /**
   * A carried estimate's send rate: adopted at the first pong if the min RTT
   * matches, dropped when a ping sent after that came back (or, see
   * overdue, is still out) later than a path at the carried rate allows.
   */
  private checkCarried(ping: SentPing, now: number): void {
    const carried = this.pendingCarried;
    if (carried !== undefined) {
      this.pendingCarried = undefined;
      const ratio = Math.max(this.minRtt, PIPELINE_MS) / Math.max(carried.minRtt, PIPELINE_MS);
      if (ratio > CARRIED_RTT_RATIO || ratio < 1 / CARRIED_RTT_RATIO) {
        // Another path: its rates say nothing about this one.
        this.recvRate.carried = 0;
        return;
      }
      if (carried.sendRate > 0) {
        this.sendRate.carried = carried.sendRate;
        this.carriedSince = now;
        this.phase = "steady";
      }
      return;
    }
    if (this.carrying && ping.sentAt >= this.carriedSince && now - ping.sentAt > this.queueBound) {
      this.dropCarried();
    }
  }

  /** Longest a ping may take while a carried rate is in use. */
  private get queueBound(): number {
    return QUEUE_RTT_FACTOR * this.effectiveMinRtt + PIPELINE_MS;
  }

  /**
   * Drops a carried send rate whose ping (sent after it came into use) has been
   * unanswered longer than a path at that rate would take. The session calls
   * this before it writes: on a slow path the pong it waits for comes late.
   */
  overdue(now: number): void {
    if (!this.carrying) return;
    for (const ping of this.sent) {
      if (ping.sentAt < this.carriedSince) continue;
      if (now - ping.sentAt > this.queueBound) this.dropCarried();
      return;
    }
  }

  private dropCarried(): void {
    this.sendRate.carried = 0;
    this.carriedSince = -1;
    // Back to probing from what this session measured (rate 0: the initial cap).
    this.phase = "startup";
  }

  private sampleRtt(ping: SentPing, now: number): void {
    const rtt = now - ping.sentAt;
    if (this.phase === "probe-rtt") {
      // Sent with about the low cap in flight (the pump may pass it by a frame): no standing
      // queue, the path's own delay. Bounded in time, so it can never hold the cap low for long.
      if (ping.inflight > 1.5 * this.cap && now - this.probeRttSince < PROBE_RTT_MAX_MS) return;
      this.minRtt = rtt;
      this.minRttAt = now;
      this.phase = "steady";
      return;
    }
    if (rtt <= this.minRtt) {
      this.minRtt = rtt;
      this.minRttAt = now;
    } else if (now - this.minRttAt > MIN_RTT_WINDOW_MS) {
      this.phase = "probe-rtt";
      this.probeRttSince = now;
    }
  }
}

/** BBR's "full pipe" test: growing until the max rate rose less than a quarter three rounds in a row. */
class GrowthCheck {
  growing = true;
  private full = 0;
  private flat = 0;

  /** Feeds one round's max rate; returns whether the rate is still growing. */
  check(rate: number): boolean {
    if (rate >= this.full * 1.25) {
      this.full = rate;
      this.flat = 0;
    } else if (++this.flat >= 3) {
      this.growing = false;
    }
    return this.growing;
  }
}
