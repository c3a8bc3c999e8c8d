/**
 * The last path estimate per peer (the agent: per server URL; the server: per
 * cluster), so a session that replaces an earlier one over the same path (a
 * reconnect, a go-away, a server rollout) starts from what the earlier one
 * learned instead of ramping from nothing. Entries expire: a path seen long
 * ago says little about today's, and the table is bounded.
 */

import { type PathEstimate, sanitizePathEstimate } from "./path-estimate.js";
import type { Session } from "./session.js";

/** How long an estimate stays worth carrying after its session last had one. */
export const PATH_MEMORY_TTL_MS = 10 * 60_000;
/** Entries kept at most; the oldest go first. */
const MAX_ENTRIES = 100_000;

export class PathMemory {
  private readonly entries = new Map<string, { estimate: PathEstimate; at: number }>();

  constructor(private readonly ttlMs = PATH_MEMORY_TTL_MS) {}

  /** Keeps `session`'s current estimate for `key` (nothing if it has none yet). */
  remember(key: string, session: Session, now = performance.now()): void {
    const estimate = session.pathEstimate;
    if (estimate === undefined) return;
    this.entries.delete(key);
    this.entries.set(key, { estimate, at: now });
    if (this.entries.size > MAX_ENTRIES) this.entries.delete(this.entries.keys().next().value!);
  }

  /** Keeps `session`'s estimate for `key` when it goes away or closes (whichever comes first). */
  track(key: string, session: Session): void {
    const keep = () => this.remember(key, session);
    session.once("goaway", keep);
    // 'close' comes after the streams ended: the estimate is still the one the session had.
    session.once("close", keep);
  }

  /** The estimate kept for `key`, if it is recent enough. */
  recall(key: string, now = performance.now()): PathEstimate | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (now - entry.at > this.ttlMs) {
      this.entries.delete(key);
      return undefined;
    }
    return sanitizePathEstimate(entry.estimate);
  }
}
