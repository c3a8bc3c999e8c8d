// Issue 5: an agent in a cluster keeps its key and certificate in a Secret of
// its own namespace (--credentials-secret), not on disk. The agent bin runs
// with a real in-cluster environment against a harness member: it says which
// RBAC rule is missing when its service account may not touch the Secret
// (without spending its one-time token), joins from TETHER_* environment
// variables, writes the Secret, serves, renews into the Secret, restarts from
// the Secret without a token, and joins again over a damaged Secret.
import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { issueToken } from "@tether/server";
import t, { type Test } from "tap";
import { type Cluster, startClusters } from "../kube/index.js";
import { ManagedProcess } from "../kube/processes.js";
import { bindTetherAdmins, prepareMember, startTether, until } from "./fixture.js";
import { AGENT_BIN, FAST_TIMING } from "./tether-processes.js";

const SECRET = "tether-agent-credentials";
const NAMESPACE = "tether-system";
const ROLES = `/apis/rbac.authorization.k8s.io/v1/namespaces/${NAMESPACE}/roles`;
const SECRET_PATH = `/api/v1/namespaces/${NAMESPACE}/secrets/${SECRET}`;

/** The Role the agent needs (as tether-server agent-manifest prints it), or a broken variant. */
async function grantSecretRole(member: Cluster, rules: object[]): Promise<void> {
  await member.api("DELETE", `${ROLES}/tether-agent-credentials`, undefined, [404]);
  await member.api("POST", ROLES, { metadata: { name: "tether-agent-credentials" }, rules });
  await member.api(
    "POST",
    `/apis/rbac.authorization.k8s.io/v1/namespaces/${NAMESPACE}/rolebindings`,
    {
      metadata: { name: "tether-agent-credentials" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "tether-agent-credentials" },
      subjects: [{ kind: "ServiceAccount", name: "tether-agent", namespace: NAMESPACE }],
    },
    [409],
  );
}

