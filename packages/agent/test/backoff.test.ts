import t from "tap";
import { Backoff } from "../src/backoff.js";

t.test("ceilings double up to the cap, delays are jittered below them", async (t) => {
  const top = new Backoff({ baseMs: 100, capMs: 1000, random: () => 0.999999 });
  t.same(
    Array.from({ length: 6 }, () => top.next()),
    [99, 199, 399, 799, 999, 999],
  );
  const bottom = new Backoff({ baseMs: 100, capMs: 1000, random: () => 0 });
  t.same([bottom.next(), bottom.next()], [0, 0], "full jitter reaches zero");
});

t.test("reset starts over", async (t) => {
  const b = new Backoff({ baseMs: 100, capMs: 10_000, random: () => 0.5 });
  b.next();
  b.next();
  b.next();
  b.reset();
  t.equal(b.next(), 50);
});

t.test("many agents spread out", async (t) => {
  const delays = Array.from({ length: 1000 }, () => {
    const b = new Backoff({ baseMs: 1000, capMs: 1000 });
    return b.next();
  });
  const buckets = new Set(delays.map((d) => Math.floor(d / 100)));
  t.equal(buckets.size, 10, "every tenth of the range is used");
});
