// Which forwarding errors are how streams end every day (logged at debug) and
// which an operator should hear about (warn).
import { ErrorCode, ResetCode, type TetherError } from "@tether/tunnel";
import t from "tap";
import { isNormalClose } from "../src/normal-close.js";

const tunnelError = (code: string, resetCode?: number): TetherError =>
  Object.assign(new Error(code), { code, ...(resetCode === undefined ? {} : { resetCode }) }) as TetherError;

t.ok(isNormalClose(tunnelError(ErrorCode.STREAM_RESET, ResetCode.CANCEL)), "the caller cancelled");
t.ok(isNormalClose(tunnelError(ErrorCode.SESSION_CLOSED)), "the session ended (logged once by the agent)");
t.notOk(isNormalClose(tunnelError(ErrorCode.STREAM_RESET, ResetCode.PROTOCOL_ERROR)), "a protocol error");
t.notOk(isNormalClose(tunnelError(ErrorCode.STREAM_RESET, ResetCode.INTERNAL_ERROR)), "the server failed");
t.notOk(
  isNormalClose(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" })),
  "no apiserver",
);
t.notOk(isNormalClose(new Error("Parse Error: Invalid method")), "a malformed request");
