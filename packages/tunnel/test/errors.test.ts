import t from "tap";
import { goAwayCodeName, ResetCode, resetCodeName } from "../src/codes.js";
import { ErrorCode, isTetherError, tetherError } from "../src/errors.js";

t.test("errors carry codes and wire codes", async (t) => {
  const cause = new Error("root");
  const err = tetherError(ErrorCode.STREAM_RESET, "reset", { resetCode: 7, cause });
  t.equal(err.code, "ERR_TETHER_STREAM_RESET");
  t.equal(err.resetCode, 7);
  t.equal(err.cause, cause);
  t.ok(isTetherError(err));
  t.ok(isTetherError(err, ErrorCode.STREAM_RESET));
  t.notOk(isTetherError(err, ErrorCode.PROTOCOL));
  t.notOk(isTetherError(new Error("plain")));
  t.equal(tetherError(ErrorCode.PEER_GOAWAY, "x", { goAwayCode: 1 }).goAwayCode, 1);
});

t.test("wire codes have names", async (t) => {
  t.equal(resetCodeName(ResetCode.REFUSED), "REFUSED");
  t.equal(resetCodeName(0x100), "APPLICATION(256)");
  t.equal(resetCodeName(99), "UNKNOWN(99)");
  t.equal(goAwayCodeName(1), "PROTOCOL_ERROR");
  t.equal(goAwayCodeName(42), "UNKNOWN(42)");
});
