import t from "tap";
import {
  CAP_FLOOR,
  GAIN,
  INITIAL_CAP,
  MIN_RTT_WINDOW_MS,
  PathEstimator,
  PIPELINE_MS,
  QUEUE_RTT_FACTOR,
  STARTUP_GAIN,
} from "../src/path-estimator.js";

interface Clock {
  now: number;
  written: number;
  value: number;
}

/**
 * One round trip: `bytes` more written, a ping, its pong `ms` later (so the
 * delivery rate sample is bytes / ms when rounds follow each other).
 */
function round(p: PathEstimator, c: Clock, bytes: number, ms: number) {
  c.written += bytes;
  p.pingSent(++c.value, c.written, 0, c.now);
  c.now += ms;
  return p.pongReceived(c.value, 0, c.now);
}

t.test("min RTT is a min filter that a stale sample does not replace", async (t) => {
  const p = new PathEstimator(0);
  p.pingSent(1, 0, 0, 0);
  p.pongReceived(1, 0, 50);
  t.equal(p.minRtt, 50);
  p.pingSent(2, 0, 0, 100);
  p.pongReceived(2, 0, 180);
  t.equal(p.minRtt, 50, "a larger sample inside the window leaves the minimum");
  p.pingSent(3, 0, 0, 200);
  p.pongReceived(3, 0, 240);
  t.equal(p.minRtt, 40, "a smaller one replaces it");
  t.equal(p.effectiveMinRtt, 40);
  const q = new PathEstimator(0);
  q.pingSent(1, 0, 0, 0);
  q.pongReceived(1, 0, 0.1);
  t.equal(q.effectiveMinRtt, PIPELINE_MS, "never below the pipeline floor");
});

t.test("a pong answers its ping and every earlier one; unknown values are ignored", async (t) => {
  const p = new PathEstimator(0);
  p.pingSent(7, 1000, 0, 0);
  p.pingSent(8, 2000, 0, 1);
  p.pingSent(9, 3000, 0, 2);
  t.equal(p.pongReceived(5, 0, 10), undefined, "a value before all recorded pings answers none");
  t.ok(p.outstanding);
  t.ok(p.pongReceived(8, 0, 20), "the peer skipped 7 and answered 8");
  t.equal(p.delivered, 2000, "everything written before ping 8 is delivered");
  t.ok(p.outstanding, "9 still out");
  t.ok(p.pongReceived(9, 0, 30));
  t.notOk(p.outstanding);
  t.equal(p.delivered, 3000);
  t.equal(p.pongReceived(9, 0, 31), undefined, "a duplicate answers nothing");
  // Serial-number order across the 32-bit wrap.
  const w = new PathEstimator(0);
  w.pingSent(0xffffffff, 10, 0, 0);
  w.pingSent(0, 20, 0, 1);
  t.ok(w.pongReceived(0, 0, 5), "0 follows 0xffffffff");
  t.equal(w.delivered, 20);
  t.notOk(w.outstanding);
});

t.test("the delivery rate is a max filter; samples the application limited never lower it", async (t) => {
  const p = new PathEstimator(0);
  const c = { now: 0, written: 0, value: 0 };
  for (let i = 0; i < 12; i++) round(p, c, 50_000, 50); // 1 MB/s over 50 ms
  t.equal(p.rate, 1000, "bytes per ms");
  t.equal(p.minRtt, 50);
  round(p, c, 200_000, 50); // one burst measured at 4 MB/s
  t.equal(p.rate, 4000, "the max of recent samples");
  for (let i = 0; i < 12; i++) round(p, c, 10_000, 50); // the application sends little
  t.equal(p.rate, 4000, "app-limited samples leave the estimate");
  for (let i = 0; i < 12; i++) {
    p.noteCapBlocked(); // the cap is full and the link moves 250 B/ms
    round(p, c, p.cap, p.cap / 250);
  }
  t.ok(Math.abs(p.rate - 250) < 1, `the old maximum aged out: ${p.rate}`);
});

/** A round the cap limits on a link of `rate` B/ms and `rtt` ms: a capful takes at least cap / rate. */
function full(p: PathEstimator, c: Clock, rate: number, rtt: number) {
  const bytes = p.cap - (c.written - p.delivered);
  p.noteCapBlocked();
  return round(p, c, bytes, Math.max(rtt, bytes / rate));
}

