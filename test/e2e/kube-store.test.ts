// Issue 6: tether-server on the Kubernetes store (--store kubernetes) against
// a real host cluster from the harness, with a real agent in front of a real
// member. `cluster add` creates the Cluster object; its status follows the
// agent (AgentConnected True within seconds of connecting, False within the
// dead-peer timeout after the agent dies); a restarted server keeps clusters,
// CA and agent certificates; list and remove behave as on the file store;
// one join token consumed by two stores at once has exactly one winner.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createLogger, hashToken, issueToken, KubeStore, runCliCaptured, TetherServer } from "@tether/server";
import t from "tap";
import { freePort, startClusters } from "../kube/index.js";
import { ManagedProcess } from "../kube/processes.js";
import { bindTetherAdmins, prepareMember, TEST_TUNNEL, until } from "./fixture.js";
import { AGENT_BIN, FAST_TIMING, SERVER_BIN } from "./tether-processes.js";
import { connectAgent, dialAgent, issueAgentCert } from "./tunnel-client.js";

const cli = (...args: string[]) => runCliCaptured(args);

const root = new URL("../../", import.meta.url).pathname;

interface ClusterObject {
  spec: { auth: string };
  metadata: { labels?: Record<string, string> };
  status?: {
    conditions?: { type: string; status: string }[];
    kubernetesVersion?: string;
    endpoint?: string;
    rttMilliseconds?: number;
    agentVersion?: string;
  };
}

