// ClusterStatusReporter with a fake clock and a recording writer: writes are
// coalesced per cluster, rate-limited across clusters, connection changes go
// first, heartbeats are periodic, failures are retried, removed clusters are
// dropped.
import t from "tap";
import {
  type AgentState,
  type ClusterStatus,
  ClusterStatusReporter,
} from "../../src/store/cluster-status.js";

function setup(
  options: {
    rate?: number;
    burst?: number;
    heartbeatMs?: number;
    heartbeatRate?: number;
    current?: (cluster: string) => AgentState | undefined;
  } = {},
) {
  let now = 1_000_000;
  const writes: { cluster: string; status: ClusterStatus }[] = [];
  let fail = false;
  let exists = true;
  const reporter = new ClusterStatusReporter(
    async (cluster, status) => {
      if (fail) throw new Error("apiserver down");
      writes.push({ cluster, status });
      return exists;
    },
    {
      autoPump: false,
      now: () => now,
      ratePerSecond: options.rate ?? 10,
      burst: options.burst ?? 5,
      heartbeatMs: options.heartbeatMs ?? 30_000,
      heartbeatRatePerSecond: options.heartbeatRate ?? 100,
      ...(options.current ? { current: options.current } : {}),
    },
  );
  return {
    reporter,
    writes,
    advance: (ms: number) => {
      now += ms;
    },
    setFail: (v: boolean) => {
      fail = v;
    },
    setExists: (v: boolean) => {
      exists = v;
    },
  };
}

const up = (extra: Partial<AgentState> = {}): AgentState => ({
  connected: true,
  endpoint: "https://t/clusters/a",
  rttMs: 1.234,
  kubernetesVersion: "v1.35.4",
  ...extra,
});
const down: AgentState = { connected: false, endpoint: "https://t/clusters/a" };
const cond = (s: ClusterStatus, type: string) => s.conditions.find((c) => c.type === type);

t.test("many reports of one cluster become one write with the latest state", async (t) => {
  const { reporter, writes } = setup();
  for (let i = 0; i < 100; i++) reporter.report("a", up({ rttMs: i }));
  t.equal(await reporter.pump(), 1);
  t.equal(writes.length, 1);
  t.equal(writes[0]!.status.rttMilliseconds, 99, "the latest RTT");
  t.equal(cond(writes[0]!.status, "AgentConnected")?.status, "True");
  t.equal(cond(writes[0]!.status, "Ready")?.status, "True");
  reporter.report("a", up({ rttMs: 5 }));
  t.equal(await reporter.pump(), 0, "an RTT change alone waits for the heartbeat");
});

t.test("the token bucket spreads writes over time", async (t) => {
  const { reporter, writes, advance } = setup({ rate: 10, burst: 5 });
  for (let i = 0; i < 20; i++) reporter.report(`c${i}`, up());
  t.equal(await reporter.pump(), 5, "a burst of 5");
  t.equal(await reporter.pump(), 0, "then nothing until tokens refill");
  advance(500);
  t.equal(await reporter.pump(), 5, "10/s: 5 more after 500 ms");
  advance(10_000);
  t.equal(await reporter.pump(), 5, "never more than the burst at once");
  t.equal(new Set(writes.map((w) => w.cluster)).size, 15, "each cluster written once");
});

t.test("connection changes go before heartbeats", async (t) => {
  const { reporter, writes, advance } = setup({ rate: 1, burst: 2, heartbeatMs: 1_000 });
  reporter.report("a", up());
  reporter.report("b", up());
  await reporter.pump();
  advance(2_000);
  reporter.report("a", up());
  reporter.report("b", up());
  reporter.report("c", up());
  reporter.report("d", down);
  writes.length = 0;
  await reporter.pump();
  t.same(
    writes.map((w) => w.cluster).sort(),
    ["c", "d"],
    "new and changed clusters are written before a and b's heartbeats",
  );
});

t.test("heartbeats, disconnection and transitions", async (t) => {
  const { reporter, writes, advance } = setup({ heartbeatMs: 30_000 });
  reporter.report("a", up());
  await reporter.pump();
  const connectedAt = cond(writes[0]!.status, "AgentConnected")!.lastTransitionTime;
  advance(29_000);
  reporter.report("a", up());
  t.equal(await reporter.pump(), 0, "no write before the heartbeat is due");
  advance(2_000);
  reporter.report("a", up());
  t.equal(await reporter.pump(), 1, "a heartbeat after 30 s");
  t.equal(cond(writes[1]!.status, "AgentConnected")!.lastTransitionTime, connectedAt, "no transition");
  t.not(writes[1]!.status.lastHeartbeatTime, writes[0]!.status.lastHeartbeatTime);
  advance(1_000);
  reporter.report("a", down);
  t.equal(await reporter.pump(), 1, "a disconnection is written at once");
  const last = writes[2]!.status;
  t.equal(cond(last, "AgentConnected")?.status, "False");
  t.equal(cond(last, "Ready")?.status, "False");
  t.not(cond(last, "AgentConnected")!.lastTransitionTime, connectedAt, "a new transition time");
  t.equal(last.rttMilliseconds, null, "the stale RTT is cleared");
  t.equal(last.lastHeartbeatTime, undefined);
  advance(60_000);
  reporter.report("a", down);
  t.equal(await reporter.pump(), 0, "a disconnected cluster has no heartbeat");
});