t.test("startup grows the cap by STARTUP_GAIN, steady keeps GAIN x BDP", async (t) => {
  const p = new PathEstimator(0);
  const c = { now: 0, written: 0, value: 0 };
  t.equal(p.phase, "startup");
  t.equal(p.cap, INITIAL_CAP, "the cap before anything is known");
  round(p, c, 0, 50); // an idle ping: the empty path's RTT
  const rate = 200_000; // 200 MB/s, 50 ms: a 10 MB BDP
  const caps: number[] = [];
  for (let i = 0; i < 3; i++) {
    full(p, c, rate, 50);
    caps.push(p.cap);
  }
  t.equal(p.phase, "startup", "still growing");
  t.equal(caps[1], STARTUP_GAIN * caps[0]!, "x STARTUP_GAIN per round trip");
  for (let i = 0; i < 6 && p.phase === "startup"; i++) full(p, c, rate, 50);
  t.equal(p.phase, "steady", "the rate stopped growing: the pipe is full");
  for (let i = 0; i < 12; i++) full(p, c, rate, 50);
  t.ok(Math.abs(p.rate - rate) < rate * 0.05, `rate ${p.rate}`);
  t.equal(p.cap, GAIN * p.rate * 50, "GAIN x BDP");
  // Rounds the application or the peer's window limits never end startup.
  const w = new PathEstimator(0);
  const d = { now: 0, written: 0, value: 0 };
  for (let i = 0; i < 10; i++) round(w, d, 100_000, 50);
  t.equal(w.phase, "startup", "not cap-limited: still startup");
  t.ok(w.cap >= STARTUP_GAIN * 2000 * 50, "and the cap stays STARTUP_GAIN x BDP");
  const slow = new PathEstimator(0);
  const e = { now: 0, written: 0, value: 0 };
  round(slow, e, 0, 5);
  for (let i = 0; i < 10; i++) full(slow, e, 1000, 5);
  t.equal(slow.cap, CAP_FLOOR, "a tiny BDP is held at the floor");
});

t.test("a min RTT not confirmed for 10 s is refreshed by a low-cap probe", async (t) => {
  const p = new PathEstimator(0);
  const c = { now: 0, written: 0, value: 0 };
  round(p, c, 0, 50);
  for (let i = 0; i < 20; i++) full(p, c, 10_000, 50); // 10 MB/s, 50 ms
  t.equal(p.phase, "steady");
  const steadyCap = p.cap;
  // The path's delay rises for good (a route change): every sample is above the old minimum.
  const start = c.now;
  while (p.phase === "steady" && c.now - start < 2 * MIN_RTT_WINDOW_MS) full(p, c, 10_000, 100);
  t.equal(p.phase, "probe-rtt", "entered probe-rtt once the minimum went stale");
  t.ok(c.now >= MIN_RTT_WINDOW_MS, "not before the window passed");
  t.equal(p.minRtt, 50, "the stale minimum is still what the cap used");
  t.ok(p.cap <= steadyCap / 3, `the cap dropped to ${p.cap} from ${steadyCap}`);
  // A ping sent with more than the low cap in flight does not count...
  round(p, c, 1_000_000, 140);
  t.equal(p.phase, "probe-rtt", "a ping behind a queue does not end it");
  // ...one sent once in-flight fell under it does.
  round(p, c, 0, 100);
  t.equal(p.phase, "steady", "back once a low-in-flight ping came back");
  t.equal(p.minRtt, 100, "the minimum now tells the new path");
});

t.test("probe-rtt cannot hold the cap low: it ends after a bounded time whatever is in flight", async (t) => {
  const p = new PathEstimator(0);
  const c = { now: 0, written: 0, value: 0 };
  round(p, c, 0, 50);
  for (let i = 0; i < 20; i++) full(p, c, 1000, 50); // 1 MB/s: the cap sits at its floor
  while (p.phase !== "probe-rtt") full(p, c, 1000, 100);
  // Every ping now goes out behind more than the low cap (a frame past it, say): none qualifies...
  const entered = c.now;
  while (p.phase === "probe-rtt" && c.now - entered < 5000) round(p, c, 2 * p.cap, 70);
  t.equal(p.phase, "steady", "...yet it ends");
  t.ok(c.now - entered <= 1000, `within ${c.now - entered} ms`);
});

