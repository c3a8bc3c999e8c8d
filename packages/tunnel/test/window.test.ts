import fc from "fast-check";
import t from "tap";
import { INITIAL_WINDOW } from "../src/frame.js";
import { ReceiveWindow, WINDOW_FLOOR } from "../src/window.js";
import { WindowBudget } from "../src/window-budget.js";

const MAX = 16 * 1024 * 1024;
const KiB = 1024;
const unlimited = () => new WindowBudget(Number.MAX_SAFE_INTEGER);

t.test("accounting never goes negative and a stalled reader pins at most the window", async (t) => {
  const op = fc.oneof(
    fc.record({ kind: fc.constant("receive" as const), n: fc.integer({ min: 0, max: 300_000 }) }),
    fc.record({
      kind: fc.constant("consume" as const),
      fraction: fc.double({ min: 0, max: 1, noNaN: true }),
    }),
    fc.record({
      kind: fc.constant("round" as const),
      elapsed: fc.integer({ min: 1, max: 200 }),
      minRtt: fc.integer({ min: 1, max: 200 }),
      fast: fc.boolean(),
    }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
      const w = new ReceiveWindow(MAX, INITIAL_WINDOW, unlimited());
      let peerCredit = INITIAL_WINDOW; // what the sender believes it may send
      for (const o of ops) {
        if (o.kind === "round") peerCredit += w.endRound(Math.max(o.elapsed, o.minRtt), o.minRtt, o.fast);
        else if (o.kind === "receive") {
          const n = Math.min(o.n, peerCredit); // an honest sender
          if (!w.receive(n)) throw new Error("an honest sender was refused");
          peerCredit -= n;
          if (o.n > n && o.n - n > w.credit && w.receive(o.n - n)) throw new Error("overrun accepted");
        } else {
          const n = Math.floor(w.buffered * o.fraction);
          peerCredit += w.consume(n);
        }
        if (w.credit < 0 || w.buffered < 0 || w.pending < 0) throw new Error("negative");
        if (w.credit + w.buffered + w.pending !== w.size) throw new Error("credit leaked");
        if (peerCredit !== w.credit) throw new Error("sender and receiver disagree");
        if (w.buffered > w.size || w.size > MAX) throw new Error("over the window");
        if (w.size < WINDOW_FLOOR) throw new Error(`shrank to ${w.size}`);
      }
    }),
    { numRuns: 500 },
  );
  t.pass();
});

t.test("credit goes back once a quarter of the window is consumed", async (t) => {
  const w = new ReceiveWindow(MAX, INITIAL_WINDOW, unlimited());
  t.ok(w.receive(INITIAL_WINDOW));
  t.notOk(w.receive(1), "no credit left");
  t.equal(w.consume(INITIAL_WINDOW / 4 - 1), 0, "not worth a frame yet");
  t.equal(w.consume(1), INITIAL_WINDOW / 4, "a quarter window returned");
  t.equal(w.size, INITIAL_WINDOW, "consuming alone never grows the window");
});

/** A round in which the window was the limit: a whole window arrived in `elapsed` ms. */
function fullRound(w: ReceiveWindow, elapsed: number, minRtt: number, fast = false): number {
  w.receive(w.credit);
  w.consume(w.buffered);
  return w.endRound(elapsed, minRtt, fast);
}

t.test(
  "a window that limits a round at the min RTT doubles (x4 while the rate grows), up to max",
  async (t) => {
    const w = new ReceiveWindow(4 * 1024 * KiB, INITIAL_WINDOW, unlimited());
    const sizes: number[] = [];
    for (let i = 0; i < 5; i++) {
      const growth = fullRound(w, 50, 50);
      sizes.push(w.size);
      t.equal(w.credit, w.size, "growth is granted at once");
      t.ok(growth >= 0);
    }
    t.same(sizes, [512 * KiB, 1024 * KiB, 2048 * KiB, 4096 * KiB, 4096 * KiB]);
    const fast = new ReceiveWindow(MAX, INITIAL_WINDOW, unlimited());
    fullRound(fast, 50, 50, true);
    t.equal(fast.size, 1024 * KiB, "x4 in startup");
  },
);

t.test("a queue does not inflate the window: a round twice the min RTT gives no growth", async (t) => {
  const w = new ReceiveWindow(MAX, INITIAL_WINDOW, unlimited());
  for (let i = 0; i < 10; i++) fullRound(w, 100, 50);
  t.equal(w.size, INITIAL_WINDOW, "a whole window per 2 min RTTs: the window is not the limit");
  // The old rule would have doubled here: drained in well under 4 RTTs as the (queue-inflated) RTT saw it.
});

/** A round in which `n` bytes arrived and were read. */
function lightRound(w: ReceiveWindow, n: number): number {
  w.receive(n);
  const credit = w.consume(n);
  w.endRound(50, 50, false);
  return credit;
}

