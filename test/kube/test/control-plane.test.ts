// Must show (issue 11): a harness cluster behaves like a real one — release
// version information, a controller manager (aggregated ClusterRoles,
// namespace deletion, Deployments, garbage collection), a scheduler that
// binds to the stand-in node, and a stand-in that keeps its node alive,
// reports its pods Running and serves `logs --tail`.
import { appendFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { kubernetesModuleInfo } from "../binaries.js";
import { type Cluster, NODE_NAME, startClusters, writeKubeconfig } from "../index.js";

const set = await startClusters(1);
t.teardown(() => set.stop());
const cluster = set.clusters[0] as Cluster;
const scratch = await mkdtemp(join(tmpdir(), "tether-kube-test-"));
t.teardown(() => rm(scratch, { recursive: true, force: true }));

interface Meta {
  name: string;
  uid: string;
  ownerReferences?: { kind: string; name: string; uid: string }[];
}
interface PodObj {
  metadata: Meta;
  spec: { nodeName?: string };
  status: { phase?: string };
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, limitMs = 60_000): Promise<T> {
  const end = Date.now() + limitMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error(`${what}: not within ${limitMs / 1000}s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function kubectlJson<T>(args: string[], kubeconfig?: string): Promise<T> {
  const res = await cluster.kubectl([...args, "-o", "json"], { kubeconfig });
  if (res.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${res.stderr}`);
  return JSON.parse(res.stdout) as T;
}

t.test("kubectl version exits 0 and reports the pinned release on both sides", async (t) => {
  const plain = await cluster.kubectl(["version"]);
  t.equal(plain.code, 0, plain.stderr);
  t.match(plain.stdout, /Client Version: v1\.35\.4\n/);
  t.match(plain.stdout, /Server Version: v1\.35\.4\n/);
  const res = await cluster.kubectl(["version", "-o", "json"]);
  t.equal(res.code, 0, res.stderr);
  type Info = { gitVersion: string; major: string; minor: string; gitCommit: string; buildDate: string };
  const v = JSON.parse(res.stdout) as { clientVersion: Info; serverVersion: Info };
  const commit = (await kubernetesModuleInfo(set.binaries.kubernetesVersion)).Origin?.Hash;
  if (!commit) t.comment("the Go module proxy reports no origin for the tag: the binaries carry no commit");
  for (const side of [v.clientVersion, v.serverVersion]) {
    t.equal(side.gitVersion, set.binaries.kubernetesVersion);
    t.equal(side.gitVersion, "v1.35.4");
    t.same([side.major, side.minor], ["1", "35"], "Helm's kubeVersion checks read major.minor");
    if (commit) t.match(side.gitCommit, /^[0-9a-f]{40}$/);
    t.equal(
      side.gitCommit,
      commit ?? "",
      "the commit the module's tag names, as the module proxy reports it",
    );
    t.not(side.buildDate, "1970-01-01T00:00:00Z");
  }
  const node = await kubectlJson<{ status: { nodeInfo: { kubeletVersion: string } } }>([
    "get",
    "node",
    NODE_NAME,
  ]);
  t.equal(node.status.nodeInfo.kubeletVersion, "v1.35.4", "the stand-in node reports the same release");
});

t.test("a RoleBinding to the aggregated ClusterRole view grants get on configmaps", async (t) => {
  const ns = "viewers";
  t.equal((await cluster.kubectl(["create", "namespace", ns])).code, 0);
  t.equal(
    (await cluster.kubectl(["-n", ns, "create", "configmap", "settings", "--from-literal=k=v"])).code,
    0,
  );
  t.equal((await cluster.kubectl(["-n", ns, "create", "serviceaccount", "viewer"])).code, 0);
  const bind = await cluster.kubectl([
    "-n",
    ns,
    "create",
    "rolebinding",
    "viewer",
    "--clusterrole=view",
    `--serviceaccount=${ns}:viewer`,
  ]);
  t.equal(bind.code, 0, bind.stderr);
  const token = await cluster.kubectl(["-n", ns, "create", "token", "viewer", "--duration=10m"]);
  t.equal(token.code, 0, token.stderr);
  const kubeconfig = await writeKubeconfig(join(scratch, "viewer"), {
    name: "viewer",
    server: cluster.server,
    caPem: cluster.caPem,
    token: token.stdout.trim(),
  });
  // The aggregation controller fills view's rules from the system:aggregate-to-view roles.
  const got = await until("view aggregated", async () => {
    const res = await cluster.kubectl(["-n", ns, "get", "configmap", "settings", "-o", "json"], {
      kubeconfig,
    });
    return res.code === 0 ? res : undefined;
  });
  t.match(JSON.parse(got.stdout), { data: { k: "v" } }, "the viewer reads the ConfigMap");
  const secrets = await cluster.kubectl(["-n", ns, "get", "secrets"], { kubeconfig });
  t.not(secrets.code, 0, "view does not include secrets");
  t.match(secrets.stderr, /Forbidden/);
  const write = await cluster.kubectl(["-n", ns, "delete", "configmap", "settings"], { kubeconfig });
  t.match(write.stderr, /Forbidden/, "nor writes");
  const elsewhere = await cluster.kubectl(["-n", "default", "get", "configmaps"], { kubeconfig });
  t.match(elsewhere.stderr, /Forbidden/, "and only in the RoleBinding's namespace");
});

t.test("a new namespace gets a default service account and kube-root-ca.crt", async (t) => {
  const ns = "fresh";
  t.equal((await cluster.kubectl(["create", "namespace", ns])).code, 0);
  const root = await until("kube-root-ca.crt published", async () => {
    const res = await cluster.kubectl(["-n", ns, "get", "configmap", "kube-root-ca.crt", "-o", "json"]);
    return res.code === 0 ? (JSON.parse(res.stdout) as { data: Record<string, string> }) : undefined;
  });
  t.equal(
    root.data["ca.crt"],
    cluster.caPem,
    "the root CA publisher copies the cluster CA into the namespace",
  );
  const sa = await until("default service account", async () => {
    const res = await cluster.kubectl(["-n", ns, "get", "serviceaccount", "default"]);
    return res.code === 0 ? res : undefined;
  });
  t.equal(sa.code, 0);
});

t.test("kubectl delete namespace completes, pods and all", async (t) => {
  const ns = "doomed";
  t.equal((await cluster.kubectl(["create", "namespace", ns])).code, 0);
  t.equal((await cluster.kubectl(["-n", ns, "create", "configmap", "c", "--from-literal=k=v"])).code, 0);
  await cluster.createPod(ns, "resident");
  const del = await cluster.kubectl(["delete", "namespace", ns, "--timeout=90s"], { timeoutMs: 100_000 });
  t.equal(del.code, 0, del.stderr);
  const gone = await cluster.kubectl(["get", "namespace", ns]);
  t.not(gone.code, 0);
  t.match(gone.stderr, /NotFound/, "the namespace is gone, not left Terminating");
});

t.test("a Deployment gets a ReplicaSet and a Running pod on the stand-in node", async (t) => {
  const ns = "apps";
  t.equal((await cluster.kubectl(["create", "namespace", ns])).code, 0);
  const made = await cluster.kubectl([
    "-n",
    ns,
    "create",
    "deployment",
    "web",
    "--image=tether.dev/standin:latest",
    "--replicas=2",
  ]);
  t.equal(made.code, 0, made.stderr);
  const rollout = await cluster.kubectl(["-n", ns, "rollout", "status", "deployment/web", "--timeout=90s"], {
    timeoutMs: 100_000,
  });
  t.equal(rollout.code, 0, rollout.stderr);
  const deployment = await kubectlJson<{ metadata: Meta }>(["-n", ns, "get", "deployment", "web"]);
  const sets = await kubectlJson<{ items: { metadata: Meta }[] }>(["-n", ns, "get", "replicasets"]);
  t.equal(sets.items.length, 1);
  const rs = sets.items[0]!;
  t.match(rs.metadata.ownerReferences, [{ kind: "Deployment", name: "web", uid: deployment.metadata.uid }]);
  const pods = await kubectlJson<{ items: PodObj[] }>(["-n", ns, "get", "pods"]);
  t.equal(pods.items.length, 2);
  for (const pod of pods.items) {
    t.equal(pod.spec.nodeName, NODE_NAME, "the scheduler bound it to the stand-in");
    t.equal(pod.status.phase, "Running", "and the stand-in reports it Running");
    t.match(pod.metadata.ownerReferences, [{ kind: "ReplicaSet", uid: rs.metadata.uid }]);
  }
  const pod = pods.items[0]!.metadata.name;
  const exec = await cluster.kubectl(["-n", ns, "exec", pod, "--", "echo", "in a scheduled pod"]);
  t.equal(exec.stdout, "in a scheduled pod\n", exec.stderr);

  const del = await cluster.kubectl(["-n", ns, "delete", "deployment", "web", "--cascade=foreground"]);
  t.equal(del.code, 0, del.stderr);
  await until("garbage collected", async () => {
    const left = await kubectlJson<{ items: unknown[] }>(["-n", ns, "get", "replicasets,pods"]);
    return left.items.length === 0 ? true : undefined;
  });
  t.pass("the garbage collector removed the ReplicaSet and its pods");
});

t.test("the stand-in renews its node Lease and the node stays Ready", async (t) => {
  type Lease = { metadata: Meta; spec: { holderIdentity: string; renewTime: string } };
  const lease = async () => {
    const res = await cluster.kubectl(["-n", "kube-node-lease", "get", "lease", NODE_NAME, "-o", "json"]);
    return res.code === 0 ? (JSON.parse(res.stdout) as Lease) : undefined;
  };
  const first = await until("lease created", lease);
  t.equal(first.spec.holderIdentity, NODE_NAME);
  t.match(first.metadata.ownerReferences, [{ kind: "Node", name: NODE_NAME }], "owned by its Node");
  await until("lease renewed", async () => {
    const now = await lease();
    return now && now.spec.renewTime !== first.spec.renewTime ? true : undefined;
  });
  const node = await kubectlJson<{
    spec: { taints?: unknown[] };
    status: { conditions: { type: string; status: string }[] };
  }>(["get", "node", NODE_NAME]);
  t.ok(
    node.status.conditions.some((c) => c.type === "Ready" && c.status === "True"),
    "Ready",
  );
  t.same(node.spec.taints ?? [], [], "no not-ready or unreachable taint");
});

t.test("kubectl logs --tail returns the last lines", async (t) => {
  await cluster.createPod("default", "talker");
  const file = cluster.logFile("default", "talker", "main");
  await appendFile(file, "one\ntwo\nthree\nfour\nfive\n");
  const tail = await cluster.kubectl(["logs", "talker", "--tail=3"]);
  t.equal(tail.code, 0, tail.stderr);
  t.equal(tail.stdout, "three\nfour\nfive\n");
  const all = await cluster.kubectl(["logs", "talker", "--tail=10"]);
  t.equal(all.stdout, "one\ntwo\nthree\nfour\nfive\n", "more lines asked than there are: all of them");
  const limited = await cluster.kubectl(["logs", "talker", "--limit-bytes=6"]);
  t.equal(limited.stdout, "one\ntw", "--limit-bytes cuts the body");
  const follow = cluster.spawnKubectl(["logs", "-f", "talker", "--tail=1"]);
  t.teardown(() => follow.stop());
  await follow.waitFor(/five\n/);
  await appendFile(file, "six\n");
  await follow.waitFor(/six\n/);
  t.equal(follow.stdout, "five\nsix\n", "--tail with -f starts at the last line, then follows");
});
