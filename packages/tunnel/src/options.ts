/**
 * Every tunable of a session, with its default. This is the one place options
 * are documented; README.md repeats the table.
 */

import { MAX_FRAME_PAYLOAD } from "./frame.js";
import type { OpenRequest } from "./open-header.js";
import type { PathEstimate } from "./path-estimate.js";

/**
 * What the accept hook may answer: `true` or `undefined` accepts, `false`
 * refuses with ResetCode.REFUSED, a positive number refuses with that reset code.
 */
export type AcceptDecision = boolean | number | undefined;

export interface SessionOptions {
  /**
   * Which end of the WebSocket this is. The client (the agent, which dials)
   * opens odd stream ids, the server even ones. Required.
   */
  role: "client" | "server";
  /**
   * Decides, synchronously, whether to take a stream the peer opens. Called
   * before the 'stream' event; refusing sends a reset with the returned code.
   * Without a hook every open is accepted if someone listens to 'stream', and
   * refused otherwise. A hook that throws refuses with INTERNAL_ERROR.
   */
  accept?: (request: OpenRequest) => AcceptDecision;
  /** Most streams open at once, both directions together. Default 1024. */
  maxStreams?: number;
  /**
   * Largest receive window one stream may grow to. A window starts at twice
   * the session's estimate of what arrives per minimum RTT (at least 256 KiB;
   * 1 MiB, what the peer's in-flight cap starts at, before anything arrived),
   * doubles while a round at the min RTT shows the window was the limit, and
   * shrinks (by returning less credit, never below 64 KiB) while the stream
   * uses under a quarter of it (window.ts). Default 32 MiB, above the
   * bandwidth-delay product of a 50 ms link at 500 MiB/s.
   */
  maxWindow?: number;
  /**
   * Receive memory all streams of the session may claim together beyond the
   * 256 KiB each starts with: bounds what stalled readers can pin. Windows
   * stop growing (new ones start small) while it is spent. Default 64 MiB.
   */
  maxSessionWindow?: number;
  /**
   * Largest Data payload this end sends (the scheduler's round-robin quantum).
   * On slow paths frames are smaller: what the path moves in about 4 ms, at
   * least 16 KiB, so a small response waits behind less of a bulk frame. At
   * most 65536, which is also what every peer accepts. Default 65536.
   */
  maxFrameSize?: number;
  /**
   * The Data payload full frames aim at, at most maxFrameSize: a frame goes
   * past it (up to maxFrameSize) only to finish the last chunk a stream has
   * queued, so a writer of 64 KiB chunks sends one frame per chunk, not a
   * full frame and a few-byte tail. Default maxFrameSize; over a WebSocket
   * (sessionFromWebSocket) what fills four TLS records exactly: 65516 for the
   * client, 65520 for the server.
   */
  preferredFrameSize?: number;
  /** Milliseconds between keepalive pings; 0 disables them. Default 10000. */
  keepAliveInterval?: number;
  /**
   * Milliseconds without any inbound traffic (data, control, pongs all count)
   * after which the peer is declared dead and the session fails. 0 disables.
   * Default 30000, below common load-balancer idle timeouts.
   */
  deadPeerTimeout?: number;
  /**
   * Fails a silently dead session (a blackholed NAT or load-balancer mapping)
   * long before the dead-peer timeout: when this end sends a stream open or
   * data and hears nothing at all from the peer for this many milliseconds,
   * it pings at once. Never shorter than 4 smoothed round trips. An idle
   * session sends nothing that needs an answer and so is never probed. 0
   * disables (independently of deadPeerTimeout). Default 1000.
   */
  probeDelay?: number;
  /**
   * Milliseconds after such a probe ping within which anything from the peer
   * (data, control or the pong) must arrive, or the session fails with
   * ERR_TETHER_KEEPALIVE_TIMEOUT. Never shorter than 4 smoothed or 2 of the
   * largest recent round trips, so a pong queued behind the peer's data on a
   * slow link still counts. Default 3000: with the delay, a request on a dead
   * session fails within about 4 s of being sent.
   */
  probeTimeout?: number;
  /**
   * Bytes the session lets sit in the transport (sent, not yet flushed to the
   * socket) before it stops writing and waits. Default 1 MiB. Not a tunable of
   * the path: independently, Data written but not yet proven delivered by a
   * pong is capped near twice the path's bandwidth-delay product
   * (path-estimator.ts), which keeps the kernel's and proxies' queues to about
   * one round trip.
   */
  transportHighWaterMark?: number;
  /**
   * What an earlier session over the same path learned (its `pathEstimate`),
   * to start from instead of ramping up: new streams' receive windows are sized
   * from its receive rate at once, and once the first pong shows about the same
   * min RTT (within 3x) its send rate sets the in-flight cap; a ping slower than
   * 2.5 min RTTs drops it again (path-estimator.ts). An estimate whose RTT is not
   * a number in [0.1, 60000] ms, or with no positive rate, is ignored; rates are
   * clamped to 4 GiB/s. Default none (the agent and server pass what
   * path-memory.ts kept).
   */
  pathEstimate?: PathEstimate;
}

export type ResolvedOptions = Required<Omit<SessionOptions, "accept" | "pathEstimate">> &
  Pick<SessionOptions, "accept" | "pathEstimate">;

export const DEFAULT_OPTIONS = {
  maxStreams: 1024,
  maxWindow: 32 * 1024 * 1024,
  maxSessionWindow: 64 * 1024 * 1024,
  maxFrameSize: MAX_FRAME_PAYLOAD,
  keepAliveInterval: 10_000,
  deadPeerTimeout: 30_000,
  probeDelay: 1_000,
  probeTimeout: 3_000,
  transportHighWaterMark: 1024 * 1024,
} as const;

export function resolveOptions(options: SessionOptions): ResolvedOptions {
  if (options.role !== "client" && options.role !== "server") {
    throw new TypeError(`options.role must be "client" or "server", got ${String(options.role)}`);
  }
  const given = stripUndefined(options);
  const resolved: ResolvedOptions = {
    ...DEFAULT_OPTIONS,
    preferredFrameSize: given.maxFrameSize ?? DEFAULT_OPTIONS.maxFrameSize,
    ...given,
    role: options.role,
  };
  const positive = (
    name: keyof typeof DEFAULT_OPTIONS | "preferredFrameSize",
    min: number,
    max = Number.MAX_SAFE_INTEGER,
  ) => {
    const v = resolved[name];
    if (!Number.isInteger(v) || v < min || v > max) {
      throw new RangeError(`options.${name} must be an integer in [${min}, ${max}], got ${v}`);
    }
  };
  positive("maxStreams", 1, 2 ** 30);
  positive("maxWindow", 256 * 1024, 2 ** 31 - 1);
  positive("maxSessionWindow", 0);
  positive("maxFrameSize", 1024, MAX_FRAME_PAYLOAD);
  positive("preferredFrameSize", 1024, resolved.maxFrameSize);
  positive("keepAliveInterval", 0);
  positive("deadPeerTimeout", 0);
  positive("probeDelay", 0);
  positive("probeTimeout", 1);
  positive("transportHighWaterMark", 1);
  return resolved;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
