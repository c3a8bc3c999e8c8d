/**
 * Receive-side credit for one stream, with window auto-tuning.
 *
 * The window is the most the peer may have in flight plus what sits unread
 * here, so a paused reader pins at most `size` bytes. Credit goes back only for
 * bytes the application consumed. When a reader drains half a window in less
 * than one round trip, the window (not the reader) is the bottleneck, so it
 * doubles, up to `max`: it settles near twice the bandwidth-delay product.
 */

import { INITIAL_WINDOW } from "./frame.js";

export class ReceiveWindow {
  /** Current window size. */
  size = INITIAL_WINDOW;
  /** Bytes the peer may still send before it runs out of credit. */
  credit = INITIAL_WINDOW;
  /** Bytes received and not yet consumed by the application. */
  buffered = 0;
  /** Bytes consumed whose credit has not been returned yet. */
  pending = 0;
  private epochStart: number;

  constructor(
    readonly max: number,
    now: number,
  ) {
    this.epochStart = now;
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
    if (this.pending < this.size / 2) return 0;
    let growth = 0;
    if (now - this.epochStart < rttMs && this.size < this.max) {
      growth = Math.min(this.size, this.max - this.size);
      this.size += growth;
    }
    this.epochStart = now;
    const delta = this.pending + growth;
    this.pending = 0;
    this.credit += delta;
    return delta;
  }
}