t.test("heartbeats of an idle fleet share one budget, oldest first", async (t) => {
  const { reporter, writes, advance } = setup({ rate: 20, burst: 20, heartbeatMs: 30_000, heartbeatRate: 1 });
  const fleet = Array.from({ length: 100 }, (_, i) => `c${i}`);
  for (const c of fleet) reporter.report(c, up());
  for (let s = 0; s < 5; s++) {
    await reporter.pump();
    advance(1_000);
  }
  t.equal(writes.length, 100, "first statuses: the 20/s bucket");
  writes.length = 0;
  // Two heartbeat periods of the idle fleet, a pump every second as the session check's reports bring.
  advance(30_000);
  for (let s = 0; s < 60; s++) {
    for (const c of fleet) reporter.report(c, up());
    await reporter.pump();
    advance(1_000);
  }
  t.equal(writes.length, 60, "1 heartbeat/s for 100 clusters, not 100 per 30 s");
  t.equal(new Set(writes.map((w) => w.cluster)).size, 60, "each cluster's turn comes before any second one");
  writes.length = 0;
  await reporter.pump(); // the heartbeat the last second refilled
  reporter.report("c5", down);
  t.equal(await reporter.pump(), 1, "a change does not wait for the heartbeat budget");
  t.equal(writes.at(-1)?.cluster, "c5");
});

t.test("connected but the member API unknown: not Ready", async (t) => {
  const { reporter, writes } = setup();
  reporter.report("a", up({ kubernetesVersion: undefined }));
  await reporter.pump();
  t.equal(cond(writes[0]!.status, "AgentConnected")?.status, "True");
  t.equal(cond(writes[0]!.status, "Ready")?.status, "False");
  t.equal(cond(writes[0]!.status, "Ready")?.reason, "MemberAPIUnknown");
});

t.test("a failed write is retried later; a removed cluster is dropped", async (t) => {
  const { reporter, writes, advance, setFail, setExists } = setup();
  setFail(true);
  reporter.report("a", up());
  await reporter.pump();
  t.equal(writes.length, 0);
  setFail(false);
  t.equal(await reporter.pump(), 0, "not retried at once");
  advance(5_000);
  t.equal(await reporter.pump(), 1, "retried after the back-off");
  setExists(false);
  reporter.report("a", down);
  await reporter.pump();
  advance(60_000);
  reporter.report("a", down);
  t.equal(writes.length, 2);
  reporter.forget("a");
  t.equal(await reporter.pump(), 0);
});

t.test("heartbeats need no reports: each asks for its cluster's state as it is written", async (t) => {
  const asked: string[] = [];
  const { reporter, writes, advance } = setup({
    heartbeatMs: 30_000,
    current: (cluster) => {
      asked.push(cluster);
      return up({ rttMs: 42 });
    },
  });
  reporter.report("a", up());
  reporter.report("b", up());
  await reporter.pump();
  t.same(asked, [], "a change is written as reported");
  advance(31_000);
  t.equal(await reporter.pump(), 1, "a heartbeat (the budget's burst is one), with no report since");
  advance(100);
  t.equal(await reporter.pump(), 1, "and the other's");
  t.same(asked, ["a", "b"], "oldest first");
  t.same(
    writes.slice(2).map((w) => w.status.rttMilliseconds),
    [42, 42],
    "the RTT of now, not of the last report",
  );
  reporter.report("b", down);
  asked.length = 0;
  advance(31_000);
  t.equal(await reporter.pump(), 2, "b's disconnection and a's heartbeat");
  advance(31_000);
  t.equal(await reporter.pump(), 1, "a's heartbeat only: b is disconnected");
  t.same(asked, ["a", "a"]);
});

t.test("a pump of an idle fleet looks at what is due, not at every cluster", async (t) => {
  const asked: string[] = [];
  const { reporter, writes, advance } = setup({
    rate: 1_000_000,
    burst: 10_000,
    heartbeatMs: 30_000,
    heartbeatRate: 1,
    current: (cluster) => {
      asked.push(cluster);
      return up();
    },
  });
  const fleet = Array.from({ length: 10_000 }, (_, i) => `c${i}`);
  for (const c of fleet) reporter.report(c, up());
  t.equal(await reporter.pump(), 10_000);
  advance(10_000);
  t.equal(await reporter.pump(), 0, "nothing due");
  advance(25_000);
  for (let s = 0; s < 5; s++) {
    await reporter.pump();
    advance(1_000);
  }
  t.same(
    asked,
    ["c0", "c1", "c2", "c3", "c4"],
    "one heartbeat a second, oldest first, and only those asked for",
  );
  t.equal(writes.length, 10_005);
  reporter.report("c9999", down);
  t.equal(
    await reporter.pump(),
    2,
    "a change among them goes at once (with the heartbeat the last second refilled)",
  );
  t.same(
    writes.slice(-2).map((w) => w.cluster),
    ["c9999", "c5"],
    "the change first",
  );
});
