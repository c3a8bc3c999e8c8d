import t from "tap";
import { FailureRateLimit, sourceKey } from "../../src/http/failure-rate-limit.js";

t.test("limit failures per window, then a wait until the oldest leaves it", async (t) => {
  let now = 1_000_000;
  const rl = new FailureRateLimit({ limit: 3, windowMs: 10_000, now: () => now });
  t.equal(rl.retryAfter("a"), 0);
  t.equal(rl.fail("a"), false);
  now += 1000;
  t.equal(rl.fail("a"), false);
  t.equal(rl.retryAfter("a"), 0, "under the limit");
  now += 1000;
  t.equal(rl.fail("a"), true, "the failure that uses up the allowance says so");
  t.equal(rl.retryAfter("a"), 8, "until the first failure is 10 s old");
  t.equal(rl.retryAfter("b"), 0, "other sources go ahead");
  now += 7_500;
  t.equal(rl.retryAfter("a"), 1, "rounded up, never 0 while blocked");
  now += 500;
  t.equal(rl.retryAfter("a"), 0, "the oldest left the window: one more attempt");
  rl.fail("a");
  t.equal(rl.retryAfter("a"), 1, "and blocked again until the next oldest leaves");
  now += 20_000;
  t.equal(rl.retryAfter("a"), 0);
  t.equal(rl.size, 0, "a source with no failure in the window is forgotten");
});

t.test(
  "attempts still being checked count: a parallel flood gets no more than the limit checked",
  async (t) => {
    const rl = new FailureRateLimit({ limit: 3, windowMs: 10_000, now: () => 0 });
    const started = Array.from({ length: 10 }, () => rl.begin("a"));
    const let_through = started.filter((x) => typeof x !== "number");
    t.equal(let_through.length, 3, "three in flight at once, the rest told to wait");
    t.same(
      started.filter((x) => typeof x === "number"),
      Array(7).fill(1),
      "Retry-After 1 while only in-flight attempts fill the allowance",
    );
    for (const a of let_through) if (typeof a !== "number") a.failed();
    t.equal(rl.retryAfter("a"), 10, "then the failures themselves");
    const b1 = rl.begin("b");
    const b2 = rl.begin("b");
    if (typeof b1 === "number" || typeof b2 === "number") throw new Error("b was refused");
    b1.succeeded();
    b1.failed();
    t.equal(rl.retryAfter("b"), 0, "an attempt settles once: a later failed() does not count");
    b2.succeeded();
    t.equal(rl.size, 1, "settled attempts leave nothing behind");
    t.equal(typeof rl.begin("c"), "object");
    t.equal(typeof rl.begin("c"), "object");
    t.equal(typeof rl.begin("c"), "object");
    t.equal(rl.begin("c"), 1, "successes in flight hold places too, until settled");
  },
);

t.test(
  "in flight, one credential counts once: a burst with one token is let through, distinct guesses are not",
  async (t) => {
    const rl = new FailureRateLimit({ limit: 3, windowMs: 10_000, now: () => 0 });
    const burst = Array.from({ length: 50 }, () => rl.begin("a", "token-1"));
    t.ok(
      burst.every((x) => typeof x !== "number"),
      "50 parallel attempts with one credential all go ahead (informers starting behind one address)",
    );
    t.equal(typeof rl.begin("a", "token-2"), "object", "a second credential");
    t.equal(typeof rl.begin("a", "token-3"), "object", "a third");
    t.equal(rl.begin("a", "token-4"), 1, "a fourth distinct credential in flight waits");
    const more = rl.begin("a", "token-1");
    t.equal(typeof more, "object", "the first credential still goes ahead");
    for (const a of [...burst, more]) if (typeof a !== "number") a.succeeded();
    t.equal(typeof rl.begin("a", "token-4"), "object", "token-1 settled: its place is free");
    const guesses = Array.from({ length: 10 }, (_, i) => rl.begin("b", `guess-${i}`));
    t.equal(guesses.filter((x) => typeof x !== "number").length, 3, "distinct guesses: the limit in flight");
    for (const g of guesses) if (typeof g !== "number") g.failed();
    t.equal(rl.begin("b", "guess-0"), 10, "a credential already failing the limit waits for the window");
    t.equal(rl.begin("b", "anything"), 10);
  },
);

t.test("memory is bounded: timestamps per source and sources", async (t) => {
  let now = 0;
  const rl = new FailureRateLimit({ limit: 2, windowMs: 1000, maxSources: 3, now: () => now });
  for (let i = 0; i < 100; i++) rl.fail("a");
  t.equal(rl.retryAfter("a"), 1);
  for (const s of ["b", "c", "d"]) rl.fail(s);
  t.equal(rl.size, 3, "at most maxSources");
  t.equal(rl.retryAfter("a"), 0, "the least recently failing source went first");
  now = 5000;
  rl.fail("e");
  t.equal(rl.size, 1, "stale sources are dropped as new failures come");
});

t.test("source keys: IPv4 as is, IPv6 by /64", async (t) => {
  t.equal(sourceKey("10.0.0.1"), "10.0.0.1");
  t.equal(sourceKey("::ffff:10.0.0.1"), "10.0.0.1");
  t.equal(sourceKey("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
  t.equal(sourceKey("2001:db8:1:2:bbbb:cccc:dddd:eeee"), "2001:db8:1:2::/64");
  t.equal(sourceKey("2001:0DB8:0001:0002::"), "2001:db8:1:2::/64");
  t.equal(sourceKey("2001:db8::5"), "2001:db8:0:0::/64");
  t.equal(sourceKey("::1"), "0:0:0:0::/64");
  t.equal(sourceKey("fe80::1%eth0"), "fe80:0:0:0::/64");
  t.equal(sourceKey(undefined), "unknown");
});