t.test("a window used under a quarter for three rounds shrinks by withholding credit", async (t) => {
  const w = new ReceiveWindow(MAX, 2048 * KiB, unlimited());
  lightRound(w, 16 * KiB);
  lightRound(w, 16 * KiB);
  t.equal(w.size, 2048 * KiB, "two low rounds: no change yet");
  let returned = 0;
  let consumed = 32 * KiB;
  let last = w.size;
  for (let i = 0; i < 400; i++) {
    returned += lightRound(w, 16 * KiB);
    consumed += 16 * KiB;
    if (w.size > last) throw new Error("grew while lightly used");
    last = w.size;
    if (w.credit + w.buffered + w.pending !== w.size) throw new Error("credit lost");
  }
  t.equal(w.size, WINDOW_FLOOR, "down to the floor, never below");
  t.ok(returned < consumed, `credit returned ${returned} < consumed ${consumed}: shrunk by withholding`);
});

t.test("a shrunken window regrows when the window limits again", async (t) => {
  const w = new ReceiveWindow(MAX, INITIAL_WINDOW, unlimited());
  for (let i = 0; i < 400; i++) lightRound(w, 8 * KiB);
  const small = w.size;
  t.ok(small < INITIAL_WINDOW, `shrank to ${small}`);
  fullRound(w, 50, 50);
  t.equal(w.size, small * 2, "doubles from where it is");
});

t.test("a window starts at the session's estimate, within the cap and the budget", async (t) => {
  t.equal(new ReceiveWindow(MAX, 4 * 1024 * KiB, unlimited()).size, 4 * 1024 * KiB);
  t.equal(new ReceiveWindow(MAX, 64 * 1024 * KiB, unlimited()).size, MAX);
  t.equal(new ReceiveWindow(MAX, 1, unlimited()).size, INITIAL_WINDOW);
  const budget = new WindowBudget(1024 * KiB);
  t.equal(new ReceiveWindow(MAX, MAX, budget).size, INITIAL_WINDOW + 1024 * KiB, "what the budget had");
  t.equal(new ReceiveWindow(MAX, MAX, budget).size, INITIAL_WINDOW, "a spent budget: the protocol minimum");
});

t.test("windows sharing a budget never claim more than it, and give it all back", async (t) => {
  const LIMIT = 3 * 1024 * KiB;
  const op = fc.record({
    stream: fc.nat(5),
    kind: fc.constantFrom(
      "fill" as const,
      "drain" as const,
      "end" as const,
      "round" as const,
      "trickle" as const,
    ),
  });
  fc.assert(
    fc.property(fc.array(op, { maxLength: 300 }), fc.integer({ min: 1, max: 50 }), (ops, rtt) => {
      const budget = new WindowBudget(LIMIT);
      const start = () => new ReceiveWindow(4 * 1024 * KiB, 2 * 1024 * KiB, budget);
      const windows = Array.from({ length: 6 }, start);
      for (const o of ops) {
        const w = windows[o.stream]!;
        if (o.kind === "round") w.endRound(rtt, rtt, o.stream % 2 === 0);
        else if (o.kind === "fill") w.receive(w.credit);
        else if (o.kind === "drain") w.consume(w.buffered);
        else if (o.kind === "trickle") {
          w.receive(Math.min(w.credit, 1000));
          w.consume(w.buffered);
        } else {
          w.release();
          windows[o.stream] = start();
        }
        const above = windows.reduce((sum, x) => sum + Math.max(0, x.size - INITIAL_WINDOW), 0);
        if (above !== budget.claimed) throw new Error(`budget says ${budget.claimed}, windows hold ${above}`);
        if (budget.claimed > LIMIT) throw new Error(`claimed ${budget.claimed} > ${LIMIT}`);
        for (const x of windows) if (x.buffered + x.credit > x.size) throw new Error("over the window");
      }
      for (const w of windows) w.release();
      if (budget.claimed !== 0) throw new Error(`${budget.claimed} bytes never given back`);
    }),
    { numRuns: 300 },
  );
  t.pass();
});

t.test("growth stops where the budget ends", async (t) => {
  const budget = new WindowBudget(INITIAL_WINDOW + INITIAL_WINDOW / 2);
  const w = new ReceiveWindow(MAX, INITIAL_WINDOW, budget);
  for (let i = 0; i < 5; i++) fullRound(w, 50, 50);
  t.equal(w.size, INITIAL_WINDOW + budget.limit, "grew by exactly the budget");
  t.equal(w.credit, w.size, "and handed all of it to the peer");
  w.release();
  t.equal(budget.claimed, 0);
});

t.test("a window that grew keeps growing while its sender follows a round trip late", async (t) => {
  const w = new ReceiveWindow(MAX, INITIAL_WINDOW, unlimited());
  fullRound(w, 50, 50, true);
  t.equal(w.size, 1024 * KiB, "x4 in startup");
  // The grant reaches the sender half a round trip later: this round still shows the old window at work.
  w.receive(INITIAL_WINDOW);
  w.consume(INITIAL_WINDOW);
  w.endRound(50, 50, true);
  t.equal(w.size, 4096 * KiB, "filled the size it had: grows again from what it has become");
  // A reader that then slows down stops the growth.
  w.receive(256 * KiB);
  w.consume(256 * KiB);
  w.endRound(50, 50, true);
  t.equal(w.size, 4096 * KiB, "under half of the size it was judged by: no growth");
});
