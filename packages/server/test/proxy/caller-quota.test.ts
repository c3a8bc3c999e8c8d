import { EventEmitter } from "node:events";
import type { IncomingMessage } from "node:http";
import t from "tap";
import { CallerQuota, callerKey, releaseOnClose } from "../../src/proxy/caller-quota.js";

t.test("a caller gets max slots per cluster; a release frees one, once", async (t) => {
  const quota = new CallerQuota(2);
  const a = quota.acquire("m1", "alice");
  const b = quota.acquire("m1", "alice");
  t.ok(a && b);
  t.equal(quota.acquire("m1", "alice"), undefined, "the third is refused");
  t.ok(quota.acquire("m1", "bob"), "another caller is not affected");
  t.ok(quota.acquire("m2", "alice"), "nor the same caller on another cluster");
  a!();
  a!();
  t.equal(quota.holding("m1", "alice"), 1, "a second release of the same slot does nothing");
  const c = quota.acquire("m1", "alice");
  t.ok(c);
  t.equal(quota.acquire("m1", "alice"), undefined);
  b!();
  c!();
  t.equal(quota.holding("m1", "alice"), 0);
  t.equal(quota.size, 2, "callers who hold nothing are forgotten");
});

t.test("caller keys: the user in impersonate mode, a hash of the credential in passthrough", async (t) => {
  const req = (authorization?: string) =>
    ({ headers: authorization ? { authorization } : {} }) as IncomingMessage;
  const viaToken = callerKey(req("Bearer tether_x"), { user: "alice", groups: [], via: "token" });
  const viaCert = callerKey(req(), { user: "alice", groups: ["g"], via: "certificate" });
  t.equal(viaToken, viaCert, "one user's token and certificate share a quota");
  const p1 = callerKey(req("Bearer secret-one"), undefined);
  t.not(p1, callerKey(req("Bearer secret-two"), undefined));
  t.equal(p1, callerKey(req("Bearer secret-one"), undefined));
  t.notMatch(p1, /secret/, "the key holds no credential");
  t.not(callerKey(req("Bearer alice"), undefined), viaToken, "a passthrough token cannot pose as a user");
});

t.test("releaseOnClose releases at once for a target that is already closed", async (t) => {
  let released = 0;
  const open = Object.assign(new EventEmitter(), { destroyed: false });
  releaseOnClose(open, () => released++);
  t.equal(released, 0);
  open.emit("close");
  t.equal(released, 1);
  releaseOnClose(Object.assign(new EventEmitter(), { destroyed: true }), () => released++);
  t.equal(released, 2);
});

t.test("passthrough: one bearer token is one caller however the header spells it", async (t) => {
  const key = (authorization?: string) =>
    callerKey(
      { headers: authorization === undefined ? {} : { authorization } } as IncomingMessage,
      undefined,
    );
  const base = key("Bearer abc");
  for (const spelling of [
    "bearer abc",
    "BEARER abc",
    "Bearer   abc",
    "Bearer abc 1",
    "Bearer abc extra words",
  ]) {
    t.equal(key(spelling), base, `"${spelling}" is the same caller`);
  }
  t.not(key("Bearer abd"), base, "another token, another caller");
  t.not(key("Basic abc"), base, "another scheme is not that bearer token");
  t.notMatch(base, /abc/, "the key holds no credential");
});
