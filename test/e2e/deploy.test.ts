// Issue 6: the manifests in deploy/ and `tether-server agent-manifest` on a
// real apiserver. Every file in deploy/ belongs to a kustomization, and every
// kustomization applies with `kubectl apply --dry-run=server`. deploy/server
// is then applied for real and its Deployment's container is run the way a
// kubelet would (its args and env resolved from the applied objects, through
// the image's entrypoint script, with the service account's own token), so the
// probes, the arguments and the RBAC are the ones that ship. The manifest that
// `agent-manifest m1` prints is applied for real, its agent runs the same way
// and serves kubectl through Tether; `kubectl auth can-i` shows the agent's
// service account may do what it needs and no more. The harness has no
// kubelet or controllers: no pod ever runs, the processes stand in for them.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { basename, dirname, join, relative } from "node:path";
import { hashToken, KubeStore, runCliCaptured } from "@tether/server";
import t from "tap";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { type Cluster, freePort, startClusters, writeKubeconfig } from "../kube/index.js";
import { ManagedProcess } from "../kube/processes.js";
import { bindTetherAdmins, tokenFor, until } from "./fixture.js";

const root = new URL("../../", import.meta.url).pathname;
const DEPLOY = join(root, "deploy");
const ENTRYPOINT = join(root, "scripts/container-entrypoint.mjs");

// biome-ignore lint/suspicious/noExplicitAny: Kubernetes objects parsed from YAML, read field by field
type Obj = any;

const cli = (...args: string[]) => runCliCaptured(args);

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? filesUnder(path) : [path];
  });
}

const docsOf = (yamlText: string): Obj[] =>
  parseAllDocuments(yamlText)
    .map((d) => d.toJS())
    .filter(Boolean);

/** A GET the way the kubelet probes: HTTPS without verifying the certificate (Tether's own CA signs it). */
function probe(url: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request(url, { rejectUnauthorized: false, timeout: 5_000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", () => resolve(0));
    req.on("timeout", () => req.destroy());
    req.end();
  });
}

/**
 * What the kubelet would run for a Deployment's only container: its args with
 * $(VAR) expanded and its env resolved (values, Secret keys, the pod's
 * namespace), read from the objects as applied.
 */
async function containerOf(cluster: Cluster, namespace: string, name: string) {
  const deployment = (
    await cluster.api<Obj>("GET", `/apis/apps/v1/namespaces/${namespace}/deployments/${name}`)
  ).body;
  const pod = deployment.spec.template.spec;
  const [container] = pod.containers;
  const env: Record<string, string> = {};
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.secretKeyRef) {
      const { name: secretName, key } = e.valueFrom.secretKeyRef;
      const secret = (await cluster.api<Obj>("GET", `/api/v1/namespaces/${namespace}/secrets/${secretName}`))
        .body;
      env[e.name] = Buffer.from(secret.data[key], "base64").toString("utf8");
    } else if (e.valueFrom?.fieldRef?.fieldPath === "metadata.namespace") env[e.name] = namespace;
    else if (e.valueFrom?.fieldRef?.fieldPath === "metadata.name") env[e.name] = `${name}-0`;
    else if (e.valueFrom?.fieldRef?.fieldPath === "status.podIP") env[e.name] = "127.0.0.1";
    else throw new Error(`env ${e.name}: unsupported source ${JSON.stringify(e.valueFrom)}`);
  }
  const args: string[] = (container.args ?? []).map((a: string) =>
    a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v) => env[v] ?? m),
  );
  return { deployment, pod, container, args, env };
}

/** A service-account directory as the kubelet mounts it, with a real TokenRequest token. */
async function serviceAccountDir(cluster: Cluster, dir: string, namespace: string, sa: string) {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "ca.crt"), cluster.caPem);
  await writeFile(join(dir, "namespace"), namespace);
  const token = await tokenFor(cluster, namespace, sa);
  await writeFile(join(dir, "token"), token, { mode: 0o600 });
  return token;
}

