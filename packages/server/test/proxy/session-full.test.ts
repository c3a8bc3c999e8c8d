import { ErrorCode, ResetCode, Session, type TetherError } from "@tether/tunnel";
import t from "tap";
import { isSessionFull, sessionFullStatus } from "../../src/proxy/session-full.js";

const err = (code: string, resetCode?: number) =>
  Object.assign(new Error("x"), { code, ...(resetCode === undefined ? {} : { resetCode }) }) as TetherError;

t.test("a full session on either end is told apart from other stream errors", async (t) => {
  t.ok(isSessionFull(err(ErrorCode.STREAM_LIMIT)), "this end is full");
  t.ok(isSessionFull(err(ErrorCode.STREAM_RESET, ResetCode.STREAM_LIMIT)), "the agent refused: full");
  t.notOk(isSessionFull(err(ErrorCode.STREAM_RESET, ResetCode.REFUSED)));
  t.notOk(isSessionFull(err(ErrorCode.SESSION_CLOSED)));
  t.notOk(isSessionFull(new Error("ECONNRESET")));
  t.same(sessionFullStatus(err(ErrorCode.STREAM_LIMIT), "m1"), {
    reason: "ServiceUnavailable",
    message: 'the tunnel of cluster "m1" carries as many streams as it may: try again shortly',
    retryAfterSeconds: 1,
  });
  t.equal(sessionFullStatus(err(ErrorCode.SESSION_CLOSED), "m1"), undefined);
});

t.test("a real session at its limit fails open() with the code isSessionFull knows", async (t) => {
  const transport = { send: (_m: Buffer, done: () => void) => done(), close() {} };
  const s = new Session(transport as never, {
    role: "client",
    maxStreams: 1,
    keepAliveInterval: 0,
    deadPeerTimeout: 0,
  });
  t.teardown(() => s.close());
  s.open("svc").on("error", () => {});
  const second = s.open("svc");
  const e = await new Promise<Error>((resolve) => second.once("error", resolve));
  t.ok(isSessionFull(e), e.message);
});
