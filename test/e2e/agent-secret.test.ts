// Issue 5: an agent in a cluster keeps its key and certificate in a Secret of
// its own namespace (--credentials-secret), not on disk. The agent bin runs
// with a real in-cluster environment against a harness member: it joins from
// TETHER_* environment variables, writes the Secret, serves, restarts from
// the Secret without a token, renews into the Secret, and says which RBAC
// rule is missing when its service account may not touch the Secret.
import { X509Certificate } from "node:crypto";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { issueToken } from "@tether/server";
import t from "tap";
import { startClusters } from "../kube/index.js";
import { ManagedProcess } from "../kube/processes.js";
import { bindTetherAdmins, prepareMember, startTether, until } from "./fixture.js";
import { AGENT_BIN, FAST_TIMING } from "./tether-processes.js";

const SECRET = "tether-agent-credentials";
const NAMESPACE = "tether-system";

t.test("agent credentials in a Secret", async (t) => {
  const set = await startClusters(1);
  t.teardown(() => set.stop());
  const member = set.clusters[0]!;
  // Certificates live 8 s, so a renewal happens within a few seconds.
  const tether = await startTether({ clusterCertTtlMs: 8_000 });
  t.teardown(() => tether.stop());
  await bindTetherAdmins(member);
  const saDir = join(tether.dir, "sa");
  const env = await prepareMember(member, saDir);
  await writeFile(join(saDir, "namespace"), NAMESPACE);
  await tether.registerCluster("delta");
  const stateDir = join(tether.dir, "must-not-exist");

  const joinToken = async () => {
    const { token, hash } = issueToken();
    const expiresAt = new Date(Date.now() + 3600_000).toISOString();
    await tether.store.addToken({ hash, kind: "join", cluster: "delta", expiresAt });
    return token;
  };
  let count = 0;
  const agent = (extraEnv: NodeJS.ProcessEnv) => {
    count++;
    const proc = new ManagedProcess(
      `agent-${count}`,
      process.execPath,
      [
        AGENT_BIN,
        "--service-account-dir",
        saDir,
        "--keepalive",
        String(FAST_TIMING.keepaliveSeconds),
        "--dead-peer-timeout",
        String(FAST_TIMING.deadPeerTimeoutSeconds),
      ],
      join(tether.dir, `agent-${count}.log`),
      {
        ...process.env,
        ...env,
        TETHER_SERVER: tether.server.url,
        TETHER_CREDENTIALS_SECRET: SECRET,
        TETHER_AGENT_STATE_DIR: stateDir,
        ...extraEnv,
      },
    );
    t.teardown(() => proc.stop());
    return proc;
  };
  const readSecret = async () => {
    const res = await member.api<{ type: string; data: Record<string, string> }>(
      "GET",
      `/api/v1/namespaces/${NAMESPACE}/secrets/${SECRET}`,
      undefined,
      [404],
    );
    if (res.status === 404) return undefined;
    const pem = (key: string) => Buffer.from(res.body.data[key] ?? "", "base64").toString("utf8");
    return { type: res.body.type, cert: pem("tls.crt"), key: pem("tls.key"), ca: pem("ca.crt") };
  };
  const joinEnv = async () => ({
    TETHER_CLUSTER: "delta",
    TETHER_JOIN_TOKEN: await joinToken(),
    TETHER_CA_HASH: tether.ca.caHash,
  });

  await t.test("without a Role for the Secret, the agent names the missing rule", async (t) => {
    const proc = agent(await joinEnv());
    await Promise.race([proc.exited, new Promise((r) => setTimeout(r, 30_000))]);
    t.notOk(proc.running, "the agent exits");
    const log = await readFile(proc.logFile, "utf8");
    t.match(log, /may not get Secret tether-system\/tether-agent-credentials/);
    t.match(log, /Role in namespace tether-system allowing get, create and update on secrets/);
    t.equal(await readSecret(), undefined, "no Secret was written");
  });

  await member.api("POST", `/apis/rbac.authorization.k8s.io/v1/namespaces/${NAMESPACE}/roles`, {
    metadata: { name: "tether-agent-credentials" },
    rules: [{ apiGroups: [""], resources: ["secrets"], verbs: ["get", "create", "update"] }],
  });
  await member.api("POST", `/apis/rbac.authorization.k8s.io/v1/namespaces/${NAMESPACE}/rolebindings`, {
    metadata: { name: "tether-agent-credentials" },
    roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "tether-agent-credentials" },
    subjects: [{ kind: "ServiceAccount", name: "tether-agent", namespace: NAMESPACE }],
  });

  let firstSerial = "";
  await t.test("joins from the environment, keeps its identity in the Secret, and serves", async (t) => {
    const env = await joinEnv();
    const proc = agent(env);
    await until("delta connects", () => {
      proc.assertRunning();
      return tether.server.sessions.get("delta") !== undefined;
    });
    const secret = await readSecret();
    t.ok(secret, "the Secret exists");
    t.equal(secret?.type, "kubernetes.io/tls");
    const cert = new X509Certificate(secret!.cert);
    t.match(cert.subject, /CN=cluster:delta/, "it holds delta's certificate");
    t.ok(cert.checkPrivateKey((await import("node:crypto")).createPrivateKey(secret!.key)), "and its key");
    t.equal(secret?.ca, tether.ca.certPem, "and Tether's CA");
    firstSerial = cert.serialNumber;
    await t.rejects(stat(stateDir), { code: "ENOENT" }, "nothing is written to a state directory");

    const kubeconfig = await tether.userKubeconfig("delta", "alice", ["admins"]);
    const res = await member.kubectl(["get", "namespaces", "-o", "name"], { kubeconfig });
    t.equal(res.code, 0, res.stderr);
    t.match(res.stdout, /namespace\/tether-system/);
    const log = await readFile(proc.logFile, "utf8");
    t.notMatch(log, env.TETHER_JOIN_TOKEN, "the token is never logged");
    t.notMatch(log, /PRIVATE KEY/, "nor the key");

    await t.test("a renewal replaces the certificate in the Secret", async (t) => {
      await until(
        "the Secret holds a renewed certificate",
        async () => new X509Certificate((await readSecret())!.cert).serialNumber !== firstSerial,
      );
      const renewed = await readSecret();
      t.not(new X509Certificate(renewed!.cert).serialNumber, firstSerial);
      t.ok(
        new X509Certificate(renewed!.cert).checkPrivateKey(
          (await import("node:crypto")).createPrivateKey(renewed!.key),
        ),
        "key and certificate still belong together",
      );
    });
    await proc.stop();
  });

  await t.test("restarted without a join token, it connects with the Secret's identity", async (t) => {
    await until("the old session is gone", () => tether.server.sessions.get("delta") === undefined);
    const proc = agent({});
    await until("delta reconnects", () => {
      proc.assertRunning();
      return tether.server.sessions.get("delta") !== undefined;
    });
    const log = await readFile(proc.logFile, "utf8");
    t.match(log, /using the saved identity/);
    t.match(log, /Secret tether-system\/tether-agent-credentials/);
    const kubeconfig = await tether.userKubeconfig("delta", "alice", ["admins"]);
    const res = await member.kubectl(["get", "namespaces", "-o", "name"], { kubeconfig });
    t.equal(res.code, 0, res.stderr);
  });
});
