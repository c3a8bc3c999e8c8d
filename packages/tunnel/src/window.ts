/**
 * Receive-side credit for one stream, with window auto-tuning.
 *
 * The window is the most the peer may have in flight plus what sits unread
 * here, so a paused reader pins at most `size` bytes. Credit goes back only for
 * bytes the application consumed. When a reader drains a full window in less
 * than four round trips (checked at each update: a fraction f of the window in
 * under 4·f·RTT), the window rather than the reader limits the transfer, so it
 * doubles, up to `max` and as far as the session's budget allows. While the
 * window is the limit, a whole window arrives per round trip, far inside the
 * bound; a reader slower than the link never triggers growth.
 */

import { INITIAL_WINDOW } from "./frame.js";
import type { WindowBudget } from "./window-budget.js";

export class ReceiveWindow {
  /** Current window size. */
  size: number;
  /** Bytes the peer may still send before it runs out of credit. */
  credit: number;
  /** Bytes received and not yet consumed by the application. */
  buffered = 0;
  /** Bytes consumed whose credit has not been returned yet. */
  pending = 0;
  private epochStart: number;
  /** What this window holds of the session budget: everything above INITIAL_WINDOW. */
  private claimed: number;

  /**
   * Starts at `initial` if the budget allows, never below INITIAL_WINDOW. A
   * start above INITIAL_WINDOW presumes the caller grants the difference to
   * the peer right away (the session does, with the SYN or the ACK).
   */
  constructor(
    readonly max: number,
    now: number,
    initial: number,
    private readonly budget: WindowBudget,
  ) {
    this.claimed = budget.claim(Math.min(Math.max(initial, INITIAL_WINDOW), max) - INITIAL_WINDOW);
    this.size = INITIAL_WINDOW + this.claimed;
    this.credit = this.size;
    this.epochStart = now;
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
  consume(n: number, now: number, rttMs: number): number {
    this.buffered -= n;
    this.pending += n;
    // A quarter window per update keeps the sender's pipe full on long links (it
    // never waits on credit held back here) at the cost of a 12-byte frame.
    if (this.pending < this.size / 4) return 0;
    let growth = 0;
    if (now - this.epochStart < 4 * (this.pending / this.size) * rttMs && this.size < this.max) {
      growth = this.budget.claim(Math.min(this.size, this.max - this.size));
      this.claimed += growth;
      this.size += growth;
    }
    this.epochStart = now;
    const delta = this.pending + growth;
    this.pending = 0;
    this.credit += delta;
    return delta;
  }
}
