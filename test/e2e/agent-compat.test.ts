// Issue 12, must show: fleets upgrade the server first, so an agent of the
// previous version keeps working with today's server. The agent here is
// tether-agent built from commit 9e5b05b (test/fixtures/agent-9e5b05b, a
// committed bundle: CI clones may be shallow): it joins with a one-time
// token, serves kubectl through /clusters/<name>/, renews its certificate
// over the tunnel, and comes back from its saved identity after a restart.
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { issueToken } from "@tether/server";
import t from "tap";
import { startClusters } from "../kube/index.js";
import { ManagedProcess } from "../kube/processes.js";
import { bindTetherAdmins, prepareMember, startTether, until } from "./fixture.js";
import { FAST_TIMING } from "./tether-processes.js";

const COMMIT = "9e5b05b";
const fixture = join(dirname(fileURLToPath(import.meta.url)), "..", "fixtures", `agent-${COMMIT}`);
const OLD_AGENT = join(fixture, "bundle", "tether-agent.mjs");
if (!existsSync(OLD_AGENT)) {
  // Never a silent pass: without the old agent this test proves nothing.
  throw new Error(
    `${OLD_AGENT} is missing: rebuild it with node test/fixtures/agent-${COMMIT}/build.mjs (needs commit ${COMMIT}: git fetch --unshallow)`,
  );
}
const built = JSON.parse(await readFile(join(fixture, "package.json"), "utf8")) as {
  version: string;
  commit: string;
};
t.match(built.commit, new RegExp(`^${COMMIT}`), `the fixture is the agent of ${COMMIT}`);

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;
// Certificates live 8 s, so the old agent renews within seconds.
const tether = await startTether({ clusterCertTtlMs: 8_000 });
t.teardown(() => tether.stop());
await bindTetherAdmins(member);
const saDir = join(tether.dir, "sa");
const env = await prepareMember(member, saDir);

let count = 0;
function oldAgent(args: string[]): ManagedProcess {
  count++;
  return new ManagedProcess(
    `agent-${COMMIT}-${count}`,
    process.execPath,
    [
      OLD_AGENT,
      "--server",
      tether.server.url,
      "--service-account-dir",
      saDir,
      "--keepalive",
      String(FAST_TIMING.keepaliveSeconds),
      "--dead-peer-timeout",
      String(FAST_TIMING.deadPeerTimeoutSeconds),
      ...args,
    ],
    join(tether.dir, `agent-${COMMIT}-${count}.log`),
    { ...process.env, ...env },
  );
}

t.test(`an agent built from ${COMMIT} joins today's server and serves kubectl`, async (t) => {
  await tether.registerCluster("old");
  const { token, hash } = issueToken();
  await tether.store.addToken({
    hash,
    kind: "join",
    cluster: "old",
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  const stateDir = join(tether.dir, "old-state");
  const joinArgs = ["--cluster", "old", "--ca-hash", tether.ca.caHash, "--state-dir", stateDir];
  const agent = oldAgent([...joinArgs, "--token", token]);
  t.teardown(() => agent.stop());
  await until("the old agent connects", () => {
    agent.assertRunning();
    return tether.server.sessions.get("old") !== undefined;
  });
  t.equal(tether.server.sessions.get("old")?.agentVersion, built.version, "it says its version");
  t.equal(
    tether.server.sessions.get("old")?.structuredHead,
    false,
    "it announced no structured heads: raw streams",
  );
  const kubeconfig = await tether.userKubeconfig("old", "alice", ["admins"]);
  const listed = await member.kubectl(["get", "namespaces", "-o", "name"], { kubeconfig });
  t.equal(listed.code, 0, listed.stderr);
  t.match(listed.stdout, /namespace\/tether-system/, "kubectl get through the old agent");
  const raw = await member.kubectl(["get", "--raw", "/version"], { kubeconfig });
  t.equal(raw.code, 0, raw.stderr);
  t.match(raw.stdout, /"gitVersion"/, "a GET through /clusters/old/");

  // Today's server probes a silent session with pings: the old agent answers them.
  t.type(await tether.server.sessions.get("old")!.session.ping(), "number", "it answers the server's pings");

  const serial = tether.server.sessions.get("old")!.serial;
  await until("the old agent renews its certificate over the tunnel", () => {
    const entry = tether.server.sessions.get("old");
    return entry !== undefined && entry.serial !== serial;
  });
  t.pass("renewed");
  const after = await member.kubectl(["get", "namespaces", "-o", "name"], { kubeconfig });
  t.equal(after.code, 0, `kubectl after the renewal: ${after.stderr}`);

  await agent.stop();
  await until("the session goes", () => tether.server.sessions.get("old") === undefined);
  const again = oldAgent(["--state-dir", stateDir]);
  t.teardown(() => again.stop());
  await until("the restarted old agent connects with its saved identity", () => {
    again.assertRunning();
    return tether.server.sessions.get("old") !== undefined;
  });
  const back = await member.kubectl(["get", "namespaces", "-o", "name"], { kubeconfig });
  t.equal(back.code, 0, back.stderr);
  const log = await readFile(agent.logFile, "utf8");
  t.notMatch(log, token, "the token is never logged");
});
