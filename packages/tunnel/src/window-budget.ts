/**
 * The receive memory a session lets its streams' windows claim beyond the
 * 256 KiB every stream gets by protocol. A window is the most a stream can
 * hold unread, so a stalled reader pins at most its own window and all
 * stalled readers of a session together at most this budget (plus 256 KiB
 * each). Growth and large start windows draw from it; a stream returns its
 * share when it ends. When the budget is spent, streams still flow at their
 * current window, they just stop growing: bounded memory wins over speed.
 */

export class WindowBudget {
  /** Bytes currently claimed by windows beyond their initial size. */
  claimed = 0;

  constructor(readonly limit: number) {}

  /** Claims up to `want` bytes; returns how many were granted (possibly 0). */
  claim(want: number): number {
    const granted = Math.max(0, Math.min(want, this.limit - this.claimed));
    this.claimed += granted;
    return granted;
  }

  release(n: number): void {
    this.claimed -= n;
  }
}
