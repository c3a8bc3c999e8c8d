// The per-cluster records behind the status page's "last error" stay bounded:
// a cap on clusters (the least recently touched go first) and on message length.
import t from "tap";
import { ClusterEvents } from "../../src/observe/cluster-events.js";

t.test("at most maxClusters records, the least recently touched forgotten first", async (t) => {
  const events = new ClusterEvents(3);
  for (const c of ["a", "b", "c"]) events.error(c, `${c} failed`);
  events.disconnected("a"); // a is now the most recent
  events.error("d", "d failed");
  t.notOk(events.get("b"), "b, the least recently touched, is gone");
  t.same(
    ["a", "c", "d"].map((c) => events.get(c)?.lastError?.message),
    ["a failed", "c failed", "d failed"],
  );
  t.ok(events.get("a")?.disconnectedAt instanceof Date);
  events.forget("a");
  t.notOk(events.get("a"));
});

t.test("a long message is cut", async (t) => {
  const events = new ClusterEvents();
  events.error("a", "x".repeat(100_000));
  t.ok(events.get("a")!.lastError!.message.length <= 241);
});
