// Issue 14, reconnect spread: 48 agents (one per cluster, in this process)
// on a server that stops with SIGTERM's drain; a new server takes its port
// at once. The agents dial it at random moments over their reconnect spread
// (3 s), not all within one 100 ms bucket as they did before. The histograms
// (100 ms buckets) of when each agent dialed and of when the server had its
// session (which adds the TLS handshakes of a loaded machine) go to the output.
import { mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { type KubeTarget, TetherAgent } from "@tether/agent";
import { createLogger, FileStore, TetherServer } from "@tether/server";
import t from "tap";
import { TEST_TUNNEL, until } from "./fixture.js";

const AGENTS = 48;
const SPREAD_MS = 3_000;

const dir = await mkdtemp(join(tmpdir(), "tether-spread-"));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const store = await FileStore.open(join(dir, "state"));
const log = createLogger({ level: "silent" });
const start = (port = 0) => TetherServer.start({ store, host: "127.0.0.1", port, log, tunnel: TEST_TUNNEL });
const first = await start();
const port = first.port;
// Nothing is forwarded: the agents only hold sessions.
const target: KubeTarget = {
  url: new URL("https://127.0.0.1:1"),
  tls: {},
  authorization: () => "Bearer unused",
  description: "none",
};
const agents: TetherAgent[] = [];
/** When each agent dialed, by agent. */
const dials: number[][] = [];
t.teardown(() => Promise.all(agents.map((a) => a.stop())));
for (let i = 0; i < AGENTS; i++) {
  const name = `spread-${i}`;
  dials.push([]);
  await store.putCluster({
    name,
    auth: "impersonate",
    labels: {},
    allowedUsers: [],
    allowedGroups: [],
    createdAt: new Date().toISOString(),
  });
  const uid = (await store.getCluster(name))?.uid;
  const cert = await first.ca.issueClusterCertificate(name, uid ? { incarnation: uid } : {});
  await store.recordIssued(cert.serial, name, cert.notAfter.toISOString());
  agents.push(
    new TetherAgent({
      server: first.url,
      caPem: first.ca.certPem,
      certPem: cert.certPem,
      keyPem: cert.keyPem!,
      target,
      tunnel: TEST_TUNNEL,
      reconnectSpreadMs: SPREAD_MS,
      log: {
        debug: (_o, message) => void (message === "dialing" && dials[i]!.push(Date.now())),
        info() {},
        warn() {},
      },
    }),
  );
}
for (const agent of agents) agent.start();
await until("every agent connected", () => first.sessions.list().length === AGENTS);

t.test("after a go-away the agents come back over the spread, not at once", async (t) => {
  const goAwayAt = Date.now();
  const stopping = first.shutdown(5_000, 0);
  // With no delay the listener is closed by now: the new server takes the port before any agent dials.
  const second = await start(port);
  t.teardown(() => second.close());
  await stopping;
  await until("every agent is back", () => second.sessions.list().length === AGENTS, 30_000);
  const histogram = (delays: number[]) => {
    const buckets = new Map<number, number>();
    for (const d of delays) buckets.set(Math.floor(d / 100), (buckets.get(Math.floor(d / 100)) ?? 0) + 1);
    const lines = Array.from(
      { length: Math.max(...buckets.keys()) + 1 },
      (_, b) => `${String(b * 100).padStart(4)} ms: ${"#".repeat(buckets.get(b) ?? 0)}`,
    );
    return { buckets, text: lines.join("\n") };
  };
  const dialed = histogram(dials.map((d) => (d.find((at) => at >= goAwayAt) ?? Number.NaN) - goAwayAt));
  const connected = histogram(second.sessions.list().map((e) => e.connectedAt.getTime() - goAwayAt));
  t.comment(`first dial after the go-away (${AGENTS} agents, spread ${SPREAD_MS} ms):\n${dialed.text}`);
  t.comment(
    `session up at the new server (load ${loadavg()
      .map((l) => l.toFixed(1))
      .join(" ")}):\n${connected.text}`,
  );
  t.ok(
    dials.every((d) => d.some((at) => at >= goAwayAt)),
    "every agent dialed after the go-away",
  );
  const fullest = Math.max(...dialed.buckets.values());
  t.ok(dialed.buckets.size >= 10, `the dials fall in ${dialed.buckets.size} different 100 ms buckets`);
  t.ok(fullest <= AGENTS / 4, `no 100 ms bucket holds more than a quarter of them (the fullest: ${fullest})`);
});
