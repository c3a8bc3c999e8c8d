import t from "tap";
import { Backoff, spreadDelay } from "../src/backoff.js";

/** A Backoff on a clock the test moves. */
function clocked(options: { baseMs?: number; capMs?: number; random?: () => number } = {}) {
  let now = 0;
  const backoff = new Backoff({ ...options, now: () => now });
  return { backoff, advance: (ms: number) => (now += ms) };
}

t.test("the ceiling is half the time spent failing, between base and cap", async (t) => {
  const { backoff, advance } = clocked({ baseMs: 100, capMs: 1000, random: () => 0.999999 });
  t.equal(backoff.next(), 99, "the first retry waits under the base");
  advance(400);
  t.equal(backoff.next(), 199, "400 ms into the outage: under 200");
  advance(10_000);
  t.equal(backoff.next(), 999, "capped");
  const bottom = new Backoff({ baseMs: 100, capMs: 1000, random: () => 0 });
  t.same([bottom.next(), bottom.next()], [0, 0], "full jitter reaches zero");
});

t.test("reset starts over", async (t) => {
  const { backoff, advance } = clocked({ baseMs: 100, capMs: 10_000, random: () => 0.5 });
  backoff.next();
  advance(5_000);
  t.equal(backoff.next(), 1250);
  backoff.reset();
  t.equal(backoff.next(), 50);
});

t.test("many agents spread out", async (t) => {
  const delays = Array.from({ length: 1000 }, () => new Backoff({ baseMs: 1000, capMs: 1000 }).next());
  const buckets = new Set(delays.map((d) => Math.floor(d / 100)));
  t.equal(buckets.size, 10, "every tenth of the range is used");
});

/**
 * How long after an outage of `outageMs` ends the first dial goes out, with
 * the default backoff: every dial before the end fails and waits the next delay.
 */
function lateness(outageMs: number, random: () => number): number {
  const { backoff, advance } = clocked({ random });
  let at = 0;
  while (at < outageMs) at = advance(backoff.next());
  return at - outageMs;
}

t.test("a short outage costs at most half its length more", async (t) => {
  const runs = Array.from({ length: 5_000 }, () => lateness(3_000, Math.random)).sort((a, b) => a - b);
  const [p50, p99, max] = [runs[2_500]!, runs[4_950]!, runs.at(-1)!];
  t.ok(
    max <= 1_500,
    `5000 runs of a 3 s outage: back p50 ${p50} ms, p99 ${p99} ms, max ${max} ms after it ends`,
  );
  t.ok(lateness(3_000, () => 0.999999) <= 1_500, "with the longest jitter every time too");
  t.ok(lateness(3_000, () => 0.01) <= 1_500, "and with the shortest (many dials, no runaway ceiling)");
});

t.test("a long outage still backs off to the cap", async (t) => {
  const { backoff, advance } = clocked({ capMs: 30_000, random: () => 0.999999 });
  backoff.next();
  advance(3_600_000);
  t.equal(backoff.next(), 29_999, "an hour in, the ceiling is the cap");
});

t.test("go-away redials spread over the window", async (t) => {
  const delays = Array.from({ length: 400 }, () => spreadDelay(3_000));
  t.ok(
    delays.every((d) => d >= 0 && d < 3_000),
    "every delay is inside the window",
  );
  t.equal(new Set(delays.map((d) => Math.floor(d / 100))).size, 30, "all thirty 100 ms buckets are used");
  t.equal(
    spreadDelay(3_000, () => 0),
    0,
  );
});
