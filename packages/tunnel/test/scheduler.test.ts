import t from "tap";
import { RoundRobin } from "../src/scheduler.js";

t.test("round-robin takes turns in arrival order and re-queues at the back", async (t) => {
  const rr = new RoundRobin<string>();
  rr.add("a");
  rr.add("b");
  rr.add("a"); // already waiting: keeps its place
  rr.add("c");
  const order: string[] = [];
  for (let i = 0; i < 7; i++) {
    const next = rr.next()!;
    order.push(next);
    if (next !== "c") rr.add(next); // c has nothing more to send
  }
  t.same(order, ["a", "b", "c", "a", "b", "a", "b"]);
  rr.delete("a");
  t.equal(rr.size, 1);
  rr.clear();
  t.equal(rr.next(), undefined);
});
