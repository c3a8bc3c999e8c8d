// A cluster's tunnel session holds a bounded number of streams (the tunnel's
// maxStreams, on either end). A request or upgrade that finds it full is told
// so — 503 with Retry-After, as a Status — rather than dropped: streams free
// up as other callers finish, so the caller may simply try again.

import type { StatusReason } from "@tether/common";
import { ErrorCode, isTetherError, ResetCode } from "@tether/tunnel";

export const SESSION_FULL_RETRY_AFTER_SECONDS = 1;

/** True when `err` is a stream open refused because this end or the agent's end of the session is full. */
export function isSessionFull(err: unknown): boolean {
  return (
    isTetherError(err, ErrorCode.STREAM_LIMIT) ||
    (isTetherError(err, ErrorCode.STREAM_RESET) && err.resetCode === ResetCode.STREAM_LIMIT)
  );
}

/** The Status for a caller whose stream `err` refused, when it is a full session; undefined otherwise. */
export function sessionFullStatus(
  err: unknown,
  cluster: string,
): { reason: StatusReason; message: string; retryAfterSeconds: number } | undefined {
  if (!isSessionFull(err)) return undefined;
  return {
    reason: "ServiceUnavailable",
    message: `the tunnel of cluster "${cluster}" carries as many streams as it may: try again shortly`,
    retryAfterSeconds: SESSION_FULL_RETRY_AFTER_SECONDS,
  };
}
