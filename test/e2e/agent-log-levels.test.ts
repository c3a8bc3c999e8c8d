// Issue 15: a normal client cancel is not a warning. Callers that close their
// connection — a watch stopped, `logs -f` stopped, a request given up by its
// timeout, an exec that ends — leave the agent's log without a warn line (the
// closes are logged at debug), while an apiserver the agent cannot reach
// still gives one. The agent is a real TetherAgent whose log the test reads.
import { appendFile } from "node:fs/promises";
import { join } from "node:path";
import { inClusterTarget, TetherAgent } from "@tether/agent";
import t from "tap";
import { freePort, startClusters } from "../kube/index.js";
import { bindTetherAdmins, prepareMember, startTether, TEST_TUNNEL, until } from "./fixture.js";

interface Line {
  level: "debug" | "info" | "warn";
  obj: object;
  msg: string;
}

function capturingLog() {
  const lines: Line[] = [];
  const at = (level: Line["level"]) => (obj: object, msg: string) => lines.push({ level, obj, msg });
  return { lines, log: { debug: at("debug"), info: at("info"), warn: at("warn") } };
}

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;
const tether = await startTether();
t.teardown(() => tether.stop());
await bindTetherAdmins(member);
await member.createPod("default", "box");

async function agentFor(name: string, target: ReturnType<typeof inClusterTarget>) {
  await tether.registerCluster(name);
  const uid = (await tether.store.getCluster(name))!.uid;
  const cert = await tether.ca.issueClusterCertificate(name, { incarnation: uid });
  await tether.store.recordIssued(cert.serial, name, cert.notAfter.toISOString());
  const { lines, log } = capturingLog();
  const agent = new TetherAgent({
    server: tether.server.url,
    caPem: tether.ca.certPem,
    certPem: cert.certPem,
    keyPem: cert.keyPem!,
    target,
    tunnel: TEST_TUNNEL,
    backoff: { baseMs: 100, capMs: 1_000 },
    log,
  });
  agent.start();
  t.teardown(() => agent.stop());
  await agent.whenConnected();
  return { agent, lines };
}

const saDir = join(tether.dir, "sa");
const env = await prepareMember(member, saDir);

t.test("callers that go away leave no warning", async (t) => {
  const { agent, lines } = await agentFor("m1", inClusterTarget(env, saDir));
  const kubeconfig = await tether.userKubeconfig("m1", "alice", ["admins"]);
  const serverStreams = () => tether.server.sessions.get("m1")?.session.streamCount ?? -1;
  const idle = () => serverStreams() === 0 && agent.session?.streamCount === 0;
  // The version probe at connect holds a stream for a moment.
  await until("no stream open", idle);

  // One request each (no list first, whose kept-alive stream would stay in the server's pool).
  const WATCH = ["get", "--raw", "/api/v1/namespaces/default/configmaps?watch=1"];
  for (let i = 0; i < 3; i++) {
    const watch = member.spawnKubectl(WATCH, { kubeconfig });
    await until("the watch holds a stream", () => serverStreams() >= 1);
    await watch.stop();
    await until("the watch's stream is gone", idle);
  }
  const file = member.logFile("default", "box", "main");
  await appendFile(file, "line\n");
  const logs = member.spawnKubectl(["logs", "-f", "box"], { kubeconfig });
  await logs.waitFor(/line/);
  await logs.stop();
  await until("the log stream is gone", idle);
  const exec = await member.kubectl(["exec", "box", "--", "sh", "-c", "echo hi"], { kubeconfig });
  t.equal(exec.code, 0, exec.stderr);
  // A watch that kubectl gives up on by its own timeout.
  const timedOut = await member.kubectl([...WATCH, "--request-timeout=1s"], { kubeconfig });
  t.not(timedOut.code, null);
  await until("every stream is gone", idle);

  const warnings = lines.filter((l) => l.level === "warn");
  t.same(
    warnings.map((l) => `${l.msg} ${JSON.stringify(l.obj)}`),
    [],
    "no warn line for callers that went away",
  );
  const closes = lines.filter((l) => l.level === "debug" && /stream ended/.test(l.msg));
  t.ok(closes.length >= 3, `the closes are logged at debug (${closes.length} lines)`);
  t.ok(
    // A reset the agent's stream sees (raw HTTP/1.1 streams), or the close a structured one reports.
    closes.some((l) => /reset by peer: CANCEL|cancelled the stream/.test(JSON.stringify(l.obj))),
    "among them the peer's CANCEL resets",
  );
});

t.test("an apiserver the agent cannot reach is a warning", async (t) => {
  const port = await freePort();
  const nowhere = inClusterTarget(
    { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: String(port) },
    saDir,
  );
  const { lines } = await agentFor("m-down", nowhere);
  const kubeconfig = await tether.userKubeconfig("m-down", "alice", ["admins"]);
  const r = await member.kubectl(["get", "--raw", "/api"], { kubeconfig });
  t.not(r.code, 0, "the request fails");
  await until("the agent warned", () => lines.some((l) => l.level === "warn"));
  const warning = lines.find((l) => l.level === "warn")!;
  t.equal(warning.msg, "forwarding error");
  t.match(JSON.stringify(warning.obj), /ECONNREFUSED/, "it says why");
});
