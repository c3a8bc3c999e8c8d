/**
 * Every error the tunnel raises carries a stable `code` so callers can branch
 * on it without parsing messages. Codes on the wire (reset and go-away codes)
 * are separate numbers, listed beside them.
 */

export const ErrorCode = {
  /** The peer reset the stream; `resetCode` holds the wire code. */
  STREAM_RESET: "ERR_TETHER_STREAM_RESET",
  /** The session ended (closed, failed or went away) while the stream was open. */
  SESSION_CLOSED: "ERR_TETHER_SESSION_CLOSED",
  /** open() after goAway() was sent or received; safe to retry on a new session. */
  GOING_AWAY: "ERR_TETHER_GOING_AWAY",
  /** open() while the session already holds `maxStreams` streams. */
  STREAM_LIMIT: "ERR_TETHER_STREAM_LIMIT",
  /** The peer broke the protocol; the session is closed with a go-away. */
  PROTOCOL: "ERR_TETHER_PROTOCOL",
  /** Nothing arrived from the peer for `deadPeerTimeout` ms, or within `probeTimeout` of a probe ping. */
  KEEPALIVE_TIMEOUT: "ERR_TETHER_KEEPALIVE_TIMEOUT",
  /** The peer sent a go-away with an error code. */
  PEER_GOAWAY: "ERR_TETHER_PEER_GOAWAY",
  /** The underlying WebSocket closed or failed. */
  TRANSPORT_CLOSED: "ERR_TETHER_TRANSPORT_CLOSED",
  /** Outbound control frames piled up because the peer stopped reading. */
  CONTROL_OVERFLOW: "ERR_TETHER_CONTROL_OVERFLOW",
  /** A caller passed an invalid argument (bad service name, oversized metadata...). */
  INVALID_ARGUMENT: "ERR_TETHER_INVALID_ARGUMENT",
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface TetherError extends Error {
  code: ErrorCode;
  /** Wire code of a stream reset (received or sent), when one applies. */
  resetCode?: number;
  /** Wire code of a go-away, when one applies. */
  goAwayCode?: number;
}

export function tetherError(
  code: ErrorCode,
  message: string,
  extra?: { resetCode?: number; goAwayCode?: number; cause?: unknown },
): TetherError {
  const err = new Error(
    message,
    extra?.cause === undefined ? undefined : { cause: extra.cause },
  ) as TetherError;
  err.code = code;
  if (extra?.resetCode !== undefined) err.resetCode = extra.resetCode;
  if (extra?.goAwayCode !== undefined) err.goAwayCode = extra.goAwayCode;
  return err;
}

export function isTetherError(err: unknown, code?: ErrorCode): err is TetherError {
  return (
    err instanceof Error &&
    typeof (err as { code?: unknown }).code === "string" &&
    (code === undefined || (err as TetherError).code === code)
  );
}
