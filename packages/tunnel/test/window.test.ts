import fc from "fast-check";
import t from "tap";
import { INITIAL_WINDOW } from "../src/frame.js";
import { ReceiveWindow } from "../src/window.js";

const MAX = 16 * 1024 * 1024;

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
      const w = new ReceiveWindow(MAX, 0);
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
  const w = new ReceiveWindow(MAX, 0);
  t.ok(w.receive(INITIAL_WINDOW));
  t.notOk(w.receive(1), "no credit left");
  t.equal(w.consume(INITIAL_WINDOW / 4 - 1, 1000, 10), 0, "not worth a frame yet");
  t.equal(w.consume(1, 1000, 10), INITIAL_WINDOW / 4, "a quarter window returned");
  t.equal(w.size, INITIAL_WINDOW, "a reader slower than a window per 4 RTTs: no growth");
});

t.test("the window doubles while a fast reader drains it within an RTT, up to the cap", async (t) => {
  const w = new ReceiveWindow(1024 * 1024, 0);
  const sizes: number[] = [];
  for (let i = 0; i < 6; i++) {
    w.receive(w.credit);
    w.consume(w.buffered, 1, 50); // one ms for a whole window, RTT 50 ms
    sizes.push(w.size);
  }
  t.same(sizes, [512 * 1024, 1024 * 1024, 1024 * 1024, 1024 * 1024, 1024 * 1024, 1024 * 1024]);
  t.equal(w.credit, w.size, "all credit handed back");
});

t.test("a window can start at what the session learned, within the cap", async (t) => {
  t.equal(new ReceiveWindow(MAX, 0, 4 * 1024 * 1024).size, 4 * 1024 * 1024);
  t.equal(new ReceiveWindow(MAX, 0, 64 * 1024 * 1024).size, MAX);
  t.equal(new ReceiveWindow(MAX, 0, 1).size, INITIAL_WINDOW);
});