t.test("deploy/ and agent-manifest on a real apiserver", async (t) => {
  const set = await startClusters(1, { names: ["m1"] });
  t.teardown(() => set.stop());
  const m1 = set.clusters[0]!;
  const dir = join(set.dir, "deploy-test");
  await mkdir(dir, { recursive: true });
  const kustomizations = filesUnder(DEPLOY)
    .filter((f) => basename(f) === "kustomization.yaml")
    .map(dirname);

  await t.test("every file in deploy/ belongs to a kustomization", async (t) => {
    t.ok(kustomizations.length >= 3, "crd, server and agent at least");
    for (const file of filesUnder(DEPLOY)) {
      const rel = relative(DEPLOY, file);
      if (rel === "README.md" || basename(file) === "kustomization.yaml") continue;
      const k = join(dirname(file), "kustomization.yaml");
      const kustomization = parseYaml(readFileSync(k, "utf8"));
      const used: string[] = [
        ...(kustomization.resources ?? []),
        ...(kustomization.secretGenerator ?? []).flatMap((g: Obj) => [...(g.envs ?? []), ...(g.files ?? [])]),
      ];
      t.ok(
        used.includes(basename(file)),
        `${rel} is a resource or generator input of ${relative(DEPLOY, k)}`,
      );
    }
  });

  await t.test("every kustomization applies with --dry-run=server", async (t) => {
    for (const k of kustomizations) {
      const name = relative(DEPLOY, k);
      const built = await m1.kubectl(["kustomize", k]);
      t.equal(built.code, 0, `kustomize ${name}: ${built.stderr}`);
      const objects = docsOf(built.stdout);
      // Namespaced objects dry-run only into a namespace that exists, custom
      // resources only with their CRD: those two kinds go in for real first.
      const prerequisites = objects.filter((o) => ["Namespace", "CustomResourceDefinition"].includes(o.kind));
      if (prerequisites.length > 0) {
        const pre = await m1.kubectl(["apply", "-f", "-"], {
          input: prerequisites.map((o) => JSON.stringify(o)).join("\n"),
        });
        t.equal(pre.code, 0, `${name}: namespaces and CRDs: ${pre.stderr}`);
      }
      const dry = await m1.kubectl(["apply", "--dry-run=server", "-k", k, "-o", "name"]);
      t.equal(dry.code, 0, `${name} applies (server dry run): ${dry.stderr}`);
      t.equal(
        dry.stdout.trim().split("\n").length,
        objects.length,
        `${name}: all ${objects.length} objects pass the apiserver's validation and admission`,
      );
    }
  });

  const example = join(DEPLOY, "examples/agent");
  await t.test("the example overlay fills the join Secret and narrows impersonation", async (t) => {
    const built = await m1.kubectl(["kustomize", example]);
    t.equal(built.code, 0, built.stderr);
    const objects = docsOf(built.stdout);
    const secrets = objects.filter((o) => o.kind === "Secret");
    t.equal(secrets.length, 1, "one join Secret");
    const data = Object.fromEntries(
      Object.entries(secrets[0].data ?? {}).map(([k, v]) => [k, Buffer.from(String(v), "base64").toString()]),
    );
    const env = Object.fromEntries(
      readFileSync(join(example, "join.env"), "utf8")
        .trim()
        .split("\n")
        .map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
    );
    t.same(
      Object.keys(env).sort(),
      ["caHash", "cluster", "server", "token"],
      "join.env has the four join values",
    );
    t.same(data, env, "the Secret holds join.env's values");
    t.notOk(secrets[0].stringData, "no placeholder left");
    const role = objects.find((o) => o.kind === "ClusterRole");
    t.ok(
      role.rules.every((r: Obj) => r.resourceNames?.length > 0),
      "every impersonation rule lists the identities it allows",
    );
  });

  // deploy/server for real; its container runs as the kubelet would start it.
  const serverApply = await m1.kubectl(["apply", "-k", join(DEPLOY, "server")]);
  t.equal(serverApply.code, 0, serverApply.stderr);
  await m1.kubectl(["wait", "--for", "condition=established", "crd/clusters.tether.io", "--timeout=30s"]);
  const port = await freePort();
  const serverUrl = `https://127.0.0.1:${port}`;
  // What an operator does: point TETHER_EXTERNAL_URL at where agents reach the server.
  const setUrl = await m1.kubectl([
    "set",
    "env",
    "-n",
    "tether-system",
    "deployment/tether-server",
    `TETHER_EXTERNAL_URL=${serverUrl}`,
  ]);
  t.equal(setUrl.code, 0, setUrl.stderr);

  // Both processes live until the end: later subtests use them.
  let server: ManagedProcess | undefined;
  let agent: ManagedProcess | undefined;
  t.teardown(() => Promise.all([server?.stop(), agent?.stop()]));
  await t.test("tether-server runs from deploy/server with its own service account", async (t) => {
    const { pod, container, args, env } = await containerOf(m1, "tether-system", "tether-server");
    t.equal(args[0], "tether-server", "the entrypoint's program");
    t.equal(env.TETHER_EXTERNAL_URL, serverUrl, "the external URL from the (patched) Deployment");
    const saToken = await tokenFor(m1, "tether-system", pod.serviceAccountName);
    const kubeconfig = await writeKubeconfig(join(dir, "server-sa.kubeconfig"), {
      name: "in-cluster",
      server: m1.server,
      caPem: m1.caPem,
      token: saToken,
    });
    // In a pod the store finds the apiserver and token in-cluster; here the same token comes in a kubeconfig.
    // The last --listen wins: the pod's 0.0.0.0:8443 becomes a free loopback port, and so does the replica port.
    const replicaAt = args.indexOf("--replica-address");
    t.match(
      args[replicaAt + 1],
      /^https:\/\/127\.0\.0\.1:8444$/,
      "the replica address is the pod IP's replica port",
    );
    server = new ManagedProcess(
      "tether-server",
      process.execPath,
      [
        ENTRYPOINT,
        ...args,
        "--listen",
        `127.0.0.1:${port}`,
        "--replica-address",
        `https://127.0.0.1:${await freePort()}`,
      ],
      join(dir, "server.log"),
      { PATH: process.env.PATH, ...env, TETHER_KUBECONFIG: kubeconfig },
    );
    const probeUrl = (p: Obj) => `${p.httpGet.scheme.toLowerCase()}://127.0.0.1:${port}${p.httpGet.path}`;
    t.same(
      container.ports.map((p: Obj) => [p.name, p.containerPort]),
      [
        ["https", 8443],
        ["replica", 8444],
      ],
      "the probes' named port is the listen port; the replicas' hop has its own",
    );
    await until(
      "the readiness probe passes",
      async () => {
        server!.assertRunning();
        return (await probe(probeUrl(container.readinessProbe))) === 200;
      },
      60_000,
    );
    t.pass("readiness probe: 200");
    t.equal(await probe(probeUrl(container.livenessProbe)), 200, "liveness probe: 200");
    t.equal(await probe(probeUrl(container.startupProbe)), 200, "startup probe: 200");
    const seconds = (flag: string) =>
      args.includes(flag) ? Number(String(args[args.indexOf(flag) + 1]).replace(/s$/, "")) : Number.NaN;
    const grace = seconds("--shutdown-grace");
    const delay = seconds("--shutdown-delay");
    t.ok(
      delay > 0 && delay < grace,
      `--shutdown-delay (${delay} s) keeps serving while the endpoint's removal spreads, within --shutdown-grace (${grace} s)`,
    );
    t.notOk(container.lifecycle?.preStop, "no preStop sleep: the delay is the server's");
    t.ok(
      grace > 0 && pod.terminationGracePeriodSeconds >= grace + 5,
      `terminationGracePeriodSeconds (${pod.terminationGracePeriodSeconds}) covers --shutdown-grace (${grace} s, the delay included) and 5 s to exit`,
    );
    const secrets = await m1.kubectl(["get", "secrets", "-n", "tether-system", "-o", "name"]);
    t.match(secrets.stdout, /secret\/tether-ca/, "the server keeps its CA in its namespace");
    for (const [verb, resource, ns, allowed] of [
      ["create", "clusters.tether.io", "", "yes"],
      ["patch", "clusters.tether.io/status", "", "yes"],
      ["update", "secrets", "tether-system", "yes"],
      ["get", "secrets", "kube-system", "no"],
      ["list", "pods", "tether-system", "no"],
    ] as const) {
      const r = await m1.kubectl([
        "auth",
        "can-i",
        verb,
        resource,
        ...(ns ? ["-n", ns] : []),
        "--as=system:serviceaccount:tether-system:tether-server",
      ]);
      t.equal(
        r.stdout.trim(),
        allowed,
        `tether-server ${allowed === "yes" ? "may" : "may not"} ${verb} ${resource} ${ns}`,
      );
    }
  });

  const store = ["--store", "kubernetes", "--kubeconfig", m1.kubeconfig, "--namespace", "tether-system"];
  let joinToken = "";
  await t.test("agent-manifest m1 | kubectl apply -f -", async (t) => {
    // As deploy/README.md says: the admin credential from its Secret, then the one-liner.
    const credentialSecret = (
      await m1.api<Obj>("GET", "/api/v1/namespaces/tether-system/secrets/tether-admin-credential")
    ).body;
    const credential = join(dir, "admin-credential.json");
    await writeFile(credential, Buffer.from(credentialSecret.data["credential.json"], "base64"), {
      mode: 0o600,
    });
    const printed = await cli("agent-manifest", "m1", "--credential", credential);
    t.equal(printed.code, 0, printed.stderr);
    t.match(printed.stderr, /Cluster m1 was not registered: registered it/, "registers m1 first");
    const apply = await m1.kubectl(["apply", "-f", "-"], { input: printed.stdout });
    t.equal(apply.code, 0, apply.stderr);
    for (const object of [
      "namespace/tether-agent",
      "clusterrole/tether-agent-impersonate",
      "clusterrolebinding/tether-agent-impersonate",
      "-n tether-agent serviceaccount/tether-agent",
      "-n tether-agent role/tether-agent-credentials",
      "-n tether-agent rolebinding/tether-agent-credentials",
      "-n tether-agent secret/tether-agent-join",
      "-n tether-agent deployment/tether-agent",
    ]) {
      const r = await m1.kubectl(["get", ...object.split(" "), "-o", "name"]);
      t.equal(r.code, 0, `${object} exists: ${r.stderr}`);
    }
    const secret = (await m1.api<Obj>("GET", "/api/v1/namespaces/tether-agent/secrets/tether-agent-join"))
      .body;
    const value = (k: string) => Buffer.from(secret.data[k], "base64").toString("utf8");
    joinToken = value("token");
    t.equal(value("server"), serverUrl, "the URL serve recorded in the host cluster");
    t.equal(value("cluster"), "m1");
    const kubeStore = await KubeStore.open({ namespace: "tether-system", kubeconfig: m1.kubeconfig });
    try {
      t.equal(value("caHash"), (await kubeStore.loadOrCreateCa()).caHash, "the server's CA hash");
      const record = (await kubeStore.listTokens()).find((r) => r.hash === hashToken(joinToken));
      t.equal(record?.kind, "join", "the token is a join token the server knows");
      t.equal(record?.cluster, "m1", "for m1");
      t.equal(record?.usedAt, undefined, "not used yet");
    } finally {
      await kubeStore.close();
    }
  });

  await t.test("the agent's service account may do what it needs and no more", async (t) => {
    const as = "--as=system:serviceaccount:tether-agent:tether-agent";
    for (const [args, allowed] of [
      [["impersonate", "users"], "yes"],
      [["impersonate", "groups"], "yes"],
      [["impersonate", "serviceaccounts"], "yes"],
      [["get", "secrets/tether-agent-credentials", "-n", "tether-agent"], "yes"],
      [["update", "secrets/tether-agent-credentials", "-n", "tether-agent"], "yes"],
      [["create", "secrets", "-n", "tether-agent"], "yes"],
      [["get", "secrets/tether-agent-join", "-n", "tether-agent"], "no"],
      [["delete", "secrets/tether-agent-credentials", "-n", "tether-agent"], "no"],
      [["list", "secrets", "-n", "tether-agent"], "no"],
      [["get", "secrets/tether-agent-credentials", "-n", "tether-system"], "no"],
      [["create", "secrets", "-n", "kube-system"], "no"],
      [["list", "pods", "-n", "tether-agent"], "no"],
      [["list", "pods", "--all-namespaces"], "no"],
      [["get", "nodes"], "no"],
    ] as const) {
      const r = await m1.kubectl(["auth", "can-i", ...args, as]);
      t.equal(r.stdout.trim(), allowed, `${allowed === "yes" ? "may" : "may not"} ${args.join(" ")}`);
    }
  });

  await t.test("the agent runs from the applied Deployment and serves kubectl through Tether", async (t) => {
    const { pod, container, args, env } = await containerOf(m1, "tether-agent", "tether-agent");
    t.equal(env.TETHER_JOIN_TOKEN, joinToken, "the join token reaches the agent from the Secret");
    const saDir = join(dir, "agent-sa");
    await serviceAccountDir(m1, saDir, "tether-agent", pod.serviceAccountName);
    const apiserver = new URL(m1.server);
    const proc = new ManagedProcess(
      "tether-agent",
      process.execPath,
      [ENTRYPOINT, ...args, "--service-account-dir", saDir],
      join(dir, "agent.log"),
      {
        PATH: process.env.PATH,
        ...env,
        KUBERNETES_SERVICE_HOST: apiserver.hostname,
        KUBERNETES_SERVICE_PORT: apiserver.port,
      },
    );
    agent = proc;
    t.equal(args[0], "tether-agent", "the entrypoint's program");
    t.ok(
      container.securityContext.readOnlyRootFilesystem,
      "the agent writes no files: its identity goes to the Secret",
    );
    await until(
      "the agent joined and wrote its credentials Secret",
      async () => {
        proc.assertRunning();
        server!.assertRunning();
        const r = await m1.api(
          "GET",
          "/api/v1/namespaces/tether-agent/secrets/tether-agent-credentials",
          undefined,
          [404],
        );
        return r.status === 200;
      },
      60_000,
    );
    t.pass("joined with the manifest's token and RBAC");

    await bindTetherAdmins(m1);
    const issued = await cli("kubeconfig", "m1", "--user", "alice", "--group", "admins", ...store);
    t.equal(issued.code, 0, issued.stderr);
    const kubeconfig = join(dir, "alice.kubeconfig");
    await writeFile(kubeconfig, issued.stdout, { mode: 0o600 });
    let listed = { code: -1, stdout: "", stderr: "" };
    await until(
      "kubectl through Tether reaches m1",
      async () => {
        proc.assertRunning();
        listed = await m1.kubectl(["get", "namespaces", "-o", "name"], { kubeconfig });
        return listed.code === 0;
      },
      60_000,
    );
    t.match(listed.stdout, /namespace\/tether-agent/, "a list through the agent");
    const whoami = await m1.kubectl(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"], {
      kubeconfig,
    });
    t.equal(whoami.stdout, "tether:alice", "as the impersonated host user, not the agent");
    const log = readFileSync(proc.logFile, "utf8");
    t.notMatch(log, joinToken, "the join token is never logged");
  });

  await t.test("narrowed as in deploy/examples/agent, only the listed identities get through", async (t) => {
    const built = await m1.kubectl(["kustomize", example]);
    const narrowed = docsOf(built.stdout).find((o) => o.kind === "ClusterRole");
    const apply = await m1.kubectl(["apply", "-f", "-"], { input: JSON.stringify(narrowed) });
    t.equal(apply.code, 0, apply.stderr);
    const as = "--as=system:serviceaccount:tether-agent:tether-agent";
    for (const [what, allowed] of [
      ["users/tether:alice", "yes"],
      ["groups/tether:admins", "yes"],
      ["users/tether:bob", "no"],
      ["users/system:admin", "no"],
      ["groups/system:masters", "no"],
      ["serviceaccounts", "no"],
    ] as const) {
      const r = await m1.kubectl(["auth", "can-i", "impersonate", what, as]);
      t.equal(r.stdout.trim(), allowed, `${allowed === "yes" ? "may" : "may not"} impersonate ${what}`);
    }
    const alice = await cli("kubeconfig", "m1", "--user", "alice", "--group", "admins", ...store);
    const bob = await cli("kubeconfig", "m1", "--user", "bob", "--group", "admins", ...store);
    await writeFile(join(dir, "alice2.kubeconfig"), alice.stdout, { mode: 0o600 });
    await writeFile(join(dir, "bob.kubeconfig"), bob.stdout, { mode: 0o600 });
    const asAlice = await m1.kubectl(["get", "namespaces", "-o", "name"], {
      kubeconfig: join(dir, "alice2.kubeconfig"),
    });
    t.equal(asAlice.code, 0, `alice still gets through: ${asAlice.stderr}`);
    const asBob = await m1.kubectl(["get", "namespaces", "-o", "name"], {
      kubeconfig: join(dir, "bob.kubeconfig"),
    });
    t.not(asBob.code, 0, "bob, in the same group, does not");
    t.match(asBob.stderr, /cannot impersonate/, "the member apiserver refuses to impersonate him");
  });
});
