// A go-away followed at once by close() (a server that drains nothing and
// stops) still reaches the peer: the graceful end sends what was queued.
import t from "tap";
import { pair } from "./lib/pair.js";

t.test("goAway() then close() in the same tick: the peer hears the go-away", async (t) => {
  const link = pair();
  link.server.on("stream", () => {});
  // A stream keeps the go-away from closing the session by itself.
  link.client.open("svc").on("error", () => {});
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  t.equal(link.server.streamCount, 1);
  let heard = false;
  link.client.on("goaway", () => (heard = true));
  const closed = new Promise((r) => link.client.once("close", r));
  link.server.goAway();
  link.server.close();
  await closed;
  t.ok(heard, "the client saw the go-away before the session ended");
});