t.test(
  "only rounds the cap held back count: a peer's window just under the cap does not end startup",
  async (t) => {
    const p = new PathEstimator(0);
    const c = { now: 0, written: 0, value: 0 };
    round(p, c, 0, 50);
    // A 3 MiB window, round after round, each round 110 ms (a queue behind the window): in flight
    // is past half the cap at every ping, yet the window, not the cap, limited.
    for (let i = 0; i < 10; i++) round(p, c, 3 * 1024 * 1024, 110);
    t.equal(p.phase, "startup", "the pipe may not be full: still startup");
    for (let i = 0; i < 10 && p.phase === "startup"; i++) full(p, c, (3 * 1024 * 1024) / 110, 110);
    t.equal(p.phase, "steady", "rounds the cap held back at that rate end it");
  },
);

// ---- a carried estimate (a previous session's, path-estimate.ts) ----

const carried = { sendRate: 200_000, receiveRate: 100_000, minRtt: 50 }; // 200 and 100 MB/s at 50 ms

t.test(
  "a carried receive rate sizes windows at once; its send rate waits for a matching first RTT",
  async (t) => {
    const p = new PathEstimator(0, carried);
    t.equal(p.receiveRate, 100_000, "windows may start from it before any pong");
    t.equal(p.effectiveMinRtt, 50, "with its min RTT");
    t.equal(p.cap, INITIAL_CAP, "nothing goes out unproven on its word before the first pong");
    t.notOk(p.carrying);
    const c = { now: 0, written: 0, value: 0 };
    round(p, c, 0, 60); // the session's first ping: about the same path
    t.ok(p.carrying);
    t.equal(p.phase, "steady", "no startup: the rate is known");
    t.equal(p.cap, GAIN * 200_000 * 60, "GAIN x the carried rate x the measured min RTT");
    t.same(p.estimate, { sendRate: 200_000, receiveRate: 100_000, minRtt: 60 }, "handed on as it is used");
  },
);

t.test("a carried estimate from another path (its min RTT far off) is dropped whole", async (t) => {
  for (const rtt of [20, 400]) {
    const p = new PathEstimator(0, { ...carried, minRtt: 100 });
    const c = { now: 0, written: 0, value: 0 };
    round(p, c, 0, rtt);
    t.notOk(p.carrying, `first RTT ${rtt} ms against 100`);
    t.equal(p.rate, 0);
    t.equal(p.receiveRate, 0);
    t.equal(p.cap, INITIAL_CAP, "as a session that carried nothing");
  }
});

t.test(
  "a slow pong or one long overdue drops a carried rate; startup resumes from measurements",
  async (t) => {
    const p = new PathEstimator(0, carried);
    const c = { now: 0, written: 0, value: 0 };
    round(p, c, 0, 50);
    t.ok(p.carrying);
    // The path moves 1 MB/s now: a quarter cap takes seconds to come back.
    const slow = round(p, c, p.cap / 4, 2000);
    t.ok(slow, "the pong answered");
    t.notOk(p.carrying, "dropped at its pong");
    t.equal(p.phase, "startup");
    t.ok(p.rate < 10_000, `only measured rates are left: ${p.rate}`);

    const q = new PathEstimator(0, carried);
    const d = { now: 0, written: 0, value: 0 };
    round(q, d, 0, 50);
    d.written += q.cap / 4;
    q.pingSent(++d.value, d.written, 0, d.now);
    q.overdue(d.now + QUEUE_RTT_FACTOR * 50);
    t.ok(q.carrying, "not overdue yet");
    q.overdue(d.now + QUEUE_RTT_FACTOR * 50 + PIPELINE_MS + 1);
    t.notOk(q.carrying, "dropped before its pong");
    t.equal(q.cap, INITIAL_CAP, "nothing measured: the initial cap");
  },
);

t.test("a carried rate ages out once the session measured enough of its own", async (t) => {
  const p = new PathEstimator(0, carried);
  const c = { now: 0, written: 0, value: 0 };
  round(p, c, 0, 50);
  for (let i = 0; i < 12; i++) full(p, c, 150_000, 50); // the path moves 150 MB/s, a little less
  t.notOk(p.carrying);
  t.ok(Math.abs(p.rate - 150_000) / 150_000 < 0.1, `the measured rate: ${p.rate}`);
});
