import t from "tap";
import { codedError, formatError, TetherError } from "../src/coded-error.js";

t.test("a coded error keeps its code, message and cause", async (t) => {
  const cause = new Error("disk full");
  const err = codedError("ERR_TETHER_STATE_DIR", "cannot write the state", cause);
  t.ok(err instanceof TetherError);
  t.equal(err.code, "ERR_TETHER_STATE_DIR");
  t.equal(err.message, "cannot write the state");
  t.equal(err.cause, cause);
  t.notOk("cause" in codedError("ERR_TETHER_X", "no cause"), "no cause property when none was given");
});

t.test("formatError prints CODE: message for Tether's codes only", async (t) => {
  t.equal(
    formatError(new TetherError("ERR_TETHER_BAD_CA", "the CA is bad")),
    "ERR_TETHER_BAD_CA: the CA is bad",
  );
  const fsError = Object.assign(new Error("ENOENT: no such file"), { code: "ENOENT" });
  t.equal(formatError(fsError), "ENOENT: no such file", "foreign codes are already in their message");
  t.equal(formatError("plain text"), "plain text");
  t.equal(formatError(undefined), "undefined");
});
