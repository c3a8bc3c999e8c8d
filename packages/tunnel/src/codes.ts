/**
 * Numeric codes carried on the wire. Reset codes travel in the length field of
 * a WindowUpdate+RST frame, go-away codes in the length field of a GoAway
 * frame (see PROTOCOL.md). Applications may define their own reset codes from
 * `ResetCode.APPLICATION_MIN` upwards.
 */

export const ResetCode = {
  /** The stream was abandoned without an error (destroy() with no argument). */
  CANCEL: 1,
  /** The acceptor refused the open (service not allowed, no acceptor). */
  REFUSED: 2,
  /** The acceptor already holds its maximum number of streams. */
  STREAM_LIMIT: 3,
  /** The acceptor is going away and takes no new streams; retry elsewhere. */
  GOING_AWAY: 4,
  /** The stream's open header was malformed. */
  PROTOCOL_ERROR: 5,
  /** A local failure ended the stream (destroy(err) without a resetCode). */
  INTERNAL_ERROR: 6,
  /** The acceptor could not reach the service behind it. */
  CONNECT_FAILED: 7,
  /** The stream's idle timeout ran out. */
  TIMEOUT: 8,
  /** Codes at or above this are for applications; the tunnel passes them through. */
  APPLICATION_MIN: 0x100,
} as const;

export const GoAwayCode = {
  /** Orderly shutdown: open streams may finish. */
  NORMAL: 0,
  /** The sender saw a protocol violation and is closing now. */
  PROTOCOL_ERROR: 1,
  /** The sender failed internally and is closing now. */
  INTERNAL_ERROR: 2,
  /** The sender heard nothing from its peer for too long and is closing now. */
  KEEPALIVE_TIMEOUT: 3,
} as const;

const resetNames = new Map<number, string>(
  Object.entries(ResetCode)
    .filter(([name]) => name !== "APPLICATION_MIN")
    .map(([name, code]) => [code, name]),
);
const goAwayNames = new Map<number, string>(Object.entries(GoAwayCode).map(([name, code]) => [code, name]));

export function resetCodeName(code: number): string {
  return (
    resetNames.get(code) ?? (code >= ResetCode.APPLICATION_MIN ? `APPLICATION(${code})` : `UNKNOWN(${code})`)
  );
}

export function goAwayCodeName(code: number): string {
  return goAwayNames.get(code) ?? `UNKNOWN(${code})`;
}
