// Which forwarding errors an operator should hear about. A caller that closes
// its connection or cancels a request (the server resets the stream with
// CANCEL), and the streams a session takes down when it ends (the session's
// own error is logged once, by the agent), are how streams end every day: the
// agent logs them at debug. What remains — the apiserver unreachable, a TLS
// failure, a malformed request, a stream reset for a protocol error — is
// worth a warning.
import { ErrorCode, isTetherError, ResetCode } from "@tether/tunnel";

export function isNormalClose(err: unknown): boolean {
  if (!isTetherError(err)) return false;
  if (err.code === ErrorCode.STREAM_RESET) return err.resetCode === ResetCode.CANCEL;
  return err.code === ErrorCode.SESSION_CLOSED || err.code === ErrorCode.GOING_AWAY;
}
