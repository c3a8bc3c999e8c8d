/**
 * Receive-side credit for one stream, sized to what the stream moves per
 * minimum RTT.
 *
 * The window is the most the peer may have in flight plus what sits unread
 * here, so a paused reader pins at most `size` bytes. Credit goes back only for
 * bytes the application consumed. At a pong, once at least one min RTT passed
 * since the last verdict, the session hands every stream that received data
 * the time passed and the path's min RTT (see path-estimator.ts). Bytes
 * the reader took in that time, scaled to one min RTT, is the stream's BDP
 * sample, as in gRPC's BDP estimator (but reads, not arrivals, so a stalled
 * reader never grows; and the min RTT keeps a queue from inflating it): a
 * sample of at least half the window means the window limited the round, so
 * it grows to twice the sample (four times while the session's arrival rate is
 * still growing), up to `max` and as far as the session's budget allows; the
 * verdict right after a growth judges by the old size, which the sender was
 * still using for most of that round, and scales the sample by the growth. A
 * sample under a quarter of the window three rounds in a row (a slower reader
 * or sender, or a queue) shrinks it toward twice the sample, at most by half
 * per round and never below WINDOW_FLOOR. Credit is never taken back on the
 * wire: the window shrinks by returning less of what the reader consumes.
 */

import { INITIAL_WINDOW } from "./frame.js";
import type { WindowBudget } from "./window-budget.js";

/** Rounds in a row a window must be under a quarter used before it shrinks. */
const SHRINK_ROUNDS = 3;
/** Smallest a window shrinks to. */
export const WINDOW_FLOOR = 64 * 1024;

export class ReceiveWindow {
  /** Current window size. */
  size: number;
  /** Bytes the peer may still send before it runs out of credit. */
  credit: number;
  /** Bytes received and not yet consumed by the application. */
  buffered = 0;
  /** Bytes consumed whose credit has not been returned yet. */
  pending = 0;
  /**
   * Bytes the reader took in the current round: what it consumed, not what
   * arrived, so a stalled reader never grows its window.
   */
  private roundBytes = 0;
  private lowRounds = 0;
  /**
   * The size the last verdict started from: a window that grew reaches the
   * sender half a round trip later, so the next round mostly shows the old
   * size at work and is judged against it.
   */
  private judged: number;
  /** Size the window shrinks toward as credit comes back. */
  private target: number;
  /** What this window holds of the session budget: everything above INITIAL_WINDOW. */
  private claimed: number;

  /**
   * Starts at `initial` if the budget allows, never below INITIAL_WINDOW. A
   * start above INITIAL_WINDOW presumes the caller grants the difference to
   * the peer right away (the session does, with the SYN or the ACK).
   */
  constructor(
    readonly max: number,
    initial: number,
    private readonly budget: WindowBudget,
  ) {
    this.claimed = budget.claim(Math.min(Math.max(initial, INITIAL_WINDOW), max) - INITIAL_WINDOW);
    this.size = INITIAL_WINDOW + this.claimed;
    this.credit = this.size;
    this.target = this.size;
    this.judged = this.size;
  }

  /** Gives the window's share back to the budget; the stream is gone. Idempotent. */
  release(): void {
    this.budget.release(this.claimed);
    this.claimed = 0;
  }

  /** Accounts for arriving data; false means the peer overran its credit. */
  receive(n: number): boolean {
    if (n > this.credit) return false;
    this.credit -= n;
    this.buffered += n;
    return true;
  }

  /**
   * Accounts for data the application took. Returns the credit to send back in
   * a WindowUpdate, or 0 when it is not worth a frame yet.
   */
  consume(n: number): number {
    this.buffered -= n;
    this.pending += n;
    this.roundBytes += n;
    // A quarter window per update keeps the sender's pipe full on long links (it
    // never waits on credit held back here) at the cost of a 12-byte frame.
    if (this.pending < this.size / 4) return 0;
    let delta = this.pending;
    this.pending = 0;
    if (this.size > this.target) {
      const withheld = Math.min(delta, this.size - this.target);
      this.size -= withheld;
      delta -= withheld;
      const claimed = Math.max(0, this.size - INITIAL_WINDOW);
      this.budget.release(this.claimed - claimed);
      this.claimed = claimed;
    }
    this.credit += delta;
    return delta;
  }

  /**
   * Ends a round of `elapsed` ms (at least `minRtt`) for this stream; `fast`
   * while the session's arrival rate still grows. Returns credit to grant at
   * once (the window grew), or 0.
   */
  endRound(elapsed: number, minRtt: number, fast: boolean): number {
    const bytes = this.roundBytes;
    this.roundBytes = 0;
    if (elapsed <= 0) return 0;
    const sample = (bytes * Math.min(minRtt, elapsed)) / elapsed;
    const judged = Math.min(this.size, this.judged);
    this.judged = this.size;
    // Half, not gRPC's 2/3: credit comes back a quarter window at a time, so a window-limited
    // stream moves about 3/4 of its window per round trip, and a round is a little longer than the min RTT.
    if (sample >= judged / 2) {
      // A window that grew at the last verdict and filled its old size again is growing as fast as the
      // sender can follow: the sample shows the old size, so it scales by what the window has become.
      const scaled = sample >= this.size / 2 ? sample : (sample * this.size) / judged;
      const want = Math.floor(Math.min(this.max, (fast ? 4 : 2) * scaled));
      if (want <= this.size) {
        this.target = this.size;
        return 0;
      }
      // Up to INITIAL_WINDOW a window is the protocol's; only the part above draws on the budget.
      this.claimed += this.budget.claim(Math.max(0, want - INITIAL_WINDOW) - this.claimed);
      const growth = Math.max(0, Math.min(want, INITIAL_WINDOW + this.claimed) - this.size);
      this.size += growth;
      this.target = this.size;
      this.lowRounds = 0;
      this.credit += growth;
      return growth;
    }
    // Shrink only after SHRINK_ROUNDS low rounds in a row: a grant takes a round trip to be used.
    if (sample < this.size / 4 && ++this.lowRounds >= SHRINK_ROUNDS) {
      this.target = Math.max(WINDOW_FLOOR, Math.ceil(2 * sample), Math.ceil(this.size / 2));
    } else if (sample >= this.size / 4) {
      this.lowRounds = 0;
      this.target = this.size;
    }
    return 0;
  }
}
