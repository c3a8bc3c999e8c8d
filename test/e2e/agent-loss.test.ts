// Issue 4, must show: an agent that dies silently (frozen with SIGSTOP: no
// FIN, no close frame, like a dropped NAT mapping) turns requests into 503
// within the keepalive timeout; when it comes back — thawed, or restarted —
// requests work again without restarting the server, and no stream is left
// open. The agent runs as a real process from its built bin, in-cluster mode.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
import { startClusters } from "../kube/index.js";
import { bindTetherAdmins, prepareMember, startTether, until } from "./fixture.js";
import { FAST_TIMING, signal, spawnAgent } from "./tether-processes.js";

const set = await startClusters(1);
t.teardown(() => set.stop());
const tether = await startTether();
t.teardown(() => tether.stop());
const member = set.clusters[0]!;

await tether.registerCluster("m1");
await bindTetherAdmins(member);
const saDir = join(tether.dir, "sa");
const env = await prepareMember(member, saDir);
const cert = await tether.ca.issueClusterCertificate("m1");
await tether.store.recordIssued(cert.serial, "m1", cert.notAfter.toISOString());
const files = {
  caFile: join(tether.dir, "agent-ca.crt"),
  certFile: join(tether.dir, "agent.crt"),
  keyFile: join(tether.dir, "agent.key"),
};
await writeFile(files.caFile, tether.ca.certPem);
await writeFile(files.certFile, cert.certPem);
await writeFile(files.keyFile, cert.keyPem!, { mode: 0o600 });
const kubeconfig = await tether.userKubeconfig("m1", "alice", ["admins"]);

const startAgent = (n: number) =>
  spawnAgent({
    server: tether.server.url,
    ...files,
    env,
    serviceAccountDir: saDir,
    logFile: join(tether.dir, `agent-${n}.log`),
  });

const apiWorks = async () => (await member.kubectl(["get", "--raw", "/api"], { kubeconfig })).code === 0;
const unavailable = async () =>
  /no connected Tether agent/.test((await member.kubectl(["get", "--raw", "/api"], { kubeconfig })).stderr);
const serverStreams = () => tether.server.sessions.get("m1")?.session.streamCount;

t.test("a frozen agent is declared dead, then recovers when thawed", async (t) => {
  const agent = startAgent(1);
  t.teardown(() => agent.stop());
  await until("agent connects", apiWorks);
  const watch = member.spawnKubectl(["get", "configmaps", "-w"], { kubeconfig });
  t.teardown(() => watch.stop());
  await until("the watch holds a stream", () => (serverStreams() ?? 0) >= 1);

  signal(agent, "SIGSTOP");
  const dead = await until("requests turn into 503", unavailable);
  t.comment(
    `503 after ${dead} ms (keepalive ${FAST_TIMING.keepaliveSeconds}s, dead-peer timeout ${FAST_TIMING.deadPeerTimeoutSeconds}s)`,
  );
  t.equal(tether.server.sessions.get("m1"), undefined, "the server dropped the dead session");
  const ended = await Promise.race([
    watch.exited.then(() => "ended"),
    new Promise((r) => setTimeout(() => r("still hanging"), 30_000)),
  ]);
  t.equal(ended, "ended", "the watch through the dead agent ended instead of hanging");

  signal(agent, "SIGCONT");
  const back = await until("requests work again", apiWorks);
  t.comment(`working again ${back} ms after SIGCONT`);
  t.ok(agent.running, "the same agent process reconnected");
});

t.test("a killed agent that restarts serves again, without a server restart", async (t) => {
  const first = startAgent(2);
  await until("agent connects", apiWorks);
  signal(first, "SIGKILL");
  await first.exited;
  await until("requests turn into 503", unavailable);
  const second = startAgent(3);
  t.teardown(() => second.stop());
  await until("requests work again", apiWorks);
  const listed = await member.kubectl(["get", "namespaces", "-o", "name"], { kubeconfig });
  t.match(listed.stdout, /namespace\/kube-system/);

  // Only idle pooled connections may remain; with the pool closed, nothing is open.
  const entry = tether.server.sessions.get("m1")!;
  entry.httpAgent("impersonate").destroy();
  await until("no stream left open on the server", () => entry.session.streamCount === 0);
  t.equal(entry.session.streamCount, 0);
});