/** RBAC changes reach the authorizer's cache shortly after they are written. */
async function untilAllowed(member: Cluster, verb: string, allowed: boolean): Promise<void> {
  await until(`the agent ${allowed ? "may" : "may not"} ${verb} its Secret`, async () => {
    const review = await member.api<{ status: { allowed: boolean } }>(
      "POST",
      "/apis/authorization.k8s.io/v1/subjectaccessreviews",
      {
        spec: {
          user: `system:serviceaccount:${NAMESPACE}:tether-agent`,
          resourceAttributes: {
            namespace: NAMESPACE,
            verb,
            resource: "secrets",
            ...(verb === "create" ? {} : { name: SECRET }),
          },
        },
      },
    );
    return review.body.status.allowed === allowed;
  });
}

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
  const agent = (t: Test, extraEnv: NodeJS.ProcessEnv) => {
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
  /** Runs an agent that must stop on its own; resolves with its output. */
  const failingAgent = async (t: Test, extraEnv: NodeJS.ProcessEnv) => {
    const proc = agent(t, extraEnv);
    await Promise.race([proc.exited, new Promise((r) => setTimeout(r, 30_000))]);
    t.notOk(proc.running, "the agent exits");
    return readFile(proc.logFile, "utf8");
  };
  const readSecret = async () => {
    const res = await member.api<{ type: string; data: Record<string, string> }>(
      "GET",
      SECRET_PATH,
      undefined,
      [404],
    );
    if (res.status === 404) return undefined;
    const pem = (key: string) => Buffer.from(res.body.data[key] ?? "", "base64").toString("utf8");
    return { type: res.body.type, cert: pem("tls.crt"), key: pem("tls.key"), ca: pem("ca.crt") };
  };
  const serialOf = async () => new X509Certificate((await readSecret())!.cert).serialNumber;
  const kubectlThroughTether = async () => {
    const kubeconfig = await tether.userKubeconfig("delta", "alice", ["admins"]);
    return member.kubectl(["get", "namespaces", "-o", "name"], { kubeconfig });
  };
  const untilConnected = (proc: ManagedProcess) =>
    until("delta connects", () => {
      proc.assertRunning();
      return tether.server.sessions.get("delta") !== undefined;
    });
  const untilDisconnected = () =>
    until("the old session is gone", () => tether.server.sessions.get("delta") === undefined);
  const joinEnv = (token: string) => ({
    TETHER_CLUSTER: "delta",
    TETHER_JOIN_TOKEN: token,
    TETHER_CA_HASH: tether.ca.caHash,
  });

  // One token for the refused starts and the first join: the refusals must not spend it.
  const firstToken = await joinToken();

  await t.test("without a Role for the Secret, the agent names the missing rule", async (t) => {
    const log = await failingAgent(t, joinEnv(firstToken));
    t.match(
      log,
      /tether-agent: ERR_TETHER_AGENT_SECRET_FORBIDDEN: service account tether-system\/tether-agent may not get Secret tether-system\/tether-agent-credentials/,
    );
    t.match(
      log,
      /Role in namespace tether-system with the rule \{apiGroups: \[""\], resources: \["secrets"\], resourceNames: \["tether-agent-credentials"\], verbs: \["get", "update"\]\}/,
    );
    t.equal(await readSecret(), undefined, "no Secret was written");
  });

  await t.test("create limited by name (a common RBAC mistake) is found before the join", async (t) => {
    await grantSecretRole(member, [
      {
        apiGroups: [""],
        resources: ["secrets"],
        resourceNames: [SECRET],
        verbs: ["get", "update", "create"],
      },
    ]);
    await untilAllowed(member, "get", true);
    const log = await failingAgent(t, joinEnv(firstToken));
    t.match(log, /ERR_TETHER_AGENT_SECRET_FORBIDDEN: .* may not create Secret/);
    t.match(log, /verbs: \["create"\]\} \(no resourceNames: RBAC cannot limit create by name\)/);
    t.notMatch(log, /"joined"/, "it did not join");
    t.equal(await readSecret(), undefined, "no Secret was written");
  });

  await grantSecretRole(member, [
    { apiGroups: [""], resources: ["secrets"], resourceNames: [SECRET], verbs: ["get", "update"] },
    { apiGroups: [""], resources: ["secrets"], verbs: ["create"] },
  ]);
  await untilAllowed(member, "create", true);

  await t.test("joins from the environment, keeps its identity in the Secret, and serves", async (t) => {
    const proc = agent(t, joinEnv(firstToken));
    await untilConnected(proc);
    t.pass("the token the refused starts were given still joins: they did not spend it");
    const secret = await readSecret();
    t.ok(secret, "the Secret exists");
    t.equal(secret?.type, "kubernetes.io/tls");
    const cert = new X509Certificate(secret!.cert);
    t.match(cert.subject, /CN=cluster:delta/, "it holds delta's certificate");
    t.ok(cert.checkPrivateKey(createPrivateKey(secret!.key)), "and its key");
    t.equal(secret?.ca, tether.ca.certPem, "and Tether's CA");
    await t.rejects(stat(stateDir), { code: "ENOENT" }, "nothing is written to a state directory");

    const res = await kubectlThroughTether();
    t.equal(res.code, 0, res.stderr);
    t.match(res.stdout, /namespace\/tether-system/);

    await t.test("a renewal replaces the certificate in the Secret", async (t) => {
      const firstSerial = cert.serialNumber;
      await until("the Secret holds a renewed certificate", async () => (await serialOf()) !== firstSerial);
      const renewed = await readSecret();
      const renewedCert = new X509Certificate(renewed!.cert);
      t.not(renewedCert.serialNumber, firstSerial);
      t.ok(
        renewedCert.checkPrivateKey(createPrivateKey(renewed!.key)),
        "key and certificate still belong together",
      );
      t.not(renewed!.key, secret!.key, "with a new key");
    });

    const log = await readFile(proc.logFile, "utf8");
    t.notMatch(log, firstToken, "the token is never logged");
    t.notMatch(log, /PRIVATE KEY/, "nor the key");
    await proc.stop();
  });

  await t.test("restarted without a join token, it connects with the Secret's identity", async (t) => {
    await untilDisconnected();
    const before = await serialOf();
    const proc = agent(t, {});
    await untilConnected(proc);
    const log = await readFile(proc.logFile, "utf8");
    t.match(log, /using the saved identity/);
    t.match(log, /Secret tether-system\/tether-agent-credentials/);
    t.notMatch(log, /"joined"/, "no join");
    const res = await kubectlThroughTether();
    t.equal(res.code, 0, res.stderr);
    // Certificates live 8 s here: the restarted agent keeps renewing into the Secret.
    await until("the restarted agent renews into the Secret", async () => (await serialOf()) !== before);
    t.pass("renewed after the restart");
    await proc.stop();
  });

  await t.test("a damaged Secret: a coded error without a token, a fresh join with one", async (t) => {
    await untilDisconnected();
    const current = await member.api<{ metadata: { resourceVersion: string }; data: Record<string, string> }>(
      "GET",
      SECRET_PATH,
    );
    await member.api("PUT", SECRET_PATH, {
      apiVersion: "v1",
      kind: "Secret",
      type: "kubernetes.io/tls",
      metadata: {
        name: SECRET,
        namespace: NAMESPACE,
        resourceVersion: current.body.metadata.resourceVersion,
      },
      data: { ...current.body.data, "tls.key": Buffer.from("not a key").toString("base64") },
    });
    const log = await failingAgent(t, {});
    t.match(
      log,
      /ERR_TETHER_AGENT_IDENTITY_UNUSABLE: the key in Secret tether-system\/tether-agent-credentials/,
    );
    t.match(log, /tether-server join-token/);

    const proc = agent(t, joinEnv(await joinToken()));
    await untilConnected(proc);
    const repaired = await readSecret();
    t.ok(
      new X509Certificate(repaired!.cert).checkPrivateKey(createPrivateKey(repaired!.key)),
      "the Secret holds a matching pair again",
    );
    const res = await kubectlThroughTether();
    t.equal(res.code, 0, res.stderr);
  });
});
