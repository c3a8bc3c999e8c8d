import t from "tap";
import { DEFAULT_OPTIONS, resolveOptions } from "../src/options.js";

t.test("defaults fill in, explicit undefined does not override them", async (t) => {
  const o = resolveOptions({ role: "client", maxStreams: undefined, keepAliveInterval: 500 });
  t.equal(o.maxStreams, DEFAULT_OPTIONS.maxStreams);
  t.equal(o.keepAliveInterval, 500);
  t.equal(o.preferredFrameSize, o.maxFrameSize, "frames aim at the largest size unless told otherwise");
  t.equal(resolveOptions({ role: "client", maxFrameSize: 16_384 }).preferredFrameSize, 16_384);
  t.ok(DEFAULT_OPTIONS.deadPeerTimeout <= 30_000, "dead-peer timeout below common LB idle timeouts");
  t.ok(DEFAULT_OPTIONS.keepAliveInterval < DEFAULT_OPTIONS.deadPeerTimeout);
  t.ok(
    DEFAULT_OPTIONS.probeDelay + DEFAULT_OPTIONS.probeTimeout < 5_000,
    "a dead session fails a request within 5 s",
  );
});

t.test("bad options are refused", async (t) => {
  t.throws(() => resolveOptions({ role: "agent" as "client" }), TypeError);
  t.throws(() => resolveOptions({ role: "client", maxStreams: 0 }), RangeError);
  t.throws(() => resolveOptions({ role: "client", maxFrameSize: 70_000 }), RangeError);
  t.throws(
    () => resolveOptions({ role: "client", maxFrameSize: 16_384, preferredFrameSize: 20_000 }),
    RangeError,
    "a preferred frame size past the largest",
  );
  t.throws(() => resolveOptions({ role: "client", preferredFrameSize: 100 }), RangeError);
  t.throws(() => resolveOptions({ role: "client", maxWindow: 1000 }), RangeError);
  t.throws(() => resolveOptions({ role: "client", maxSessionWindow: -1 }), RangeError);
  t.throws(() => resolveOptions({ role: "client", deadPeerTimeout: -1 }), RangeError);
  t.throws(() => resolveOptions({ role: "client", transportHighWaterMark: 1.5 }), RangeError);
  t.throws(() => resolveOptions({ role: "client", probeDelay: -1 }), RangeError);
  t.throws(() => resolveOptions({ role: "client", probeTimeout: 0 }), RangeError);
});
