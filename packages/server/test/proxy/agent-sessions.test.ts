// AgentSessions: a reconnect replaces the session at once; the replaced one
// drains and is closed after the drain timeout even while it holds streams;
// disconnect closes draining sessions too.
import { Session, type Transport } from "@tether/tunnel";
import t from "tap";
import { connectionOf } from "../../src/observe/status-model.js";
import { AgentSessions } from "../../src/proxy/agent-sessions.js";

/** Two sessions over an in-memory link (messages arrive one macrotask later). */
function link(): { agent: Session; server: Session } {
  const ends: { session?: Session; closed: boolean }[] = [{ closed: false }, { closed: false }];
  const transport = (from: number): Transport => ({
    send(message, done) {
      const copy = Buffer.from(message);
      setImmediate(() => {
        if (!ends[1 - from]!.closed) ends[1 - from]!.session?.receive(copy);
        done();
      });
    },
    close() {
      if (ends[from]!.closed) return;
      ends[from]!.closed = true;
      setImmediate(() => {
        ends[1 - from]!.closed = true;
        ends[1 - from]!.session?.transportClosed();
      });
    },
  });
  const quiet = { keepAliveInterval: 0, deadPeerTimeout: 0 };
  const agent = new Session(transport(0), { ...quiet, role: "client", accept: () => true });
  const server = new Session(transport(1), { ...quiet, role: "server", accept: () => true });
  ends[0]!.session = agent;
  ends[1]!.session = server;
  // Both sides take streams (and hold them: nobody reads or ends them).
  agent.on("stream", () => {});
  server.on("stream", () => {});
  return { agent, server };
}

/** A stream the agent opens and never ends; it fails when its session goes. */
function hold(agent: Session): void {
  const stream = agent.open("tether-renew");
  stream.on("error", () => {});
  stream.write("{");
}

const cert = () => ({
  remoteAddress: "10.0.0.1",
  serial: "01",
  certNotAfter: new Date(Date.now() + 3600_000),
  certIssuedAt: new Date(),
});
const closes = (s: Session) =>
  new Promise<boolean>((resolve) => {
    if (s.closed) return resolve(true);
    const timer = setTimeout(() => resolve(false), 10_000);
    s.once("close", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });

t.test("a replaced session that holds a stream is closed after the drain timeout", async (t) => {
  const sessions = new AgentSessions({ drainTimeoutMs: 200 });
  const first = link();
  const entry = sessions.attach("m1", first.server, cert());
  hold(first.agent); // held open by the agent, never ended
  // Polled, not slept: on a loaded machine the in-memory link takes a while.
  while (first.server.streamCount === 0) await new Promise((r) => setTimeout(r, 10));
  t.equal(first.server.streamCount, 1, "the old session holds a stream");
  const second = link();
  const current = sessions.attach("m1", second.server, cert());
  t.equal(sessions.get("m1"), current, "the new session serves at once");
  t.ok(first.server.goingAway, "the old one was sent go-away");
  t.same(sessions.list(), [entry, current], "both are live while the old one drains");
  t.ok(await closes(first.server), "the old session is closed although its stream never ended");
  t.same(sessions.list(), [current]);
  second.server.close();
});

t.test("without a stream, a replaced session closes as soon as it has drained", async (t) => {
  const sessions = new AgentSessions({ drainTimeoutMs: 3600_000 });
  const first = link();
  sessions.attach("m1", first.server, cert());
  const second = link();
  sessions.attach("m1", second.server, cert());
  t.ok(await closes(first.server));
  second.server.close();
});

t.test("disconnect closes the cluster's draining sessions too, and only that cluster's", async (t) => {
  const sessions = new AgentSessions({ drainTimeoutMs: 3600_000 });
  const a = link();
  sessions.attach("m1", a.server, cert());
  hold(a.agent);
  while (a.server.streamCount === 0) await new Promise((r) => setTimeout(r, 10));
  const b = link();
  sessions.attach("m1", b.server, cert());
  const other = link();
  sessions.attach("m2", other.server, cert());
  t.equal(sessions.list().length, 3);
  sessions.disconnect("m1");
  t.ok(await closes(a.server), "the draining one");
  t.ok(await closes(b.server), "the current one");
  t.notOk(other.server.closed, "m2 keeps its session");
  t.equal(sessions.get("m2")?.session, other.server);
  sessions.closeAll();
  t.ok(await closes(other.server));
});

t.test(
  "agents of different instances are kept side by side; new streams go to the least loaded",
  async (t) => {
    const sessions = new AgentSessions({ drainTimeoutMs: 3600_000 });
    const a = link();
    const b = link();
    const first = sessions.attach("m1", a.server, { ...cert(), instance: "a" });
    const second = sessions.attach("m1", b.server, { ...cert(), instance: "b" });
    t.notOk(a.server.goingAway, "the first agent's session is not replaced by another instance's");
    t.same(sessions.usable("m1"), [first, second]);
    t.equal(connectionOf(sessions.usable("m1")).agents, 2, "the status counts both agents");
    const picks = new Set([sessions.get("m1"), sessions.get("m1")]);
    t.equal(picks.size, 2, "equally loaded sessions take turns");
    hold(a.agent);
    await new Promise((r) => setTimeout(r, 50));
    t.equal(sessions.get("m1"), second, "the session with fewer streams is chosen");
    t.equal(sessions.get("m1"), second, "and again");
    a.server.close();
    await closes(a.server);
    t.same(sessions.usable("m1"), [second], "losing one agent leaves the other serving");
    t.equal(sessions.get("m1"), second);
    b.server.close();
  },
);

t.test("the same instance replaces its session; beyond the bound the oldest drains", async (t) => {
  const sessions = new AgentSessions({ drainTimeoutMs: 3600_000, maxPerCluster: 2 });
  const a1 = link();
  sessions.attach("m1", a1.server, { ...cert(), instance: "a" });
  const a2 = link();
  const again = sessions.attach("m1", a2.server, { ...cert(), instance: "a" });
  t.ok(a1.server.goingAway, "a reconnect of the same instance drains its old session");
  t.same(sessions.usable("m1"), [again]);
  const b = link();
  const c = link();
  const fromB = sessions.attach("m1", b.server, { ...cert(), instance: "b" });
  const fromC = sessions.attach("m1", c.server, { ...cert(), instance: "c" });
  t.ok(a2.server.goingAway, "a third instance beyond the bound of 2 drains the oldest");
  t.same(sessions.usable("m1"), [fromB, fromC]);
  t.ok(await closes(a2.server), "the drained session closes (it held nothing)");
  for (const l of [b, c]) l.server.close();
});
