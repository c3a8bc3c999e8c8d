/**
 * A session's path estimate as it leaves the session: what a later session over
 * the same path may start from instead of ramping up again (the agent keeps the
 * last one for its server, the server one per cluster, see path-memory.ts), and
 * how the agent tells the server its own in the connect request
 * (PATH_ESTIMATE_HEADER; servers that do not know the header ignore it, so it
 * is no change to the tunnel protocol).
 *
 * An estimate is a hint from outside the session, possibly from a peer: every
 * way in goes through sanitizePathEstimate, which ignores what is not a finite
 * number in range. A session checks a carried estimate against the path
 * before it trusts it (path-estimator.ts).
 */

export interface PathEstimate {
  /** Delivery rate toward the peer, bytes per ms; 0 when unknown. */
  sendRate: number;
  /** Rate of what arrived from the peer, bytes per ms; 0 when unknown. */
  receiveRate: number;
  /** Minimum round-trip time, ms. */
  minRtt: number;
}

/** Request header of the agent's connect: its estimate of the path, in its own direction. */
export const PATH_ESTIMATE_HEADER = "x-tether-path-estimate";

/** The most a carried rate may claim, bytes per ms (4 GiB/s): more is clamped to it. */
export const MAX_CARRIED_RATE = (4 * 2 ** 30) / 1000;
/** A carried min RTT outside these bounds (ms) makes the estimate meaningless: it is ignored. */
export const MIN_CARRIED_RTT = 0.1;
export const MAX_CARRIED_RTT = 60_000;

/**
 * `estimate` with rates clamped to [0, MAX_CARRIED_RATE] (a rate that is not a
 * finite non-negative number counts as unknown, 0), or undefined when its min RTT
 * is not a finite number within bounds or neither rate is known.
 */
export function sanitizePathEstimate(estimate: unknown): PathEstimate | undefined {
  if (typeof estimate !== "object" || estimate === null) return undefined;
  const { sendRate, receiveRate, minRtt } = estimate as Record<string, unknown>;
  if (typeof minRtt !== "number" || !(minRtt >= MIN_CARRIED_RTT && minRtt <= MAX_CARRIED_RTT)) {
    return undefined;
  }
  const rate = (r: unknown) =>
    typeof r === "number" && Number.isFinite(r) && r > 0 ? Math.min(r, MAX_CARRIED_RATE) : 0;
  const clean = { sendRate: rate(sendRate), receiveRate: rate(receiveRate), minRtt };
  return clean.sendRate > 0 || clean.receiveRate > 0 ? clean : undefined;
}

/** The same path seen from the other end: its send rate is our receive rate. */
export function mirrorPathEstimate(estimate: PathEstimate): PathEstimate {
  return { sendRate: estimate.receiveRate, receiveRate: estimate.sendRate, minRtt: estimate.minRtt };
}

/** Header value: rates in whole bytes per second, the RTT in ms to a tenth. */
export function formatPathEstimate(estimate: PathEstimate): string {
  const perSecond = (r: number) => Math.round(r * 1000);
  return `send=${perSecond(estimate.sendRate)}, receive=${perSecond(estimate.receiveRate)}, rtt=${estimate.minRtt.toFixed(1)}`;
}

/** Bounded so a hostile header costs nothing to reject: 15 digits is past any rate that survives the clamp. */
const HEADER_FORMAT = /^send=(\d{1,15}), receive=(\d{1,15}), rtt=(\d{1,6}(?:\.\d{1,3})?)$/;

/**
 * Parses a header value as formatPathEstimate writes it (what the sender sees),
 * sanitized; undefined for anything else (absent, repeated, malformed, absurd).
 */
export function parsePathEstimate(value: unknown): PathEstimate | undefined {
  if (typeof value !== "string" || value.length > 100) return undefined;
  const m = HEADER_FORMAT.exec(value.trim());
  if (m === null) return undefined;
  return sanitizePathEstimate({
    sendRate: Number(m[1]) / 1000,
    receiveRate: Number(m[2]) / 1000,
    minRtt: Number(m[3]),
  });
}
