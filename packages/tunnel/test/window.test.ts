import fc from "fast-check";
import t from "tap";
import { INITIAL_WINDOW } from "../src/frame.js";
import { ReceiveWindow } from "../src/window.js";
import { WindowBudget } from "../src/window-budget.js";

const MAX = 16 * 1024 * 1024;
const unlimited = () => new WindowBudget(Number.MAX_SAFE_INTEGER);

t.test("accounting never goes negative and a stalled reader pins at most the window", async (t) => {
  const op = fc.oneof(
    fc.record({ kind: fc.constant("receive" as const), n: fc.integer({ min: 0, max: 300_000 }) }),
    fc.record({
      kind: fc.constant("consume" as const),
      fraction: fc.double({ min: 0, max: 1, noNaN: true }),
    }),
    fc.record({ kind: fc.constant("wait" as const), ms: fc.integer({ min: 0, max: 100 }) }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 200 }), fc.integer({ min: 0, max: 60 }), (ops, rtt) => {
      const w = new ReceiveWindow(MAX, 0, INITIAL_WINDOW, unlimited());
      let now = 0;
      let peerCredit = INITIAL_WINDOW; // what the sender believes it may send
      for (const o of ops) {
        if (o.kind === "wait") now += o.ms;
        else if (o.kind === "receive") {
          const n = Math.min(o.n, peerCredit); // an honest sender
          if (!w.receive(n)) throw new Error("an honest sender was refused");
          peerCredit -= n;
          if (o.n > n && o.n - n > w.credit && w.receive(o.n - n)) throw new Error("overrun accepted");
        } else {
          const n = Math.floor(w.buffered * o.fraction);
          peerCredit += w.consume(n, now, rtt);
        }
        if (w.credit < 0 || w.buffered < 0 || w.pending < 0) throw new Error("negative");
        if (w.credit + w.buffered + w.pending !== w.size) throw new Error("credit leaked");
        if (peerCredit !== w.credit) throw new Error("sender and receiver disagree");
        if (w.buffered > w.size || w.size > MAX) throw new Error("over the window");
      }
    }),
    { numRuns: 500 },
  );
  t.pass();
});

t.test("credit goes back once a quarter of the window is consumed", async (t) => {
  const w = new ReceiveWindow(MAX, 0, INITIAL_WINDOW, unlimited());
  t.ok(w.receive(INITIAL_WINDOW));
  t.notOk(w.receive(1), "no credit left");
  t.equal(w.consume(INITIAL_WINDOW / 4 - 1, 1000, 10), 0, "not worth a frame yet");
  t.equal(w.consume(1, 1000, 10), INITIAL_WINDOW / 4, "a quarter window returned");
  t.equal(w.size, INITIAL_WINDOW, "a reader slower than a window per 4 RTTs: no growth");
});

t.test("the window doubles while a fast reader drains it within an RTT, up to the cap", async (t) => {
  const w = new ReceiveWindow(1024 * 1024, 0, INITIAL_WINDOW, unlimited());
  const sizes: number[] = [];
  for (let i = 0; i < 6; i++) {
    w.receive(w.credit);
    w.consume(w.buffered, 1, 50); // one ms for a whole window, RTT 50 ms
    sizes.push(w.size);
  }
  t.same(sizes, [512 * 1024, 1024 * 1024, 1024 * 1024, 1024 * 1024, 1024 * 1024, 1024 * 1024]);
  t.equal(w.credit, w.size, "all credit handed back");
});

t.test("a window can start at what the session learned, within the cap and the budget", async (t) => {
  t.equal(new ReceiveWindow(MAX, 0, 4 * 1024 * 1024, unlimited()).size, 4 * 1024 * 1024);
  t.equal(new ReceiveWindow(MAX, 0, 64 * 1024 * 1024, unlimited()).size, MAX);
  t.equal(new ReceiveWindow(MAX, 0, 1, unlimited()).size, INITIAL_WINDOW);
  const budget = new WindowBudget(1024 * 1024);
  t.equal(new ReceiveWindow(MAX, 0, MAX, budget).size, INITIAL_WINDOW + 1024 * 1024, "what the budget had");
  t.equal(
    new ReceiveWindow(MAX, 0, MAX, budget).size,
    INITIAL_WINDOW,
    "a spent budget: the protocol minimum",
  );
});

t.test("windows sharing a budget never claim more than it, and give it all back", async (t) => {
  const LIMIT = 3 * 1024 * 1024;
  const op = fc.record({
    stream: fc.nat(5),
    kind: fc.constantFrom("fill" as const, "drain" as const, "end" as const, "wait" as const),
  });
  fc.assert(
    fc.property(fc.array(op, { maxLength: 300 }), fc.integer({ min: 1, max: 50 }), (ops, rtt) => {
      const budget = new WindowBudget(LIMIT);
      const start = () => new ReceiveWindow(4 * 1024 * 1024, 0, 2 * 1024 * 1024, budget);
      const windows = Array.from({ length: 6 }, start);
      let now = 0;
      for (const o of ops) {
        const w = windows[o.stream]!;
        if (o.kind === "wait") now += rtt;
        else if (o.kind === "fill") w.receive(w.credit);
        else if (o.kind === "drain")
          w.consume(w.buffered, now, rtt); // fast reader: grows when it can
        else {
          w.release();
          windows[o.stream] = start();
        }
        const above = windows.reduce((sum, x) => sum + (x.size - INITIAL_WINDOW), 0);
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
  const w = new ReceiveWindow(MAX, 0, INITIAL_WINDOW, budget);
  for (let i = 0; i < 5; i++) {
    w.receive(w.credit);
    w.consume(w.buffered, 1, 50);
  }
  t.equal(w.size, INITIAL_WINDOW + budget.limit, "grew by exactly the budget");
  t.equal(w.credit, w.size, "and handed all of it to the peer");
  w.release();
  t.equal(budget.claimed, 0);
});
