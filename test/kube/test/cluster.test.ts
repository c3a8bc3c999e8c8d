// Must show (issue 2): two harness clusters, each exercised with kubectl and
// @kubernetes/client-node through the real apiserver, RBAC, exec, logs -f and
// port-forward through the kubelet stand-in.
import { appendFile, mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as k8s from "@kubernetes/client-node";
import t, { type Test } from "tap";
import { type Cluster, startClusters, writeKubeconfig } from "../index.js";

const set = await startClusters(2);
t.teardown(() => set.stop());
const scratch = await mkdtemp(join(tmpdir(), "tether-kube-test-"));
t.teardown(() => rm(scratch, { recursive: true, force: true }));

t.equal(set.clusters.length, 2);
t.not(set.clusters[0]!.server, set.clusters[1]!.server, "clusters are independent servers");
t.not(set.clusters[0]!.caPem, set.clusters[1]!.caPem, "each cluster has its own CA");

for (const cluster of set.clusters) {
  t.test(cluster.name, async (t) => {
    await exercise(t, cluster);
  });
}

t.test("clusters are isolated from each other", async (t) => {
  const [a, b] = set.clusters as [Cluster, Cluster];
  const made = await a.kubectl(["create", "configmap", "only-in-a", "--from-literal=k=v"]);
  t.equal(made.code, 0, made.stderr);
  const inB = await b.kubectl(["get", "configmap", "only-in-a"]);
  t.not(inB.code, 0, "a ConfigMap made in one cluster is not visible in the other");
  t.match(inB.stderr, /NotFound|not found/);
  const wrongCa = await writeKubeconfig(join(scratch, "cross"), {
    name: "cross",
    server: b.server,
    caPem: a.caPem,
    certPem: a.admin.certPem,
    keyPem: a.admin.keyPem,
  });
  const cross = await b.kubectl(["get", "ns"], { kubeconfig: wrongCa });
  t.not(cross.code, 0, "cluster A's admin credential is not accepted by cluster B");
});

async function exercise(t: Test, cluster: Cluster): Promise<void> {
  await t.test("kubectl lists namespaces", async (t) => {
    const res = await cluster.kubectl(["get", "namespaces", "-o", "json"]);
    t.equal(res.code, 0, res.stderr);
    const names = (JSON.parse(res.stdout) as { items: { metadata: { name: string } }[] }).items.map(
      (i) => i.metadata.name,
    );
    t.ok(names.includes("default") && names.includes("kube-system"), `namespaces: ${names.join(",")}`);
  });

  const kc = new k8s.KubeConfig();
  kc.loadFromFile(cluster.kubeconfig);

  await t.test("@kubernetes/client-node lists namespaces", async (t) => {
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const list = await core.listNamespace();
    t.ok(list.items.some((n) => n.metadata?.name === "kube-system"));
  });

  await t.test("a ConfigMap change is seen through a watch", async (t) => {
    const watch = new k8s.Watch(kc);
    let onEvent: (value: string) => void = () => {};
    let onError: (err: unknown) => void = () => {};
    const seen = new Promise<string>((resolve, reject) => {
      onEvent = resolve;
      onError = reject;
      setTimeout(() => reject(new Error("no watch event within 30s")), 30_000).unref();
    });
    // watch() resolves once the apiserver has answered, so the watch is established.
    const req = await watch.watch(
      "/api/v1/namespaces/default/configmaps",
      {},
      (type, obj: k8s.V1ConfigMap) =>
        obj.metadata?.name === "watched" && onEvent(`${type}:${obj.data?.color}`),
      (err) => err && onError(err),
    );
    t.teardown(() => req.abort());
    const res = await cluster.kubectl(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: "watched", namespace: "default" },
        data: { color: "blue" },
      }),
    });
    t.equal(res.code, 0, res.stderr);
    t.equal(await seen, "ADDED:blue");
  });

  await t.test("RBAC refuses an unprivileged service-account token from TokenRequest", async (t) => {
    await cluster.api("POST", "/api/v1/namespaces/default/serviceaccounts", {
      metadata: { name: "reader" },
    });
    // reader may read ConfigMaps in default, nothing else.
    await cluster.api("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", {
      metadata: { name: "configmap-reader" },
      rules: [{ apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list"] }],
    });
    await cluster.api("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", {
      metadata: { name: "reader" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "configmap-reader" },
      subjects: [{ kind: "ServiceAccount", name: "reader", namespace: "default" }],
    });
    const tr = await cluster.api<{ status: { token: string } }>(
      "POST",
      "/api/v1/namespaces/default/serviceaccounts/reader/token",
      { apiVersion: "authentication.k8s.io/v1", kind: "TokenRequest", spec: { expirationSeconds: 600 } },
    );
    const token = tr.body.status.token;
    t.match(token, /^ey/, "a JWT from the TokenRequest API");
    const kubeconfig = await writeKubeconfig(join(scratch, `${cluster.name}-reader`), {
      name: "reader",
      server: cluster.server,
      caPem: cluster.caPem,
      token,
    });
    const allowed = await cluster.kubectl(["get", "configmaps", "-n", "default"], { kubeconfig });
    t.equal(allowed.code, 0, `the token works where RBAC allows it: ${allowed.stderr}`);
    const refused = await cluster.kubectl(["get", "secrets", "-n", "default"], { kubeconfig });
    t.not(refused.code, 0);
    t.match(refused.stderr, /Forbidden/);
    t.match(refused.stderr, /system:serviceaccount:default:reader/);
    const elsewhere = await cluster.kubectl(["get", "configmaps", "-n", "kube-system"], { kubeconfig });
    t.match(elsewhere.stderr, /Forbidden/, "and refuses the same resource in another namespace");
  });

  await cluster.createPod("default", "box");

  await t.test("kubectl exec runs through the apiserver to the node stand-in", async (t) => {
    const res = await cluster.kubectl(["exec", "box", "--", "echo", `hello-${cluster.name}`]);
    t.equal(res.code, 0, res.stderr);
    t.equal(res.stdout, `hello-${cluster.name}\n`);
    const failing = await cluster.kubectl(["exec", "box", "--", "sh", "-c", "exit 3"]);
    t.equal(failing.code, 3, "the command's exit code comes back");
    const stdin = await cluster.kubectl(["exec", "-i", "box", "--", "cat"], { input: "through stdin" });
    t.equal(stdin.stdout, "through stdin");
  });

  await t.test("kubectl logs -f follows appended lines", async (t) => {
    const file = cluster.logFile("default", "box", "main");
    await appendFile(file, "first line\n");
    const logs = cluster.spawnKubectl(["logs", "-f", "box"]);
    t.teardown(() => logs.stop());
    await logs.waitFor(/first line\n/);
    await appendFile(file, "second line\n");
    await logs.waitFor(/second line\n/);
    t.equal(logs.stdout, "first line\nsecond line\n");
  });

  await t.test("kubectl port-forward reaches a local HTTP server", async (t) => {
    const http = createServer((req, res) => res.end(`served ${req.url} for ${cluster.name}`));
    await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
    t.teardown(() => new Promise<void>((r) => http.close(() => r())));
    const port = (http.address() as { port: number }).port;
    const pf = cluster.spawnKubectl(["port-forward", "pod/box", `:${port}`]);
    t.teardown(() => pf.stop());
    const m = await pf.waitFor(/Forwarding from 127\.0\.0\.1:(\d+) ->/);
    const body = await (await fetch(`http://127.0.0.1:${m[1]}/probe`)).text();
    t.equal(body, `served /probe for ${cluster.name}`);
  });
}