t.test("the Kubernetes store", async (t) => {
  const set = await startClusters(2, { names: ["host", "m1"] });
  t.teardown(() => set.stop());
  const [host, member] = set.clusters as [(typeof set.clusters)[0], (typeof set.clusters)[0]];
  const dir = join(set.dir, "tether");
  await mkdir(dir, { recursive: true });

  const crd = await host.kubectl(["apply", "-k", join(root, "deploy/crd")]);
  t.equal(crd.code, 0, crd.stderr);
  await host.kubectl(["wait", "--for", "condition=established", "crd/clusters.tether.io", "--timeout=30s"]);
  await host.api("POST", "/api/v1/namespaces", { metadata: { name: "tether-system" } }, [409]);
  const store = ["--store", "kubernetes", "--kubeconfig", host.kubeconfig];

  const port = await freePort();
  const url = `https://127.0.0.1:${port}`;
  let serverCount = 0;
  const startServer = async () => {
    serverCount++;
    const proc = new ManagedProcess(
      `tether-server-${serverCount}`,
      process.execPath,
      [
        SERVER_BIN,
        "serve",
        ...store,
        "--listen",
        `127.0.0.1:${port}`,
        "--keepalive",
        String(FAST_TIMING.keepaliveSeconds),
        "--dead-peer-timeout",
        String(FAST_TIMING.deadPeerTimeoutSeconds),
        // No balancer to wait for: a stop writes AgentConnected=False within ManagedProcess's 5 s.
        "--shutdown-delay",
        "0",
      ],
      join(dir, `server-${serverCount}.log`),
    );
    t.teardown(() => proc.stop());
    await until("tether-server is listening and has recorded its URL in the host cluster", async () => {
      proc.assertRunning();
      const cm = await host.api<{ data?: { url?: string } }>(
        "GET",
        "/api/v1/namespaces/tether-system/configmaps/tether-server",
        undefined,
        [404],
      );
      const log = await readFile(proc.logFile, "utf8");
      return cm.body.data?.url === url && log.includes("tether-server listening");
    });
    return proc;
  };
  const getCluster = async (name: string) => {
    const r = await host.api<ClusterObject>(
      "GET",
      `/apis/tether.io/v1alpha1/clusters/${name}`,
      undefined,
      [404],
    );
    return r.status === 404 ? undefined : r.body;
  };
  const condition = (c: ClusterObject | undefined, type: string) =>
    c?.status?.conditions?.find((x) => x.type === type)?.status;

  let server = await startServer();

  const added = await cli("cluster", "add", "m1", "--label", "region=eu", "-o", "json", ...store);
  t.equal(added.code, 0, added.stderr);
  const info = JSON.parse(added.stdout) as { token: string; caHash: string; server: string };
  t.equal(info.server, url, "the URL serve recorded in the host cluster");
  const object = await getCluster("m1");
  t.equal(object?.spec.auth, "impersonate", "cluster add created the Cluster object");
  t.equal(object?.metadata.labels?.region, "eu", "with its labels");
  t.equal(
    condition(await getCluster("m1"), "AgentConnected"),
    undefined,
    "no status before the server saw it",
  );

  const saDir = join(dir, "sa");
  const env = await prepareMember(member, saDir);
  await bindTetherAdmins(member);
  let agentCount = 0;
  const startAgent = (extra: NodeJS.ProcessEnv) => {
    agentCount++;
    const proc = new ManagedProcess(
      `agent-${agentCount}`,
      process.execPath,
      [
        AGENT_BIN,
        "--service-account-dir",
        saDir,
        "--state-dir",
        join(dir, "agent-state"),
        "--keepalive",
        String(FAST_TIMING.keepaliveSeconds),
        "--dead-peer-timeout",
        String(FAST_TIMING.deadPeerTimeoutSeconds),
      ],
      join(dir, `agent-${agentCount}.log`),
      { ...process.env, ...env, TETHER_SERVER: url, ...extra },
    );
    t.teardown(() => proc.stop());
    return proc;
  };

  let agent = startAgent({
    TETHER_CLUSTER: "m1",
    TETHER_JOIN_TOKEN: info.token,
    TETHER_CA_HASH: info.caHash,
  });
  const connectedMs = await until("AgentConnected=True", async () => {
    agent.assertRunning();
    return condition(await getCluster("m1"), "AgentConnected") === "True";
  });
  t.comment(`AgentConnected=True ${connectedMs} ms after the agent started`);
  await until("Ready=True", async () => condition(await getCluster("m1"), "Ready") === "True");
  const status = (await getCluster("m1"))?.status;
  const direct = await member.api<{ gitVersion: string }>("GET", "/version");
  t.equal(status?.kubernetesVersion, direct.body.gitVersion, "the member's version, read through the tunnel");
  t.equal(status?.endpoint, `${url}/clusters/m1`);
  t.match(status?.agentVersion, /^\d+\.\d+\.\d+/, "the agent's version");
  t.type(status?.rttMilliseconds, "number", "the tunnel's RTT");

  const kubeconfigFile = join(dir, "alice.kubeconfig");
  const kc = await cli("kubeconfig", "m1", "--user", "alice", "--group", "admins", ...store);
  t.equal(kc.code, 0, kc.stderr);
  await writeFile(kubeconfigFile, kc.stdout, { mode: 0o600 });
  const viaTether = async () =>
    member.kubectl(["get", "namespaces", "-o", "name"], { kubeconfig: kubeconfigFile });
  const first = await viaTether();
  t.equal(first.code, 0, first.stderr);
  t.match(first.stdout, /namespace\/tether-system/, "kubectl through Tether works on the Kubernetes store");

  await t.test("the status turns False when the agent dies", async (t) => {
    const killedAt = Date.now();
    // SIGKILL: no goodbye on the wire, the server must notice by itself.
    process.kill(agent.pid!, "SIGKILL");
    await agent.exited;
    await until(
      "AgentConnected=False",
      async () => condition(await getCluster("m1"), "AgentConnected") === "False",
    );
    t.comment(
      `AgentConnected=False ${Date.now() - killedAt} ms after the agent was killed (dead-peer timeout 2 s)`,
    );
    t.equal(condition(await getCluster("m1"), "Ready"), "False");
    agent = startAgent({});
    await until(
      "AgentConnected=True again",
      async () => condition(await getCluster("m1"), "AgentConnected") === "True",
    );
  });

  await t.test("the status turns False when the agent goes silent (SIGSTOP)", async (t) => {
    const stoppedAt = Date.now();
    process.kill(agent.pid!, "SIGSTOP");
    t.teardown(() => process.kill(agent.pid!, "SIGCONT"));
    await until(
      "AgentConnected=False",
      async () => condition(await getCluster("m1"), "AgentConnected") === "False",
    );
    t.comment(
      `AgentConnected=False ${Date.now() - stoppedAt} ms after the agent froze ` +
        `(keepalive ${FAST_TIMING.keepaliveSeconds} s, dead-peer timeout ${FAST_TIMING.deadPeerTimeoutSeconds} s)`,
    );
    t.equal(condition(await getCluster("m1"), "Ready"), "False");
    process.kill(agent.pid!, "SIGCONT");
    await until(
      "AgentConnected=True after SIGCONT",
      async () => condition(await getCluster("m1"), "AgentConnected") === "True",
    );
  });

  await t.test("a restarted server keeps clusters, CA and agent certificates", async (t) => {
    const listBefore = await cli("cluster", "list", "-o", "json", ...store);
    const caBefore = await host.api<{ data: Record<string, string> }>(
      "GET",
      "/api/v1/namespaces/tether-system/secrets/tether-ca",
    );
    await server.stop();
    await until("AgentConnected=False while the server is away", async () => {
      return condition(await getCluster("m1"), "AgentConnected") === "False";
    });
    server = await startServer();
    await until("the agent reconnects with its certificate", async () => {
      agent.assertRunning();
      return condition(await getCluster("m1"), "AgentConnected") === "True";
    });
    const caAfter = await host.api<{ data: Record<string, string> }>(
      "GET",
      "/api/v1/namespaces/tether-system/secrets/tether-ca",
    );
    t.same(caAfter.body.data, caBefore.body.data, "the same CA");
    t.same(
      JSON.parse((await cli("cluster", "list", "-o", "json", ...store)).stdout),
      JSON.parse(listBefore.stdout),
    );
    const again = await viaTether();
    t.equal(again.code, 0, again.stderr);
    t.notMatch(
      await readFile(agent.logFile, "utf8"),
      /joined/,
      "no new join: the agent kept its certificate",
    );
  });

  await t.test("cluster list and remove as on the file store", async (t) => {
    const added2 = await cli("cluster", "add", "m2", "--auth", "passthrough", ...store);
    t.equal(added2.code, 0, added2.stderr);
    const list = JSON.parse((await cli("cluster", "list", "-o", "json", ...store)).stdout);
    t.same(
      list.clusters.map((c: { name: string; auth: string }) => [c.name, c.auth]),
      [
        ["m1", "impersonate"],
        ["m2", "passthrough"],
      ],
    );
    t.match(list.clusters[0], {
      name: "m1",
      auth: "impersonate",
      labels: { region: "eu" },
      allowedUsers: [],
      allowedGroups: [],
      createdAt: /^\d{4}-/,
    });
    const table = await cli("cluster", "list", ...store);
    t.match(table.stdout, /^NAME +AUTH/m);
    const removed = await cli("cluster", "remove", "m1", ...store);
    t.equal(removed.code, 0, removed.stderr);
    t.match(removed.stdout, /Cluster m1 removed: revoked its agent certificates/);
    t.equal(await getCluster("m1"), undefined, "the Cluster object is gone");
    const cut = await viaTether();
    t.not(cut.code, 0, "the removed cluster is no longer served");
    // Re-adding the name does not let the old certificate back in.
    t.equal((await cli("cluster", "add", "m1", ...store)).code, 0);
    // The old agent redials on its backoff (refused while m1 was gone, it waits longer each time): wait for
    // its next try rather than a fixed 3 s.
    const refused = /agent refused: the certificate of cluster \\"m1\\" has been revoked/;
    await until(
      "the old agent's next dial is refused",
      async () => refused.test(await readFile(server.logFile, "utf8")),
      30_000,
    ).catch(() => {});
    t.not(condition(await getCluster("m1"), "AgentConnected"), "True", "the old agent stays out");
    t.match(await readFile(server.logFile, "utf8"), refused);
  });

  await t.test(
    "the incarnation is the Cluster's metadata.uid: an object made again refuses old certificates",
    async (t) => {
      const kstore = await KubeStore.open({ kubeconfig: host.kubeconfig });
      t.teardown(() => kstore.close());
      const object = await host.api<{ metadata: { uid: string } }>(
        "GET",
        "/apis/tether.io/v1alpha1/clusters/m2",
      );
      const before = await kstore.getCluster("m2");
      t.equal(before?.uid, object.body.metadata.uid, "the store's incarnation is metadata.uid");
      const server = await TetherServer.start({
        store: kstore,
        host: "127.0.0.1",
        port: 0,
        log: createLogger({ level: "silent" }),
        tunnel: TEST_TUNNEL,
      });
      t.teardown(() => server.close());
      const cert = await issueAgentCert(server.ca, kstore, "m2");
      (await connectAgent(server.url, server.ca.certPem, cert)).close();
      // Deleted behind Tether's back (nothing revoked) and made again: a new object, a new uid.
      const deleted = await host.kubectl(["delete", "clusters.tether.io", "m2"]);
      t.equal(deleted.code, 0, deleted.stderr);
      await until("the store sees it go", async () => (await kstore.getCluster("m2")) === undefined);
      t.ok(await kstore.addCluster({ ...before!, createdAt: new Date().toISOString() }));
      const after = await kstore.getCluster("m2");
      t.not(after?.uid, before?.uid, "a new incarnation");
      const recreated = await host.api<{ metadata: { uid: string } }>(
        "GET",
        "/apis/tether.io/v1alpha1/clusters/m2",
      );
      t.equal(after?.uid, recreated.body.metadata.uid);
      t.equal(await dialAgent(server.url, server.ca.certPem, cert), 403, "the old certificate is refused");
      const fresh = await issueAgentCert(server.ca, kstore, "m2");
      const session = await connectAgent(server.url, server.ca.certPem, fresh);
      t.pass("a certificate of the new incarnation connects");
      session.close();
    },
  );

  await t.test("one join token, two stores consuming it at once: one winner", async (t) => {
    const a = await KubeStore.open({ kubeconfig: host.kubeconfig });
    const b = await KubeStore.open({ kubeconfig: host.kubeconfig });
    t.teardown(() => Promise.all([a.close(), b.close()]));
    for (let i = 0; i < 5; i++) {
      const { token, hash } = issueToken();
      await a.addToken({
        hash,
        kind: "join",
        cluster: "m2",
        expiresAt: new Date(Date.now() + 60_000).toISOString(),
      });
      const results = await Promise.all([
        a.consumeJoinToken(hashToken(token), "m2"),
        b.consumeJoinToken(hash, "m2"),
      ]);
      t.equal(results.filter((r) => r !== undefined).length, 1, `round ${i}: exactly one consumer wins`);
    }
  });
});
